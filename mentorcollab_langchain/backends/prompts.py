"""How a prompt becomes the text a model continues: its chat template, or plain text.

Both backends that hold a tokenizer (local transformers models and remote models, whose template
comes from a local tokenizer) render through here, so the generator and the mentor see the same
conversation each in its own format. Tools are rendered by the model's chat template when the template
takes them (Qwen2.5's does); otherwise ``TOOLS_INSTRUCTION`` is added to the end of the system message.
That instruction is, character for character, what Qwen2.5's template writes, so a model without a tool
template reads the same call format (``<tool_call>`` JSON) that ``chat.tool_calls.parse_tool_calls`` reads back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mentorcollab_langchain.backends.base import ChatMessage, Conversation, Prompt, PromptStyle
from mentorcollab_langchain.errors import InvalidPromptError

TOOLS_INSTRUCTION = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    # Qwen's template really writes these braces doubled (a quirk upstream); kept, so that the
    # instruction stays exactly the prompt Qwen was trained on.
    '{{{{"name": <function-name>, "arguments": <args-json-object>}}}}\n</tool_call>'
)


def tools_instruction(tools: Sequence[Mapping[str, Any]]) -> str:
    """The written form of ``tools`` for models whose chat template does not take them."""
    listed = "".join("\n" + json.dumps(tool, ensure_ascii=False) for tool in tools)
    return TOOLS_INSTRUCTION.format(tools=listed)


def as_messages(prompt: Prompt) -> list[ChatMessage]:
    """The prompt as chat messages, each checked to be text a tokenizer can read."""
    if isinstance(prompt, str):
        messages: list[ChatMessage] = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, Conversation):
        messages = list(prompt.messages)
    elif isinstance(prompt, Sequence):
        messages = list(prompt)
    else:
        raise InvalidPromptError(f"a prompt is a string or a list of messages, got {type(prompt).__name__}")
    if not messages:
        raise InvalidPromptError("the prompt holds no messages; give at least one")
    for position, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise InvalidPromptError(
                f"message {position} is not a {{'role': str, 'content': str}} dict: {message!r:.80}"
            )
        check_text(message.get("content"), f"message {position} ({message['role']})")
    return messages


def check_text(text: object, where: str) -> str:
    """``text`` itself if every tokenizer can read it; else an ``InvalidPromptError`` naming the problem.

    Tokenizers refuse a lone surrogate with a raw ``TypeError``, and a NUL would end the text early in
    C code, so both are named here, with the position, before any model sees them.
    """
    if not isinstance(text, str):
        raise InvalidPromptError(f"{where}: the content must be text, got {type(text).__name__}")
    if "\x00" in text:
        raise InvalidPromptError(f"{where}: holds a NUL character at {text.index(chr(0))}; remove it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidPromptError(
            f"{where}: holds a lone surrogate {text[error.start]!r} at {error.start}, which is not valid "
            "Unicode text (often a badly decoded emoji); decode the input as UTF-8 first"
        ) from None
    return text


def tools_of(prompt: Prompt) -> list[dict[str, Any]]:
    return list(prompt.tools) if isinstance(prompt, Conversation) else []


def template_takes_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template renders a ``tools`` argument (it names the variable)."""
    return "tools" in (getattr(tokenizer, "chat_template", None) or "")


def with_tools_instruction(messages: list[ChatMessage], tools: Sequence[Mapping[str, Any]]) -> list[ChatMessage]:
    """``messages`` with the tools written at the end of the system message (one is added if needed)."""
    if not tools:
        return messages
    instruction = tools_instruction(tools)
    if messages and messages[0]["role"] == "system":
        first = {"role": "system", "content": f"{messages[0]['content']}\n\n{instruction}"}
        return [first, *messages[1:]]  # type: ignore[list-item]
    return [{"role": "system", "content": instruction}, *messages]


def render_chat(tokenizer: Any, prompt: Prompt) -> str:
    """``prompt`` through the tokenizer's chat template, open for the assistant's answer."""
    messages, tools = as_messages(prompt), tools_of(prompt)
    if tools and template_takes_tools(tokenizer):
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    return tokenizer.apply_chat_template(
        with_tools_instruction(messages, tools), tokenize=False, add_generation_prompt=True
    )


def render_plain(prompt: Prompt, style: PromptStyle) -> str:
    """The prompt as plain text, for raw completion prompts and for base models without a chat template.

    ``raw`` passes a ready completion prompt through untouched (the paper's setting). ``chat`` on a model
    without a template labels each turn and leaves the assistant's turn open.
    """
    messages = with_tools_instruction(as_messages(prompt), tools_of(prompt))
    if style == "raw":
        return "\n\n".join(message["content"] for message in messages)
    turns = [f"{message['role'].capitalize()}: {message['content']}" for message in messages]
    return "\n\n".join(turns) + "\n\nAssistant:"
