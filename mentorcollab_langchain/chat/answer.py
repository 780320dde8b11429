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
- With tools bound, text from the first ``<``, ``{`` or backtick on is held back to the end, and goes
  out as tool calls if it parses as them, so a stream never shows half a call as text.
- The last chunk has ``chunk_position="last"``, the tool calls, the usage and the whole record.

``usage_metadata``: ``input_tokens`` is the generator's rendered prompt, ``output_tokens`` the tokens
committed to the answer (both sources, each counted in its own tokenizer: the count ``max_tokens``
limits). The mentor's own tokens are under ``response_metadata["mentorcollab"]["mentor_usage"]``,
outside ``usage_metadata``, so tracers that add up usage do not count them twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from langchain_core.messages import AIMessage, AIMessageChunk, InvalidToolCall, ToolCall
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.utils import message_chunk_to_message

from mentorcollab_langchain.backends.base import Backend, Prompt, PromptStyle
from mentorcollab_langchain.chat import tools
from mentorcollab_langchain.engine import CollabConfig, CollabState, Event, TextCommitted

PROVIDER = "mentorcollab"
STREAM_KEY = "mentorcollab_stream"


def _piece(text: str, source: str, start: int, end: int) -> AIMessageChunk:
    entry = {"source": source, "start": start, "end": end}
    return AIMessageChunk(content=text, response_metadata={STREAM_KEY: [entry]})


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
    content, calls, invalid = tools.parse_tool_calls(text, tool_names, first_only=not parallel)
    if not calls and not invalid:
        return text, [], []
    return content, calls, invalid


def _closing_chunk(
    state: CollabState,
    content: str,
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
    """The last chunk: ``content`` (what is left to stream), the tool calls, the usage and the record.

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
        },
        "generator_usage": {
            "input_tokens": input_tokens,
            "output_tokens": stats.generator_tokens_generated,
            "committed_tokens": stats.generator_tokens_committed,
            "read_tokens": stats.generator_tokens_read,
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
    usage = UsageMetadata(input_tokens=input_tokens, output_tokens=output, total_tokens=input_tokens + output)
    return AIMessageChunk(
        content=content,
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
        # A forced tool call is held from the start; any other forced start (``{`` of a structured
        # answer) streams first, as a chunk of source "prefix".
        self._holding = bool(self._tool_names) and bool(prefix)
        self._prefix_pending = bool(prefix) and not self._holding
        self._held: list[TextCommitted] = []
        self._held_from: int | None = 0 if self._holding else None  # where the held text begins

    def _prefix_chunks(self) -> list[AIMessageChunk]:
        if not self._prefix_pending:
            return []
        self._prefix_pending = False
        return [_piece(self._prefix, "prefix", 0, len(self._prefix))]

    def feed(self, event: Event) -> list[AIMessageChunk]:
        """The chunks to stream now for ``event`` (none while text is held back, or for other events)."""
        if not isinstance(event, TextCommitted):
            return []
        chunks = self._prefix_chunks()
        if self._tool_names and not self._holding and tools.might_hold_tool_call(event.text):
            self._holding, self._held_from = True, event.start
        if self._holding:
            self._held.append(event)
            return chunks
        return [*chunks, text_chunk(event)]

    def finish(self, state: CollabState, *, input_tokens: int, mentor_input_tokens: int) -> list[AIMessageChunk]:
        """The rest of the stream once the run ended in ``state``; the last chunk closes the answer.

        ``input_tokens`` and ``mentor_input_tokens`` are each model's rendered prompt (``prompt_counts``).
        """
        chunks = self._prefix_chunks()
        content, calls, invalid = _read_calls(state.text, self._tool_names, self._parallel)
        if calls or invalid:
            # The calls lie in the held text, so the content (the text less its calls, stripped) starts
            # with what already went out, less that text's leading whitespace: send the rest of it.
            streamed = state.text[: self._held_from]
            rest = content[len(streamed.lstrip()) :]
        else:  # nothing to take out: the held text goes out as the chunks it came in
            if self._prefix and self._holding:
                chunks.append(_piece(self._prefix, "prefix", 0, len(self._prefix)))
            chunks += [text_chunk(event) for event in self._held]
            rest = ""
        closing = _closing_chunk(
            state,
            rest,
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
    chunk = _closing_chunk(
        state,
        state.text,
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
