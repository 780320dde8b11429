"""A llama.cpp request takes over the prompt tokens an earlier request left in its sequence, on the real
packaged models: it reads only the rest, and computes exactly what it would have computed reading all of it.

What must hold: only whole 64-token prompt batches are taken over, and never the whole prompt; a cursor
still open keeps its sequence to itself; of the free sequences, the one sharing the most is taken; the
logits, greedy text and a collaboration's decisions are bit for bit those of a request that reads its whole
prompt; what was taken over counts in ``tokens_cached`` (and ``cache_read`` in a chat model's usage), not in
``tokens_read``.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by scripts/install.sh")

from mentorcollab_langchain.backends import LlamaCppBackend
from mentorcollab_langchain.backends.base import Prompt
from mentorcollab_langchain.backends.llama_cpp import LlamaCppCursor
from mentorcollab_langchain.backends.local import READ_PROMPT_STEP_TOKENS, common_prefix_length
from mentorcollab_langchain.engine import CollabConfig, CollabState, run_collaboration
from mentorcollab_langchain.evals.data import load_questions
from mentorcollab_langchain.evals.prompts import build_prompt
from mentorcollab_langchain.models import PACKAGED_MODELS
from mentorcollab_langchain.models.registry import is_installed

GENERATOR = "smollm2-135m-instruct"
MENTOR = "qwen2.5-coder-1.5b-instruct"
EXAMPLES = " ".join(f"Fact {index}: {index} times 3 is {3 * index}." for index in range(16))  # some 170 tokens


def backends(n_ctx: int, slots: int = 2) -> tuple[LlamaCppBackend, LlamaCppBackend]:
    """The generator with and without the prefix cache, on one context shape of this test's own (``n_ctx``)."""
    if not is_installed(PACKAGED_MODELS[GENERATOR]):
        pytest.skip(f"{GENERATOR} is not installed")
    return tuple(  # type: ignore[return-value]
        LlamaCppBackend(GENERATOR, n_ctx=n_ctx, n_threads=1, batch_slots=slots, prefix_cache=cache)
        for cache in (True, False)
    )


def question(text: str) -> str:
    return f"{EXAMPLES}\nQuestion: {text}\nAnswer:"


def answered(cursor: LlamaCppCursor, text: str = " The") -> tuple[np.ndarray, np.ndarray, str]:
    """The cursor's logits after its prompt and after ``text``, and its greedy continuation; then closed."""
    try:
        return cursor.next_token_logits(""), cursor.next_token_logits(text), cursor.generate(text, 6).text
    finally:
        cursor.close()


def test_a_request_reads_only_what_an_earlier_one_left_it_and_computes_the_same() -> None:
    cached, uncached = backends(n_ctx=1088)
    answered(cached.open(question("what is 7 times 3?"), "raw"))
    later = cached.open(question("what is 12 times 3?"), "raw")
    fresh = uncached.open(question("what is 12 times 3?"), "raw")
    shared = common_prefix_length(later.prompt_ids, cached.prompt_ids(question("what is 7 times 3?"), "raw"))
    assert shared > 2 * READ_PROMPT_STEP_TOKENS
    assert later.tokens_cached == shared - shared % READ_PROMPT_STEP_TOKENS  # whole prompt batches only
    assert fresh.tokens_cached == 0
    logits, after_text, text = answered(later)
    the_rest = len(later.prompt_ids) - later.tokens_cached
    assert later.tokens_read == the_rest + len(later._encode(" The"))
    fresh_logits, fresh_after_text, fresh_text = answered(fresh)
    np.testing.assert_array_equal(logits, fresh_logits)
    np.testing.assert_array_equal(after_text, fresh_after_text)
    assert text == fresh_text and text


@pytest.mark.slow  # a few seconds: the fast set keeps the first test of the rule
def test_the_same_prompt_again_reads_its_last_batch_for_the_logits() -> None:
    cached, uncached = backends(n_ctx=1152)
    prompt = question("what is 5 times 3?")
    first = answered(cached.open(prompt, "raw"))
    again = cached.open(prompt, "raw")
    prompt_tokens = len(again.prompt_ids)
    assert again.tokens_cached == (prompt_tokens - 1) // READ_PROMPT_STEP_TOKENS * READ_PROMPT_STEP_TOKENS
    repeated = answered(again)
    assert 0 < again.tokens_read - len(again._encode(" The")) <= READ_PROMPT_STEP_TOKENS
    for one, other in zip(first[:2], repeated[:2], strict=True):
        np.testing.assert_array_equal(one, other)
    assert repeated[2] == first[2] == answered(uncached.open(prompt, "raw"))[2]


@pytest.mark.slow  # a few seconds: the fast set keeps the first test of the rule
def test_an_open_cursor_keeps_its_sequence_and_the_free_one_sharing_most_is_taken() -> None:
    cached, _ = backends(n_ctx=1216, slots=3)
    holding = cached.open(question("what is 9 times 3?"), "raw")
    holding.next_token_logits("")
    beside = cached.open(question("what is 9 times 3?"), "raw")
    assert beside.tokens_cached == 0, "an open cursor's sequence is its own"
    answered(beside)
    unrelated = cached.open("The weather today is", "raw")  # released after the examples: the newer one
    answered(unrelated)
    holding.close()
    taker = cached.open(question("what is 4 times 3?"), "raw")
    assert taker.tokens_cached > 0, "the free sequence holding the examples, not the newer unrelated one"
    taker.close()


def test_a_cache_reading_only_part_of_its_prompt_offers_only_that_part() -> None:
    cached, _ = backends(n_ctx=1280)
    cursor = cached.open(question("what is 2 times 3?"), "raw")
    cursor.next_token_logits("")
    assert len(cursor.reusable_ids()) == len(cursor.prompt_ids) // READ_PROMPT_STEP_TOKENS * READ_PROMPT_STEP_TOKENS
    cursor.next_token_logits(" 6, and more")  # response tokens are never offered
    assert cursor.reusable_ids() == cursor.prompt_ids[: len(cursor.reusable_ids())]
    cursor.close()


@pytest.mark.slow  # the 1.5B mentor reads a 750-token prompt three times
def test_a_collaboration_on_cached_examples_decides_exactly_as_one_reading_everything() -> None:
    if not is_installed(PACKAGED_MODELS[MENTOR]):
        pytest.skip(f"{MENTOR} is not installed")
    first, second = (build_prompt(item, "fewshot") for item in load_questions("gsm8k", limit=2))
    config = CollabConfig(prompt_style=second.style, stop=second.stop, max_new_tokens=24, probe_rate=0.2)

    def run(prefix_cache: bool, prompt: Prompt) -> CollabState:
        generator = LlamaCppBackend(GENERATOR, n_threads=1, prefix_cache=prefix_cache)
        mentor = LlamaCppBackend(MENTOR, n_threads=1, prefix_cache=prefix_cache)
        return run_collaboration(prompt, generator, mentor, config=config)

    run(True, first.prompt)  # leaves the worked examples in both models' caches
    cached, alone = run(True, second.prompt), run(False, second.prompt)
    assert cached.stats.probes >= 1 and cached.stats.mentor_tokens_cached > 500
    assert cached.text == alone.text and cached.spans == alone.spans
    assert cached.decisions == alone.decisions  # scores included, exactly
    for role in ("generator", "mentor"):
        taken_over = getattr(cached.stats, f"{role}_tokens_cached")
        read = getattr(cached.stats, f"{role}_tokens_read")
        assert read + taken_over == getattr(alone.stats, f"{role}_tokens_read")
        assert getattr(alone.stats, f"{role}_tokens_cached") == 0
