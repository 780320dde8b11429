"""``read_prompt``: each cursor kind reads its prompt ahead of the first call, and only once.

The in-process cursors share ``LocalCursor.read_prompt`` (run here on a tiny transformers model with a
real tokenizer; the llama.cpp cursor inherits it); the remote cursor warms the server's prefix cache with
a one-token request, checked against a scripted completion endpoint.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from mentorcollab_langchain.backends import TransformersBackend
from mentorcollab_langchain.backends.local import READ_PROMPT_STEP_TOKENS
from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleCursor

LONG_PROMPT = "Question: how many apples are there in three baskets of four? " * 12


def test_a_local_cursor_reads_its_prompt_in_steps_and_then_only_the_response(tiny_byte_level_model: str) -> None:
    backend = TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32")
    ahead, cold = backend.open(LONG_PROMPT, "raw"), backend.open(LONG_PROMPT, "raw")
    assert len(ahead.prompt_ids) > READ_PROMPT_STEP_TOKENS  # so the reading takes more than one step
    ahead.read_prompt(threading.Event())
    assert ahead.cached_ids == ahead.prompt_ids and ahead.tokens_read == len(ahead.prompt_ids)
    word = ahead.next_word(" The", 4)
    assert word == cold.next_word(" The", 4)
    assert ahead.tokens_read == cold.tokens_read  # the prompt was read once, never again
    assert np.array_equal(ahead.next_token_logits(" The"), cold.next_token_logits(" The"))  # the same batches


def test_the_prompt_goes_into_the_same_batches_read_ahead_or_not(tiny_byte_level_model: str) -> None:
    """A batch's arithmetic differs in the last digits with its size, so both paths must cut alike."""
    backend = TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32")
    ahead, cold = backend.open(LONG_PROMPT, "raw"), backend.open(LONG_PROMPT, "raw")
    batches: dict[str, list[int]] = {"ahead": [], "cold": []}
    for name, cursor in (("ahead", ahead), ("cold", cold)):
        forward = cursor._forward
        cursor._forward = lambda ids, outputs, hidden, forward=forward, seen=batches[name]: (  # type: ignore[method-assign]
            seen.append(len(ids)) or forward(ids, outputs, hidden))
    ahead.read_prompt(threading.Event())
    assert np.array_equal(ahead.next_token_logits(" The cat"), cold.next_token_logits(" The cat"))
    step, prompt = READ_PROMPT_STEP_TOKENS, len(ahead.prompt_ids)
    prompt_batches = [step] * (prompt // step) + ([prompt % step] if prompt % step else [])
    response = len(ahead.token_ids(" The cat")) - prompt
    assert batches["ahead"] == batches["cold"] == [*prompt_batches, response]
    # Scoring from the response's first token feeds the prompt's last token again, for the row after it.
    assert ahead.score_continuation("", " The dog") == cold.score_continuation("", " The dog")


def test_a_local_cursor_that_holds_a_response_is_not_cropped_back_to_the_prompt(tiny_byte_level_model: str) -> None:
    cursor = TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32").open("Count:", "raw")
    cursor.next_word(" one two", 4)
    cached, read = list(cursor.cached_ids), cursor.tokens_read
    cursor.read_prompt(threading.Event())
    assert cursor.cached_ids == cached and cursor.tokens_read == read


def test_a_stopped_local_reading_reads_nothing_more(tiny_byte_level_model: str) -> None:
    cursor = TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32").open(LONG_PROMPT, "raw")
    stop = threading.Event()
    stop.set()
    cursor.read_prompt(stop)
    assert cursor.cached_ids == [] and cursor.tokens_read == 0


class RecordingServer:
    """A completion endpoint that writes " yes" and records each request's prompt and options."""

    model_name = "recording@test"

    def __init__(self) -> None:
        self.requests: list[tuple[str, int, dict[str, Any]]] = []

    def complete(self, prompt: str, max_tokens: int, **options: Any) -> dict[str, Any]:
        self.requests.append((prompt, max_tokens, options))
        return {"text": " yes", "finish_reason": "length", "usage": {"completion_tokens": 1}}

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def split_tokens(self, text: str) -> list[str]:
        return [text]


def test_a_remote_cursor_warms_the_servers_prefix_cache_once_and_counts_it_as_read() -> None:
    server = RecordingServer()
    cursor = OpenAICompatibleCursor(server, "one two three four")  # type: ignore[arg-type]
    cursor.read_prompt(threading.Event())
    assert server.requests == [("one two three four", 1, {"logprobs": None, "logit_bias": None,
                                                          "sampling": cursor.sampling,
                                                          "extra": {"cache_prompt": True}})]
    assert cursor.tokens_read == 4 + 1  # the prompt, and the one token written only to read it
    cursor.read_prompt(threading.Event())  # the server holds the prompt already: no second request
    assert len(server.requests) == 1
    cursor.next_word(" yes", 4)
    assert cursor.tokens_read == 5  # the next request reads nothing new: " yes" is what the server held


def test_a_stopped_remote_reading_sends_nothing() -> None:
    server = RecordingServer()
    stop = threading.Event()
    stop.set()
    OpenAICompatibleCursor(server, "one two").read_prompt(stop)  # type: ignore[arg-type]
    assert server.requests == []
