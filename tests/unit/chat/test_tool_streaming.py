"""Streaming with tools bound, the tool-call formats of other model families, and ``<think>`` reasoning.

A scripted generator writes exact answers (one word per call), so a test can tell when a chunk left
compared with how far the model had written; the mentor is never probed.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from langchain_core.messages import AIMessageChunk

from mentorcollab_langchain import ChatMentorCollab, ScriptedBackend
from mentorcollab_langchain.chat.reasoning import split_reasoning
from mentorcollab_langchain.chat.tool_calls import call_start, parse_tool_calls


def weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


PROSE = "Paris is the capital of France and it is often sunny there in the summer months ."
CALL = '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def scripted(answer: str) -> tuple[ChatMentorCollab, ScriptedBackend]:
    generator = ScriptedBackend(answer, name="scripted-generator")
    model = ChatMentorCollab(
        generator=generator, mentor=ScriptedBackend("unused"), probe_rate=0.0, probe_first_word=False, max_tokens=128
    )
    return model, generator


def streamed(model: ChatMentorCollab, generator: ScriptedBackend, **bind: object) -> list[tuple[str, int]]:
    """Each chunk's text with how many words the generator had written when it left."""
    stream = model.bind_tools([weather], **bind).stream("Tell me about Paris.")
    return [(chunk.text, generator.calls) for chunk in stream]


def merged(chunks: Sequence[AIMessageChunk]) -> AIMessageChunk:
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole = whole + chunk
    return whole


@pytest.mark.parametrize("tool_choice", ["auto", "none"])
def test_prose_streams_word_by_word_with_tools_bound(tool_choice: str) -> None:
    model, generator = scripted(PROSE)
    chunks = [(text, calls) for text, calls in streamed(model, generator, tool_choice=tool_choice) if text]
    total = generator.calls
    assert "".join(text for text, _ in chunks) == PROSE
    assert chunks[0][1] <= 2 < total  # the first word left when the model had written one or two
    assert len({calls for _, calls in chunks}) > 5  # and the rest as they were written, not all at the end


def test_text_before_a_call_streams_and_the_call_is_held_back() -> None:
    model, _ = scripted("Let me check the weather . " + CALL)
    chunks = list(model.bind_tools([weather]).stream("Weather in Paris?"))
    texts = [chunk.text for chunk in chunks]
    assert "".join(texts[:-1]) == "Let me check the weather ."  # no piece of the call was shown as text
    assert not any("<" in text or "{" in text for text in texts)
    whole = merged(chunks)
    assert [call["args"] for call in whole.tool_calls] == [{"city": "Paris"}]
    assert whole.content == "Let me check the weather ."


def test_markup_that_is_not_a_call_is_released_before_the_end() -> None:
    answer = "Use <b> bold </b> and {braces} freely in the text you write today ."
    model, generator = scripted(answer)
    chunks = [(chunk.text, generator.calls) for chunk in model.bind_tools([weather]).stream("Hi")]
    assert "".join(text for text, _ in chunks) == answer
    released = [calls for text, calls in chunks if "<b>" in text or "{braces}" in text]
    assert released and max(released) < generator.calls  # out before the model finished


@pytest.mark.parametrize(
    ("text", "start"),
    [("Hello there", None), ("a <b> c", None), ("x {y}", None), ("so <tool", 3), ('so {"na', 3),
     ("```", 0), ("```python", None), ("[TOOL_CA", 0), ("<|python", 0), ("see [1]", None), ("ok ```tool_co", 3),
     ("```tool_code\nweather(", 0)],
)
def test_where_a_call_may_begin(text: str, start: int | None) -> None:
    assert call_start(text) == start


# -- the formats of other model families -----------------------------------------------------------

NAMES = ["weather", "calculator"]


@pytest.mark.parametrize(
    ("answer", "expected", "content"),
    [
        # Llama 3.1: the python tag, a call or several separated by ";", to the end of the message.
        ('<|python_tag|>{"name": "weather", "parameters": {"city": "Paris"}}<|eom_id|>',
         [("weather", {"city": "Paris"})], ""),
        ('Checking.<|python_tag|>{"name": "weather", "parameters": {"city": "Oslo"}}; '
         '{"name": "calculator", "parameters": {"expression": "1+1"}}',
         [("weather", {"city": "Oslo"}), ("calculator", {"expression": "1+1"})], "Checking."),
        # Llama 3.2 and others: a bare JSON object, or a list of them.
        ('{"name": "weather", "parameters": {"city": "Rome"}}', [("weather", {"city": "Rome"})], ""),
        ('[{"name": "weather", "arguments": {"city": "Rome"}}, {"name": "weather", "arguments": {"city": "Bonn"}}]',
         [("weather", {"city": "Rome"}), ("weather", {"city": "Bonn"})], ""),
        # Mistral: a JSON list after the tag, or name[ARGS]{...} per call.
        ('[TOOL_CALLS] [{"name": "weather", "arguments": {"city": "Lima"}}]', [("weather", {"city": "Lima"})], ""),
        ('[TOOL_CALLS]weather[ARGS]{"city": "Kyiv"}[TOOL_CALLS]calculator[ARGS]{"expression": "2*3"}',
         [("weather", {"city": "Kyiv"}), ("calculator", {"expression": "2*3"})], ""),
        # OpenAI's wrapped form, arguments as a JSON string.
        ('{"type": "function", "function": {"name": "weather", "arguments": "{\\"city\\": \\"Nice\\"}"}}',
         [("weather", {"city": "Nice"})], ""),
        # Gemma 3: Python calls in a tool_code fence, alone, in print(...), a list, or one a line.
        ('```tool_code\nweather(city="Paris", days=3)\n```', [("weather", {"city": "Paris", "days": 3})], ""),
        ("I'll look that up.\n```tool_code\nprint(weather(city='London'))\n```\n", [("weather", {"city": "London"})],
         "I'll look that up."),
        ('```tool_code\n[weather(city="Rome"), calculator(expression="2*3")]\n```',
         [("weather", {"city": "Rome"}), ("calculator", {"expression": "2*3"})], ""),
        ('```tool_code\nweather(city="Oslo", units=["C", "F"])\ncalculator(expression="1+1")\n```',
         [("weather", {"city": "Oslo", "units": ["C", "F"]}), ("calculator", {"expression": "1+1"})], ""),
    ],
)
def test_tool_call_formats_of_other_families(answer: str, expected: list[tuple[str, dict]], content: str) -> None:
    text, calls, invalid = parse_tool_calls(answer, NAMES)
    assert [(call["name"], call["args"]) for call in calls] == expected and invalid == []
    assert text == content


