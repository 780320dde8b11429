"""Honest evaluation: the questions that tuned a default never appear in an evaluation sample.

The published evaluations take the first ``EVALUATION_LIMIT`` questions of each benchmark's fixed
shuffled order (``mentorcollab eval --limit 100``). Tuning used other splits (ARC-Challenge validation)
or questions past that range (CommonsenseQA validation from 100 on, GSM8K from 1000 on). This test reads
the question ids recorded by the tuning runs and the threshold calibrations, and checks them against the
evaluation samples. The independent re-measure (``docs/results/resample``) must also stay clear of both.
"""

from __future__ import annotations

import json

import pytest

from mentorcollab_langchain.evals.data import load_questions
from mentorcollab_langchain.evals.runner import read_results
from tests.paths import RESULTS, TUNING

EVALUATION_LIMIT = 100
EVALUATED = {"arc_challenge": "test", "csqa": "validation", "gsm8k": "test"}


def tuning_ids() -> dict[tuple[str, str], set[str]]:
    """The questions every tuning record and every threshold calibration (``calibration/*.json``) read."""
    ids: dict[tuple[str, str], set[str]] = {}
    for file in sorted(TUNING.rglob("*.jsonl")):
        for line in file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                ids.setdefault((row["benchmark"], row["split"]), set()).add(str(row["question_id"]))
    for file in sorted(TUNING.rglob("*.json")):
        calibration = json.loads(file.read_text(encoding="utf-8"))
        ids.setdefault((calibration["benchmark"], calibration["split"]), set()).update(calibration["question_ids"])
    return ids


def test_tuning_runs_were_recorded() -> None:
    recorded = tuning_ids()
    assert len(recorded[("arc_challenge", "validation")]) >= 50 and len(recorded[("csqa", "validation")]) >= 50
    assert len(recorded[("gsm8k", "test")]) >= 10  # the threshold check past the evaluation range
    calibrated = {file.stem for file in (TUNING / "calibration").glob("*.json")}
    assert calibrated == {"arc_challenge", "csqa"}


@pytest.mark.parametrize("name", sorted(EVALUATED))
def test_no_tuning_question_is_in_the_evaluation_sample(name: str) -> None:
    benchmark = name
    split = EVALUATED[benchmark]
    evaluated = {question.id for question in load_questions(benchmark, split, EVALUATION_LIMIT)}
    assert len(evaluated) == EVALUATION_LIMIT
    for (tuned_benchmark, tuned_split), ids in tuning_ids().items():
        if tuned_benchmark == benchmark and tuned_split == split:
            overlap = ids & evaluated
            assert not overlap, f"{benchmark}/{split}: tuned on evaluated questions {sorted(overlap)[:5]}"
    # The test can tell: the evaluation sample itself would overlap.
    assert evaluated & {question.id for question in load_questions(benchmark, split, 10)}


@pytest.mark.parametrize("name", ["arc_challenge", "csqa"])
def test_the_resample_shares_no_question_with_the_evaluation_sample_or_the_tuning_data(name: str) -> None:
    records = read_results(RESULTS / "resample" / name)
    split = EVALUATED[name]
    assert {record["split"] for record in records} == {split}
    resampled = {str(record["question_id"]) for record in records}
    assert len(resampled) == EVALUATION_LIMIT
    evaluated = {question.id for question in load_questions(name, split, EVALUATION_LIMIT)}
    assert not resampled & evaluated, "the resample repeats the evaluation sample"
    for (tuned_benchmark, tuned_split), ids in tuning_ids().items():
        if (tuned_benchmark, tuned_split) == (name, split):
            assert not resampled & ids, f"{name}/{split}: the resample holds tuning questions"
