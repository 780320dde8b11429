"""Word boundaries on the real tokenizers of both families (byte-level BPE and SentencePiece-style)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from mentorcollab_langchain.backends.words import whitespace_start_table
from mentorcollab_langchain.models import PACKAGED_MODELS, ensure_converted

SENTENCE = "Natalia sold 48 clips.\n\nThen she  rested\tfor a day"


def words_of(name: str, text: str) -> list[str]:
    """Split ``text`` the way a word step does: cut before every token that starts with whitespace."""
    tokenizer = AutoTokenizer.from_pretrained(ensure_converted(PACKAGED_MODELS[name]))
    table = whitespace_start_table(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
    words: list[list[int]] = []
    for token in tokenizer.encode(text, add_special_tokens=False):
        if not words or table[token]:
            words.append([])
        words[-1].append(token)
    return [tokenizer.decode(word) for word in words]


@pytest.mark.parametrize(
    "name", ["smollm2-135m-instruct", pytest.param("gemma3-270m", marks=pytest.mark.slow)]  # Gemma loads slowly
)
def test_words_start_at_whitespace_and_rebuild_the_text(name: str) -> None:
    words = words_of(name, SENTENCE)
    assert "".join(words) == SENTENCE
    assert words[:4] == ["Natalia", " sold", " 48", " clips."]
    assert all(word[0].isspace() for word in words[1:]), words
    assert any(word.endswith("day") for word in words)


def test_byte_level_newlines_and_tabs_open_words() -> None:
    words = words_of("smollm2-135m-instruct", "a\nb\tc d")
    assert words == ["a", "\nb", "\tc", " d"]


@pytest.mark.slow  # several seconds: the fast set stays under two minutes
def test_sentencepiece_runs_of_whitespace_open_words() -> None:
    words = words_of("gemma3-270m", "a\n\nb  c")
    assert words[0] == "a"
    assert "".join(words) == "a\n\nb  c"
    assert all(word[0].isspace() for word in words[1:])


def test_stray_marker_of_the_other_family_does_not_flip_the_decision() -> None:
    vocabulary = ["▁the", "▁cat", "Ġ", "s", "\n", "<0x0A>"]
    assert whitespace_start_table(vocabulary) == [True, True, False, False, True, True]
    assert whitespace_start_table(["Ġthe", "Ġcat", "Ċ", "ĉ", "▁", "cat"]) == [True, True, True, True, False, False]
