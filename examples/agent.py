"""An agent with a calculator tool, built with ``langchain.agents.create_agent`` on ChatMentorCollab.

    python examples/agent.py "What is 17 * 23 + 4?"
    python examples/agent.py --mentor smollm2-135m-instruct --max-tokens 48   # quicker

The agent loop is LangChain's own: the chat model writes a ``<tool_call>`` (parsed into
``AIMessage.tool_calls``), the calculator runs, its result comes back as a tool message, and the model
answers. Every model turn is printed with the mentor's share, so you can see who wrote what.
"""

from __future__ import annotations

import argparse
import ast
import operator
import sys
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

_OPERATORS: dict[type, Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def evaluate(expression: str) -> float | int:
    """Arithmetic only (numbers, + - * / // % **, brackets): never ``eval``."""

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 100:
                raise ValueError("exponent too large")
            return _OPERATORS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](walk(node.operand))
        raise ValueError(f"not arithmetic: {ast.dump(node)[:60]}")

    return walk(ast.parse(expression.replace("^", "**"), mode="eval"))


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression, for example "17 * 23 + 4"."""
    try:
        return str(evaluate(expression))
    except (ValueError, SyntaxError, ZeroDivisionError, TypeError) as error:
        return f"Error: {error}"


SYSTEM_PROMPT = "You are a careful assistant. Use the calculator tool for arithmetic, then give the result."


def build_agent(model: BaseChatModel) -> Any:
    from langchain.agents import create_agent

    return create_agent(model, tools=[calculator], system_prompt=SYSTEM_PROMPT)


def describe(messages: Sequence[BaseMessage]) -> str:
    lines = []
    for message in messages:
        if isinstance(message, HumanMessage):
            lines.append(f"user: {message.content}")
        elif isinstance(message, AIMessage):
            record = message.response_metadata.get("mentorcollab", {})
            share = record.get("stats", {}).get("mentor_share", 0.0)
            calls = ", ".join(f"{call['name']}({call['args']})" for call in message.tool_calls)
            called = f" calls {calls}" if calls else ""
            lines.append(f"model (mentor share {share:.0%}): {message.content!r}{called}")
        elif isinstance(message, ToolMessage):
            lines.append(f"tool {message.name}: {message.content}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, model: BaseChatModel | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("question", nargs="?", default="What is 17 * 23 + 4?")
    parser.add_argument("--generator", default="smollm2-135m-instruct")
    parser.add_argument("--mentor", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--probe-rate", type=float, default=0.25)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=6, help="the most model and tool steps")
    args = parser.parse_args(argv)
    if model is None:
        from mentorcollab_langchain import ChatMentorCollab

        model = ChatMentorCollab(
            generator=args.generator, mentor=args.mentor, probe_rate=args.probe_rate, max_tokens=args.max_tokens
        )
    from langgraph.errors import GraphRecursionError

    agent = build_agent(model)
    state: dict[str, Any] = {"messages": [HumanMessage(args.question)]}
    ending = ""
    try:
        for values in agent.stream(state, config={"recursion_limit": args.max_steps}, stream_mode="values"):
            state = values  # the last values seen are the answer, or where the step limit stopped it
    except GraphRecursionError:
        ending = f"\n(stopped after {args.max_steps} steps without a final answer)"
    report = describe(state["messages"]) + ending
    print(report)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
