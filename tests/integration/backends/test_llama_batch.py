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
    return generator.open(SHORT_PROMPTS[index], "raw")


def test_steps_waiting_together_run_in_one_decode_with_the_logits_each_gets_alone() -> None:
    shared_backend = backend(slots=4, n_ctx=640)
    alone = []
    for index in range(3):  # one at a time: each decodes with nobody beside it
        cursor = open_raw(shared_backend, index)
        alone.append(cursor.next_token_logits("The"))
        cursor.close()
    cursors = [open_raw(shared_backend, index) for index in range(3)]
    for cursor in cursors:  # each reads its prompt, then waits at the step below
        cursor.next_token_logits("")
    shared = shared_context(shared_backend.loaded, ContextShape(640, THREADS, 4))
    before = shared.decode_calls
    results: dict[int, np.ndarray] = {}

    def step(index: int) -> None:
        results[index] = cursors[index].next_token_logits("The")

    def wait_until(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)

    threads = [threading.Thread(target=step, args=(index,)) for index in range(3)]
    with shared._context_lock:  # hold the context: the first step's leader waits here, the others queue
        threads[0].start()
        wait_until(lambda: shared._leading and not shared._pending)  # it took its own step alone
        threads[1].start()
        threads[2].start()
        wait_until(lambda: len(shared._pending) == 2)
        queued = len(shared._pending)
    for thread in threads:
        thread.join(30)
    assert queued == 2, "one step was taken by a leader, the other two waited"
    assert shared.decode_calls - before == 2, "the two waiting steps ran in one decode"
    assert shared.widest_batch >= 2
    for index in range(3):
        np.testing.assert_array_equal(results[index], alone[index])
    for cursor in cursors:
        cursor.close()


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