def test_a_marked_call_of_an_unknown_tool_is_invalid_and_keeps_its_text() -> None:
    for answer in ('[TOOL_CALLS]search[ARGS]{"q": "x"}', '<|python_tag|>{"name": "search", "parameters": {}}'):
        text, calls, invalid = parse_tool_calls(answer, NAMES)
        assert calls == [] and text == ""
        assert invalid[0]["name"] == "search" and invalid[0]["args"] == answer


@pytest.mark.parametrize(
    ("answer", "name", "error"),
    [
        ('```tool_code\nweather("Paris")\n```', None, "weather: arguments must be named"),
        ('```tool_code\nweather(city=find_city())\n```', None, "not a Python literal"),
        ('```tool_code\nsearch(query="x")\n```', "search", "unknown tool 'search'"),
        ('```tool_code\nweather(city="Pa', None, "not Python calls"),  # cut off by the token limit
    ],
)
def test_a_gemma_block_that_is_not_a_call_of_a_bound_tool_is_invalid(answer: str, name: str | None, error: str) -> None:
    text, calls, invalid = parse_tool_calls(answer, NAMES)
    assert calls == [] and text == "" and len(invalid) == 1
    assert invalid[0]["name"] == name and error in invalid[0]["error"] and invalid[0]["args"] == answer


def test_a_gemma_call_streams_held_and_ends_as_a_tool_call() -> None:
    model, _ = scripted('Checking . ```tool_code\nweather(city="Paris")\n```')
    chunks = list(model.bind_tools([weather]).stream("Weather in Paris?"))
    assert "".join(chunk.text for chunk in chunks) == "Checking ."
    assert [call["args"] for call in merged(chunks).tool_calls] == [{"city": "Paris"}]


def test_a_llama_call_streams_held_and_ends_as_a_tool_call() -> None:
    model, _ = scripted('<|python_tag|>{"name": "weather", "parameters": {"city": "Paris"}}')
    chunks = list(model.bind_tools([weather]).stream("Weather in Paris?"))
    assert all(chunk.text == "" for chunk in chunks)
    assert [call["args"] for call in merged(chunks).tool_calls] == [{"city": "Paris"}]


# -- reasoning -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "reasoning", "content"),
    [
        ("<think>\nTwo and two.\n</think>\n\nIt is 4.", "Two and two.", "It is 4."),
        ("  <think>x</think>y", "x", "y"),
        ("<think>\n\n</think>\n\nIt is 4.", "", "It is 4."),  # Qwen3's empty block when thinking is off
        ("<think>cut off by the limit", "cut off by the limit", ""),
        ("It is 4. <think>not reasoning</think>", "", "It is 4. <think>not reasoning</think>"),
        (" <thi", "", " <thi"),
    ],
)
def test_a_think_block_that_opens_the_answer_is_reasoning(answer: str, reasoning: str, content: str) -> None:
    assert split_reasoning(answer) == (reasoning, content)


def test_reasoning_streams_apart_and_is_a_reasoning_content_block() -> None:
    answer = "<think> The user wants the weather . I will answer . </think> It is sunny ."
    model, _ = scripted(answer)
    chunks = list(model.stream("Weather?"))
    reasoning_chunks = [chunk for chunk in chunks if chunk.additional_kwargs.get("reasoning_content")]
    assert len(reasoning_chunks) > 3  # it streams word by word, not at the end
    whole = merged(chunks)
    assert whole.content == "It is sunny ."
    assert whole.additional_kwargs["reasoning_content"] == "The user wants the weather . I will answer ."
    invoked = model.invoke("Weather?")
    assert invoked.content == whole.content and invoked.additional_kwargs == whole.additional_kwargs
    blocks = invoked.content_blocks
    assert blocks[0] == {"type": "reasoning", "reasoning": "The user wants the weather . I will answer ."}
    assert blocks[1]["type"] == "text" and blocks[1]["text"] == "It is sunny ."
    # The record keeps the text as written, think block included.
    assert invoked.response_metadata["mentorcollab"]["text"] == answer


def test_a_call_after_reasoning_is_read_from_the_answer_only() -> None:
    model, _ = scripted('<think> I need {"name": "weather"} here . </think> ' + CALL)
    message = model.bind_tools([weather]).invoke("Weather in Paris?")
    assert [call["args"] for call in message.tool_calls] == [{"city": "Paris"}]
    assert message.content == "" and "weather" in message.additional_kwargs["reasoning_content"]
