"""Grammar-constrained decoding: answers that must match a JSON schema or a grammar, even from a 135M model.

A small model asked for JSON writes almost-JSON: it copies the schema's keys into the arguments, or forgets
a required field. Local engines fix this by masking, at every token, the tokens the grammar forbids; here
that is llguidance (llama.cpp's and vLLM's grammar engine), on the logits both local backends already
hold. A grammar is text in llguidance's Lark syntax, where a JSON schema sits inside as
``%json {...}``, so one string says "a ``<tool_call>`` tag, then an object of this schema, then the
closing tag" and travels in ``CollabConfig`` (and checkpoints) like any other setting.

The grammar covers the whole answer, from its first character. Each in-process cursor follows it with a
matcher over its own tokenizer (``backends.local.GrammarMatcher``), so both models follow the same
grammar, their words stay comparable, and probes and adoptions still work inside a constrained answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from mentorcollab_langchain.errors import InvalidSchemaError

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
    ``with_special_tags`` can let a model whose vocabulary has it as one special token write it so)."""
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
