"""Several tool calls in one answer, and ``parallel_tool_calls=False`` keeping only the first.

A scripted generator writes the answer, so the calls in it are exact; the mentor is never probed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage

from mentorcollab_langchain import ChatMentorCollab, ScriptedBackend


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as 2 * (3 + 4)."""
    return expression


def weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


def block(name: str, arguments: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


TWO_TOOLS = "I will check both. " + block("calculator", '{"expression": "2 * 21"}') + "\n" + block(
    "weather", '{"city": "Paris"}'
)
ONE_TOOL_TWICE = block("weather", '{"city": "Paris"}') + "\n" + block("weather", '{"city": "Oslo"}')
THREE_CALLS = TWO_TOOLS + "\n" + block("calculator", '{"expression": "1 + 1"}')


def model(answer: str) -> ChatMentorCollab:
    # The generator alone (no decision probe at the first word): these tests read the calls it writes.
    return ChatMentorCollab(generator=ScriptedBackend(answer, name="scripted-generator"),
                            mentor=ScriptedBackend("unused", name="scripted-mentor"), probe_rate=0.0,
                            probe_first_word=False, max_tokens=128)


def merge(chunks: Sequence[AIMessageChunk]) -> AIMessageChunk:
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    return full


def calls(message: AIMessage) -> list[tuple[str, dict[str, Any]]]:
    return [(call["name"], call["args"]) for call in message.tool_calls]


@pytest.mark.parametrize(
    ("answer", "expected", "content"),
    [
        (TWO_TOOLS, [("calculator", {"expression": "2 * 21"}), ("weather", {"city": "Paris"})], "I will check both."),
        (ONE_TOOL_TWICE, [("weather", {"city": "Paris"}), ("weather", {"city": "Oslo"})], ""),
        (THREE_CALLS, [("calculator", {"expression": "2 * 21"}), ("weather", {"city": "Paris"}),
                       ("calculator", {"expression": "1 + 1"})], "I will check both."),
    ],
    ids=["two-tools", "one-tool-twice", "three-calls"],
)
def test_every_call_in_an_answer_becomes_a_tool_call_with_its_own_id(
    answer: str, expected: list[tuple[str, dict[str, Any]]], content: str
) -> None:
    bound = model(answer).bind_tools([calculator, weather])
    message = bound.invoke("What is 2 * 21, and the weather in Paris?")
    assert calls(message) == expected  # in the order the model wrote them
    ids = [call["id"] for call in message.tool_calls]
    assert all(ids) and len(set(ids)) == len(ids), f"tool call ids must be distinct: {ids}"
    assert message.invalid_tool_calls == []
    assert message.content == content  # the calls are taken out of the text
    assert message.response_metadata["finish_reason"] == "tool_calls"
    streamed = merge(list(bound.stream("What is 2 * 21, and the weather in Paris?")))
    assert calls(streamed) == expected and streamed.content == content
    streamed_ids = [call["id"] for call in streamed.tool_calls]
    assert all(streamed_ids) and len(set(streamed_ids)) == len(streamed_ids)


@pytest.mark.parametrize("how", ["bound", "per-call"])
def test_parallel_tool_calls_false_keeps_only_the_first_call(how: str) -> None:
    chat = model(THREE_CALLS)
    if how == "bound":
        bound = chat.bind_tools([calculator, weather], parallel_tool_calls=False)
        options: dict[str, Any] = {}
    else:
        bound = chat.bind_tools([calculator, weather])
        options = {"parallel_tool_calls": False}
    message = bound.invoke("What is 2 * 21, and the weather in Paris?", **options)
    assert calls(message) == [("calculator", {"expression": "2 * 21"})]
    assert message.invalid_tool_calls == [] and message.response_metadata["finish_reason"] == "tool_calls"
    streamed = merge(list(bound.stream("What is 2 * 21, and the weather in Paris?", **options)))
    assert calls(streamed) == [("calculator", {"expression": "2 * 21"})]
    # parallel_tool_calls=True (or unset) keeps them all
    assert len(chat.bind_tools([calculator, weather], parallel_tool_calls=True).invoke("?").tool_calls) == 3


def test_parallel_tool_calls_false_keeps_the_first_block_even_when_it_is_invalid() -> None:
    """At most one call, the first the model wrote: a broken first call is not replaced by a later one,
    nor does a valid first call come with a later invalid one."""
    invalid_first = block("search", '{"query": "x"}') + "\n" + block("weather", '{"city": "Paris"}')
    message = model(invalid_first).bind_tools([calculator, weather], parallel_tool_calls=False).invoke("?")
    assert message.tool_calls == [] and [call["name"] for call in message.invalid_tool_calls] == ["search"]
    valid_first = block("weather", '{"city": "Paris"}') + "\n" + block("search", '{"query": "x"}')
    message = model(valid_first).bind_tools([calculator, weather], parallel_tool_calls=False).invoke("?")
    assert calls(message) == [("weather", {"city": "Paris"})] and message.invalid_tool_calls == []
    # with parallel calls allowed, both are reported, each where it belongs
    both = model(valid_first).bind_tools([calculator, weather]).invoke("?")
    assert calls(both) == [("weather", {"city": "Paris"})] and [c["name"] for c in both.invalid_tool_calls] == [
        "search"
    ]


def test_an_answer_to_both_calls_goes_back_to_the_models_as_both_calls_and_both_results() -> None:
    first = model(TWO_TOOLS).bind_tools([calculator, weather]).invoke("What is 2 * 21, and the weather in Paris?")
    follow_up = model("It is 42 and sunny.")
    bound = follow_up.bind_tools([calculator, weather])
    history = [
        HumanMessage("What is 2 * 21, and the weather in Paris?"),
        first,
        *[ToolMessage(result, tool_call_id=call["id"]) for call, result in zip(first.tool_calls, ["42", "sunny"],
                                                                                strict=True)],
    ]
    answer = bound.invoke(history)
    assert answer.content == "It is 42 and sunny." and answer.tool_calls == []
    turns = follow_up.generator.prompts[-1].messages  # the tools go with the prompt
    assert [turn["role"] for turn in turns] == ["user", "assistant", "tool", "tool"]
    assert turns[1]["content"] == "I will check both."
    assert [(call["id"], call["function"]) for call in turns[1]["tool_calls"]] == [
        (first.tool_calls[0]["id"], {"name": "calculator", "arguments": {"expression": "2 * 21"}}),
        (first.tool_calls[1]["id"], {"name": "weather", "arguments": {"city": "Paris"}}),
    ]
    assert [(turn["tool_call_id"], turn["content"]) for turn in turns[2:]] == [
        (first.tool_calls[0]["id"], "42"), (first.tool_calls[1]["id"], "sunny")
    ]
