"""Answer assembly: engine events become the chunks ``ChatMentorCollab`` streams, a run's end its message.

Pure functions of plain values (a state, model names, token counts), shared by the chat model and the
LangGraph graph, so the two give the same answer for the same run. The chat model's ``invoke`` is the
sum of its stream, so everything a message holds is built here once, as the stream's last chunk.

What the chunks hold:

- Each committed word or adopted segment is one chunk, whose ``response_metadata["mentorcollab_stream"]``
  holds one entry ``{"source", "start", "end"}``: the entries of merged chunks add up to the answer's
  provenance. Rejected lookaheads are never committed, so they never stream.
- Where the chat model starts the answer itself (a forced tool call, a structured answer's ``{"key": ``),
  that start goes out as one chunk of source ``prefix``.
- With tools bound (and ``tool_choice`` not ``"none"``), text streams as it is written until a tool
  call may have begun (``tool_calls.call_start``: ``<tool_call>``, ``<|python_tag|>``, ``[TOOL_CALLS]``, a
  ``{"name"``, a ```json fence). From there it is held: released as soon as it is clearly prose
  (``<b>``, ``{x}``), else kept to the end and sent as tool calls if it parses as them, so a stream
  never shows half a call as text.
- A ``<think>`` block that opens the answer streams as ``additional_kwargs["reasoning_content"]``, not
  content (``reasoning.py``), so ``content_blocks`` shows it as a reasoning block.
- The last chunk has ``chunk_position="last"``, the tool calls, the usage and the whole record.

``usage_metadata``: ``input_tokens`` is the generator's rendered prompt, ``output_tokens`` the tokens
committed to the answer (both sources, each counted in its own tokenizer: the count ``max_tokens``
limits). The mentor's own work is in the token details, as extra keys beside the totals (not part of
them): ``input_token_details["mentor_read"]`` (every token the mentor read: its prompt, catch-ups and
scoring) and ``output_token_details["mentor_written"]`` (every token it generated, kept or rejected),
so a tracer shows the cost of both models. ``input_token_details["cache_read"]`` is LangChain's usual
key: the prompt tokens the generator found in its cache from an earlier request and did not read again.
``response_metadata["mentorcollab"]`` has each model's whole account (``generator_usage``,
``mentor_usage``). Adding chunks adds the details too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from langchain_core.messages import AIMessage, AIMessageChunk, InvalidToolCall, ToolCall
from langchain_core.messages.ai import InputTokenDetails, OutputTokenDetails, UsageMetadata
from langchain_core.messages.utils import message_chunk_to_message

from mentorcollab_langchain.backends.base import Backend, Prompt, PromptStyle
from mentorcollab_langchain.chat import tool_calls
from mentorcollab_langchain.chat.reasoning import ReasoningSplitter, split_reasoning
from mentorcollab_langchain.engine import CollabConfig, CollabState, Event, TextCommitted

PROVIDER = "mentorcollab"
STREAM_KEY = "mentorcollab_stream"


def _piece(text: str, source: str, start: int, end: int, reasoning: str = "") -> AIMessageChunk:
    entry = {"source": source, "start": start, "end": end}
    extra = {"reasoning_content": reasoning} if reasoning else {}
    return AIMessageChunk(content=text, additional_kwargs=extra, response_metadata={STREAM_KEY: [entry]})


def text_chunk(event: TextCommitted) -> AIMessageChunk:
    """Committed text as the chunk ``ChatMentorCollab.stream`` gives for it, with its provenance entry."""
    return _piece(event.text, event.source, event.start, event.end)


def _prompt_tokens(backend: Backend, prompt: Prompt, style: PromptStyle) -> int:
    count = getattr(backend, "prompt_ids", None)
    return 0 if count is None else len(count(prompt, style))


def prompt_counts(
    state: CollabState, *, prompt: Prompt, style: PromptStyle, generator: Backend, mentor: Backend
) -> tuple[int, int]:
    """Each model's rendered prompt in its own tokens, for a run that ended in ``state`` (0 for backends
    that cannot tell). The mentor's counts only if the run called it: counting may load a model, and a
    run that never probed must not load the mentor for it."""
    generator_tokens = _prompt_tokens(generator, prompt, style)
    return generator_tokens, _prompt_tokens(mentor, prompt, style) if state.stats.mentor_calls else 0


def _read_calls(
    text: str, tool_names: Sequence[str], parallel: bool
) -> tuple[str, list[ToolCall], list[InvalidToolCall]]:
    """Content, tool calls and invalid calls of a finished answer; an answer without calls stays as written.
    Without ``parallel`` calls, only the first call the model wrote is kept (valid or not)."""
    if not tool_names:
        return text, [], []
    content, calls, invalid = tool_calls.parse_tool_calls(text, tool_names, first_only=not parallel)
    if not calls and not invalid:
        return text, [], []
    return content, calls, invalid


def _closing_chunk(
    state: CollabState,
    content: str,
    reasoning: str,
    calls: Sequence[ToolCall],
    invalid: Sequence[InvalidToolCall],
    *,
    generator: str,
    mentor: str,
    verifier: str,
    prefix: str,
    input_tokens: int,
    mentor_input_tokens: int,
) -> AIMessageChunk:
    """The last chunk: ``content`` and ``reasoning`` (what is left to stream), the tool calls, the usage
    and the record.

    Tool calls travel as ``tool_call_chunks``, from which LangChain derives ``tool_calls`` and
    ``invalid_tool_calls`` for the chunk and for any sum of chunks, so ``invoke`` and a merged stream
    read them alike. An invalid call's ``args`` is its block as written, which never parses as a call.
    """
    stats = state.stats
    record = state.record() | {
        "generator": generator,
        "mentor": mentor,
        "verifier": verifier,
        "prefix": prefix,
        "mentor_usage": {
            "input_tokens": mentor_input_tokens,
            "output_tokens": stats.mentor_tokens_generated,
            "committed_tokens": stats.mentor_tokens_committed,
            "read_tokens": stats.mentor_tokens_read,
            "cached_tokens": stats.mentor_tokens_cached,
        },
        "generator_usage": {
            "input_tokens": input_tokens,
            "output_tokens": stats.generator_tokens_generated,
            "committed_tokens": stats.generator_tokens_committed,
            "read_tokens": stats.generator_tokens_read,
            "cached_tokens": stats.generator_tokens_cached,
        },
    }
    finish = state.finish_reason or "eos"
    metadata = {
        "model_name": f"{generator}+{mentor}",
        "model_provider": PROVIDER,
        "finish_reason": "tool_calls" if calls else {"eos": "stop", "stop": "stop"}.get(finish, finish),
        "mentorcollab": record,
    }
    arguments = [json.dumps(call["args"], ensure_ascii=False) for call in calls] + [call["args"] for call in invalid]
    tool_call_chunks = [
        {"name": call["name"], "args": args, "id": call["id"], "index": index, "type": "tool_call_chunk"}
        for index, (call, args) in enumerate(zip([*calls, *invalid], arguments, strict=True))
    ]
    output = stats.tokens_committed
    usage = UsageMetadata(
        input_tokens=input_tokens,
        output_tokens=output,
        total_tokens=input_tokens + output,
        input_token_details=InputTokenDetails(
            cache_read=stats.generator_tokens_cached,
            mentor_read=stats.mentor_tokens_read,  # type: ignore[typeddict-unknown-key]
        ),
        output_token_details=OutputTokenDetails(mentor_written=stats.mentor_tokens_generated),  # type: ignore[typeddict-unknown-key]
    )
    return AIMessageChunk(
        content=content,
        additional_kwargs={"reasoning_content": reasoning} if reasoning else {},
        chunk_position="last",
        usage_metadata=usage,
        response_metadata=metadata,
        tool_call_chunks=tool_call_chunks,
    )


class AnswerStream:
    """One run's chunks: ``feed`` each engine event as it comes, then ``finish`` with the finished state.

    ``prefix`` is the start the chat model wrote into the answer itself; ``tool_names`` are the tools
    the models were offered (none: no text is held back and no calls are read); with
    ``parallel_tool_calls=False`` only the first call is kept.

    Each event's text goes through the reasoning splitter, then its content through the tool-call
    hold; a chunk whose text is held or kept by the splitter still goes out at once with its
    provenance entry (and no text), so the entries of a stream always add up to the answer's.
    """

    def __init__(
        self,
        *,
        generator: str,
        mentor: str,
        verifier: str,
        prefix: str = "",
        tool_names: Sequence[str] = (),
        parallel_tool_calls: bool = True,
    ) -> None:
        self._names = {"generator": generator, "mentor": mentor, "verifier": verifier}
        self._prefix = prefix
        self._tool_names = list(tool_names)
        self._parallel = parallel_tool_calls
        # A forced start (a tool call, or a structured answer's ``{"key": ``) is the answer's, not reasoning.
        self._splitter = ReasoningSplitter(enabled=not prefix)
        # The forced start goes out first, as a chunk of source "prefix"; a forced tool call's start
        # is held from the beginning (its chunk carries no text), as any call is.
        forced_call = bool(self._tool_names) and bool(prefix)
        self._prefix_pending = bool(prefix)
        self._sent = ""  # the content streamed so far
        self._held = prefix if forced_call else ""  # content held back: it may be a tool call

    def _prefix_chunks(self) -> list[AIMessageChunk]:
        if not self._prefix_pending:
            return []
        self._prefix_pending = False
        shown = "" if self._held else self._prefix
        self._sent += shown
        return [_piece(shown, "prefix", 0, len(self._prefix))]

    def _release(self, content: str) -> str:
        """The part of ``content`` (after what is held) that can stream now; the rest is held."""
        pending = self._held + content
        if not self._tool_names:
            ready, self._held = pending, ""
        else:  # whitespace waits for the next text too: before a call, it is not the answer's
            start = tool_calls.call_start(pending)
            ready = pending[:start].rstrip()
            self._held = pending[len(ready) :]
        self._sent += ready
        return ready

    def feed(self, event: Event) -> list[AIMessageChunk]:
        """The chunks to stream now for ``event`` (for text that is held back, a chunk without text)."""
        if not isinstance(event, TextCommitted):
            return []
        chunks = self._prefix_chunks()
        reasoning, content = self._splitter.feed(event.text)
        return [*chunks, _piece(self._release(content), event.source, event.start, event.end, reasoning)]

    def finish(self, state: CollabState, *, input_tokens: int, mentor_input_tokens: int) -> list[AIMessageChunk]:
        """The rest of the stream once the run ended in ``state``; the last chunk closes the answer.

        ``input_tokens`` and ``mentor_input_tokens`` are each model's rendered prompt (``prompt_counts``).
        """
        chunks = self._prefix_chunks()
        reasoning, content = self._splitter.finish()
        answer = self._sent + self._held + content
        text, calls, invalid = _read_calls(answer, self._tool_names, self._parallel)
        if calls or invalid:
            # The calls lie in the held text, so the content (the answer less its calls, stripped)
            # starts with what already went out, less its whitespace at either end: send the rest.
            sent = self._sent.strip()
            rest = text[len(sent) :] if text.startswith(sent) else text
        else:  # nothing to take out: the held text goes out as written
            rest = self._held + content
        closing = _closing_chunk(
            state,
            rest,
            reasoning,
            calls,
            invalid,
            **self._names,
            prefix=self._prefix,
            input_tokens=input_tokens,
            mentor_input_tokens=mentor_input_tokens,
        )
        return [*chunks, closing]


def answer_message(
    state: CollabState,
    *,
    prompt: Prompt,
    config: CollabConfig,
    generator: Backend,
    mentor: Backend,
    verifier_name: str,
    message_id: str | None = None,
) -> AIMessage:
    """The ``AIMessage`` that ``ChatMentorCollab`` gives for a run that ended in ``state``.

    For code that runs the engine's steps itself (the LangGraph graph does) and must answer exactly as
    the chat model does: the same content, ``response_metadata`` and ``usage_metadata`` (with the prompt
    counted as ``prompt_counts`` says).
    """
    input_tokens, mentor_input_tokens = prompt_counts(
        state, prompt=prompt, style=config.prompt_style, generator=generator, mentor=mentor
    )
    reasoning, content = split_reasoning(state.text)
    chunk = _closing_chunk(
        state,
        content,
        reasoning,
        [],
        [],
        generator=str(generator.model_name),
        mentor=str(mentor.model_name),
        verifier=verifier_name,
        prefix="",
        input_tokens=input_tokens,
        mentor_input_tokens=mentor_input_tokens,
    )
    chunk.id = message_id
    return message_chunk_to_message(chunk)  # type: ignore[return-value]
