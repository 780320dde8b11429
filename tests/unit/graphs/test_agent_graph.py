"""The MentorCollab graph as the model step of a tool-calling agent (examples/agent_graph.py), on scripted models.

The scripted models write a call before the tool has answered and prose after, and the mentor words
each answer differently from the generator, so every agent turn holds a divergence at a known word.
The same agent runs on the real default models in tests/integration/graphs/test_agent_graph.py.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from graphs import build_mentorcollab_graph
from mentorcollab_langchain.backends import ScriptedBackend
from mentorcollab_langchain.backends.base import Conversation
from mentorcollab_langchain.backends.sampling import GREEDY, Sampling
from mentorcollab_langchain.chat import ChatMentorCollab
from mentorcollab_langchain.engine import CollabConfig
from tests.paths import load_example

CALL = '<tool_call>\n{"name": "multiply", "arguments": {"a": 17, "b": 23}}\n</tool_call>'
# Each model's answer before the tool has run, and after. The mentor diverges at the second word each time.
GENERATOR_TURNS = (f"I will call the tool. {CALL}", "The product is 391.")
MENTOR_TURNS = (f"I shall call the tool. {CALL}", "The answer is 391.")
# Every word probed: the divergence is certain, whatever the seed.
CONFIG = CollabConfig(probe_rate=1.0, segment_tokens=3, seed=1, max_new_tokens=60)
QUESTION = "What is 17 times 23?"


class TurnsBackend:
    """A scripted model that writes its first answer until a tool has answered in the prompt, then its second."""

    def __init__(self, turns: tuple[str, str], name: str) -> None:
        self.name = name
        self.turns = tuple(ScriptedBackend(answer, name=name) for answer in turns)
        self.prompts: list[Any] = []

    @property
    def model_name(self) -> str:
        return self.name

    def open(self, prompt: Any, style: str = "chat", sampling: Sampling = GREEDY) -> Any:
        self.prompts.append(prompt)
        messages = prompt.messages if isinstance(prompt, Conversation) else prompt
        answered = any(message["role"] == "tool" for message in messages)
        return self.turns[answered].open(prompt, style, sampling)


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example("agent_graph")


def models() -> tuple[TurnsBackend, TurnsBackend]:
    return TurnsBackend(GENERATOR_TURNS, "gen"), TurnsBackend(MENTOR_TURNS, "men")


def test_the_agent_runs_the_tool_and_each_turn_shows_probe_lookahead_and_verify(example: ModuleType) -> None:
    agent = example.build_agent(*models(), config=CONFIG, verifier="always-mentor")
    turns = example.run_traced(agent, {"messages": [HumanMessage(QUESTION)]})
    assert [turn.node for turn in turns] == ["model", "tools", "model"]
    call = turns[0].update["messages"][-1]
    assert [(c["name"], c["args"]) for c in call.tool_calls] == [("multiply", {"a": 17, "b": 23})]
    assert call.content == "I shall call the tool."  # the mentor's words were adopted, the call read out
    result = turns[1].update["messages"][-1]
    assert isinstance(result, ToolMessage) and result.content == "391"
    assert result.tool_call_id == call.tool_calls[0]["id"]
    answer = turns[2].update["messages"][-1]
    assert answer.content == "The answer is 391." and not answer.tool_calls
    for model_turn in (turns[0], turns[2]):
        steps = model_turn.steps
        assert steps[0] == "prepare" and steps[-1] == "finish"
        assert {"probe", "lookahead", "verify"} <= set(steps)
        assert steps.index("lookahead") == steps.index("verify") - 1
    assert turns[1].steps == []  # the tool node is no subgraph
    printed = example.describe(turns)
    assert printed.count("model  steps: prepare") == 2 and "calls multiply({'a': 17, 'b': 23})" in printed


def test_a_forced_call_is_made_once_then_the_model_answers_freely(example: ModuleType) -> None:
    """``tool_choice`` forces the first answer's call; the graph clears it, so the second answer is free."""
    generator, mentor = TurnsBackend(("I am not sure.", "It is late."), "gen"), TurnsBackend(("Hmm.", "Late."), "men")

    @tool
    def clock() -> str:
        """The time now."""
        return "23:00"

    model = build_mentorcollab_graph(generator, mentor, config=CONFIG, verifier="never-mentor", tools=[clock])
    result = model.invoke({"messages": [HumanMessage("What time is it?")], "tool_choice": "any"})
    call = result["answer"]
    # A tool without parameters: the forced start is the whole call, whatever the model writes next.
    assert [(c["name"], c["args"]) for c in call.tool_calls] == [("clock", {})]
    assert call.response_metadata["finish_reason"] == "tool_calls"
    assert call.response_metadata["mentorcollab"]["prefix"].startswith("<tool_call>")
    assert result["tool_choice"] is None  # cleared for the next answer
    opened = generator.prompts[0]
    assert isinstance(opened, Conversation) and [t["function"]["name"] for t in opened.tools] == ["clock"]
    assert "You must call the function clock now." in opened.messages[0]["content"]
    # The next answer, after the tool's result, is free: no instruction, no forced start.
    follow_up = [*result["messages"], ToolMessage("23:00", tool_call_id=call.tool_calls[0]["id"])]
    answer = model.invoke({"messages": follow_up})["answer"]
    assert answer.content == "It is late." and not answer.tool_calls
    assert not any("must call" in message["content"] for message in generator.prompts[-1].messages)


