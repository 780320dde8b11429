"""A transformers request takes over the prompt tokens an earlier request left in its cache, on the real
packaged generator (and, in the fast set, a tiny model with its tokenizer): it reads only the rest, and
computes exactly what it would have computed reading all of it. The same rule as the llama.cpp backend's
(``test_prefix_cache.py``): whole 64-token prompt batches only, never the whole prompt; an open cursor's
cache is its own; the held cache sharing the most is taken.
"""

from __future__ import annotations

import numpy as np
import pytest

from mentorcollab_langchain.backends import TransformersBackend
from mentorcollab_langchain.backends.local import READ_PROMPT_STEP_TOKENS, common_prefix_length
from mentorcollab_langchain.backends.transformers import HeldCaches, TransformersCursor

GENERATOR = "smollm2-135m-instruct"
EXAMPLES = " ".join(f"Fact {index}: {index} times 3 is {3 * index}." for index in range(16))  # some 170 tokens


@pytest.fixture(params=["tiny", pytest.param(GENERATOR, marks=pytest.mark.slow)])
def backends(request: pytest.FixtureRequest, tiny_byte_level_model: str) -> tuple[TransformersBackend, ...]:
    """The model with and without the prefix cache, holding nothing an earlier test left."""
    model = tiny_byte_level_model if request.param == "tiny" else request.param
    cached = TransformersBackend(model, device="cpu", prefix_cache=True)
    cached.loaded.held_caches.clear()
    yield cached, TransformersBackend(model, device="cpu", prefix_cache=False)
    cached.loaded.held_caches.clear()


def question(text: str) -> str:
    return f"{EXAMPLES}\nQuestion: {text}\nAnswer:"


def answered(cursor: TransformersCursor, text: str = " The") -> tuple[np.ndarray, np.ndarray, str]:
    """The cursor's logits after its prompt and after ``text``, and its greedy continuation; then closed."""
    try:
        return (cursor.next_token_logits("").numpy(), cursor.next_token_logits(text).numpy(),
                cursor.generate(text, 6).text)
    finally:
        cursor.close()


def test_a_request_reads_only_what_an_earlier_one_left_it_and_computes_the_same(backends) -> None:
    cached, uncached = backends
    answered(cached.open(question("what is 7 times 3?"), "raw"))
    assert len(cached.loaded.held_caches) == 1
    later = cached.open(question("what is 12 times 3?"), "raw")
    fresh = uncached.open(question("what is 12 times 3?"), "raw")
    shared = common_prefix_length(later.prompt_ids, cached.prompt_ids(question("what is 7 times 3?"), "raw"))
    assert shared > 2 * READ_PROMPT_STEP_TOKENS
    assert later.tokens_cached == shared - shared % READ_PROMPT_STEP_TOKENS  # whole prompt batches only
    assert fresh.tokens_cached == 0 and len(cached.loaded.held_caches) == 0, "a taken cache leaves the pool"
    logits, after_text, text = answered(later)
    assert later.tokens_read == len(later.prompt_ids) - later.tokens_cached + len(later._encode(" The"))
    fresh_logits, fresh_after_text, fresh_text = answered(fresh)
    np.testing.assert_array_equal(logits, fresh_logits)
    np.testing.assert_array_equal(after_text, fresh_after_text)
    assert text == fresh_text
    assert len(cached.loaded.held_caches) == 1, "only the cached backend leaves its cache behind"


@pytest.mark.slow  # a few seconds: the fast set keeps the first test of the rule
def test_an_open_cursor_keeps_its_cache_and_the_held_one_sharing_most_is_taken(backends) -> None:
    cached, _ = backends
    holding = cached.open(question("what is 9 times 3?"), "raw")
    holding.next_token_logits("")
    beside = cached.open(question("what is 9 times 3?"), "raw")
    assert beside.tokens_cached == 0, "an open cursor's cache is its own"
    answered(beside)
    unrelated = cached.open("The weather today is " * 30, "raw")  # left after the examples: the newer one
    answered(unrelated)
    holding.close()
    taker = cached.open(question("what is 4 times 3?"), "raw")
    assert taker.tokens_cached > 0, "the held cache holding the examples, not the newer unrelated one"
    taker.close()


def test_the_pool_keeps_the_newest_and_gives_only_what_shares_a_prefix() -> None:
    pool = HeldCaches(limit=2)
    for ids, cache in (([1, 2, 3], "a"), ([1, 2, 9], "b"), ([7, 8], "c")):
        pool.give(ids, cache)
    assert len(pool) == 2, "the one left longest ago was dropped"
    assert pool.take([5, 6]) is None
    assert pool.take([1, 2, 3]) == ([1, 2, 9], "b")  # "a" was dropped; "b" shares two tokens
    assert pool.take([1, 2, 3]) is None and len(pool) == 1
