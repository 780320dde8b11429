"""How a prompt becomes the text a model continues: its chat template, or plain text.

Every backend renders through here (local transformers and llama.cpp models, and remote models, whose
template comes from a local tokenizer), so the generator and the mentor see the same conversation each
in its own format.

Tools are rendered by the model's chat template when the template takes them (Qwen2.5's does);
otherwise ``TOOLS_INSTRUCTION`` is added to the end of the system message. That instruction is,
character for character, what Qwen2.5's template writes, so a model without a tool template reads the
same call format (``<tool_call>`` JSON) that ``chat.tool_calls.parse_tool_calls`` reads back.

A tool history (an assistant message's ``tool_calls``, a ``tool`` message's result) goes through the
template too, as the native ``tool_calls`` and ``role: "tool"`` turn, wherever the template renders them;
``tool_history_form`` asks the template by rendering a small history once. What a template does not render
is written the way Qwen2.5's template writes it (``written_tool_history``): a call as a ``<tool_call>``
JSON block in the assistant's text, a result in ``<tool_response>`` tags as a user turn. Models without a
template (base models, ``render_plain``) read the whole history in that written form.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError

from mentorcollab_langchain.backends.base import ChatMessage, Conversation, Prompt, PromptStyle
from mentorcollab_langchain.errors import InvalidPromptError

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"
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


def written_tool_call(name: str, arguments: Mapping[str, Any]) -> str:
    """A tool call written as the model itself is asked to write one (and as Qwen2.5's template renders it)."""
    call = json.dumps({"name": name, "arguments": dict(arguments)}, ensure_ascii=False)
    return TOOL_CALL_OPEN + "\n" + call + "\n" + TOOL_CALL_CLOSE


def written_tool_response(content: str) -> str:
    """A tool's result written as Qwen2.5's template renders a ``tool`` turn's content."""
    return TOOL_RESPONSE_OPEN + "\n" + content + "\n" + TOOL_RESPONSE_CLOSE


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
        where = f"message {position} ({message['role']})"
        check_text(message.get("content"), where)
        check_tool_history(message, where)
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


def check_tool_history(message: Mapping[str, Any], where: str) -> None:
    """Refuse, with an ``InvalidPromptError``, ``tool_calls`` or a ``tool_call_id`` a template could not render."""
    if "tool_call_id" in message and not isinstance(message["tool_call_id"], str):
        raise InvalidPromptError(f"{where}: tool_call_id must be text, got {type(message['tool_call_id']).__name__}")
    calls = message.get("tool_calls")
    if calls is None:
        return
    shape = "{'type': 'function', 'function': {'name': str, 'arguments': dict}}"
    if not isinstance(calls, list):
        raise InvalidPromptError(f"{where}: tool_calls must be a list of {shape}, got {type(calls).__name__}")
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, Mapping) else None
        if not (
            isinstance(function, Mapping)
            and isinstance(function.get("name"), str)
            and isinstance(function.get("arguments"), Mapping)
        ):
            raise InvalidPromptError(f"{where}: tool call {index} is not {shape}: {call!r:.80}")
        check_text(function["name"], f"{where}, tool call {index}'s name")


def tools_of(prompt: Prompt) -> list[dict[str, Any]]:
    return list(prompt.tools) if isinstance(prompt, Conversation) else []


