"""``ChatMentorCollab``: the method as a LangChain chat model, flat over the engine.

A small generator writes the answer; at sparse probes a mentor proposes its own next word, and on a
divergence a verifier picks one of the two lookahead segments (DESIGN.md). This class turns LangChain
messages into the engine's prompt, runs ``engine.collaborate`` and turns its events into chunks and a
message; it never calls another runnable and never re-implements a step.

What a user sees:

- ``invoke``/``batch``/``stream`` and native ``ainvoke``/``astream``; the async ones run the engine in a
  worker thread (never on the event loop) and stop it at the next model call when the caller cancels.
- Each streamed chunk is one committed word or adopted segment; its
  ``response_metadata["mentorcollab_stream"]`` holds one entry ``{"source", "start", "end"}`` (so the
  entries of merged chunks add up to the answer's provenance). Rejected lookaheads are never streamed.
  The last chunk has ``chunk_position="last"``, the usage and the whole collaboration record.
  Where the chat model starts the answer itself (a forced tool call, a structured answer's ``{"key": ``),
  that start is streamed as one chunk of source ``prefix``. With tools bound, text from the first
  ``<``, ``{`` or backtick on is held back to the end, and goes out as tool calls if it parses as them.
- ``usage_metadata``: ``input_tokens`` is the generator's rendered prompt, ``output_tokens`` the
  tokens committed to the answer (both sources, each counted in its own tokenizer: the count that
  ``max_tokens`` limits). The mentor's own tokens are under ``response_metadata["mentorcollab"]
  ["mentor_usage"]``, outside ``usage_metadata``, so tracers that add up usage do not count them twice.
- ``response_metadata["mentorcollab"]``: the engine's record (text, provenance spans, decisions with
  both candidate segments, verifier score and choice, stats) plus the names of both models.
- Tools (``bind_tools``) and structured output (``with_structured_output``), see ``tools.py``.

``temperature`` 0 (or unset) decodes greedily, as the paper does; above 0 both models sample, with
draws fixed by ``seed`` and the text, so a seeded call gives the same answer every time.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage as LangChainChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, model_validator

from mentorcollab_langchain import tools as tooling
from mentorcollab_langchain.backends.base import Backend, ChatMessage, Conversation, Prompt, PromptStyle
from mentorcollab_langchain.backends.http_client import CURRENT_ASYNC_SCOPE, AsyncScope
from mentorcollab_langchain.backends.sampling import GREEDY, Sampling
from mentorcollab_langchain.engine import CollabConfig, CollabState, TextCommitted, collaborate
from mentorcollab_langchain.engine.events import Event
from mentorcollab_langchain.errors import ConfigError, GenerationCancelled, MentorCollabError
from mentorcollab_langchain.models.registry import DEFAULT_GENERATOR, DEFAULT_MENTOR
from mentorcollab_langchain.verifiers import DEFAULT_VERIFIER, Verifier, get_verifier

PROVIDER = "mentorcollab"

# Constructor keywords of the standard LangChain parameters that mean nothing for local models: they
# are accepted (so code written for hosted models runs) and ignored. Any other unknown keyword fails.
IGNORED_STANDARD_PARAMS = frozenset({"api_key", "timeout", "max_retries", "base_url"})

# Engine settings that may also be given per call (``model.invoke(x, probe_rate=0.5)``).
PER_CALL_CONFIG = frozenset(
    {
        "max_tokens",
        "seed",
        "temperature",
        "probe_policy",
        "probe_rate",
        "uncertainty_signal",
        "uncertainty_threshold",
        "segment_tokens",
        "max_word_tokens",
        "match",
        "repetition_guard",
        "on_mentor_error",
        "max_mentor_calls",
        "max_mentor_tokens",
    }
)
PER_CALL_OTHER = frozenset({"tools", "tool_choice", "parallel_tool_calls", "response_format", "stream"})
# Set by LangChain itself for tracing; not options of the model.
TRACING_KEYWORDS = frozenset({"ls_structured_output_format", "structured_output_format"})

_UNSUPPORTED_BLOCKS = {
    "image": "images",
    "image_url": "images",
    "input_image": "images",
    "audio": "audio",
    "input_audio": "audio",
    "video": "video",
    "file": "files",
    "document": "documents",
    "pdf": "documents",
}
_SKIPPED_BLOCKS = {"tool_use", "tool_call", "tool_call_chunk", "invalid_tool_call", "reasoning", "thinking"}


class UnsupportedContentError(MentorCollabError, ValueError):
    """A message holds content the models cannot read (images, audio, files), or is of an unknown type."""


class StructuredOutputError(OutputParserException, MentorCollabError):
    """The model's answer is not valid for the requested schema; ``llm_output`` holds the raw text."""


