"""The published evaluation tables rebuild exactly from committed data.

Which table in ``docs/results`` comes from which committed data, and the test that rebuilds it:

- ``report.md`` and the README's summary table: ``data/*.jsonl`` through ``mentorcollab eval --report``;
- ``ceiling.md`` and the README's ceiling table: ``data/*.jsonl`` through ``ceiling.py``;
- ``tuning/summary.md`` and the README's tuning table: ``tuning/*.jsonl`` through ``answer_slot.py --summary``;
- ``tuning/gsm8k/report.md`` (GSM8K past the evaluation range, two thresholds): ``tuning/gsm8k/records.jsonl``
  through ``mentorcollab eval --report``;
- ``rerun/arc_challenge/report.md`` and ``rerun/csqa/report.md`` (re-runs with today's cursor, beside the
  recorded mentor): their ``records.jsonl`` through ``mentorcollab eval --report``;
- ``resample/arc_challenge/report.md``, ``resample/csqa/report.md``, ``resample/arc_challenge/ceiling.md``,
  ``resample/csqa/ceiling.md`` (the re-measure on questions nobody had read) and the README's two re-measure
  tables: their ``records.jsonl`` through ``mentorcollab eval --report`` and ``ceiling.py``;
- the README's "Against the targets" table: its measured column, from the same summary rows;
- the README's calibrated table: ``tuning/calibration/*.json`` and the calibrated rows of ``rerun/*/records.jsonl``;
- ``confidence.md`` and the README's AUC table: ``confidence/*.jsonl`` (collected by ``confidence.py collect``),
  ``tuning/*.jsonl`` and ``rerun/*/records.jsonl`` through ``confidence.py report``;
- ``hidden_state.md`` and the README's hidden-state table: ``hidden_state/answers.jsonl`` and
  ``hidden_state/states.safetensors`` (collected by ``hidden_state.py collect``) through ``hidden_state.py report``;
- ``mlp_verifier.md``: its two tables and its training and validation counts, from the shipped verifier's card.

The issue-5 pages, its sweeps and the verifier order check were retired because their records were never
committed; the results README says where to read them as published.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import runpy
from pathlib import Path

import pytest

from mentorcollab_langchain.engine import CollabConfig
from mentorcollab_langchain.engine.config import READ_AHEAD_MIN_TOKENS
from mentorcollab_langchain.evals.data import MissingBenchmarkData, load_questions
from mentorcollab_langchain.evals.extract import score
from mentorcollab_langchain.evals.report import build_report, summarize
from mentorcollab_langchain.evals.runner import ModelInfo, label_for_key, make_methods, read_results
from mentorcollab_langchain.verifiers.mlp import TRAINED_DIR
from tests.paths import RESULTS, TUNING

# The published benchmarks and how many questions of each the records hold.
PUBLISHED = {"arc_challenge": 100, "csqa": 100, "gsm8k": 30}


def _without_source_line(text: str) -> list[str]:
    """The report minus the line naming the folder it was rebuilt from (an absolute path in the test)."""
    return [line for line in text.splitlines() if not line.startswith("Rebuilt from the result JSONL")]


def _printed(script: Path, function: str, *args: object) -> str:
    """What a docs/results script's ``function`` prints (the scripts write their tables to stdout)."""
    namespace = runpy.run_path(str(script), run_name="published_results_test")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        namespace[function](*args)
    return printed.getvalue()


def _table_rows(text: str, header_start: str) -> list[str]:
    """The body rows of the markdown table whose header line starts with ``header_start``."""
    lines = text.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def _cells(row: str) -> list[str]:
    return [cell.strip().strip("*").strip() for cell in row.strip().strip("|").split("|")]


