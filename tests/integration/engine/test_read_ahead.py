"""Reading the mentor's prompt ahead changes when the mentor reads, never what the run writes: on the
real packaged models in process (llama.cpp), a few-shot GSM8K prompt of some 750 tokens gives the same
greedy answer, decisions and token accounting with and without it (slow: the 1.5B mentor reads the
prompt twice).

The prompt read ahead in steps and the prompt read with the first words of the response used to land in
different llama.cpp batches, whose quantized products differ in the last digits; that was enough to flip
a probe and change a greedy answer (GSM8K test question 506 in chat style, 96 tokens). The cursor now
feeds the prompt in the same batches either way, so the runs are compared exactly."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by scripts/install.sh")

from mentorcollab_langchain.backends import LlamaCppBackend
from mentorcollab_langchain.engine import CollabConfig, run_collaboration
from mentorcollab_langchain.evals.data import load_questions
from mentorcollab_langchain.evals.prompts import build_prompt

pytestmark = pytest.mark.slow


def test_greedy_answers_are_the_same_with_and_without_read_ahead() -> None:
    question = build_prompt(load_questions("gsm8k", limit=1)[0], "fewshot")
    # Without the prefix cache, so that the second run reads its prompt as the first did.
    generator = LlamaCppBackend("smollm2-135m-instruct", n_threads=1, prefix_cache=False)
    mentor = LlamaCppBackend("qwen2.5-coder-1.5b-instruct", n_threads=1, prefix_cache=False)
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
    # Exactly, scores included: the prompt goes into the same batches either way (``backends.local``), and
    # llama.cpp's quantized products are deterministic for a given batch.
    assert ahead.decisions == cold.decisions
    assert ahead.stats.model_dump(exclude={"seconds"}) == cold.stats.model_dump(exclude={"seconds"})