# -- turning LangChain messages into the engine's prompt ----------------------------------------


def _text_of(content: str | list[Any], position: int, kind: str) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
            continue
        block_type = block.get("type") if isinstance(block, dict) else None
        if block_type == "text":
            parts.append(str(block.get("text", "")))
        elif block_type in _SKIPPED_BLOCKS:
            continue
        elif block_type in _UNSUPPORTED_BLOCKS:
            raise UnsupportedContentError(
                f"message {position} ({kind}) holds {_UNSUPPORTED_BLOCKS[block_type]}; ChatMentorCollab's models "
                "read text only: describe the content in text, or use a multimodal model"
            )
        else:
            raise UnsupportedContentError(
                f"message {position} ({kind}) holds a content block of type {block_type!r}; "
                "ChatMentorCollab reads text blocks only"
            )
    return "".join(parts)


def to_engine_messages(messages: Sequence[BaseMessage], system_extra: Sequence[str] = ()) -> list[ChatMessage]:
    """LangChain messages as ``{"role", "content"}`` dicts that every chat template accepts.

    System messages are gathered into one at the front (with ``system_extra``, for tools and output
    formats, at its end); consecutive messages of one role are joined; tool calls and tool results are
    written in Qwen's ``<tool_call>``/``<tool_response>`` form (tool results as user turns).
    """
    if not messages:
        raise ValueError("ChatMentorCollab needs at least one message; it got an empty list")
    system: list[str] = []
    turns: list[ChatMessage] = []
    for position, message in enumerate(messages):
        kind = type(message).__name__
        if isinstance(message, SystemMessage):
            system.append(_text_of(message.content, position, kind))
            continue
        if isinstance(message, HumanMessage):
            role, text = "user", _text_of(message.content, position, kind)
        elif isinstance(message, AIMessage):
            text = _text_of(message.content, position, kind)
            calls = [tooling.render_tool_call(call["name"], call["args"]) for call in message.tool_calls]
            role, text = "assistant", "\n".join(part for part in [text.strip(), *calls] if part)
        elif isinstance(message, ToolMessage):
            role, text = "user", tooling.render_tool_response(_text_of(message.content, position, kind))
        elif isinstance(message, LangChainChatMessage):
            role = {"human": "user", "ai": "assistant"}.get(message.role, message.role)
            if role not in {"system", "user", "assistant", "tool"}:
                raise UnsupportedContentError(
                    f"message {position} has role {message.role!r}; use system, user (human), assistant (ai) or tool"
                )
            text = _text_of(message.content, position, kind)
            if role == "system":
                system.append(text)
                continue
            if role == "tool":
                role, text = "user", tooling.render_tool_response(text)
        else:
            raise UnsupportedContentError(
                f"message {position} is a {kind}, which ChatMentorCollab does not know; "
                "use SystemMessage, HumanMessage, AIMessage or ToolMessage"
            )
        if turns and turns[-1]["role"] == role:
            turns[-1] = {"role": role, "content": turns[-1]["content"] + "\n\n" + text}
        else:
            turns.append({"role": role, "content": text})
    system_text = "\n\n".join(part for part in [*system, *system_extra] if part)
    return ([{"role": "system", "content": system_text}] if system_text else []) + turns


# -- one request ---------------------------------------------------------------------------------


@dataclass
class _Request:
    """Everything one call needs, resolved before any model runs."""

    prompt: Prompt
    config: CollabConfig
    generator: Backend
    mentor: Backend
    verifier: Verifier
    prefix: str = ""
    tool_names: list[str] = field(default_factory=list)
    tool_choice: str | None = None
    parallel_tool_calls: bool = True


