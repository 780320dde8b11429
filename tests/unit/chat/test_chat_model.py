"""ChatMentorCollab on scripted models (exact situations) and tiny real transformers models (real paths)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from pydantic import BaseModel, Field

from mentorcollab_langchain import (
    ChatMentorCollab,
    CollabState,
    ConfigError,
    ScriptedBackend,
    StructuredOutputError,
    TextCommitted,
    TransformersBackend,
    UnsupportedContentError,
    collaborate,
)
from mentorcollab_langchain.backends.base import Conversation, Piece
from mentorcollab_langchain.backends.prompts import render_plain
from mentorcollab_langchain.backends.sampling import GREEDY, Sampling
from mentorcollab_langchain.backends.transformers import _LOADED
from mentorcollab_langchain.chat import answer_message, text_chunk

GENERATOR_ANSWER = "Natalia sold 48 clips in April and 24 in May , so 72 clips in all ."
MENTOR_ANSWER = "Natalia sold 48 clips in April and half as many , 24 , in May , 72 in all ."


def scripted_model(**settings: Any) -> ChatMentorCollab:
    settings = {"probe_rate": 1.0, "segment_tokens": 3, "max_tokens": 64, "verifier": "always-mentor"} | settings
    return ChatMentorCollab(
        generator=ScriptedBackend(settings.pop("generator_answer", GENERATOR_ANSWER), name="scripted-generator"),
        mentor=ScriptedBackend(settings.pop("mentor_answer", MENTOR_ANSWER), name="scripted-mentor"),
        **settings,
    )


def merge(chunks: Sequence[AIMessageChunk]) -> AIMessageChunk:
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    return full


# -- construction --------------------------------------------------------------------------------


def test_building_is_cheap_and_loads_nothing() -> None:
    loaded_before = _LOADED.keys()
    started = time.perf_counter()
    models = [ChatMentorCollab() for _ in range(50)]
    assert time.perf_counter() - started < 1.0
    assert _LOADED.keys() == loaded_before, "building a chat model must not load weights"
    assert models[0].model_name == "smollm2-135m-instruct+qwen2.5-coder-1.5b-instruct"


def test_instances_naming_one_model_share_its_weights(tiny_byte_level_model: str) -> None:
    first = ChatMentorCollab(generator=tiny_byte_level_model, device="cpu", dtype="float32")
    second = ChatMentorCollab(
        generator=tiny_byte_level_model, mentor=tiny_byte_level_model, device="cpu", dtype="float32"
    )
    generator = first._backend("generator")
    assert isinstance(generator, TransformersBackend)
    assert generator.loaded is second._backend("generator").loaded is second._backend("mentor").loaded


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(ConfigError, match="probe_rate"):
        ChatMentorCollab(probe_rate=2.0)
    with pytest.raises(ValueError, match="probe_rat"):
        ChatMentorCollab(probe_rat=0.2)
    with pytest.raises(ConfigError, match="temperature"):
        ChatMentorCollab(temperature=-0.7)
    with pytest.raises(ConfigError, match="verifier"):
        ChatMentorCollab(verifier="oracle")
    with pytest.raises(ConfigError, match="generator"):
        ChatMentorCollab(generator=42)
    ChatMentorCollab(temperature=0, timeout=60, max_retries=2, api_key="unused")  # standard params accepted


def test_ls_params_and_identifying_params_name_both_models() -> None:
    model = scripted_model(stop=["\n\n"])
    params = model._get_ls_params()
    assert params["ls_provider"] == "mentorcollab"
    assert params["ls_model_name"] == "scripted-generator+scripted-mentor"
    assert params["ls_stop"] == ["\n\n"] and params["ls_max_tokens"] == 64
    assert params["ls_generator"] == "scripted-generator" and params["ls_mentor"] == "scripted-mentor"
    identifying = model._identifying_params
    assert identifying["generator"] == "scripted-generator" and identifying["mentor"] == "scripted-mentor"
    assert identifying["verifier"] == "always-mentor" and identifying["probe_rate"] == 1.0


# -- invoke, metadata and streaming ----------------------------------------------------------------


def test_invoke_returns_the_answer_with_record_and_usage() -> None:
    message = scripted_model().invoke("How many clips?")
    record = message.response_metadata["mentorcollab"]
    assert message.content == record["text"]
    assert record["generator"] == "scripted-generator" and record["mentor"] == "scripted-mentor"
    assert any(span["source"] == "mentor" for span in record["spans"])
    decision = record["decisions"][0]
    assert {"position", "generator_segment", "mentor_segment", "score", "choice"} <= set(decision)
    assert decision["choice"] == "mentor"
    stats = record["stats"]
    assert message.usage_metadata == {
        "input_tokens": 0,  # scripted models cannot count prompt tokens
        "output_tokens": stats["tokens_committed"],
        "total_tokens": stats["tokens_committed"],
        # The mentor's work, beside the totals: a script reads nothing and writes one token per word. A
        # script keeps no cache either.
        "input_token_details": {"cache_read": 0, "mentor_read": stats["mentor_tokens_read"]},
        "output_token_details": {"mentor_written": stats["mentor_tokens_generated"]},
    }
    assert record["mentor_usage"]["output_tokens"] == stats["mentor_tokens_generated"] > 0
    assert message.response_metadata["model_name"] == "scripted-generator+scripted-mentor"


def test_stream_chunks_carry_sources_that_add_up_to_the_spans() -> None:
    model = scripted_model()
    chunks = list(model.stream("How many clips?"))
    invoked = model.invoke("How many clips?")
    full = merge(chunks)
    assert full.content == invoked.content
    assert chunks[-1].chunk_position == "last"
    assert chunks[-1].usage_metadata == invoked.usage_metadata
    pieces = full.response_metadata["mentorcollab_stream"]
    text_chunks = [chunk for chunk in chunks if chunk.content]
    assert len(pieces) == len(text_chunks) > 2  # word by word, segment by segment
    # Merge adjacent pieces of one source: they are exactly the provenance spans.
    merged: list[dict[str, Any]] = []
    for piece in pieces:
        if merged and merged[-1]["source"] == piece["source"] and merged[-1]["end"] == piece["start"]:
            merged[-1]["end"] = piece["end"]
        else:
            merged.append(dict(piece))
    assert merged == full.response_metadata["mentorcollab"]["spans"]
    for chunk, piece in zip(text_chunks, pieces, strict=True):
        assert chunk.content == full.content[piece["start"] : piece["end"]]


def test_rejected_lookaheads_never_reach_the_stream() -> None:
    model = scripted_model(verifier="always-mentor", generator_answer="alpha beta gamma delta epsilon zeta",
                           mentor_answer="one two three four five six seven eight", max_tokens=8)
    chunks = list(model.stream("count"))
    streamed = "".join(str(chunk.content) for chunk in chunks)
    record = chunks[-1].response_metadata["mentorcollab"]
    rejected = [
        d["generator_segment"].strip()
        for d in record["decisions"]
        if d["choice"] == "mentor" and d["generator_segment"]
    ]
    assert rejected and all(segment not in streamed for segment in rejected)
    assert streamed == record["text"]


def test_stop_max_tokens_and_seed_per_call() -> None:
    model = scripted_model(probe_rate=0.0)
    assert model.invoke("q", stop=[" 24"]).content == "Natalia sold 48 clips in April and"
    cut = model.invoke("q", max_tokens=3)
    assert cut.content == "Natalia sold 48" and cut.response_metadata["finish_reason"] == "length"
    instance_stop = scripted_model(probe_rate=0.0, stop=["April"])
    assert instance_stop.invoke("q").content == "Natalia sold 48 clips in "

    probing = scripted_model(probe_rate=0.3, verifier="never-mentor")

    def probed_words(seed: int) -> list[int]:
        decisions = probing.invoke("q", seed=seed).response_metadata["mentorcollab"]["decisions"]
        return [d["word_index"] for d in decisions]

    positions = {seed: probed_words(seed) for seed in (1, 2, 3)}
    assert positions[1] == probed_words(1)
    assert len({tuple(value) for value in positions.values()}) > 1, "the seed must move the probes"
    with pytest.raises(ConfigError, match="temperature"):
        model.invoke("q", temperature=-0.5)
    with pytest.raises(TypeError, match="model"):
        model.invoke("q", model="other")


def test_mentor_budget_per_call() -> None:
    model = ChatMentorCollab(generator=ScriptedBackend("a b c d e f"), mentor=ScriptedBackend("x y z w v u"),
                             probe_rate=1.0, segment_tokens=1, verifier="always-mentor")
    assert model.invoke("q").content == "x y z w v u"
    limited = model.invoke("q", max_mentor_calls=2)  # one probe and its lookahead, then the generator alone
    assert limited.content == "x b c d e f"
    assert limited.response_metadata["mentorcollab"]["stats"]["mentor_calls"] == 2


# -- messages ------------------------------------------------------------------------------------


def test_messages_render_roles_merge_and_tool_turns() -> None:
    model = scripted_model()
    generator = model.generator
    model.invoke(
        [
            SystemMessage("Be brief."),
            HumanMessage("What is 1 + 2?"),
            HumanMessage([{"type": "text", "text": "Use the tool."}]),
            AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "c1", "type": "tool_call"}]),
            ToolMessage("3", tool_call_id="c1"),
            SystemMessage("Answer in words."),
            ChatMessage(role="human", content="And in words?"),
        ]
    )
    assert generator.prompts[-1] == [
        {"role": "system", "content": "Be brief.\n\nAnswer in words."},
        {"role": "user", "content": "What is 1 + 2?\n\nUse the tool."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "add", "arguments": {"a": 1, "b": 2}}}
            ],
        },
        {"role": "tool", "content": "3", "tool_call_id": "c1"},
        {"role": "user", "content": "And in words?"},
    ]


def test_messages_the_models_cannot_take_give_clear_errors() -> None:
    model = scripted_model()
    with pytest.raises(ValueError, match="empty list"):
        model.invoke([])
    with pytest.raises(UnsupportedContentError, match="images"):
        text_and_image = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "x"}}]
        model.invoke([HumanMessage(text_and_image)])
    with pytest.raises(UnsupportedContentError, match="audio"):
        model.invoke([HumanMessage([{"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"}])])
    with pytest.raises(UnsupportedContentError, match="FunctionMessage"):
        model.invoke([FunctionMessage(name="f", content="1")])
    with pytest.raises(UnsupportedContentError, match="role 'critic'"):
        model.invoke([ChatMessage(role="critic", content="meh")])


# -- tiny real models: usage and concurrency -----------------------------------------------------


@pytest.fixture
def tiny_pair(tiny_byte_level_model: str, tiny_sentencepiece_model: str) -> ChatMentorCollab:
    return ChatMentorCollab(
        generator=tiny_byte_level_model,
        mentor=tiny_sentencepiece_model,
        device="cpu",
        dtype="float32",
        probe_rate=0.5,
        segment_tokens=4,
        max_tokens=20,
        repetition_guard=False,
    )


def test_usage_counts_on_real_tokenizers(tiny_pair: ChatMentorCollab) -> None:
    message = tiny_pair.invoke([SystemMessage("You count."), HumanMessage("Count the apples.")])
    prompt = [{"role": "system", "content": "You count."}, {"role": "user", "content": "Count the apples."}]
    generator, mentor = tiny_pair._backend("generator"), tiny_pair._backend("mentor")
    record = message.response_metadata["mentorcollab"]
    stats = record["stats"]
    usage = message.usage_metadata
    assert usage["input_tokens"] == len(generator.prompt_ids(prompt)) > 0
    assert usage["output_tokens"] == stats["generator_tokens_committed"] + stats["mentor_tokens_committed"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert stats["probes"] > 0
    assert record["mentor_usage"] == {
        "input_tokens": len(mentor.prompt_ids(prompt)),
        "output_tokens": stats["mentor_tokens_generated"],
        "committed_tokens": stats["mentor_tokens_committed"],
        "read_tokens": stats["mentor_tokens_read"],
        "cached_tokens": 0,  # transformers keeps no cache between requests
    }
    # The mentor read at least its prompt (once) to be probed.
    assert stats["mentor_tokens_read"] >= len(mentor.prompt_ids(prompt))
    streamed = list(tiny_pair.stream([SystemMessage("You count."), HumanMessage("Count the apples.")]))
    assert merge(streamed).usage_metadata == message.usage_metadata
    assert merge(streamed).content == message.content


@pytest.mark.slow  # a few seconds: kept out of the fast set
async def test_concurrent_ainvoke_matches_sequential_calls(tiny_pair: ChatMentorCollab) -> None:
    seeds = (1, 2)
    sequential = [(await tiny_pair.ainvoke("Tell me about apples.", seed=seed)) for seed in seeds]
    concurrent = await asyncio.gather(*(tiny_pair.ainvoke("Tell me about apples.", seed=seed) for seed in seeds))
    for alone, together in zip(sequential, concurrent, strict=True):
        assert together.content == alone.content
        assert together.response_metadata["mentorcollab"]["spans"] == alone.response_metadata["mentorcollab"]["spans"]
    threaded: list[Any] = [None, None]

    def call(index: int) -> None:
        threaded[index] = tiny_pair.invoke("Tell me about apples.", seed=seeds[index])

    threads = [threading.Thread(target=call, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [message.content for message in threaded] == [message.content for message in sequential]
    batched = tiny_pair.batch(["Tell me about apples."] * 2, config={"max_concurrency": 2})
    assert [message.content for message in batched] == [tiny_pair.invoke("Tell me about apples.").content] * 2


@pytest.mark.slow  # a few seconds: kept out of the fast set
async def test_temperature_per_call_samples_and_the_seed_fixes_the_draws(tiny_pair: ChatMentorCollab) -> None:
    greedy = tiny_pair.invoke("Tell me about apples.", seed=1).content
    hot = [tiny_pair.invoke("Tell me about apples.", seed=seed, temperature=1.5).content for seed in (1, 2, 3)]
    assert hot[0] != greedy and len(set(hot)) > 1
    concurrent = await asyncio.gather(
        *(tiny_pair.ainvoke("Tell me about apples.", seed=seed, temperature=1.5) for seed in (1, 2, 3))
    )
    assert [message.content for message in concurrent] == hot
    hot_model = ChatMentorCollab(**{**tiny_pair.model_dump(), "temperature": 1.5})
    assert hot_model.invoke("Tell me about apples.", seed=2).content == hot[1]


# -- cancellation --------------------------------------------------------------------------------


class DelayedBackend:
    """A scripted model that takes ``delay`` seconds per call, so a run lasts long enough to cancel."""

    def __init__(self, inner: ScriptedBackend, delay: float) -> None:
        self.inner = inner
        self.delay = delay

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    def open(self, prompt: Any, style: str = "chat", sampling: Sampling = GREEDY) -> Any:
        cursor = self.inner.open(prompt, style, sampling)
        delay = self.delay

        class Cursor:
            def next_word(self, text: str, max_tokens: int, with_confidence: bool = False) -> Piece:
                time.sleep(delay)
                return cursor.next_word(text, max_tokens, with_confidence)

            def generate(self, text: str, max_tokens: int, stop: Sequence[str] = ()) -> Piece:
                time.sleep(delay)
                return cursor.generate(text, max_tokens, stop)

            def label_logprobs(self, text: str, labels: Sequence[str]) -> list[float]:
                return cursor.label_logprobs(text, labels)

            def hidden_state(self, text: str) -> list[float]:
                return cursor.hidden_state(text)

            def close(self) -> None:
                cursor.close()

        return Cursor()


LONG_ANSWER = " ".join(f"word{index}" for index in range(400))


def slow_model() -> tuple[ChatMentorCollab, ScriptedBackend]:
    generator = ScriptedBackend(LONG_ANSWER, name="slow-generator")
    model = ChatMentorCollab(
        generator=DelayedBackend(generator, 0.01),
        mentor=ScriptedBackend(LONG_ANSWER, name="mentor"),
        probe_rate=0.0,
        max_tokens=400,
    )
    return model, generator


async def settled_calls(backend: ScriptedBackend) -> int:
    """The backend's call count once it stops growing (fails if it keeps growing)."""
    for _ in range(20):
        before = backend.calls
        await asyncio.sleep(0.1)
        if backend.calls == before:
            return before
    raise AssertionError("the backend kept being called after the caller went away")