def test_tools_reach_the_models_and_come_back_as_the_chat_models_do() -> None:
    """The graph offers the tools and reads the call exactly as ``ChatMentorCollab.bind_tools`` does."""

    @tool
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    messages = [HumanMessage(QUESTION)]
    graph_models, chat_models = models(), models()
    graph = build_mentorcollab_graph(*graph_models, config=CONFIG, verifier="always-mentor", tools=[multiply])
    graph_answer = graph.invoke({"messages": messages, "tool_choice": "auto"})["answer"]
    chat = ChatMentorCollab(generator=chat_models[0], mentor=chat_models[1], verifier="always-mentor",
                            probe_rate=1.0, segment_tokens=3, seed=1, max_tokens=60)
    chat_answer: AIMessage = chat.bind_tools([multiply], tool_choice="auto").invoke(messages)
    assert graph_models[0].prompts[0] == chat_models[0].prompts[0]
    assert graph_answer.content == chat_answer.content
    assert [(c["name"], c["args"]) for c in graph_answer.tool_calls] == [
        (c["name"], c["args"]) for c in chat_answer.tool_calls
    ]
    assert graph_answer.response_metadata["finish_reason"] == chat_answer.response_metadata["finish_reason"]
    assert graph_answer.usage_metadata == chat_answer.usage_metadata


def test_an_answer_offered_tools_reaches_the_messages_stream_once_with_its_calls(example: ModuleType) -> None:
    """Streamed text would hide the calls (LangGraph sends a message once per id), so it waits for the end."""
    agent = example.build_agent(*models(), config=CONFIG, verifier="always-mentor")
    streamed = [
        message
        for message, _ in agent.stream({"messages": [HumanMessage(QUESTION)]}, stream_mode="messages")
        if isinstance(message, AIMessage)
    ]
    assert [bool(message.tool_calls) for message in streamed] == [True, False]


@pytest.mark.parametrize("choice", ["auto", "multiply", "required", "none"])
def test_the_graph_shapes_each_answer_as_the_chat_model_does(choice: str) -> None:
    """One decision (``chat.tools.answer_format``) shapes both: the same prompt, grammar, forced start and
    first-word probe for every ``tool_choice``."""

    @tool
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    def pair() -> tuple[ScriptedBackend, ScriptedBackend]:
        return ScriptedBackend("The answer is 391 .", name="gen"), ScriptedBackend("It is 391 .", name="men")

    messages = [HumanMessage(QUESTION)]
    graph_models, chat_models = pair(), pair()
    graph = build_mentorcollab_graph(*graph_models, config=CollabConfig(probe_rate=0.0, max_new_tokens=16),
                                     verifier="never-mentor", tools=[multiply])
    graph_answer = graph.invoke({"messages": messages, "tool_choice": choice})["answer"]
    chat = ChatMentorCollab(generator=chat_models[0], mentor=chat_models[1], verifier="never-mentor",
                            probe_rate=0.0, max_tokens=16)
    chat_answer = chat.bind_tools([multiply], tool_choice=choice).invoke(messages)
    assert graph_models[0].prompts == chat_models[0].prompts
    assert graph_models[0].grammars == chat_models[0].grammars and graph_models[1].grammars == chat_models[1].grammars
    assert (graph_models[0].grammars[0] is None) == (choice == "none")
    graph_record, chat_record = (answer.response_metadata["mentorcollab"] for answer in (graph_answer, chat_answer))
    assert graph_record["text"] == chat_record["text"] and graph_record["prefix"] == chat_record["prefix"]
    assert graph_record["stats"]["probes"] == chat_record["stats"]["probes"] == (choice == "auto")