class _CancellableCursor:
    def __init__(self, cursor: Any, cancel: threading.Event) -> None:
        self._cursor = cursor
        self._cancel = cancel

    def _check(self) -> None:
        if self._cancel.is_set():
            raise GenerationCancelled("the caller cancelled the request")

    def next_word(self, text: str, max_tokens: int, **options: Any) -> Any:
        self._check()
        return self._cursor.next_word(text, max_tokens, **options)

    def generate(self, text: str, max_tokens: int, stop: Sequence[str] = ()) -> Any:
        self._check()
        return self._cursor.generate(text, max_tokens, stop)

    def label_logprobs(self, text: str, labels: Sequence[str]) -> list[float]:
        self._check()
        return self._cursor.label_logprobs(text, labels)

    def score_continuation(self, text: str, continuation: str) -> Any:
        self._check()
        return self._cursor.score_continuation(text, continuation)

    def hidden_state(self, text: str) -> list[float]:
        self._check()
        return self._cursor.hidden_state(text)

    def close(self) -> None:
        self._cursor.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _CancellableBackend:
    """A backend whose cursors stop at their next model call once ``cancel`` is set."""

    def __init__(self, backend: Backend, cancel: threading.Event) -> None:
        self._backend = backend
        self._cancel = cancel

    @property
    def model_name(self) -> str:
        return self._backend.model_name

    def open(self, prompt: Any, style: PromptStyle = "chat", sampling: Sampling = GREEDY) -> _CancellableCursor:
        if self._cancel.is_set():
            raise GenerationCancelled("the caller cancelled the request")
        return _CancellableCursor(self._backend.open(prompt, style, sampling), self._cancel)


def _prompt_tokens(backend: Backend, request: _Request) -> int:
    """The rendered prompt's length in ``backend``'s tokens (0 for backends that cannot tell)."""
    count = getattr(backend, "prompt_ids", None)
    if count is None:
        return 0
    return len(count(request.prompt, request.config.prompt_style))


@dataclass
class _Run:
    """The state of one call as it goes: the engine's state plus the token counts of the prompt."""

    request: _Request
    state: CollabState
    input_tokens: int = 0
    mentor_input_tokens: int = 0

    def events(self, cancel: threading.Event | None = None) -> Iterator[Event]:
        request = self.request
        generator, mentor = request.generator, request.mentor
        if cancel is not None:
            generator, mentor = _CancellableBackend(generator, cancel), _CancellableBackend(mentor, cancel)
        self.input_tokens = _prompt_tokens(request.generator, request)
        yield from collaborate(
            request.prompt, generator, mentor, verifier=request.verifier, config=request.config, state=self.state
        )
        # The mentor's prompt is counted last: a run that never probed must not load the mentor for it.
        if self.state.stats.mentor_calls:
            self.mentor_input_tokens = _prompt_tokens(request.mentor, request)


def _usage(run: _Run) -> UsageMetadata:
    output = run.state.stats.tokens_committed
    return UsageMetadata(input_tokens=run.input_tokens, output_tokens=output, total_tokens=run.input_tokens + output)


