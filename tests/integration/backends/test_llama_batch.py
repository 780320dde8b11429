"""Concurrent cursors on one llama.cpp model batch their steps, on the real packaged 135M generator.

What must hold: steps waiting together run in one ``llama_decode``; each cursor's logits (and so a greedy
request's text) are exactly those it gets alone; each sequence keeps its own cache through rollbacks; a
cursor past the slots still works, in a context of its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by scripts/install.sh")

from mentorcollab_langchain.backends import LlamaCppBackend
from mentorcollab_langchain.backends.llama_cpp import ContextShape, LlamaCppCursor, shared_context
from mentorcollab_langchain.backends.local import log_softmax
from mentorcollab_langchain.engine.config import CollabConfig
from mentorcollab_langchain.engine.run import run_collaboration
from mentorcollab_langchain.errors import ConfigError
from mentorcollab_langchain.models import PACKAGED_MODELS
from mentorcollab_langchain.models.registry import is_installed

GENERATOR = "smollm2-135m-instruct"
THREADS = 1  # one thread: the tests share two cores with other work (see test_llama_cpp_backend.py)
QUESTIONS = [
    "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?",
    "Weng earns $12 an hour for babysitting. She worked 50 minutes. How much did she earn?",
    "Betty needs $100 for a wallet and has half of it. How much more does she need?",
    "James writes a 3-page letter to 2 friends twice a week. How many pages a year?",
]


def backend(slots: int, n_ctx: int) -> LlamaCppBackend:
    """A backend of its own context shape (``n_ctx``), so that no other test's cursors share its slots."""
    if not is_installed(PACKAGED_MODELS[GENERATOR]):
        pytest.skip(f"{GENERATOR} is not installed")
    return LlamaCppBackend(GENERATOR, n_ctx=n_ctx, n_threads=THREADS, batch_slots=slots)


