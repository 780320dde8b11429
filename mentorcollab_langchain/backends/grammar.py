"""Grammar-constrained decoding: answers that must match a JSON schema or a grammar, even from a 135M model.

A small model asked for JSON writes almost-JSON: it copies the schema's keys into the arguments, or forgets
a required field. Local engines fix this by masking, at every token, the tokens the grammar forbids; here
that is llguidance (llama.cpp's and vLLM's grammar engine), on the logits both local backends already
hold. A grammar is text in llguidance's Lark syntax, where a JSON schema sits inside as
``%json {...}``, so one string says "a ``<tool_call>`` tag, then an object of this schema, then the
closing tag" and travels in ``CollabConfig`` (and checkpoints) like any other setting.

The grammar covers the whole answer, from its first character. A cursor is asked at a response text, so
its matcher follows the response tokens in its cache: it keeps what they share with the tokens it has
consumed, rolls back the rest and consumes the new ones, as the KV cache does. Both models follow the
same grammar with their own tokenizers, so their words stay comparable and probes and adoptions still
work inside a constrained answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mentorcollab_langchain.errors import BackendError, InvalidSchemaError

# Compact JSON with the separators ``json.dumps`` writes, so the start the chat model writes into an
# answer (``{"name": ``) is inside the grammar, and a small model cannot pad the object with whitespace.
JSON_STYLE = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}
# What a tag looks like: one angle-bracketed name, as chat formats mark tool calls (<tool_call>).
TAG = r"</?[A-Za-z_|][A-Za-z0-9_|]*>"


def closed_schema(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object that does not say otherwise.

    JSON Schema allows unknown keys by default, and a small model fills them with the schema's own words
    (``"type": "integer"`` next to the argument). Tool arguments and structured answers want exactly the
    declared fields, as OpenAI's strict mode assumes.
    """
    if isinstance(schema, list):
        return [closed_schema(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    closed = {key: closed_schema(value) for key, value in schema.items()}
    if "properties" in closed and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


def json_rule(schema: Mapping[str, Any]) -> str:
    """The Lark rule body for one JSON value of ``schema``: compact, its objects closed."""
    body = dict(closed_schema(schema))
    body["x-guidance"] = {**JSON_STYLE, **body.get("x-guidance", {})}
    return "%json " + json.dumps(body, ensure_ascii=False)


def json_grammar(schema: Mapping[str, Any], *, before: str = "", after: str = "") -> str:
    """A grammar for ``before``, then one JSON value of ``schema`` (compact, closed objects), then ``after``."""
    return f"start: {' '.join([*literals(before), 'value', *literals(after)])}\nvalue: {json_rule(schema)}\n"


def literals(text: str) -> list[str]:
    """``text`` as Lark string literals, a tag such as ``<tool_call>`` in a literal of its own (so that
    ``GrammarMatcher`` can let a model whose vocabulary has it as one special token write it so)."""
    return [json.dumps(part, ensure_ascii=False) for part in re.split(f"({TAG})", text) if part]


def check_grammar(grammar: str) -> str:
    """The grammar, if llguidance can compile it; else an ``InvalidSchemaError`` with llguidance's reason."""
    import llguidance

    if not isinstance(grammar, str) or not grammar.strip():
        raise InvalidSchemaError(f"a grammar is llguidance's Lark text, got {grammar!r:.60}")
    problem = llguidance.LLMatcher.validate_grammar(llguidance.LLMatcher.grammar_from_lark(grammar))
    if problem and not problem.startswith("WARNING"):
        raise InvalidSchemaError(f"the grammar does not compile: {problem.strip()}")
    return grammar


def with_special_tags(grammar: str, knows_special_token: Callable[[str], bool]) -> str:
    """``grammar`` where each literal tag the model has as a special token may be written either way.

    Qwen's vocabulary holds ``<tool_call>`` as one special token, which its chat template and the model
    itself write; SmolLM2 spells it with ordinary tokens. llguidance names a special token ``<tool_call>``
    (unquoted) and a text ``"<tool_call>"``, and refuses the name on a vocabulary without it, so the one
    grammar both models follow is adapted here, for each model, to the tags its vocabulary has.
    """
    for tag in sorted(set(re.findall(f'"({TAG})"', grammar))):
        if knows_special_token(tag):
            grammar = grammar.replace(f'"{tag}"', f'({tag} | "{tag}")')
    return grammar


class GrammarMatcher:
    """Where one cursor's response stands in the grammar, and which tokens may come next.

    ``tokenizer`` is llguidance's view of the model's vocabulary (``llguidance.hf.from_tokenizer`` or
    ``llguidance.llamacpp.lltokenizer_from_vocab``), with the model's end tokens as its end of sequence,
    so the end is allowed exactly where the grammar is complete.
    """

    def __init__(self, tokenizer: Any, grammar: str, vocabulary_size: int) -> None:
        import llguidance

        def knows_special_token(tag: str) -> bool:
            alone = llguidance.LLMatcher.grammar_from_lark(f"start: {tag}")
            return not llguidance.LLMatcher(tokenizer, alone, log_level=0).is_error()

        grammar = with_special_tags(grammar, knows_special_token)
        self._matcher = llguidance.LLMatcher(tokenizer, llguidance.LLMatcher.grammar_from_lark(grammar), log_level=0)
        if self._matcher.is_error():
            raise InvalidSchemaError(f"the grammar does not compile: {self._matcher.get_error()}")
        self._consumed: list[int] = []
        self._size = vocabulary_size

    def _follow(self, response_ids: Sequence[int]) -> None:
        """Bring the matcher to ``response_ids``: keep the common prefix, roll back and consume the rest."""
        common = 0
        for mine, theirs in zip(self._consumed, response_ids, strict=False):
            if mine != theirs:
                break
            common += 1
        if common < len(self._consumed):
            self._matcher.rollback(len(self._consumed) - common)
            del self._consumed[common:]
        new = list(response_ids[common:])
        taken = self._matcher.try_consume_tokens(new) if new else 0
        self._consumed.extend(new[:taken])
        if taken < len(new):
            raise BackendError(
                "the answer so far leaves the grammar at token "
                f"{common + taken} of {len(response_ids)}; only text the grammar accepts can be continued under it"
            )

    def allowed(self, response_ids: Sequence[int]) -> np.ndarray:
        """A boolean row over the vocabulary: which tokens may follow ``response_ids``."""
        self._follow(response_ids)
        bias = np.frombuffer(self._matcher.compute_logit_bias(), dtype=np.uint8)
        allowed = np.zeros(self._size, dtype=bool)
        width = min(self._size, len(bias))
        allowed[:width] = bias[:width] > 0
        return allowed

    def accepted(self, response_ids: Sequence[int]) -> int:
        """How many of ``response_ids``, from the start of the answer, the grammar accepts."""
        self._matcher.reset()
        self._consumed = []
        return self._matcher.validate_tokens(list(response_ids))


def masked(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The logits with every forbidden token at -inf (a new array: the backend's buffer is left alone)."""
    return np.where(allowed, logits, -np.inf)