async def test_leaving_an_astream_stops_generation() -> None:
    model, generator = slow_model()
    stream = model.astream("go")
    received = [await anext(stream) for _ in range(3)]
    assert all(chunk.content for chunk in received)
    await stream.aclose()
    calls = await settled_calls(generator)
    assert calls < 50, f"the run went on after the stream was closed ({calls} calls of 400)"


async def test_cancelling_an_astream_task_stops_generation() -> None:
    model, generator = slow_model()
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in model.astream("go"):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    calls = await settled_calls(generator)
    assert calls < 50, f"the run went on after the task was cancelled ({calls} calls of 400)"


async def test_cancelling_an_ainvoke_stops_generation_and_keeps_the_loop_free() -> None:
    model, generator = slow_model()
    task = asyncio.create_task(model.ainvoke("go"))
    ticks = 0
    while generator.calls < 5:
        await asyncio.sleep(0.01)  # the loop keeps running while the model works
        ticks += 1
    assert ticks >= 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await settled_calls(generator) < 50


def test_leaving_a_sync_stream_stops_generation() -> None:
    model, generator = slow_model()
    stream = model.stream("go")
    for _ in range(3):
        next(stream)
    stream.close()
    calls = generator.calls
    time.sleep(0.1)
    assert generator.calls == calls < 10


