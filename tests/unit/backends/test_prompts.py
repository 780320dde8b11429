"""Prompts through the real chat templates: tools by the template that takes them, else written out."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from transformers import AutoTokenizer

from mentorcollab_langchain.backends.base import Conversation
from mentorcollab_langchain.backends.prompts import (
    render_chat,
    render_plain,
    template_takes_tools,
    tools_instruction,
    with_tools_instruction,
)
from mentorcollab_langchain.chat import to_engine_messages
from mentorcollab_langchain.models import PACKAGED_MODELS, ensure_converted


def magic_function(input: int) -> int:
    """Applies a magic function to an input."""
    return input + 2


TOOLS = [convert_to_openai_tool(magic_function)]
CALL = {"name": "magic_function", "args": {"input": 3}, "id": "c1", "type": "tool_call"}
HISTORY = [
    SystemMessage("Be brief."),
    HumanMessage("What is magic_function(3)?"),
    AIMessage("", tool_calls=[CALL]),
    ToolMessage("5", tool_call_id="c1"),
]


@cache
def tokenizer(name: str) -> Any:
    return AutoTokenizer.from_pretrained(ensure_converted(PACKAGED_MODELS[name]))


def test_qwen_renders_tools_and_the_call_history_as_its_own_template_does() -> None:
    qwen = tokenizer("qwen2.5-coder-1.5b-instruct")
    native = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is magic_function(3)?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "magic_function", "arguments": {"input": 3}}}],
        },
        {"role": "tool", "content": "5"},
    ]
    expected = qwen.apply_chat_template(native, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    conversation = Conversation(tuple(to_engine_messages(HISTORY)), tuple(TOOLS))
    assert template_takes_tools(qwen)
    assert render_chat(qwen, conversation) == expected
    # The written instruction for other models is, character for character, what Qwen's template writes.
    written = with_tools_instruction(to_engine_messages(HISTORY), TOOLS)
    assert qwen.apply_chat_template(written, tokenize=False, add_generation_prompt=True) == expected


@pytest.mark.parametrize("system", [True, False])
def test_a_template_without_tools_gets_the_written_instruction_in_its_system_turn(system: bool) -> None:
    smollm = tokenizer("smollm2-135m-instruct")
    messages = to_engine_messages(HISTORY if system else HISTORY[1:])
    rendered = render_chat(smollm, Conversation(tuple(messages), tuple(TOOLS)))
    assert not template_takes_tools(smollm)
    system_turn = rendered.split("<|im_end|>")[0]
    assert system_turn.startswith("<|im_start|>system\n") and tools_instruction(TOOLS) in system_turn
    assert ("Be brief." in system_turn) == system
    assert rendered.endswith("<|im_start|>assistant\n")


def test_base_models_read_the_tools_in_plain_text() -> None:
    conversation = Conversation(({"role": "user", "content": "What is magic_function(3)?"},), tuple(TOOLS))
    plain = render_plain(conversation, "chat")
    assert plain.startswith("System: # Tools") and '"name": "magic_function"' in plain and plain.endswith("Assistant:")
    assert render_plain(conversation.messages, "chat") == "User: What is magic_function(3)?\n\nAssistant:"
