"""A tool-calling agent whose model step is the MentorCollab graph, with LangGraph's ``ToolNode``, offline.

    python examples/agent_graph.py "What is 17 times 23?"
    python examples/agent_graph.py --tool-choice auto     # let the model decide whether to call

The agent is LangGraph's usual loop: ``model -> tools -> model`` until an answer calls no tool. Its
``model`` node is the MentorCollab graph itself, added as a subgraph and built with the tool
(``build_mentorcollab_graph(..., tools=[multiply])``), so the trace shows, under each agent turn, the
method's steps that wrote the answer: ``probe`` where the mentor was asked, ``lookahead`` and ``verify``
where the two models diverged. The trace is the agent's own stream with ``subgraphs=True``.

The first answer's ``tool_choice`` forces the call (by default): the 135M generator, asked freely,
tends to answer in prose with a wrong product. The MentorCollab graph clears the choice when it
answers, so after the tool has run the model answers freely.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

try:
    import graphs  # noqa: F401
except ModuleNotFoundError:  # run from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from typing_extensions import TypedDict

from graphs import ToolChoice, build_mentorcollab_graph
from mentorcollab_langchain.backends.base import Backend
from mentorcollab_langchain.engine import CollabConfig

# At most this many rounds of tool calls, then the agent ends: a small model may call tools forever.
MAX_TOOL_ROUNDS = 3


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


class AgentState(TypedDict):
    """The agent's state: the conversation, and the next answer's tool choice, which it shares with the
    MentorCollab graph (that clears it once it has answered)."""

    messages: Annotated[list[AnyMessage], add_messages]
    tool_choice: ToolChoice


def after_model(state: AgentState) -> Literal["tools", "__end__"]:
    """To the tools while the answer calls one (``tools_condition``), for at most ``MAX_TOOL_ROUNDS`` rounds."""
    rounds = sum(isinstance(message, ToolMessage) for message in state["messages"])
    return END if rounds >= MAX_TOOL_ROUNDS else tools_condition(state)


def build_agent(
    generator: Backend, mentor: Backend, *, config: CollabConfig | None = None, verifier: str | None = None
) -> Any:
    """The agent: the MentorCollab graph (with the tool) as its ``model`` node, ``ToolNode`` as ``tools``."""
    model = build_mentorcollab_graph(generator, mentor, verifier=verifier, config=config, tools=[multiply])
    builder = StateGraph(AgentState)
    builder.add_node("model", model)
    builder.add_node("tools", ToolNode([multiply]))
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", after_model, ["tools", END])
    builder.add_edge("tools", "model")
    return builder.compile(name="agent")


class Turn(NamedTuple):
    """One step of the agent: its node, the MentorCollab steps that ran under it, and its update."""

    node: str
    steps: list[str]
    update: dict[str, Any]


def run_traced(agent: Any, inputs: dict[str, Any], config: dict[str, Any] | None = None) -> list[Turn]:
    """Run the agent and return its turns, each with the subgraph's steps that ran under it.

    The agent's stream with ``subgraphs=True`` gives every node's update with its namespace: ``()`` for
    the agent's own nodes, ``("model:<task id>",)`` for the MentorCollab graph's nodes under a model
    turn. The agent's nodes run one at a time, so the steps seen since the last agent update are that
    turn's.
    """
    turns: list[Turn] = []
    steps: list[str] = []
    for namespace, chunk in agent.stream(inputs, config, stream_mode="updates", subgraphs=True):
        for node, update in chunk.items():
            if namespace:
                steps.append(node)
            else:
                turns.append(Turn(node, steps, update or {}))
                steps = []
    return turns


def describe(turns: Sequence[Turn]) -> str:
    """Each turn's news: a model turn's answer (the subgraph returns the whole conversation, the answer
    last) with the steps that wrote it, a tool turn's results."""
    lines = []
    for turn in turns:
        messages = turn.update.get("messages", [])
        if turn.node == "model" and messages and isinstance(answer := messages[-1], AIMessage):
            stats = answer.response_metadata.get("mentorcollab", {}).get("stats", {})
            lines.append(f"model  steps: {' '.join(turn.steps)}")
            lines.append(
                f"       probes {stats.get('probes', 0)}, divergences {stats.get('divergences', 0)}, "
                f"adoptions {stats.get('adoptions', 0)}"
            )
            calls = ", ".join(f"{call['name']}({call['args']})" for call in answer.tool_calls)
            lines.append(f"       {'calls ' + calls if calls else repr(answer.content)}")
        if turn.node == "tools":
            lines += [f"tools  {m.name} -> {m.content}" for m in messages if isinstance(m, ToolMessage)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[Turn]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("question", nargs="?", default="What is 17 times 23?")
    parser.add_argument("--generator", default="smollm2-135m-instruct")
    parser.add_argument("--mentor", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--tool-choice", default="multiply", help="the first answer's: multiply (forced), auto")
    parser.add_argument("--probe-rate", type=float, default=0.5)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args(argv)
    from mentorcollab_langchain.backends import make_backend

    agent = build_agent(
        make_backend(args.generator),
        make_backend(args.mentor),
        config=CollabConfig(probe_rate=args.probe_rate, max_new_tokens=args.max_tokens, seed=0),
    )
    turns = run_traced(agent, {"messages": [HumanMessage(args.question)], "tool_choice": args.tool_choice})
    print(describe(turns))
    return turns


if __name__ == "__main__":
    main(sys.argv[1:])
