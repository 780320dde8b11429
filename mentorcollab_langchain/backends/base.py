"""What the engine needs from a model: a per-request cursor that speaks text.

The generator and the mentor may use different tokenizers, so everything they share is text. A backend
renders the conversation with its own chat template once (``open``), and from then on every operation is
asked "at" a response text: the cursor brings its model to ``prompt + response_text`` (reusing whatever
it already computed) and then proposes, generates or scores from there. Because the state a cursor
reaches depends only on that text, a run rebuilt from a checkpoint continues exactly as it would have.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, Protocol, TypedDict, runtime_checkable

from mentorcollab_langchain.backends.sampling import GREEDY, Sampling
from mentorcollab_langchain.errors import ConfigError

PromptStyle = Literal["chat", "raw"]


class ToolCallFunction(TypedDict):
    """The function a tool call names, with its arguments as a JSON object (chat templates render them)."""

    name: str
    arguments: dict[str, Any]


class ChatToolCall(TypedDict):
    """A tool call in an assistant message, in the form transformers' chat templates read (OpenAI's, with
    ``arguments`` an object rather than a JSON string)."""

    id: NotRequired[str]
    type: Literal["function"]
    function: ToolCallFunction


class ChatMessage(TypedDict):
    """A message as backends see it: a role (system, user, assistant, tool) and plain text.

    An assistant message may carry the ``tool_calls`` it made, and a ``tool`` message the
    ``tool_call_id`` of the call it answers: each backend renders them through its model's chat template
    where the template takes them, else in a written form (``backends.prompts``).
    """

    role: str
    content: str
    tool_calls: NotRequired[list[ChatToolCall]]
    tool_call_id: NotRequired[str]


@dataclass(frozen=True)
class Conversation:
    """Chat messages plus the tools the models may call (OpenAI tool dicts).

    Tools travel with the prompt because each backend renders them its own way (``backends.prompts``):
    through its chat template where the template takes ``tools``, else as a written instruction.
    """

    messages: tuple[ChatMessage, ...]
    tools: tuple[dict[str, Any], ...] = ()


Prompt = str | Sequence[ChatMessage] | Conversation


@dataclass(frozen=True)
class Confidence:
    """How sure a model was of a word's first token, read from the logits it had anyway.

    Probe policies use it to ask the mentor where the generator is unsure, and learned verifiers take
    it as features. ``top_probability`` and ``runner_up_probability`` are the two largest next-token
    probabilities over the whole vocabulary; ``entropy`` is that distribution's entropy in nats.
    """

    top_probability: float
    runner_up_probability: float
    entropy: float

    @property
    def top_share(self) -> float:
        """The top token's probability renormalised over the two most likely tokens, in [0.5, 1].

        A small model spreads mass over many spellings of the same answer, so its full-vocabulary
        top-1 probability is low almost everywhere; its preference between the two best candidates
        separates sure from unsure words far better.
        """
        total = self.top_probability + self.runner_up_probability
        return self.top_probability / total if total > 0 else 1.0


@dataclass(frozen=True)
class ContinuationScore:
    """A model's log-probability of a given continuation, summed over the continuation's own tokens."""

    logprob: float
    tokens: int

    @property
    def mean_logprob(self) -> float:
        return self.logprob / self.tokens if self.tokens else 0.0


@dataclass(frozen=True)
class Piece:
    """Text one model produced: a word, a lookahead segment, or a generated answer.

    ``tokens`` counts the model's own tokens in ``text`` (for accounting and budgets); ``eos`` says
    the model ended the text with its end-of-sequence token, which is never part of ``text``.
    ``generated`` is what producing the piece cost, when that differs from ``tokens``: a remote model
    reads ahead, so one call may generate tokens past the piece (kept for the next words, or thrown
    away) and a later piece may cost nothing because it was already generated. Cost figures add up
    ``cost``, so over a run they count exactly the tokens the model generated. ``confidence`` is the
    model's certainty at the piece's first token, where the cursor was asked for it and can read it.
    ``stopped`` says ``generate`` met one of its stop strings and cut the text before it; ``tokens``
    then counts the tokens kept, ``generated`` all that were written.
    """

    text: str
    tokens: int
    eos: bool = False
    generated: int | None = None
    confidence: Confidence | None = None
    stopped: bool = False

    @property
    def cost(self) -> int:
        """Tokens the model generated to produce this piece (``generated``, else ``tokens``)."""
        return self.tokens if self.generated is None else self.generated


@runtime_checkable
class Cursor(Protocol):
    """One request's view of one model, positioned by the response text it is asked at.

    ``tokens_read`` counts every token the model has read so far without generating it: the prompt,
    text the other model wrote, a verifier's question, a cache rebuilt after a rollback, a scored
    continuation. On few-shot and RAG prompts reading is most of a mentor's cost, so the engine
    accounts for it beside the generated tokens. A cursor that takes prompt tokens over from an earlier
    request's cache may count them in an optional ``tokens_cached`` (they are not in ``tokens_read``).
    """

    tokens_read: int

    def next_word(self, text: str, max_tokens: int, with_confidence: bool = False) -> Piece:
        """The model's next word after ``text``: tokens until the next one starts with whitespace.

        With ``with_confidence`` the piece carries the model's ``Confidence`` at the word's first token;
        a cursor that cannot read it raises ``BackendError`` saying so.
        """
        ...

    def generate(self, text: str, max_tokens: int, stop: Sequence[str] = ()) -> Piece:
        """Up to ``max_tokens`` tokens after ``text``, cut before the first stop string."""
        ...

    def label_logprobs(self, text: str, labels: Sequence[str]) -> list[float]:
        """Log-probability of each label's first token as the very next token after ``text``."""
        ...

    def score_continuation(self, text: str, continuation: str) -> ContinuationScore:
        """The model's log-probability of ``continuation`` right after ``text`` (one pass over it)."""
        ...

    def hidden_state(self, text: str) -> list[float]:
        """The last layer's hidden state at the final position of ``text``."""
        ...

    def close(self) -> None:
        """Free what the cursor holds (its KV cache); the cursor is unusable afterwards."""
        ...