def template_takes_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template renders a ``tools`` argument (it names the variable)."""
    return "tools" in (getattr(tokenizer, "chat_template", None) or "")


@dataclass(frozen=True)
class ToolHistoryForm:
    """Which parts of a tool history a chat template renders itself: an assistant turn's ``tool_calls``
    (``calls``) and ``role: "tool"`` turns (``results``). What it does not render is written out."""

    calls: bool
    results: bool


WRITTEN = ToolHistoryForm(calls=False, results=False)

# A small history of unmistakable strings: what of it a template's rendering holds is what it renders.
_PROBE_NAME, _PROBE_VALUE, _PROBE_RESULT = "probe_function_5c1e", "probe_value_5c1e", "probe_result_5c1e"
_PROBE_QUESTION: ChatMessage = {"role": "user", "content": "?"}
_PROBE_CALL: ChatMessage = {
    "role": "assistant",
    "content": "",
    "tool_calls": [
        {"id": "call_5c1e", "type": "function", "function": {"name": _PROBE_NAME, "arguments": {"x": _PROBE_VALUE}}}
    ],
}
_PROBE_RESULT_TURN: ChatMessage = {"role": "tool", "content": _PROBE_RESULT, "tool_call_id": "call_5c1e"}
_FORMS: dict[str, ToolHistoryForm] = {}  # by template text: one probe per template per process


def tool_history_form(tokenizer: Any) -> ToolHistoryForm:
    """What of a tool history the tokenizer's chat template renders, found by rendering one.

    Reading the template's source would guess: SmolLM2's writes any role (so a ``tool`` turn) but never
    looks at ``tool_calls``; Gemma's raises on a role out of user/model order. A template that refuses
    the history, or leaves the call's name and arguments or the result out of its text, gets that part
    written instead.
    """
    template = getattr(tokenizer, "chat_template", None) or ""
    if template not in _FORMS:

        def rendered(messages: list[ChatMessage]) -> str:
            try:
                return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except (TemplateError, TypeError, KeyError):  # raise_exception, or a turn the template cannot read
                return ""

        whole = rendered([_PROBE_QUESTION, _PROBE_CALL, _PROBE_RESULT_TURN])
        calls = whole or rendered([_PROBE_QUESTION, _PROBE_CALL])
        _FORMS[template] = ToolHistoryForm(
            calls=_PROBE_NAME in calls and _PROBE_VALUE in calls, results=_PROBE_RESULT in whole
        )
    return _FORMS[template]


def has_tool_history(messages: Sequence[ChatMessage]) -> bool:
    return any(message.get("tool_calls") or message["role"] == "tool" for message in messages)


def written_tool_history(messages: Sequence[ChatMessage], form: ToolHistoryForm = WRITTEN) -> list[ChatMessage]:
    """``messages`` with the parts of their tool history that ``form`` does not render written out.

    Calls are appended to the assistant's text as ``<tool_call>`` blocks, and results become user turns in
    ``<tool_response>`` tags, joined to a neighbouring user turn (``append_turn``) so the roles still
    alternate.
    """
    turns: list[ChatMessage] = []
    for message in messages:
        append_turn(turns, _in_form(message, form))
    return turns


def _in_form(message: ChatMessage, form: ToolHistoryForm) -> ChatMessage:
    """One message with its calls or its result written out where ``form`` does not render them."""
    if message["role"] == "tool" and not form.results:
        return {"role": "user", "content": written_tool_response(message["content"])}
    if message.get("tool_calls") and not form.calls:
        calls = [written_tool_call(call["function"]["name"], call["function"]["arguments"])
                 for call in message["tool_calls"]]
        text = "\n".join(part for part in [message["content"].strip(), *calls] if part)
        return {"role": message["role"], "content": text}
    return message


def append_turn(turns: list[ChatMessage], turn: ChatMessage) -> None:
    """Add ``turn`` to ``turns``, joined to the last one where both are user turns or both assistant turns.

    One leading system turn and alternating user and assistant turns are what the strictest chat templates
    accept; ``tool`` turns stay apart, each answering its own call.
    """
    previous = turns[-1] if turns else None
    if previous is None or previous["role"] != turn["role"] or turn["role"] not in ("user", "assistant"):
        turns.append(turn)
        return
    joined: ChatMessage = {"role": turn["role"], "content": previous["content"] + "\n\n" + turn["content"]}
    calls = [*previous.get("tool_calls", []), *turn.get("tool_calls", [])]
    if calls:
        joined["tool_calls"] = calls
    turns[-1] = joined


def with_tools_instruction(messages: list[ChatMessage], tools: Sequence[Mapping[str, Any]]) -> list[ChatMessage]:
    """``messages`` with the tools written at the end of the system message (one is added if needed)."""
    if not tools:
        return messages
    instruction = tools_instruction(tools)
    if messages and messages[0]["role"] == "system":
        first: ChatMessage = {"role": "system", "content": f"{messages[0]['content']}\n\n{instruction}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def render_chat(tokenizer: Any, prompt: Prompt) -> str:
    """``prompt`` through the tokenizer's chat template, open for the assistant's answer."""
    messages, tools = as_messages(prompt), tools_of(prompt)
    if has_tool_history(messages):
        messages = written_tool_history(messages, tool_history_form(tokenizer))
    if tools and template_takes_tools(tokenizer):
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    return tokenizer.apply_chat_template(
        with_tools_instruction(messages, tools), tokenize=False, add_generation_prompt=True
    )


def render_plain(prompt: Prompt, style: PromptStyle) -> str:
    """The prompt as plain text, for raw completion prompts and for base models without a chat template.

    ``raw`` passes a ready completion prompt through untouched (the paper's setting). ``chat`` on a model
    without a template labels each turn and leaves the assistant's turn open. A tool history is written
    out (``written_tool_history``).
    """
    messages = as_messages(prompt)
    if has_tool_history(messages):
        messages = written_tool_history(messages)
    messages = with_tools_instruction(messages, tools_of(prompt))
    if style == "raw":
        return "\n\n".join(message["content"] for message in messages)
    turns = [f"{message['role'].capitalize()}: {message['content']}" for message in messages]
    return "\n\n".join(turns) + "\n\nAssistant:"
