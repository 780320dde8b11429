"""Tools for the graph's answers, offered and read back exactly as ``ChatMentorCollab`` does (``chat.tools``).

A graph gets its tools when it is built (``build_mentorcollab_graph(..., tools=[...])``), as a chat model
gets them from ``bind_tools``, so it can be the model step of a tool-calling agent (``ToolNode`` and the
usual loop, ``examples/agent_graph.py``). Each answer's ``tool_choice`` comes with its input: it is data
of one answer, like a per-call option, and the graph clears it when it answers, so an agent that forces
a call on its first turn answers freely once the tool has run.

The same pieces as the chat model's, in the same order: the tools travel with the prompt (each backend
renders them its own way), the answer is shaped by the one decision the chat model takes too
(``answer_format``: a forced call's instruction, start, grammar and closing stop, or calls-or-prose with
the first word probed), and the finished text is read back into ``AIMessage.tool_calls``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage

from mentorcollab_langchain.backends.base import Conversation, Prompt
from mentorcollab_langchain.chat import tool_calls
from mentorcollab_langchain.chat import tools as chat_tools

Tools = tuple[dict[str, Any], ...]


def bound_tools(tools: Sequence[Any]) -> Tools:
    """``tools`` (LangChain tools, functions, pydantic classes, dicts) in OpenAI's format, each checked
    as ``bind_tools`` checks it: a malformed tool fails when the graph is built."""
    return tuple(chat_tools.openai_tools(tools))


def names(tools: Tools) -> list[str]:
    return [chat_tools.tool_name(tool) for tool in tools]


def normalize_choice(tools: Tools, tool_choice: Any) -> str | None:
    """An answer's ``tool_choice`` in the spellings ``bind_tools`` takes, as ``auto``/``none``/``required``
    or a tool's name; ``None`` without tools (there is nothing to choose)."""
    return chat_tools.normalize_tool_choice(tool_choice, names(tools)) if tools else None


def offered(tools: Tools, choice: str | None) -> Tools:
    """The tools an answer is shown: none with ``tool_choice="none"``."""
    return () if choice == "none" else tools


def answer_format(tools: Tools, choice: str | None) -> chat_tools.AnswerFormat:
    """How the answer is shaped, decided as the chat model decides it (``chat.tools.answer_format``): a
    forced call's instruction, start, grammar and closing stop, or calls-or-prose with the first word
    probed when the model may choose."""
    return chat_tools.answer_format(choice, tools)


def prompt(request: Prompt, tools: Tools, choice: str | None) -> Prompt:
    """What the cursors open on: the request with the offered tools, which each backend renders itself."""
    shown = offered(tools, choice)
    if not shown or isinstance(request, str):
        return request
    return Conversation(tuple(request), shown)


def with_tool_calls(message: AIMessage, tools: Tools, choice: str | None) -> AIMessage:
    """The answer with the calls it wrote read into ``tool_calls`` (and ``invalid_tool_calls``), and the
    rest as its content, as the chat model gives it; its record names the start the graph wrote itself."""
    shown = offered(tools, choice)
    if not shown:
        return message
    content, calls, invalid = tool_calls.parse_tool_calls(str(message.content), names(shown))
    metadata = dict(message.response_metadata)
    metadata["mentorcollab"] = {**metadata.get("mentorcollab", {}), "prefix": answer_format(tools, choice).prefix}
    if not calls and not invalid:
        return message.model_copy(update={"response_metadata": metadata})
    if calls:
        metadata["finish_reason"] = "tool_calls"
    return AIMessage(
        content=content,
        tool_calls=calls,
        invalid_tool_calls=invalid,
        response_metadata=metadata,
        usage_metadata=message.usage_metadata,
        id=message.id,
    )
