"""Honest evaluation: the questions that tuned a default never appear in an evaluation sample.

The published evaluations take the first ``EVALUATION_LIMIT`` questions of each benchmark's fixed
shuffled order (``mentorcollab eval --limit 100``). Tuning used other splits (ARC-Challenge validation)
or questions past that range (CommonsenseQA validation from 100 on, GSM8K from 1000 on). This test reads
the question ids recorded by the tuning runs and the threshold calibrations, and checks them against the
evaluation samples. The independent re-measure (``docs/results/resample``) must also stay clear of both,
and the hidden-state probe (``docs/results/hidden_state``) of the evaluation samples and the re-measure.
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


def evaluated_ids(name: str) -> set[str]:
    """The questions of ``name``'s evaluation sample."""
    return {question.id for question in load_questions(name, EVALUATED[name], EVALUATION_LIMIT)}


def resampled_ids(name: str) -> set[str]:
    """The questions of ``name``'s independent re-measure."""
    return {str(record["question_id"]) for record in read_results(RESULTS / "resample" / name)}


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
    split = EVALUATED[name]
    assert {record["split"] for record in read_results(RESULTS / "resample" / name)} == {split}
    resampled = resampled_ids(name)
    assert len(resampled) == EVALUATION_LIMIT
    assert not resampled & evaluated_ids(name), "the resample repeats the evaluation sample"
    for (tuned_benchmark, tuned_split), ids in tuning_ids().items():
        if (tuned_benchmark, tuned_split) == (name, split):
            assert not resampled & ids, f"{name}/{split}: the resample holds tuning questions"


def test_the_hidden_state_probe_reads_no_evaluation_question_and_is_tested_on_questions_it_never_saw() -> None:
    lines = (RESULTS / "hidden_state" / "answers.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    for name in ("arc_challenge", "csqa"):
        read = {record["question_id"] for record in records
                if (record["benchmark"], record["split"]) == (name, EVALUATED[name])}
        assert not read & (evaluated_ids(name) | resampled_ids(name)), f"the probe read an evaluated {name} question"
    assert not {record["benchmark"] for record in records} & {"gsm8k"}
    trained = {(record["benchmark"], record["question_id"]) for record in records if record["role"] == "train"}
    tested = {(record["benchmark"], record["question_id"]) for record in records if record["role"] == "test"}
    assert len(trained) == 1791 and len(tested) == 599
    assert not trained & tested, "the probe is tested on a question it was trained on"
