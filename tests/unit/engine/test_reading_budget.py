"""``max_mentor_tokens_read`` holds before a probe, not after it: a probe whose reading would pass the budget
is not made, and a prompt the budget cannot pay for is not read ahead.

A tiny randomly initialized generator and the real SmolLM2 on llama.cpp as the mentor (so their words
diverge and the verifier runs), probed at every word; the mentor's cursor foresees its reading
(``tokens_to_read``).
"""

from __future__ import annotations

import pytest

from mentorcollab_langchain.backends import Backend, TransformersBackend
from mentorcollab_langchain.engine import CollabConfig, run_collaboration
from mentorcollab_langchain.verifiers import NeverMentor

PROMPT = "Question: how many apples are there in three baskets of four? " * 6
EVERY_WORD = CollabConfig(prompt_style="raw", probe_rate=1.0, max_new_tokens=24, segment_tokens=3, read_ahead=True)


@pytest.fixture(scope="module")
def models(tiny_byte_level_model: str) -> tuple[TransformersBackend, Backend]:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by scripts/install.sh")
    from mentorcollab_langchain.backends import LlamaCppBackend

    return (TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32", prefix_cache=False),
            LlamaCppBackend("smollm2-135m-instruct", n_threads=1, prefix_cache=False))


def prompt_tokens(mentor: Backend) -> int:
    cursor = mentor.open(PROMPT, "raw")
    try:
        return len(cursor.prompt_ids)
    finally:
        cursor.close()


def test_a_budget_below_the_prompt_reads_nothing_and_probes_nowhere(models) -> None:
    generator, mentor = models
    budget = prompt_tokens(mentor) - 1
    state = run_collaboration(PROMPT, generator, mentor, verifier=NeverMentor(),
                              config=EVERY_WORD.model_copy(update={"max_mentor_tokens_read": budget}))
    assert state.stats.mentor_tokens_read == 0 and state.stats.probes == 0 and state.stats.mentor_calls == 0
    assert state.probing_stopped == (f"mentor reading budget too small for the next probe ({budget + 1} tokens to "
                                     f"read, {budget} of max_mentor_tokens_read={budget} left)")
    alone = run_collaboration(PROMPT, generator, mentor, config=EVERY_WORD.model_copy(update={"probe_rate": 0.0}))
    assert state.text == alone.text  # the generator answered as it does alone


@pytest.mark.parametrize("extra", [1, 5, 12])
def test_the_mentor_never_reads_past_its_budget(models, extra: int) -> None:
    """With a verifier that does not consult the mentor, all of the mentor's reading is probes' reading."""
    generator, mentor = models
    budget = prompt_tokens(mentor) + extra
    state = run_collaboration(PROMPT, generator, mentor, verifier=NeverMentor(),
                              config=EVERY_WORD.model_copy(update={"max_mentor_tokens_read": budget}))
    assert 1 <= state.stats.probes < state.stats.words, "some probes fit the budget, later ones did not"
    assert state.stats.mentor_tokens_read <= budget
    assert state.probing_stopped.startswith("mentor reading budget")  # too small for the next probe, or spent


def test_the_mentor_margin_verifier_passes_it_by_at_most_the_generators_last_segment(models) -> None:
    """The verifier reads the generator's segment under the mentor after the probe's check; the next probe is
    checked again, so only the last verdict can pass the budget, by that segment and the token before it."""
    generator, mentor = models
    budget = prompt_tokens(mentor) + 5
    state = run_collaboration(PROMPT, generator, mentor, verifier="mentor-margin",
                              config=EVERY_WORD.model_copy(update={"max_mentor_tokens_read": budget}))
    assert state.decisions, "the models diverged and the verifier read under the mentor"
    cursor = mentor.open(PROMPT, "raw")
    last_segment = len(cursor.token_ids(state.decisions[-1].generator_segment)) - len(cursor.prompt_ids)
    cursor.close()
    assert state.stats.mentor_tokens_read <= budget + last_segment + 1