README = (RESULTS / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(("records", "page"), [
    (RESULTS / "data", RESULTS / "report.md"),
    (TUNING / "gsm8k", TUNING / "gsm8k" / "report.md"),
    (RESULTS / "rerun" / "arc_challenge", RESULTS / "rerun" / "arc_challenge" / "report.md"),
    (RESULTS / "rerun" / "csqa", RESULTS / "rerun" / "csqa" / "report.md"),
    (RESULTS / "resample" / "arc_challenge", RESULTS / "resample" / "arc_challenge" / "report.md"),
    (RESULTS / "resample" / "csqa", RESULTS / "resample" / "csqa" / "report.md"),
], ids=["evaluation", "gsm8k threshold check", "arc re-run", "csqa re-run", "arc resample", "csqa resample"])
def test_the_published_report_rebuilds_from_the_committed_records(records: Path, page: Path, tmp_path: Path) -> None:
    report, image = build_report(records, tmp_path)
    published = page.read_text(encoding="utf-8")
    assert _without_source_line(report.read_text(encoding="utf-8")) == _without_source_line(published)
    assert image.exists() and image.stat().st_size > 10_000


def test_the_results_readme_quotes_the_rebuilt_summary(tmp_path: Path) -> None:
    report, _ = build_report(RESULTS / "data", tmp_path)
    summary = report.read_text(encoding="utf-8").split("## Summary\n\n", 1)[1].split("\n\n", 1)[0]
    assert summary in README


def test_the_confidence_tables_rebuild_from_the_committed_records() -> None:
    rebuilt = _printed(RESULTS / "confidence.py", "report")
    assert rebuilt == (RESULTS / "confidence.md").read_text(encoding="utf-8")
    header = "| questions | n | generator wrong / mentor helps |"
    assert _table_rows(README, header) == _table_rows(rebuilt, header)
    for benchmark in ("arc_challenge", "csqa"):  # the confidences cover exactly the evaluation sample
        collected = {json.loads(line)["question_id"]
                     for line in (RESULTS / "confidence" / f"{benchmark}.jsonl").read_text().splitlines()}
        assert collected == {record["question_id"] for record in read_results(RESULTS / "rerun" / benchmark)}


@pytest.mark.slow  # fits 36 logistic regressions on 1,791 hidden states: about ten seconds
def test_the_hidden_state_table_rebuilds_from_the_committed_states() -> None:
    rebuilt = _printed(RESULTS / "hidden_state.py", "report", RESULTS / "hidden_state")
    assert rebuilt == (RESULTS / "hidden_state.md").read_text(encoding="utf-8")
    header = "| held-out questions | n | generator wrong |"
    assert _table_rows(README, header) == _table_rows(rebuilt, header)


def test_the_ceiling_table_rebuilds_from_the_committed_records() -> None:
    rebuilt = _printed(RESULTS / "ceiling.py", "main", RESULTS / "data")
    assert rebuilt == (RESULTS / "ceiling.md").read_text(encoding="utf-8")
    header = "| benchmark | n | generator | mentor | default, as run |"
    assert _table_rows(README, header) == _table_rows(rebuilt, header)
    assert len(_table_rows(rebuilt, header)) == 2  # arc_challenge and csqa


# The re-measure replays the method each benchmark was re-measured with: the default on ARC-Challenge,
# the calibrated threshold on CommonsenseQA.
RESAMPLED = {"arc_challenge": "mentorcollab", "csqa": "mentorcollab (t=0.528708)"}


@pytest.mark.parametrize(("name", "method"), RESAMPLED.items())
def test_the_resample_tables_rebuild_and_the_readme_quotes_them(name: str, method: str, tmp_path: Path) -> None:
    folder = RESULTS / "resample" / name
    report, _ = build_report(folder, tmp_path)
    summary = _table_rows(report.read_text(encoding="utf-8"), "| benchmark | generator | mentor | method |")
    assert [_cells(row)[3].split(":")[0] for row in summary] == [method]
    ceiling = _printed(RESULTS / "ceiling.py", "main", folder, method)
    assert ceiling == (folder / "ceiling.md").read_text(encoding="utf-8")
    ceiling_rows = _table_rows(ceiling, "| benchmark | n | generator | mentor | default, as run |")
    assert len(ceiling_rows) == 1
    assert summary[0] in README and ceiling_rows[0] in README


def test_the_tuning_summary_rebuilds_from_the_committed_tuning_records() -> None:
    rebuilt = _printed(TUNING / "answer_slot.py", "summary", sorted(TUNING.glob("*.jsonl")))
    assert rebuilt == (TUNING / "summary.md").read_text(encoding="utf-8")
    # The README's tuning table picks rows of it: (threshold, margin) -> ARC probed, gap; CSQA probed, gap.
    replayed: dict[tuple[str, float, float], tuple[str, str]] = {}
    for block in filter(None, (block.strip() for block in rebuilt.split("\n\n"))):
        benchmark = block.split(":", 1)[0]
        for row in _table_rows(block, "| top_share below |"):
            threshold, margin, probed, _, _, gap = _cells(row)
            replayed[(benchmark, float(threshold), float(margin))] = (probed, gap)
    assert {key[0] for key in replayed} == {"arc_challenge", "csqa"}
    quoted = _table_rows(README, "| `top_share` below | margin |")
    assert len(quoted) == 5
    for row in quoted:
        threshold, margin, *figures = _cells(row)
        key = (1.01 if threshold == "every question" else float(threshold), float(margin.split(" ")[0]))
        expected = [*replayed[("arc_challenge", *key)], *replayed[("csqa", *key)]]
        assert figures == expected, row


def test_the_targets_table_quotes_the_rebuilt_figures() -> None:
    rows = {(row.benchmark, row.method): row for row in summarize(read_results(RESULTS / "data"))}
    measured = {_cells(row)[0]: _cells(row)[2] for row in _table_rows(README, "| benchmark | target | measured |")}
    pairs = []
    for benchmark, name in (("arc_challenge", "ARC-Challenge"), ("csqa", "CommonsenseQA"), ("gsm8k", "GSM8K")):
        row = rows[(benchmark, "mentorcollab")]
        paired = row.vs_generator
        expected = (f"{row.gap_recovered.value:.0%} at {row.compute_vs_mentor.value:.2f}× "
                    f"(n={row.n}; +{paired.gained}/\u2212{paired.lost}, {_p(paired.p_value)})")
        assert measured[name] == expected
        pairs.append(f"+{paired.gained}/\u2212{paired.lost}")
    assert measured["all"] == ", ".join(pairs)


def _p(p_value: float) -> str:
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.2g}"


