"""Prompts through the real chat templates: tools and the tool history by the template that takes them, else
written out."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from transformers import AutoTokenizer

from mentorcollab_langchain.backends.base import Conversation
from mentorcollab_langchain.backends.prompts import (
    ToolHistoryForm,
    render_chat,
    render_plain,
    template_takes_tools,
    tool_history_form,
    tools_instruction,
    with_tools_instruction,
    written_tool_call,
    written_tool_history,
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


def test_the_tool_history_reaches_the_templates_as_tool_calls_and_tool_turns() -> None:
    messages = to_engine_messages(HISTORY)
    assert messages[2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "magic_function", "arguments": {"input": 3}}}
        ],
    }
    assert messages[3] == {"role": "tool", "content": "5", "tool_call_id": "c1"}


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
    assert template_takes_tools(qwen) and tool_history_form(qwen) == ToolHistoryForm(calls=True, results=True)
    rendered = render_chat(qwen, conversation)
    assert rendered == expected
    # The call in the assistant's turn with its name and arguments, the result in Qwen's tool turn.
    call = '<tool_call>\n{"name": "magic_function", "arguments": {"input": 3}}\n</tool_call>'
    assert f"<|im_start|>assistant\n{call}<|im_end|>" in rendered
    tool_turn = "<|im_start|>user\n<tool_response>\n5\n</tool_response><|im_end|>\n"
    assert rendered.endswith(tool_turn + "<|im_start|>assistant\n")
    # The written form for other models is, character for character, what Qwen's template writes.
    written = written_tool_history(with_tools_instruction(to_engine_messages(HISTORY), TOOLS))
    assert not any("tool_calls" in message or message["role"] == "tool" for message in written)
    assert qwen.apply_chat_template(written, tokenize=False, add_generation_prompt=True) == expected


def test_smollm2_renders_the_tool_turn_and_reads_the_call_it_does_not_render_written() -> None:
    """SmolLM2's ChatML template writes any role, so a ``tool`` turn, but never looks at ``tool_calls``:
    a call left to it would vanish from the history, so it is written into the assistant's text."""
    smollm = tokenizer("smollm2-135m-instruct")
    assert tool_history_form(smollm) == ToolHistoryForm(calls=False, results=True)
    rendered = render_chat(smollm, Conversation(tuple(to_engine_messages(HISTORY)), tuple(TOOLS)))
    call = written_tool_call("magic_function", {"input": 3})
    assert rendered.endswith(
        f"<|im_start|>assistant\n{call}<|im_end|>\n<|im_start|>tool\n5<|im_end|>\n<|im_start|>assistant\n"
    )


# Two templates the packaged models do not have, in the two ways other families' templates behave:
# one renders the call's id in its tool turn (as Mistral's does), one takes only alternating user and
# assistant turns and refuses anything else (as Gemma's does).
WITH_IDS = (
    "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% for c in m.tool_calls or [] %}"
    "(call {{ c.id }}: {{ c.function.name }} {{ c.function.arguments | tojson }}){% endfor %}"
    "{% if m.tool_call_id %}(result of {{ m.tool_call_id }}){% endif %}{% endfor %}[assistant]"
)
ALTERNATING = (
    "{% for m in messages %}{% if m.role not in ['user', 'assistant'] or (m.role == 'user') != loop.index0 is even %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}"
    "<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}<assistant>"
)


@pytest.mark.parametrize(
    ("template", "form", "expected"),
    [
        (
            WITH_IDS,
            ToolHistoryForm(calls=True, results=True),
            '[user]What is magic_function(3)?[assistant](call c1: magic_function {"input": 3})'
            "[tool]5(result of c1)[user]And twice?[assistant]",
        ),
        (
            ALTERNATING,
            ToolHistoryForm(calls=False, results=False),
            f"<user>What is magic_function(3)?</user><assistant>{written_tool_call('magic_function', {'input': 3})}"
            "</assistant><user><tool_response>\n5\n</tool_response>\n\nAnd twice?</user><assistant>",
        ),
    ],
    ids=["renders-ids", "refuses-tool-turns"],
)
def test_each_template_gets_the_tool_history_in_the_form_it_renders(
    template: str, form: ToolHistoryForm, expected: str
) -> None:
    other = copy.copy(tokenizer("smollm2-135m-instruct"))
    other.chat_template = template
    assert tool_history_form(other) == form
    assert render_chat(other, to_engine_messages([*HISTORY[1:], HumanMessage("And twice?")])) == expected


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


def test_base_models_read_the_tool_history_written_out() -> None:
    plain = render_plain(to_engine_messages(HISTORY), "chat")
    call = written_tool_call("magic_function", {"input": 3})
    assert plain.endswith(f"Assistant: {call}\n\nUser: <tool_response>\n5\n</tool_response>\n\nAssistant:")


@pytest.mark.slow  # loads llama.cpp's GGUF and three tokenizers: about 3 s
def test_every_backend_renders_the_tool_history_through_its_models_template(tiny_byte_level_model: str) -> None:
    """Both in-process backends (here with SmolLM2's template) open on its ``tool`` turn, and a remote
    mentor's prompt, rendered from its local tokenizer, holds Qwen's tool response."""
    from mentorcollab_langchain.backends import TransformersBackend
    from mentorcollab_langchain.backends.llama_cpp import LlamaCppBackend
    from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleBackend
    from mentorcollab_langchain.models import DEFAULT_GENERATOR, DEFAULT_MENTOR

    history = Conversation(tuple(to_engine_messages(HISTORY)), tuple(TOOLS))
    transformers = TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32")
    llama_cpp = LlamaCppBackend(DEFAULT_GENERATOR, n_threads=1)
    readers = [(transformers, transformers.loaded.tokenizer), (llama_cpp, llama_cpp.loaded.chat_tokenizer)]
    for backend, reader in readers:
        assert "<|im_start|>tool\n5<|im_end|>" in reader.decode(backend.prompt_ids(history))
    remote = OpenAICompatibleBackend("http://127.0.0.1:9", model="mentor", tokenizer=DEFAULT_MENTOR)
    assert remote.render(history).endswith("<|im_start|>user\n<tool_response>\n5\n</tool_response><|im_end|>\n"
                                           "<|im_start|>assistant\n")
