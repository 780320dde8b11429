"""Prompts no tokenizer can read fail with a typed error that names the problem, on every backend."""

from __future__ import annotations

import pytest

from mentorcollab_langchain.backends import TransformersBackend
from mentorcollab_langchain.backends.llama_cpp import LlamaCppBackend
from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleBackend
from mentorcollab_langchain.errors import InvalidPromptError, MentorCollabError
from mentorcollab_langchain.models import DEFAULT_GENERATOR, DEFAULT_MENTOR

BAD_PROMPTS = [
    ("hi\x00 there", "NUL character at 2"),
    ("hi \ud800", r"lone surrogate '\\ud800' at 3"),
    ([{"role": "user", "content": "fine"}, {"role": "assistant", "content": "x\ud83d"}], r"message 1 \(assistant\)"),
    ([{"role": "user", "content": ["a", "list"]}], "content must be text, got list"),
    ([{"content": "no role"}], "message 0 is not a"),
    (42, "a prompt is a string or a list of messages, got int"),
    ([{"role": "assistant", "content": "", "tool_calls": "f(3)"}], "tool_calls must be a list"),
    (
        [{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": '{"x": 3}'}}]}],
        "tool call 0 is not",
    ),
    ([{"role": "tool", "content": "5", "tool_call_id": 7}], "tool_call_id must be text, got int"),
]


@pytest.fixture(scope="module")
def backends(tiny_byte_level_model: str) -> list:
    return [
        TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32"),
        LlamaCppBackend(DEFAULT_GENERATOR, n_threads=1),
        OpenAICompatibleBackend("http://127.0.0.1:9", model="mentor", tokenizer=DEFAULT_MENTOR),
    ]


@pytest.mark.parametrize(("prompt", "problem"), BAD_PROMPTS)
@pytest.mark.parametrize("style", ["chat", "raw"])
def test_a_bad_prompt_is_named_before_any_token_is_read(
    backends: list, prompt: object, problem: str, style: str
) -> None:
    for backend in backends:
        with pytest.raises(InvalidPromptError, match=problem) as caught:
            backend.open(prompt, style)
        assert isinstance(caught.value, MentorCollabError) and isinstance(caught.value, ValueError)