def calibrated_rows() -> list[str]:
    """The calibrated table's rows, from each calibration record and the evaluation run at its threshold."""
    rows = []
    for benchmark, name in (("arc_challenge", "ARC-Challenge"), ("csqa", "CommonsenseQA")):
        calibration = json.loads((TUNING / "calibration" / f"{benchmark}.json").read_text(encoding="utf-8"))
        threshold = calibration["uncertainty_threshold"]
        records = read_results(RESULTS / "rerun" / benchmark)
        ran = [record for record in records if record["method_key"]["role"] == "collab"
               and record["method_key"]["config"]["uncertainty_threshold"] == threshold]
        assert len(ran) == 100, f"{benchmark}: the evaluation at the calibrated threshold {threshold}"
        row = next(row for row in summarize(records) if row.method == label_for_key(ran[0]["method_key"]))
        probed = sum(record["stats"]["probes"] > 0 for record in ran) / len(ran)
        paired = row.vs_generator
        rows.append(f"| {name} | {threshold:.3f} | {calibration['answer_share']:.0%} | {probed:.0%} | "
                    f"{row.gap_recovered.value:.0%} | {row.compute_vs_mentor.value:.2f}× | "
                    f"+{paired.gained}/\u2212{paired.lost}, {_p(paired.p_value)} |")
    return rows


def test_the_calibrated_table_quotes_the_calibrations_and_their_runs() -> None:
    assert _table_rows(README, "| benchmark | threshold |") == calibrated_rows()


def test_the_committed_records_score_the_same_under_todays_extractor() -> None:
    """Each record's predicted answer and correctness, rescored from its response with today's extractor."""
    records = read_results(RESULTS / "data")
    assert {record["benchmark"] for record in records} == set(PUBLISHED)
    assert len(records) == sum(5 * questions for questions in PUBLISHED.values())  # five methods each
    try:
        questions = {(q.benchmark, q.id): q for name in PUBLISHED for q in load_questions(name)}
    except MissingBenchmarkData as error:
        pytest.skip(str(error))
    for record in records:
        question = questions[(record["benchmark"], record["question_id"])]
        predicted, correct = score(question.kind, record["response"], question.gold, question.labels,
                                   question.choices)
        assert (predicted, correct, question.gold) == (record["predicted"], record["correct"], record["gold"]), record


