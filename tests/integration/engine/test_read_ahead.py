"""Reading the mentor's prompt ahead changes when the mentor reads, never what the run writes: on the
real packaged models in process (llama.cpp), a few-shot GSM8K prompt of some 750 tokens gives the same
greedy answer, decisions and token accounting with and without it (slow: the 1.5B mentor reads the
prompt twice)."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by scripts/install.sh")

from mentorcollab_langchain.backends import LlamaCppBackend
from mentorcollab_langchain.engine import CollabConfig, Decision, run_collaboration
from mentorcollab_langchain.evals.data import load_questions
from mentorcollab_langchain.evals.prompts import build_prompt

pytestmark = pytest.mark.slow


def test_greedy_answers_are_the_same_with_and_without_read_ahead() -> None:
    question = build_prompt(load_questions("gsm8k", limit=1)[0], "fewshot")
    generator = LlamaCppBackend("smollm2-135m-instruct", n_threads=1)
    mentor = LlamaCppBackend("qwen2.5-coder-1.5b-instruct", n_threads=1)
    config = CollabConfig(prompt_style=question.style, stop=question.stop, max_new_tokens=32, probe_rate=0.2)
    runs = {
        read_ahead: run_collaboration(
            question.prompt, generator, mentor, config=config.model_copy(update={"read_ahead": read_ahead})
        )
        for read_ahead in (True, False)
    }
    ahead, cold = runs[True], runs[False]
    assert ahead.stats.probes >= 2 and ahead.stats.mentor_tokens_read > 700  # the mentor took part, and read
    assert ahead.text == cold.text and ahead.spans == cold.spans
    # The verifier's scores are compared up to llama.cpp's batch noise: the prompt read ahead in steps, or
    # in one go with the response, puts the same tokens in different batches, whose quantized products
    # differ in the last digits (see tests/integration/backends/test_llama_cpp_backend.py).
    assert [_choices(decision) for decision in ahead.decisions] == [_choices(decision) for decision in cold.decisions]
    for with_, without in zip(ahead.decisions, cold.decisions, strict=True):
        assert with_.score == pytest.approx(without.score, abs=0.05)
    assert ahead.stats.model_dump(exclude={"seconds"}) == cold.stats.model_dump(exclude={"seconds"})


def _choices(decision: Decision) -> tuple[object, ...]:
    """A decision without its scores: where, between which words and segments, and what was chosen."""
    return (decision.position, decision.generator_segment, decision.mentor_segment, decision.choice, decision.verifier)
