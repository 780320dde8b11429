"""ChatMentorCollab on the real packaged models (slow): the default mentor once, tools once, the context once."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage

from mentorcollab_langchain import ChatMentorCollab

pytestmark = pytest.mark.slow


def test_default_mentor_guides_and_the_stream_shows_it() -> None:
    model = ChatMentorCollab(
        generator="smollm2-135m-instruct",
        mentor="qwen2.5-coder-1.5b-instruct",
        probe_rate=0.5,
        segment_tokens=6,
        max_tokens=24,
        seed=3,
    )
    messages = [SystemMessage("Answer briefly, in plain words."), HumanMessage("What is 12 + 30?")]
    chunks: list[AIMessageChunk] = list(model.stream(messages))
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    record: dict[str, Any] = full.response_metadata["mentorcollab"]
    stats = record["stats"]
    assert stats["probes"] > 0 and stats["mentor_calls"] > 0
    assert full.content == record["text"]
    stream = full.response_metadata["mentorcollab_stream"]
    streamed_mentor = sum(p["end"] - p["start"] for p in stream if p["source"] == "mentor")
    assert streamed_mentor == sum(s["end"] - s["start"] for s in record["spans"] if s["source"] == "mentor")
    assert stats["adoptions"] == sum(d["choice"] == "mentor" for d in record["decisions"])
    assert full.usage_metadata["output_tokens"] == stats["tokens_committed"] <= 24 + 6
    mentor_usage = record["mentor_usage"]
    assert mentor_usage["input_tokens"] > 0 and mentor_usage["output_tokens"] == stats["mentor_tokens_generated"]
    # The same call again gives the same answer: greedy decoding and seeded probes.
    assert model.invoke(messages).content == full.content


def test_forced_tool_call_on_real_models() -> None:
    def magic_function(input: int) -> int:
        """Applies a magic function to an input."""
        return input + 2

    model = ChatMentorCollab(generator="smollm2-135m-instruct", mentor="gemma3-270m", probe_rate=0.2, max_tokens=24)
    forced = model.bind_tools([magic_function], tool_choice="any")
    message = forced.invoke("What is the value of magic_function(3)? Use the tool.")
    assert [call["name"] for call in message.tool_calls] == ["magic_function"]
    # The call is forced down to its first key, so it parses; what follows is the 135M model's own,
    # and it is not 3 (it copies the schema's "type": "integer"), so only the forced key is checked.
    assert "input" in message.tool_calls[0]["args"]
    assert message.response_metadata["finish_reason"] == "tool_calls"


def test_the_profiles_context_is_the_real_generators_limit() -> None:
    """A prompt just past ``profile["max_input_tokens"]`` fails as LangChain's ContextOverflowError on the
    packaged generator (llama.cpp on the CPU), before any word is written."""
    from langchain_core.exceptions import ContextOverflowError

    model = ChatMentorCollab(backend="llama.cpp", probe_rate=0.0, max_tokens=4)
    context = model.profile["max_input_tokens"]
    generator = model._backend("generator")
    prompt = "apple " * context
    assert len(generator.prompt_ids([{"role": "user", "content": prompt}])) > context
    with pytest.raises(ContextOverflowError, match=str(context)):
        model.invoke(prompt)


def test_a_tool_history_reaches_the_real_models_through_their_templates() -> None:
    """After a tool has run, the pair answers from its result, which nothing else in the conversation says:
    SmolLM2 reads it in a ``tool`` turn of its template, the Qwen mentor in its template's tool response
    (tests/unit/backends/test_prompts.py shows both renderings)."""
    from langchain_core.messages import AIMessage, ToolMessage

    def get_weather(city: str) -> str:
        """The current weather in a city."""
        return "Sunny, 21 degrees"

    model = ChatMentorCollab(generator="smollm2-135m-instruct", mentor="qwen2.5-coder-1.5b-instruct", max_tokens=24)
    history = [
        HumanMessage("What is the weather in Paris?"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_7"}]),
        ToolMessage("Sunny, 21 degrees", tool_call_id="call_7"),
    ]
    # The tools stay bound, as in an agent's loop; "none" asks for the final answer.
    answer = model.bind_tools([get_weather], tool_choice="none").invoke(history)
    assert answer.tool_calls == [] and "21 degrees" in str(answer.content)
    assert answer.usage_metadata["input_token_details"]["mentor_read"] > 0


def test_a_shared_system_prompt_is_read_once_and_the_answers_stay_the_same() -> None:
    """A RAG-style system prompt shared by two questions: the second call finds it in both models' prefix
    caches (``cache_read`` in its usage) and answers exactly as a model that reads every prompt whole."""
    from mentorcollab_langchain.backends import LlamaCppBackend

    facts = (f"Store {index} opens at {index % 12 + 1} o'clock and sells {index * 3} apples." for index in range(24))
    context = " ".join(facts)
    settings = {"probe_rate": 0.5, "segment_tokens": 4, "max_tokens": 16, "seed": 5}
    cached = ChatMentorCollab(generator="smollm2-135m-instruct", mentor="gemma3-270m", **settings)
    reading = ChatMentorCollab(
        generator=LlamaCppBackend("smollm2-135m-instruct", prefix_cache=False),
        mentor=LlamaCppBackend("gemma3-270m", prefix_cache=False),
        **settings,
    )

    def ask(model: ChatMentorCollab, question: str) -> Any:
        return model.invoke([SystemMessage(f"Answer from these facts. {context}"), HumanMessage(question)])

    first = ask(cached, "When does store 5 open?")
    assert first.usage_metadata["input_token_details"]["cache_read"] == 0
    second = ask(cached, "How many apples does store 7 sell?")
    record = second.response_metadata["mentorcollab"]
    assert second.usage_metadata["input_token_details"]["cache_read"] >= 128  # two prompt batches at least
    assert record["stats"]["probes"] > 0 and record["mentor_usage"]["cached_tokens"] >= 128
    alone = ask(reading, "How many apples does store 7 sell?")
    assert alone.usage_metadata["input_token_details"]["cache_read"] == 0
    assert second.content == alone.content
    assert record["decisions"] == alone.response_metadata["mentorcollab"]["decisions"]