@runtime_checkable
class ReadsPrompt(Protocol):
    """A cursor that can read its prompt before it is asked anything (optional beside ``Cursor``).

    ``read_prompt`` brings the model to the prompt with an empty response (an in-process cursor fills its
    KV cache, a remote one warms the server's prefix cache), counting what it reads in ``tokens_read``,
    and returns early once ``stop`` is set. The engine calls it on a background thread as a request opens
    (``engine.read_ahead``), so the mentor reads a long prompt while the generator writes.
    """

    def read_prompt(self, stop: threading.Event) -> None: ...


@runtime_checkable
class ForeseesReading(Protocol):
    """A cursor that can say how many tokens it would read to be asked at ``text`` (optional beside ``Cursor``).

    ``tokens_to_read`` reads nothing itself: it applies the cursor's own rule for what a call at ``text``
    feeds (the tail its cache or the server does not hold). The engine asks before each probe, so that a
    probe is made only if its reading fits what is left of ``max_mentor_tokens_read``.
    """

    def tokens_to_read(self, text: str) -> int: ...


@runtime_checkable
class Backend(Protocol):
    """A model that can open cursors. Heavy resources (weights) are shared by all its cursors."""

    @property
    def model_name(self) -> str:
        """A name that identifies the model in records and traces."""
        ...

    def open(self, prompt: Prompt, style: PromptStyle = "chat", sampling: Sampling = GREEDY) -> Cursor:
        """Render ``prompt`` (messages with the chat template, or raw text) and start a cursor there.

        ``sampling`` says how the cursor picks tokens when it proposes words and writes segments. A backend
        that can decode under a grammar (``backends.grammar``) takes a ``grammar`` argument as well, and its
        cursors then write only text the grammar accepts and have ``grammar_prefix_length(text)``.
        """
        ...


def takes_grammar(backend: Backend) -> bool:
    """Whether the backend's ``open`` takes a grammar to decode under."""
    return "grammar" in inspect.signature(backend.open).parameters



def require_backend(role: str, value: object) -> None:
    """Refuse, by name, something given as a model that cannot open cursors (a model name where a backend
    object is needed, a config dict in the wrong place), before a run fails deep inside with an ``AttributeError``."""
    if not (hasattr(value, "open") and hasattr(value, "model_name")):
        raise ConfigError(
            f"{role} must be a backend with open() and model_name (make_backend(name) builds one from a model "
            f"name), got {type(value).__name__} {value!r:.60}"
        )
