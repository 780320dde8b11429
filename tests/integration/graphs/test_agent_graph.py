"""The agent of examples/agent_graph.py on the real default models (slow: about a minute on two CPU cores).

SmolLM2-135M-Instruct writes and Qwen2.5-Coder-1.5B-Instruct mentors, as ``ChatMentorCollab`` does by
default. The first answer's ``tool_choice`` forces the call, the way a user makes a 135M model use a tool;
the values in it are the models' own.
"""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from mentorcollab_langchain.backends import make_backend
from mentorcollab_langchain.engine import CollabConfig
from mentorcollab_langchain.models.registry import DEFAULT_GENERATOR, DEFAULT_MENTOR
from tests.paths import load_example

pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_the_default_models_call_the_tool_with_valid_arguments_and_each_turn_shows_the_method() -> None:
    example = load_example("agent_graph")

    # Every word probed, so every turn asks the mentor; short answers keep it to about a minute.
    config = CollabConfig(probe_rate=1.0, max_new_tokens=24, seed=0)
    agent = example.build_agent(make_backend(DEFAULT_GENERATOR), make_backend(DEFAULT_MENTOR), config=config)
    turns = example.run_traced(agent, {"messages": [HumanMessage("What is 17 times 23?")], "tool_choice": "multiply"})
    print(example.describe(turns))

    assert [turn.node for turn in turns][:3] == ["model", "tools", "model"]
    call = turns[0].update["messages"][-1]
    assert isinstance(call, AIMessage) and len(call.tool_calls) == 1 and not call.invalid_tool_calls
    args = call.tool_calls[0]["args"]
    assert call.tool_calls[0]["name"] == "multiply" and set(args) == {"a", "b"}
    assert all(isinstance(value, int) for value in args.values())  # valid arguments: the tool's schema
    result = turns[1].update["messages"][-1]
    assert isinstance(result, ToolMessage) and result.content == str(args["a"] * args["b"])  # the tool ran
    assert result.status == "success"
    # The forced choice was the first answer's only: the loop ended, with an answer that calls nothing
    # (or at the agent's round limit, should a small model keep calling).
    last = turns[-1]
    at_round_limit = len(turns) == 2 * example.MAX_TOOL_ROUNDS + 1
    assert last.node == "model" and (not last.update["messages"][-1].tool_calls or at_round_limit)
    for turn in turns[::2]:
        assert turn.steps[0] == "prepare" and turn.steps[-1] == "finish" and "probe" in turn.steps