# -- tools ---------------------------------------------------------------------------------------


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as 2 * (3 + 4)."""
    return expression


def weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


WEATHER_CALL = '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TOOL_ANSWER = 'Let me compute. <tool_call>\n{"name": "calculator", "arguments": {"expression": "2 * 21"}}\n</tool_call>'


def test_bound_tools_produce_parsed_tool_calls() -> None:
    model = scripted_model(probe_rate=0.0, probe_first_word=False, generator_answer=TOOL_ANSWER)
    model = model.bind_tools([calculator, weather])
    message = model.invoke("What is 2 * 21?")
    assert [(call["name"], call["args"]) for call in message.tool_calls] == [("calculator", {"expression": "2 * 21"})]
    assert message.content == "Let me compute."
    assert message.response_metadata["finish_reason"] == "tool_calls"
    prompt = model.bound.generator.prompts[-1]  # the tools go with the prompt, for each model to render
    assert isinstance(prompt, Conversation)
    assert [tool["function"]["name"] for tool in prompt.tools] == ["calculator", "weather"]
    assert '"name": "calculator"' in render_plain(prompt, "chat") and "<tool_call>" in render_plain(prompt, "chat")

    chunks = list(model.stream("What is 2 * 21?"))
    full = merge(chunks)
    assert [(call["name"], call["args"]) for call in full.tool_calls] == [("calculator", {"expression": "2 * 21"})]
    assert full.content == "Let me compute."  # streamed before the call began, and not repeated
    assert chunks[0].content == "Let"  # text before the call still streams as it comes


def test_tool_choice_forces_the_named_tool() -> None:
    model = scripted_model(
        probe_rate=0.0,
        generator_answer='<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    )
    forced = model.bind_tools([calculator, weather], tool_choice="calculator")
    message = forced.invoke("Weather in Paris?")
    # The answer was started as a call of calculator; the model only wrote the argument's value.
    assert [call["name"] for call in message.tool_calls] == ["calculator"]
    assert message.response_metadata["mentorcollab"]["prefix"].startswith('<tool_call>\n{"name": "calculator"')
    streamed = merge(list(forced.stream("Weather in Paris?")))
    streamed_calls = [(call["name"], call["args"]) for call in streamed.tool_calls]
    assert streamed_calls == [(call["name"], call["args"]) for call in message.tool_calls]
    assert streamed.content == message.content == ""
    with pytest.raises(ValueError, match="not one of the bound tools"):
        model.bind_tools([calculator], tool_choice="search")
    unforced = model.bind_tools([calculator, weather], tool_choice="none").invoke("Weather?")
    assert unforced.tool_calls == [] and "<tool_call>" in unforced.content
    assert not isinstance(model.generator.prompts[-1], Conversation), "tool_choice='none' hides the tools"


@pytest.mark.parametrize(
    "call", ['{"name": "calculator", "arguments": 42}', '{"name": "search", "arguments": {}}', "{oops"]
)
def test_unparseable_tool_calls_become_invalid_tool_calls(call: str) -> None:
    block = f"<tool_call>\n{call}\n</tool_call>"
    model = scripted_model(probe_rate=0.0, probe_first_word=False, generator_answer=block).bind_tools([calculator])
    message = model.invoke("?")
    assert message.tool_calls == [] and len(message.invalid_tool_calls) == 1
    assert message.invalid_tool_calls[0]["args"] == block  # as the model wrote it
    streamed = merge(list(model.stream("?")))  # LangChain reads the calls out of the chunks alike
    assert streamed.tool_calls == [] and streamed.invalid_tool_calls[0]["args"] == block


def without_times(metadata: dict[str, Any]) -> dict[str, Any]:
    record = metadata["mentorcollab"]
    stats = {key: value for key, value in record["stats"].items() if key not in {"seconds", "wall_seconds"}}
    return metadata | {"mentorcollab": record | {"stats": stats}}


@pytest.mark.parametrize(
    ("answer", "tools", "tool_choice"),
    [
        (GENERATOR_ANSWER, [], None),
        (TOOL_ANSWER, [calculator, weather], None),
        ('Sure {"name": "calculator", "arguments": {"expression": "1"}} thanks', [calculator], None),
        (WEATHER_CALL, [calculator, weather], "calculator"),
        ("Just text { here } ok", [calculator], "none"),
    ],
)
def test_invoke_is_the_merged_stream(answer: str, tools: list[Any], tool_choice: str | None) -> None:
    model: Any = scripted_model(generator_answer=answer)
    if tools:
        model = model.bind_tools(tools, tool_choice=tool_choice)
    invoked = model.invoke("q")
    chunks = list(model.stream("q"))
    streamed = merge(chunks)
    assert streamed.content == invoked.content and streamed.usage_metadata == invoked.usage_metadata
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [(c["name"], c["args"]) for c in invoked.tool_calls]
    streamed.response_metadata.pop("mentorcollab_stream", None)  # per-chunk provenance: the stream's own
    assert without_times(streamed.response_metadata) == without_times(invoked.response_metadata)


def test_answer_message_and_text_chunk_answer_as_the_chat_model_does() -> None:
    generator, mentor = ScriptedBackend(GENERATOR_ANSWER, name="g"), ScriptedBackend(MENTOR_ANSWER, name="m")
    model = ChatMentorCollab(
        generator=generator, mentor=mentor, verifier="always-mentor", probe_rate=1.0, segment_tokens=3
    )
    config, prompt = model.collab_config(), [{"role": "user", "content": "q"}]
    state = CollabState()
    events = list(collaborate(prompt, generator, mentor, verifier="always-mentor", config=config, state=state))
    message = answer_message(state, prompt=prompt, config=config, generator=generator, mentor=mentor,
                             verifier_name="always-mentor", message_id="answer-1")
    invoked = model.invoke("q")
    assert message.id == "answer-1" and message.content == invoked.content
    assert message.usage_metadata == invoked.usage_metadata
    assert without_times(message.response_metadata) == without_times(invoked.response_metadata)
    streamed = [(chunk.content, chunk.response_metadata) for chunk in model.stream("q") if chunk.content]
    chunks = [text_chunk(event) for event in events if isinstance(event, TextCommitted)]
    assert [(chunk.content, chunk.response_metadata) for chunk in chunks] == streamed


# -- structured output ---------------------------------------------------------------------------


class Joke(BaseModel):
    setup: str = Field(description="question to set up a joke")
    punchline: str = Field(description="answer to resolve the joke")


class ContinuationBackend:
    """A generator that writes ``continuation`` word by word after whatever start it is given."""

    model_name = "continuation"

    def __init__(self, continuation: str) -> None:
        self.words = ScriptedBackend(continuation).words
        self.prompts: list[Any] = []

    def open(self, prompt: Any, style: str = "chat", sampling: Sampling = GREEDY) -> Any:
        words = self.words
        self.prompts.append(prompt)

        class Cursor:
            written = 0

            def next_word(self, text: str, max_tokens: int, with_confidence: bool = False) -> Piece:
                if self.written >= len(words):
                    return Piece("", 0, eos=True)
                self.written += 1
                return Piece(words[self.written - 1], 1)

            def close(self) -> None:
                pass

        return Cursor()


def continuation_model(continuation: str) -> tuple[ChatMentorCollab, ContinuationBackend]:
    generator = ContinuationBackend(continuation)
    return ChatMentorCollab(generator=generator, mentor=ScriptedBackend("unused"), probe_rate=0.0), generator


# The chat model starts a structured answer with '{"setup": "' itself; the model writes the rest.
JOKE_REST = 'Why did the cat sit on the computer?", "punchline": "To keep an eye on the mouse."} Enjoy!'


def test_structured_output_returns_a_validated_pydantic_object() -> None:
    model, generator = continuation_model(JOKE_REST)
    joke = model.with_structured_output(Joke).invoke("Tell me a joke about cats.")
    assert joke == Joke(setup="Why did the cat sit on the computer?", punchline="To keep an eye on the mouse.")
    system = generator.prompts[-1][0]
    assert '"punchline"' in system["content"] and "JSON" in system["content"]
    streamed = list(model.with_structured_output(Joke).stream("Tell me a joke about cats."))
    assert streamed == [joke]
    as_dict = model.with_structured_output(Joke.model_json_schema()).invoke("joke")
    assert as_dict == joke.model_dump()


def test_structured_output_by_function_calling() -> None:
    # The chat model starts the call itself, down to the first key; the model writes the values.
    model = ChatMentorCollab(generator=ContinuationBackend('A", "punchline": "B"}}\n</tool_call> more'),
                             mentor=ScriptedBackend("unused"), probe_rate=0.0)
    result = model.with_structured_output(Joke, method="function_calling", include_raw=True).invoke("joke")
    assert result["parsed"] == Joke(setup="A", punchline="B") and result["parsing_error"] is None
    assert isinstance(result["raw"], AIMessage) and result["raw"].tool_calls[0]["name"] == "Joke"
    assert result["raw"].response_metadata["mentorcollab"]["text"].endswith('"punchline": "B"}}\n')


def test_invalid_structured_output_fails_with_the_raw_text() -> None:
    model, _ = continuation_model('only a setup"}')
    with pytest.raises(StructuredOutputError, match="punchline") as caught:
        model.with_structured_output(Joke).invoke("joke")
    assert caught.value.llm_output == '{"setup": "only a setup"}'
    result = model.with_structured_output(Joke, include_raw=True).invoke("joke")
    assert result["parsed"] is None and isinstance(result["parsing_error"], StructuredOutputError)
    assert result["raw"].content == '{"setup": "only a setup"}'


def test_tool_call_forms_are_parsed() -> None:
    from mentorcollab_langchain.chat.tool_calls import parse_tool_calls

    names = ["calculator", "weather"]
    content, calls, invalid = parse_tool_calls(
        '```json\n{"name": "weather", "parameters": {"city": "Oslo"}}\n```', names
    )
    assert (content, [(c["name"], c["args"]) for c in calls], invalid) == ("", [("weather", {"city": "Oslo"})], [])
    content, calls, _ = parse_tool_calls(
        'Sure. {"name": "calculator", "arguments": "{\\"expression\\": \\"1+1\\"}"}', names
    )
    assert content == "Sure." and calls[0]["args"] == {"expression": "1+1"}
    # a call cut off by the token limit is read as far as it goes
    _, calls, _ = parse_tool_calls('<tool_call>\n{"name": "weather", "arguments": {"city": "Os', names)
    assert calls[0]["args"] == {"city": "Os"}
    # JSON that is not a call of a bound tool stays text; a tagged call of an unknown tool is invalid
    assert parse_tool_calls('{"name": "search", "arguments": {}}', names)[1] == []
    _, calls, invalid = parse_tool_calls('<tool_call>{"name": "search", "arguments": {}}</tool_call>', names)
    assert calls == [] and invalid[0]["name"] == "search" and "unknown tool" in invalid[0]["error"]