class _Assembler:
    """Turns engine events into chunks, holding back text that may be a tool call when tools are bound."""

    def __init__(self, run: _Run, model_name: str, generator: str, mentor: str, verifier: str) -> None:
        self.run = run
        self.model_name = model_name
        self.names = {"generator": generator, "mentor": mentor, "verifier": verifier}
        request = run.request
        # A forced tool call is held from the start; any other forced start (``{`` of a structured
        # answer) is streamed first, as a chunk of source "prefix".
        self.holding = bool(request.tool_names) and bool(request.prefix)
        self.prefix_pending = bool(request.prefix) and not self.holding
        self.held: list[TextCommitted] = []
        self.held_from: int | None = 0 if self.holding else None  # where the held text begins

    def _prefix_chunks(self) -> list[ChatGenerationChunk]:
        if not self.prefix_pending:
            return []
        self.prefix_pending = False
        prefix = self.run.request.prefix
        return [self._chunk(prefix, "prefix", 0, len(prefix))]

    @staticmethod
    def _chunk(text: str, source: str, start: int, end: int) -> ChatGenerationChunk:
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=text,
                response_metadata={"mentorcollab_stream": [{"source": source, "start": start, "end": end}]},
            )
        )

    def feed(self, event: Event) -> list[ChatGenerationChunk]:
        if not isinstance(event, TextCommitted):
            return []
        prefix = self._prefix_chunks()
        if self.run.request.tool_names and not self.holding and tooling.might_hold_tool_call(event.text):
            self.holding, self.held_from = True, event.start
        if self.holding:
            self.held.append(event)
            return prefix
        return [*prefix, self._chunk(event.text, event.source, event.start, event.end)]

    def message_parts(self) -> tuple[str, list[Any], list[Any], dict[str, Any]]:
        """Content, tool calls, invalid tool calls and response metadata of the finished answer."""
        run, request = self.run, self.run.request
        text = run.state.text
        calls: list[Any] = []
        invalid: list[Any] = []
        if request.tool_names and request.tool_choice != "none":
            content, calls, invalid = tooling.parse_tool_calls(text, request.tool_names)
            if not calls and not invalid:
                content = text
            if not request.parallel_tool_calls:
                calls = calls[:1]
        else:
            content = text
        record = run.state.record()
        stats = run.state.stats
        record |= {
            **self.names,
            "prefix": request.prefix,
            "mentor_usage": {
                "input_tokens": run.mentor_input_tokens,
                "output_tokens": stats.mentor_tokens_generated,
                "committed_tokens": stats.mentor_tokens_committed,
                "read_tokens": stats.mentor_tokens_read,
            },
            "generator_usage": {
                "input_tokens": run.input_tokens,
                "output_tokens": stats.generator_tokens_generated,
                "committed_tokens": stats.generator_tokens_committed,
                "read_tokens": stats.generator_tokens_read,
            },
        }
        finish = run.state.finish_reason or "eos"
        metadata = {
            "model_name": self.model_name,
            "model_provider": PROVIDER,
            "finish_reason": "tool_calls" if calls else {"eos": "stop", "stop": "stop"}.get(finish, finish),
            "mentorcollab": record,
        }
        return content, calls, invalid, metadata

    def finish(self) -> list[ChatGenerationChunk]:
        content, calls, invalid, metadata = self.message_parts()
        chunks = self._prefix_chunks()
        if calls or invalid:  # what was held, less the calls (the text before it is already out)
            held_text = ""
            if self.held_from is not None:
                held = self.run.state.text[self.held_from :]
                held_text = tooling.parse_tool_calls(held, self.run.request.tool_names)[0]
        else:  # nothing to take out: the held text goes out as the chunks it came in
            prefix = self.run.request.prefix
            if prefix and self.holding:
                chunks.append(self._chunk(prefix, "prefix", 0, len(prefix)))
            chunks += [self._chunk(event.text, event.source, event.start, event.end) for event in self.held]
            held_text = ""
        arguments = [json.dumps(call["args"], ensure_ascii=False) for call in calls] + [call["args"] for call in invalid]
        tool_call_chunks = [
            {"name": call["name"], "args": args, "id": call["id"], "index": index, "type": "tool_call_chunk"}
            for index, (call, args) in enumerate(zip([*calls, *invalid], arguments, strict=True))
        ]
        chunks.append(
            ChatGenerationChunk(
                message=AIMessageChunk(
                    content=held_text,
                    chunk_position="last",
                    usage_metadata=_usage(self.run),
                    response_metadata=metadata,
                    tool_call_chunks=tool_call_chunks,
                )
            )
        )
        return chunks

    def message(self) -> AIMessage:
        content, calls, invalid, metadata = self.message_parts()
        return AIMessage(
            content=content,
            tool_calls=calls,
            invalid_tool_calls=invalid,
            usage_metadata=_usage(self.run),
            response_metadata=metadata,
        )


_DONE = object()


