"""The prompt a remote mentor's server reads: exactly one BOS, whatever the chat template writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleBackend
from mentorcollab_langchain.models import DEFAULT_GENERATOR, DEFAULT_MENTOR, PACKAGED_MODELS, ensure_converted

# A Llama/Gemma-style template: it writes the BOS token's text itself.
TEMPLATE_WITH_BOS = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
    "{{ message['content'] }}<end_of_turn>\n{% endfor %}<start_of_turn>model\n"
)
MESSAGES = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def gemma_with_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gemma 3's real tokenizer (it adds BOS to what it encodes) with a template that writes BOS too."""
    tokenizer = AutoTokenizer.from_pretrained(ensure_converted(PACKAGED_MODELS["gemma3-270m"]))
    tokenizer.chat_template = TEMPLATE_WITH_BOS
    folder = tmp_path_factory.mktemp("tokenizers") / "gemma-with-template"
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_the_templates_bos_is_left_to_the_server(gemma_with_template: Path) -> None:
    backend = OpenAICompatibleBackend("http://127.0.0.1:9", model="mentor", tokenizer=str(gemma_with_template))
    tokenizer = backend.tokenizer
    assert tokenizer.apply_chat_template(MESSAGES, tokenize=False).startswith(tokenizer.bos_token)
    rendered = backend.render(MESSAGES)
    assert not rendered.startswith(tokenizer.bos_token)
    # What a server that adds special tokens (llama.cpp, vLLM) reads: one BOS, then the turn.
    ids = tokenizer(rendered)["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    assert rendered.startswith("<start_of_turn>user\nName a colour.")


def test_a_tokenizer_without_bos_keeps_its_rendering() -> None:
    backend = OpenAICompatibleBackend("http://127.0.0.1:9", model="mentor", tokenizer=DEFAULT_MENTOR)
    assert backend.render(MESSAGES) == backend.tokenizer.apply_chat_template(
        MESSAGES, tokenize=False, add_generation_prompt=True
    )


def test_backends_on_one_model_share_its_tokenizer_and_others_get_their_own() -> None:
    """Loading Qwen's tokenizer takes a second: a chat model built per request must not pay it each time."""
    first = OpenAICompatibleBackend("http://127.0.0.1:9", model="mentor", tokenizer=DEFAULT_MENTOR)
    second = OpenAICompatibleBackend("http://127.0.0.2:9", model="other", tokenizer=DEFAULT_MENTOR)
    assert first.tokenizer is second.tokenizer
    other = OpenAICompatibleBackend("http://127.0.0.1:9", model="mentor", tokenizer=DEFAULT_GENERATOR)
    assert other.tokenizer is not first.tokenizer and len(other.tokenizer) != len(first.tokenizer)
