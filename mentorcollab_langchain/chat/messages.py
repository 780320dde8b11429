"""LangChain messages as the engine's prompt: ``{"role", "content"}`` turns, with the tool history in the
form chat templates take (an assistant turn's ``tool_calls``, ``role: "tool"`` turns with their
``tool_call_id``); each backend renders it through its own template or writes it out (``backends.prompts``).

The models read text only, so content blocks other than text fail loudly with the fix in the message,
instead of being dropped where the model would answer a question it never saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolCall, ToolMessage
from langchain_core.messages import ChatMessage as LangChainChatMessage

from mentorcollab_langchain.backends.base import ChatMessage, ChatToolCall
from mentorcollab_langchain.backends.prompts import append_turn
from mentorcollab_langchain.errors import InvalidPromptError, MentorCollabError

# Block types that carry something the models cannot read, with the word the error message uses.
_UNSUPPORTED_BLOCKS = {
    "image": "images",
    "image_url": "images",
    "input_image": "images",
    "audio": "audio",
    "input_audio": "audio",
    "video": "video",
    "file": "files",
    "document": "documents",
    "pdf": "documents",
}
# Block types that are not text but are rendered another way (tool calls) or not meant for the prompt.
_SKIPPED_BLOCKS = {"tool_use", "tool_call", "tool_call_chunk", "invalid_tool_call", "reasoning", "thinking"}


class UnsupportedContentError(MentorCollabError, ValueError):
    """A message holds content the models cannot read (images, audio, files), or is of an unknown type."""


def content_text(content: str | list[Any], position: int, kind: str) -> str:
    """The text of a message's ``content`` (a string or a list of blocks); ``position`` and ``kind`` name
    the message in an error."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
            continue
        block_type = block.get("type") if isinstance(block, dict) else None
        if block_type == "text":
            parts.append(str(block.get("text", "")))
        elif block_type in _SKIPPED_BLOCKS:
            continue
        elif block_type in _UNSUPPORTED_BLOCKS:
            raise UnsupportedContentError(
                f"message {position} ({kind}) holds {_UNSUPPORTED_BLOCKS[block_type]}; ChatMentorCollab's models "
                "read text only: describe the content in text, or use a multimodal model"
            )
        else:
            raise UnsupportedContentError(
                f"message {position} ({kind}) holds a content block of type {block_type!r}; "
                "ChatMentorCollab reads text blocks only"
            )
    return "".join(parts)


def to_engine_messages(messages: Sequence[BaseMessage], system_extra: Sequence[str] = ()) -> list[ChatMessage]:
    """LangChain messages as chat-template messages.

    System messages are gathered into one at the front (with ``system_extra``, for tools and output
    formats, at its end) and consecutive user or assistant messages are joined (``append_turn``): one
    leading system turn and alternating roles are what the strictest chat templates accept. An
    ``AIMessage``'s tool calls become its ``tool_calls`` (name, arguments and id) and a ``ToolMessage`` a
    ``tool`` turn keeping its ``tool_call_id``, as transformers' chat templates take them.
    """
    if not messages:
        raise InvalidPromptError("ChatMentorCollab needs at least one message; it got an empty list")
    system: list[str] = []
    turns: list[ChatMessage] = []
    for position, message in enumerate(messages):
        kind = type(message).__name__
        text = content_text(message.content, position, kind)
        turn: ChatMessage
        if isinstance(message, SystemMessage):
            system.append(text)
            continue
        if isinstance(message, HumanMessage):
            turn = {"role": "user", "content": text}
        elif isinstance(message, AIMessage):
            turn = {"role": "assistant", "content": text}
            if message.tool_calls:
                turn["tool_calls"] = [_template_call(call) for call in message.tool_calls]
        elif isinstance(message, ToolMessage):
            turn = {"role": "tool", "content": text, "tool_call_id": message.tool_call_id}
        elif isinstance(message, LangChainChatMessage):
            role = {"human": "user", "ai": "assistant"}.get(message.role, message.role)
            if role not in {"system", "user", "assistant", "tool"}:
                raise UnsupportedContentError(
                    f"message {position} has role {message.role!r}; use system, user (human), assistant (ai) or tool"
                )
            if role == "system":
                system.append(text)
                continue
            turn = {"role": role, "content": text}
        else:
            raise UnsupportedContentError(
                f"message {position} is a {kind}, which ChatMentorCollab does not know; "
                "use SystemMessage, HumanMessage, AIMessage or ToolMessage"
            )
        append_turn(turns, turn)
    system_text = "\n\n".join(part for part in [*system, *system_extra] if part)
    return ([{"role": "system", "content": system_text}] if system_text else []) + turns


def _template_call(call: ToolCall) -> ChatToolCall:
    """A LangChain tool call as chat templates read one (OpenAI's form, the arguments an object)."""
    template_call: ChatToolCall = {"type": "function", "function": {"name": call["name"], "arguments": call["args"]}}
    if call.get("id"):
        template_call["id"] = call["id"]
    return template_call