def prompt(index: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": QUESTIONS[index]}]


SHORT_PROMPTS = ["Two plus two is", "The capital of France is", "My favourite colour is"]


def open_raw(generator: LlamaCppBackend, index: int) -> LlamaCppCursor:
    """A cursor after a short raw prompt: a few tokens to read, so these tests stay fast."""
    return generator.open(raw_prompt(index), "raw")


def raw_prompt(index: int) -> str:
    """A short prompt for the first few, then questions of three lengths, so sequences sit at different positions."""
    if index < len(SHORT_PROMPTS):
        return SHORT_PROMPTS[index]
    return f"Question {index}: what is {index} plus {3 * index + 1}? Explain." * (1 + index % 3)


def steps_together(shared_backend: LlamaCppBackend, queued: int) -> tuple[int, int, list[np.ndarray], list[np.ndarray]]:
    """One step of ``queued`` + 1 cursors on one shared context: the first takes its step alone while holding
    the decode, the other ``queued`` wait and then run together. Returns how many waited, how many decodes
    the steps took, each cursor's logits from that step, and each one's logits with nobody beside it."""
    count = queued + 1
    alone = []
    for index in range(count):  # one at a time: each decodes with nobody beside it
        cursor = shared_backend.open(raw_prompt(index), "raw")
        cursor.next_token_logits("")  # the prompt, then the step: fed as below (a K-quant model's logits
        alone.append(cursor.next_token_logits("The"))  # after a one-token step and a long read differ)
        cursor.close()
    cursors = [shared_backend.open(raw_prompt(index), "raw") for index in range(count)]
    for cursor in cursors:  # each reads its prompt, then waits at the step below
        cursor.next_token_logits("")
    shared = shared_context(
        shared_backend.loaded, ContextShape(shared_backend.n_ctx, THREADS, shared_backend.batch_slots)
    )
    before = shared.decode_calls
    results: dict[int, np.ndarray] = {}

    def step(index: int) -> None:
        results[index] = cursors[index].next_token_logits("The")

    def wait_until(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)

    threads = [threading.Thread(target=step, args=(index,)) for index in range(count)]
    with shared._context_lock:  # hold the context: the first step's leader waits here, the others queue
        threads[0].start()
        wait_until(lambda: shared._leading and not shared._pending)  # it took its own step alone
        for thread in threads[1:]:
            thread.start()
        wait_until(lambda: len(shared._pending) == queued)
        waited = len(shared._pending)
    for thread in threads:
        thread.join(30)
    for cursor in cursors:
        cursor.close()
    return waited, shared.decode_calls - before, [results[index] for index in range(count)], alone


def test_steps_waiting_together_run_in_one_decode_with_the_logits_each_gets_alone() -> None:
    waited, decodes, together, alone = steps_together(backend(slots=4, n_ctx=640), queued=2)
    assert waited == 2, "one step was taken by a leader, the other two waited"
    assert decodes == 2, "the two waiting steps ran in one decode"
    for logits, logits_alone in zip(together, alone, strict=True):
        np.testing.assert_array_equal(logits, logits_alone)


STEP_TEXTS = tuple(" ".join(["The", "answer", "is", "not", "what", "you"][:words]) for words in range(1, 7))


def stepwise_logits(cursor: LlamaCppCursor) -> list[np.ndarray]:
    """The cursor's logits after its prompt and then after each of ``STEP_TEXTS``, one step at a time."""
    return [cursor.next_token_logits(text) for text in ("", *STEP_TEXTS)]


@pytest.mark.slow  # loads every packaged model
@pytest.mark.parametrize("model", sorted(PACKAGED_MODELS))
def test_each_model_batches_its_default_width_with_the_logits_each_request_gets_alone(model: str) -> None:
    """At the default ``batch_slots`` (``exact_batch_rows``) every request's logits, step after step, are the
    ones it gets alone, so its text never depends on its neighbours; a CPU whose kernels differ fails here,
    not in a user's answers."""
    if not is_installed(PACKAGED_MODELS[model]):
        pytest.skip(f"{model} is not installed")
    width = PACKAGED_MODELS[model].exact_batch_rows
    shared_backend = LlamaCppBackend(model, n_ctx=1024, n_threads=THREADS)
    assert shared_backend.batch_slots == width
    alone = []
    for index in range(width):
        cursor = shared_backend.open(raw_prompt(index), "raw")
        alone.append(stepwise_logits(cursor))
        cursor.close()
    cursors = [shared_backend.open(raw_prompt(index), "raw") for index in range(width)]
    with ThreadPoolExecutor(width) as pool:
        together = list(pool.map(stepwise_logits, cursors))
    for cursor in cursors:
        cursor.close()
    for request_together, request_alone in zip(together, alone, strict=True):
        for logits, logits_alone in zip(request_together, request_alone, strict=True):
            np.testing.assert_array_equal(logits, logits_alone)
    if width > 1:
        shape = ContextShape(1024, THREADS, width)
        assert shared_context(shared_backend.loaded, shape).widest_batch >= 2, "the steps did batch"


def test_a_rollback_in_one_sequence_leaves_the_others_alone() -> None:
    shared_backend = backend(slots=2, n_ctx=704)
    first, second = open_raw(shared_backend, 0), open_raw(shared_backend, 1)
    kept = second.next_token_logits("She sold")
    at_text = first.next_token_logits("She sold 48 clips")
    first.next_token_logits("She bought ten apples and")  # diverge, then come back: crop and refeed
    again = first.next_token_logits("She sold 48 clips")
    distance = 0.5 * np.abs(np.exp(log_softmax(again)) - np.exp(log_softmax(at_text))).sum()
    assert distance < 0.05, "the same state up to llama.cpp's batch-size noise (test_llama_cpp_backend.py)"
    assert int(again.argmax()) == int(at_text.argmax())
    np.testing.assert_array_equal(second.next_token_logits("She sold"), kept)  # untouched by the rollback
    first.close()
    second.close()


def test_a_cursor_past_the_slots_decodes_in_a_context_of_its_own_and_a_closed_one_frees_its_slot() -> None:
    shared_backend = backend(slots=2, n_ctx=768)
    cursors = [open_raw(shared_backend, index) for index in range(3)]
    assert [cursor._own_context is not None for cursor in cursors] == [False, False, True]
    logits = [cursor.next_token_logits("The") for cursor in cursors]
    for index, cursor in enumerate(cursors):
        cursor.close()
        again = open_raw(shared_backend, index)  # a slot is free now
        assert again._own_context is None
        np.testing.assert_array_equal(again.next_token_logits("The"), logits[index])
        again.close()


def test_batch_slots_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="batch_slots"):
        LlamaCppBackend(GENERATOR, batch_slots=0)


@pytest.mark.slow  # several seconds: four requests twice
def test_concurrent_greedy_answers_equal_each_one_run_alone() -> None:
    generator = backend(slots=8, n_ctx=832)
    config = CollabConfig(max_new_tokens=32, probe_policy="random", probe_rate=0.0)

    def answer(index: int) -> str:
        return run_collaboration(prompt(index), generator, generator, config=config).text

    alone = [answer(index) for index in range(len(QUESTIONS))]
    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        together = list(pool.map(answer, range(len(QUESTIONS))))
    assert together == alone
    assert all(alone)
    assert shared_context(generator.loaded, ContextShape(832, THREADS, 8)).widest_batch >= 2, "they did batch"


@pytest.mark.slow  # reads a 900-token prompt twice
def test_a_prompt_longer_than_one_decode_is_read_in_chunks_of_which_only_the_last_gives_logits() -> None:
    generator = backend(slots=1, n_ctx=1536)
    long_prompt = " ".join(f"Question {index} has the answer {index * 7}." for index in range(80))
    at_once = generator.open(long_prompt, "raw")
    prompt_tokens = len(at_once.prompt_ids)
    assert prompt_tokens > shared_context(generator.loaded, ContextShape(1536, THREADS, 1)).batch_tokens
    logits = at_once.next_token_logits("")
    in_steps = generator.open(long_prompt, "raw")
    in_steps.read_prompt(threading.Event())  # 64 tokens a step
    stepped = in_steps.next_token_logits("")
    assert len(at_once.cached_ids) == len(in_steps.cached_ids) == prompt_tokens
    assert np.array_equal(logits, stepped)  # the prompt goes into the same batches either way (backends.local)
    at_once.close()
    in_steps.close()