def answer_message(
    state: CollabState,
    *,
    prompt: Prompt,
    config: CollabConfig,
    generator: Backend,
    mentor: Backend,
    verifier: Verifier,
    verifier_name: str | None = None,
) -> AIMessage:
    """The ``AIMessage`` that ``ChatMentorCollab`` gives for a run that ended in ``state``.

    For code that runs the engine's steps itself (the LangGraph graph does) and must answer exactly as
    the chat model does: the same content, ``response_metadata`` and ``usage_metadata``, from the same
    assembler, so the two never drift apart. ``verifier_name`` overrides the decider's recorded name.
    """
    request = _Request(prompt=prompt, config=config, generator=generator, mentor=mentor, verifier=verifier)
    run = _Run(request, state)
    run.input_tokens = _prompt_tokens(generator, request)
    if state.stats.mentor_calls:
        run.mentor_input_tokens = _prompt_tokens(mentor, request)
    names = (str(generator.model_name), str(mentor.model_name))
    return _Assembler(run, "+".join(names), *names, verifier_name or verifier.name).message()


def stream_chunk(event: TextCommitted) -> AIMessageChunk:
    """Committed text as the chunk ``ChatMentorCollab.stream`` gives for it, with its provenance entry."""
    return _Assembler._chunk(event.text, event.source, event.start, event.end).message  # type: ignore[return-value]


