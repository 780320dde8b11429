"""``tokens_to_read``: each cursor kind foresees exactly what its next call at a text reads.

The engine makes a probe only when that reading fits ``max_mentor_tokens_read``, so a forecast must equal
the reading that follows, after every way a cursor's cache can move: the first call, a call where it
already stands, a longer text, a rollback to a shorter one, another branch, and a prompt read ahead.
The in-process cursors share the rule (``LocalCursor``): a tiny transformers model here, the real
SmolLM2 on llama.cpp below; the remote cursor against a scripted completion endpoint.
"""

from __future__ import annotations

import threading

import pytest

from mentorcollab_langchain.backends import TransformersBackend
from mentorcollab_langchain.backends.base import Cursor, ForeseesReading
from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleCursor
from tests.unit.backends.test_read_prompt import RecordingServer  # writes " yes"; a token is a word

PROMPT = "Question: how many apples are there in three baskets of four? " * 6
# Each text is asked after the one before it: fresh, the same again, longer, rolled back, another branch.
TEXTS = ["", "", " There are", " There are twelve apples in all", " There are", " Twelve", " Twelve apples"]


def forecasts_and_readings(cursor: Cursor) -> list[tuple[int, int]]:
    assert isinstance(cursor, ForeseesReading)
    pairs = []
    for text in TEXTS:
        forecast, before = cursor.tokens_to_read(text), cursor.tokens_read
        cursor.next_word(text, 3)
        pairs.append((forecast, cursor.tokens_read - before))
    return pairs


def test_a_local_cursor_foresees_each_calls_reading(tiny_byte_level_model: str) -> None:
    cursor = TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32").open(PROMPT, "raw")
    pairs = forecasts_and_readings(cursor)
    assert [forecast for forecast, _ in pairs] == [read for _, read in pairs]
    assert pairs[0][0] == len(cursor.prompt_ids)
    assert all(forecast > 0 for forecast, _ in pairs[2:]), "each later text holds something the cache lacks"


def test_after_reading_ahead_only_the_response_is_left_to_read(tiny_byte_level_model: str) -> None:
    cursor = TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32").open(PROMPT, "raw")
    assert cursor.tokens_to_read("") == len(cursor.prompt_ids)
    cursor.read_prompt(threading.Event())
    assert cursor.tokens_to_read("") == 0
    response = len(cursor.token_ids(" There are")) - len(cursor.prompt_ids)
    assert cursor.tokens_to_read(" There are") == response
    assert cursor.tokens_read == len(cursor.prompt_ids)  # foreseeing read nothing


def test_the_llama_cpp_cursor_foresees_each_calls_reading() -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by scripts/install.sh")
    from mentorcollab_langchain.backends import LlamaCppBackend

    cursor = LlamaCppBackend("smollm2-135m-instruct", n_threads=1, prefix_cache=False).open(PROMPT, "raw")
    pairs = forecasts_and_readings(cursor)
    assert [forecast for forecast, _ in pairs] == [read for _, read in pairs]
    assert pairs[0][0] == len(cursor.prompt_ids)


def test_a_remote_cursor_foresees_each_requests_reading() -> None:
    cursor = OpenAICompatibleCursor(RecordingServer(), "one two three four")  # type: ignore[arg-type]
    pairs = forecasts_and_readings(cursor)
    assert [forecast for forecast, _ in pairs] == [read for _, read in pairs]
    assert pairs[0] == (4, 4)  # the whole prompt first
    # The server's " yes" after "" is held, so asking there again reads nothing.
    assert pairs[1] == (0, 0)