@pytest.mark.parametrize("published", PUBLISHED)
def test_the_committed_records_resume_under_todays_defaults(published: str) -> None:
    """``mentorcollab eval --limit 100`` on the data folder picks up the recorded questions: settings added
    since (grammar, probe_first_word, read_ahead) leave the recorded methods' hashes alone. A 16-token
    multiple-choice answer reads nothing ahead, so its records resume under ``--no-read-ahead`` as well."""
    records = [record for record in read_results(RESULTS / "data") if record["benchmark"] == published]
    for name in ("generator", "mentor", "mentorcollab", "previous-default", "faithful"):
        record = next(record for record in records if record["method"] == name)
        models = record["method_key"]["models"]
        generator = ModelInfo(**models.get("generator", models.get("mentor")))
        mentor = ModelInfo(**models.get("mentor", models.get("generator")))
        budget = record["method_key"]["config"]["max_new_tokens"]
        for read_ahead in (None, False) if budget < READ_AHEAD_MIN_TOKENS else (None,):
            base = CollabConfig(max_new_tokens=budget, read_ahead=read_ahead)
            method = make_methods([name], base, record["method_key"]["prompt"])[0]
            assert method.config_hash(generator, mentor) == record["config_hash"], (name, read_ahead)


# The rows of mlp_verifier.md's validation table, each with the card's name for the same verifier.
MLP_VALIDATION_ROWS = {
    "mlp, at the threshold chosen on this same validation set ({threshold:.1g}, optimistic)":
        "mlp (threshold chosen on validation: optimistic)",
    "mlp, at 0.5": "mlp at 0.5",
    "always-mentor": "always-mentor",
    "self-consult-both-orders (at 0.5)": "self-consult-both-orders",
    "self-consult, one order (at 0.5)": "self-consult (one order)",
}


def test_the_mlp_verifier_page_quotes_the_shipped_card() -> None:
    page = (RESULTS / "mlp_verifier.md").read_text(encoding="utf-8")
    card = json.loads((TRAINED_DIR / "smollm2-135m-instruct.json").read_text(encoding="utf-8"))
    data, training = card["training_data"], card["training"]
    totals = data["totals"]
    counts = {_cells(row)[0]: int(_cells(row)[1]) for row in _table_rows(page, "| | count |")}
    assert counts == {
        "questions run": sum(source["questions"] for source in data["counts"].values()),
        "divergences": totals["divergences"],
        "mentor leads to the gold": totals["mentor"],
        "generator leads to the gold": totals["generator"],
        "dropped (neither or both)": totals["dropped"],
    }
    assert (f"Training set: {training['train_examples']} divergences ({training['train_mentor_labels']} mentor). "
            f"Validation set: {training['validation_examples']} divergences "
            f"({training['validation_mentor_labels']} mentor)") in page
    train = training["train"]
    assert f"On the {train['n']} training divergences the MLP scores {train['accuracy']:.0%}" in page
    header = f"| verifier, on the {training['validation_examples']} validation divergences |"
    expected = []
    for label, name in MLP_VALIDATION_ROWS.items():
        scores = card["validation"][name]
        # A constant score ranks nothing: the card's AUC of 0.5 for always-mentor is a placeholder, shown as "—".
        auc = "—" if name == "always-mentor" else f"{scores['auc']:.2f}"
        expected.append(f"| {label.format(threshold=card['threshold'])} | {scores['accuracy']:.1%} | "
                        f"{scores['balanced_accuracy']:.1%} | {auc} |")
    assert _table_rows(page, header) == expected


def test_the_results_pages_link_to_files_that_exist() -> None:
    """Every relative link in a results page names a file in the repository (a retired page leaves none)."""
    for page in RESULTS.rglob("*.md"):
        for target in re.findall(r"\]\(([^)#\s]+)\)", page.read_text(encoding="utf-8")):
            if "://" not in target:
                assert (page.parent / target).exists(), (page, target)


def test_every_table_in_the_results_folder_is_accounted_for() -> None:
    """A new results page must be added to this module's list: rebuilt by a test, or named as not rebuilt."""
    listed = re.findall(r"``([\w./-]+\.(?:md|txt))``", __doc__ or "")
    pages = {str(path.relative_to(RESULTS)) for path in RESULTS.rglob("*") if path.suffix in (".md", ".txt")}
    assert pages - {"README.md"} == set(listed)