async def _events_in_thread(run: _Run) -> AsyncIterator[Event]:
    """The run's events, produced in a worker thread; leaving the loop early stops the worker.

    The worker's HTTP calls to remote models come back to this loop (``AsyncScope``), so they use an
    async client and a cancelled caller cuts them off mid-request.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    cancel = threading.Event()
    scope = AsyncScope(loop)

    def put(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            cancel.set()

    def produce() -> None:
        CURRENT_ASYNC_SCOPE.set(scope)  # this thread's own context: only this run's calls use the scope
        try:
            for event in run.events(cancel):
                put(event)
        except GenerationCancelled:
            pass
        except BaseException as error:  # noqa: BLE001 - handed to the caller, who re-raises it
            put(error)
        finally:
            put(_DONE)

    worker = threading.Thread(target=produce, name="mentorcollab-request", daemon=True)
    worker.start()
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()
        scope.cancel()
        await scope.aclose()


# -- structured output ---------------------------------------------------------------------------


def _schema_name(schema: Any) -> str:
    return str(convert_to_openai_tool(schema)["function"]["name"])


def _validator(schema: Any) -> Callable[[Any], Any]:
    """Turns parsed JSON into the schema's type: a validated pydantic object, or a checked dict."""
    if isinstance(schema, type) and is_basemodel_subclass(schema):
        if hasattr(schema, "model_validate"):
            return schema.model_validate
        return schema.parse_obj  # pydantic.v1 models

    required = convert_to_json_schema(schema).get("required", [])

    def check(value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, got {type(value).__name__}")
        missing = [key for key in required if key not in value]
        if missing:
            raise ValueError(f"missing required keys: {', '.join(missing)}")
        return value

    return check


def _structured_parser(schema: Any, method: str) -> Runnable[Any, Any]:
    validate = _validator(schema)
    name = _schema_name(schema)

    def parse(message: BaseMessage) -> Any:
        raw = message.text if isinstance(message, AIMessage) else str(message.content)
        try:
            if method == "function_calling":
                calls = [call for call in getattr(message, "tool_calls", []) if call["name"] == name]
                if not calls:
                    raise ValueError(f"the answer holds no call of {name}")
                data = calls[0]["args"]
            else:
                data = tooling.first_json_object(raw)
            return validate(data)
        except (ValueError, ValidationError, TypeError) as error:
            raise StructuredOutputError(
                f"the model's answer is not a valid {name}: {error}. Raw answer: {raw!r}", llm_output=raw
            ) from error

    return RunnableLambda(parse, name="MentorCollabStructuredOutput")


# -- the chat model ------------------------------------------------------------------------------


class ChatMentorCollab(BaseChatModel):
    """A LangChain chat model where a small generator writes and a large mentor guides at sparse probes.

    Example:
        ```python
        from mentorcollab_langchain import ChatMentorCollab

        model = ChatMentorCollab(generator="smollm2-135m-instruct", mentor="qwen2.5-coder-1.5b-instruct",
                                 probe_rate=0.25, max_tokens=128)
        answer = model.invoke("What is 17 * 3?")
        answer.response_metadata["mentorcollab"]["spans"]   # which characters the mentor wrote
        ```

    Building the object loads nothing: each model loads on first use, once per process, and is shared
    by every instance naming the same model (and device and dtype). Calls share no mutable state, so
    one instance serves many threads or tasks at once.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="ignore", protected_namespaces=())

    generator: Any = DEFAULT_GENERATOR
    """The model that writes: a packaged name, a Hugging Face id or folder, or a backend object."""
    mentor: Any = DEFAULT_MENTOR
    """The model that guides at probes: a packaged name, a Hugging Face id or folder, or a backend object."""
    verifier: Any = DEFAULT_VERIFIER
    """Who decides at a divergence: a name in ``NAMED_VERIFIERS`` (default ``self-consult-both-orders``) or a
    verifier object."""
    backend: Literal["auto", "llama.cpp", "transformers"] = "auto"
    """How models named by a string run: ``auto`` takes llama.cpp in process for packaged models on the CPU
    (about three times faster there) and transformers otherwise (GPUs, Hugging Face ids, hidden states)."""
    device: str = "auto"
    dtype: str = "auto"

    probe_policy: str = "uncertain"
    """Where the mentor is probed: ``random`` (the paper) or ``uncertain`` (where the generator is unsure)."""
    probe_rate: float = 0.02
    """The probability of a random probe at each word (with ``uncertain``, a floor under its own probes)."""
    uncertainty_signal: Literal["top_share", "top_probability", "entropy"] = "top_share"
    """``uncertain`` policy: the measure of the generator's doubt at a word's first token."""
    uncertainty_threshold: float = 0.55
    """``uncertain`` policy: probe below this ``top_share``/``top_probability``, or above this entropy."""
    segment_tokens: int = 16
    max_word_tokens: int = 12
    max_tokens: int = 512
    """The most tokens committed to the answer (``CollabConfig.max_new_tokens``)."""
    seed: int = 0
    match: Literal["exact", "normalized"] = "exact"
    stop: list[str] | None = None
    repetition_guard: bool = True
    prompt_style: Literal["chat", "raw"] = "chat"
    on_mentor_error: Literal["fallback", "raise"] = "fallback"
    max_mentor_calls: int | None = None
    """The most mentor calls per request (probes and lookaheads); then the generator goes on alone."""
    max_mentor_tokens: int | None = None
    """The most tokens the mentor may generate per request; then the generator goes on alone."""

    temperature: float | None = None
    """``None`` or 0 decodes greedily; above 0 both models sample at this temperature (draws fixed by ``seed``)."""
    streaming: bool = False

    _backends: dict[str, Backend] = PrivateAttr(default_factory=dict)
    _backends_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_keywords(cls, values: Any) -> Any:
        if isinstance(values, dict):
            known = set(cls.model_fields) | {name for name, info in cls.model_fields.items() if info.alias}
            unknown = sorted(set(values) - known - IGNORED_STANDARD_PARAMS)
            if unknown:
                raise ConfigError(
                    f"ChatMentorCollab got unknown settings: {', '.join(unknown)}; see ChatMentorCollab's fields"
                )
        return values

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._config()  # a bad setting fails here, before any model loads
        for role in ("generator", "mentor"):
            spec = getattr(self, role)
            if not isinstance(spec, str) and not (hasattr(spec, "open") and hasattr(spec, "model_name")):
                raise ConfigError(
                    f"{role} must be a model name or a backend with open() and model_name, got {type(spec).__name__}"
                )
        # An unknown name, a non-verifier, or a trained verifier made for another generator fails here.
        get_verifier(self.verifier, generator=self.generator)

    # -- settings ------------------------------------------------------------------------------

    def _config(self, **overrides: Any) -> CollabConfig:
        fields = {
            "probe_policy": self.probe_policy,
            "probe_rate": self.probe_rate,
            "uncertainty_signal": self.uncertainty_signal,
            "uncertainty_threshold": self.uncertainty_threshold,
            "segment_tokens": self.segment_tokens,
            "max_word_tokens": self.max_word_tokens,
            "max_new_tokens": self.max_tokens,
            "seed": self.seed,
            "temperature": self.temperature or 0.0,
            "match": self.match,
            "stop": tuple(self.stop or ()),
            "repetition_guard": self.repetition_guard,
            "prompt_style": self.prompt_style,
            "on_mentor_error": self.on_mentor_error,
            "max_mentor_calls": self.max_mentor_calls,
            "max_mentor_tokens": self.max_mentor_tokens,
        }
        return CollabConfig(**(fields | overrides))

    def _backend(self, role: Literal["generator", "mentor"]) -> Backend:
        spec = getattr(self, role)
        if not isinstance(spec, str):
            return spec
        with self._backends_lock:
            if role not in self._backends:
                from mentorcollab_langchain.backends.choose import make_backend

                self._backends[role] = make_backend(spec, self.backend, device=self.device, dtype=self.dtype)
            return self._backends[role]

    @staticmethod
    def _name_of(spec: Any) -> str:
        return spec if isinstance(spec, str) else str(spec.model_name)

    @property
    def generator_name(self) -> str:
        return self._name_of(self.generator)

    @property
    def mentor_name(self) -> str:
        return self._name_of(self.mentor)

    @property
    def verifier_name(self) -> str:
        return self.verifier if isinstance(self.verifier, str) else str(getattr(self.verifier, "name", "custom"))

    @property
    def model_name(self) -> str:
        """Both models, as LangChain's tracers and usage callbacks see this model."""
        return f"{self.generator_name}+{self.mentor_name}"

    @property
    def _llm_type(self) -> str:
        return "mentorcollab"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "generator": self.generator_name,
            "mentor": self.mentor_name,
            "verifier": self.verifier_name,
            **self._config().model_dump(mode="json"),
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=kwargs["model"] if isinstance(kwargs.get("model"), str) else self.model_name,
            ls_model_type="chat",
            ls_temperature=float(kwargs.get("temperature") or self.temperature or 0.0),
            ls_max_tokens=int(kwargs.get("max_tokens") or self.max_tokens),
        )
        if stop or self.stop:
            params["ls_stop"] = list(stop or self.stop or [])
        params["ls_generator"] = self.generator_name  # type: ignore[typeddict-unknown-key]
        params["ls_mentor"] = self.mentor_name  # type: ignore[typeddict-unknown-key]
        return params

    # -- one request ---------------------------------------------------------------------------

    def _request(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> _Request:
        unknown = sorted(set(kwargs) - PER_CALL_CONFIG - PER_CALL_OTHER - TRACING_KEYWORDS)
        if unknown:
            hint = " (choose models with generator= and mentor= when building the model)" if "model" in unknown else ""
            raise TypeError(f"ChatMentorCollab got unknown call options: {', '.join(unknown)}{hint}")
        overrides: dict[str, Any] = {
            key: kwargs[key] for key in PER_CALL_CONFIG - {"max_tokens"} if kwargs.get(key) is not None
        }
        if kwargs.get("max_tokens") is not None:
            overrides["max_new_tokens"] = kwargs["max_tokens"]
        stops = list(stop if stop is not None else self.stop or [])

        extra: list[str] = []
        prefix = ""
        tools = list(kwargs.get("tools") or [])
        names = [tooling.tool_name(tool) for tool in tools]
        tool_choice = tooling.normalize_tool_choice(kwargs.get("tool_choice"), names) if tools else None
        offered = tools if tool_choice != "none" else []
        if offered:
            extra.append(tooling.tool_choice_instruction(tool_choice))
            prefix = tooling.forced_prefix(tool_choice, tools)
            if prefix:
                stops.append(tooling.TOOL_CALL_CLOSE)
        response_format = kwargs.get("response_format")
        if response_format:
            extra.append(_format_instruction(response_format))
            schema = (response_format.get("json_schema") or {}).get("schema")
            prefix = prefix or tooling.json_prefix(schema)
        overrides["stop"] = tuple(dict.fromkeys(stops))
        engine_messages = to_engine_messages(messages, extra)
        return _Request(
            prompt=Conversation(tuple(engine_messages), tuple(offered)) if offered else engine_messages,
            config=self._config(**overrides),
            generator=self._backend("generator"),
            mentor=self._backend("mentor"),
            verifier=get_verifier(self.verifier, generator=self._backend("generator")),
            prefix=prefix,
            tool_names=names,
            tool_choice=tool_choice,
            parallel_tool_calls=kwargs.get("parallel_tool_calls") is not False,
        )

    def _start(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[_Run, _Assembler]:
        request = self._request(messages, stop, kwargs)
        state = CollabState(text=request.prefix, emitted=len(request.prefix))
        run = _Run(request, state)
        return run, _Assembler(run, self.model_name, self.generator_name, self.mentor_name, request.verifier.name)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        run, assembler = self._start(messages, stop, kwargs)
        for _ in run.events():
            pass
        return ChatResult(generations=[ChatGeneration(message=assembler.message())])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        run, assembler = self._start(messages, stop, kwargs)
        async with aclosing(_events_in_thread(run)) as events:  # a cancelled call stops the worker now
            async for _ in events:
                pass
        return ChatResult(generations=[ChatGeneration(message=assembler.message())])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        run, assembler = self._start(messages, stop, kwargs)
        events = run.events()
        try:
            for event in events:
                for chunk in assembler.feed(event):
                    if run_manager:
                        run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
        finally:
            events.close()  # a consumer that stops early ends the run and frees both caches
        for chunk in assembler.finish():
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        run, assembler = self._start(messages, stop, kwargs)
        events = _events_in_thread(run)
        try:
            async for event in events:
                for chunk in assembler.feed(event):
                    if run_manager:
                        await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
        finally:
            await events.aclose()
        for chunk in assembler.finish():
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    # -- tools and structured output -----------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` to the models (see ``tools.py`` for how they are shown and read back).

        ``tool_choice``: ``None``/``"auto"`` lets the model decide, ``"none"`` hides the tools,
        ``"any"``/``"required"``/``True`` forces a call, a tool's name forces that tool. A forced call is
        started in the answer itself, so even a small generator completes a well-formed call.
        ``parallel_tool_calls=False`` keeps only the first call; ``strict`` is accepted for
        compatibility (arguments are parsed as JSON, and tools validate them when they run).
        """
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        names = [tooling.tool_name(tool) for tool in formatted]
        if tool_choice is not None:
            tooling.normalize_tool_choice(tool_choice, names)  # fail now on an unknown tool name
        return super().bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """A runnable that answers with an object of ``schema`` (pydantic class, TypedDict or JSON schema).

        ``json_schema`` (default) shows the schema in the system message and starts the answer with
        ``{`` and the first required key (the model writes every value); ``function_calling`` forces a
        call of a tool shaped like the schema; ``json_mode`` asks
        for JSON without showing the schema. Every answer is validated (pydantic classes with pydantic,
        others for their required keys); an invalid one raises ``StructuredOutputError`` carrying the
        raw text, or with ``include_raw=True`` is returned as ``{"raw", "parsed": None, "parsing_error"}``.
        ``strict`` is accepted for compatibility; validation is always strict after the fact.
        """
        if kwargs:
            raise ValueError(f"with_structured_output got unsupported arguments {kwargs}")
        if method not in ("json_schema", "function_calling", "json_mode"):
            raise ValueError(f"unknown method {method!r}; use json_schema, function_calling or json_mode")
        tracing = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        if method == "function_calling":
            model: Runnable[Any, Any] = self.bind_tools(
                [schema], tool_choice=_schema_name(schema), ls_structured_output_format=tracing
            )
        else:
            response_format: dict[str, Any] = {"type": "json_object"}
            if method == "json_schema":
                response_format = {
                    "type": "json_schema",
                    "json_schema": {"name": _schema_name(schema), "schema": convert_to_json_schema(schema)},
                }
            model = self.bind(response_format=response_format, ls_structured_output_format=tracing)
        parser = _structured_parser(schema, method)
        if not include_raw:
            return model | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=model) | parsed.with_fallbacks([fallback], exception_key="parsing_error")


def _format_instruction(response_format: Mapping[str, Any]) -> str:
    if response_format.get("type") == "json_schema":
        schema = response_format.get("json_schema", {}).get("schema", {})
        return tooling.JSON_SCHEMA_INSTRUCTION.format(schema=json.dumps(schema, ensure_ascii=False))
    if response_format.get("type") == "json_object":
        return tooling.JSON_MODE_INSTRUCTION
    raise ValueError(f"unknown response_format type {response_format.get('type')!r}; use json_schema or json_object")

