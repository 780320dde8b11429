"""Does the generator's confidence find the questions worth asking the mentor about?

The uncertain policy spends the mentor where the generator doubts its word. On a few-shot multiple-choice
prompt a probe costs about what the mentor alone costs, so the policy pays off only if its doubt ranks the
questions the mentor would fix (the generator wrong, the mentor right) ahead of the others. This measures
that ranking, for every signal the policy can read, at the answer slot:

- AUC: the chance that a question with the label (the generator wrong; the mentor's answer helps) is
  doubted more than one without. 0.5 is a coin, 1 a perfect ranking.
- On the evaluation samples themselves, the most any threshold on ``top_share`` could recover: probe the
  k most doubtful questions and take the mentor's answer there (as ``always-mentor`` would), for every k,
  against random probes of the same share (whose expected share of the gap is the share itself).
  Choosing k on the evaluation sample is hindsight, so this is a ceiling, not a result.

    python docs/results/confidence.py collect arc_challenge docs/results/confidence   # runs the generator
    python docs/results/confidence.py collect csqa docs/results/confidence
    python docs/results/confidence.py report > docs/results/confidence.md             # reads committed files only

``collect`` reads the generator's answer-slot confidence on each question of the evaluation records in
``rerun/``, prompted exactly as ``mentorcollab eval`` prompts it (``evals.calibration.word_uncertainties``).
``report`` also reads the tuning slices (``tuning/*.jsonl``), which recorded the same confidences on
questions no evaluation samples.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent
SIGNALS = ("top_share", "top_probability", "entropy")
DOUBT_SIGN = {"top_share": -1.0, "top_probability": -1.0, "entropy": 1.0}  # higher doubt, higher value
SHARES = (0.45, 0.5, 0.55, 0.6)
DEFAULT_THRESHOLD = 0.55


def collect(benchmark: str, folder: Path) -> None:
    """Write ``folder/BENCHMARK.jsonl``: each evaluated question's answer-slot confidence, every signal."""
    from mentorcollab_langchain.backends.llama_cpp import LlamaCppBackend
    from mentorcollab_langchain.engine import CollabConfig
    from mentorcollab_langchain.evals.calibration import word_uncertainties
    from mentorcollab_langchain.evals.data import load_questions
    from mentorcollab_langchain.evals.prompts import ANSWER_BUDGET, build_prompt
    from mentorcollab_langchain.evals.runner import question_config, read_results

    evaluated = {record["question_id"] for record in read_results(RESULTS / "rerun" / benchmark)}
    split = "validation" if benchmark == "csqa" else "test"
    questions = [question for question in load_questions(benchmark, split, len(evaluated))
                 if question.id in evaluated]
    if {question.id for question in questions} != evaluated:
        raise SystemExit(f"{benchmark}: the evaluation's questions are not the first {len(evaluated)} of {split}")
    generator = LlamaCppBackend("smollm2-135m-instruct", n_threads=1)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{benchmark}.jsonl", "w", encoding="utf-8") as out:
        for question in questions:
            built = build_prompt(question, "fewshot")
            row = {"question_id": question.id}
            for signal in SIGNALS:
                config = CollabConfig(max_new_tokens=ANSWER_BUDGET[question.kind], uncertainty_signal=signal)
                values = word_uncertainties(built.prompt, generator, question_config(config, question, built))
                row[signal] = values[0] if values else None
            out.write(json.dumps(row) + "\n")


def auc(doubt: Sequence[float], label: Sequence[bool]) -> float:
    """The chance that a labelled question is doubted more than an unlabelled one (ties count half)."""
    positive = [value for value, marked in zip(doubt, label, strict=True) if marked]
    negative = [value for value, marked in zip(doubt, label, strict=True) if not marked]
    pairs = [(p > n) + 0.5 * (p == n) for p in positive for n in negative]
    return sum(pairs) / len(pairs)


def _tuning_rows(benchmark: str) -> list[dict]:
    """The tuning slice: confidences, the generator's and the mentor's letters, the gold letter."""
    rows = []
    for line in (RESULTS / "tuning" / f"{benchmark}.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        top, second = record["top_probability"], record["runner_up_probability"]
        rows.append({
            "top_share": top / (top + second), "top_probability": top, "entropy": record["entropy"],
            "generator_right": record["generator_choice"] == record["gold"],
            "mentor_right": record["mentor_choice"] == record["gold"],
        })
    return rows


def _evaluation_rows(benchmark: str) -> list[dict]:
    """The evaluation sample: collected confidences beside the generator's and the mentor's records, and
    whether the default method (threshold 0.55) probed the question."""
    from mentorcollab_langchain.evals.runner import label_for_key, read_results

    recorded: dict[str, dict[str, dict]] = {}
    for record in read_results(RESULTS / "rerun" / benchmark):
        label = label_for_key(record.get("method_key", {})) or record["method"]
        recorded.setdefault(record["question_id"], {})[label] = record
    rows = []
    for line in (RESULTS / "confidence" / f"{benchmark}.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        methods = recorded[record["question_id"]]
        rows.append({signal: record[signal] for signal in SIGNALS} | {
            "generator_right": methods["generator"]["correct"], "mentor_right": methods["mentor"]["correct"],
            "default_probed": methods["mentorcollab"]["stats"]["probes"] > 0,
        })
    return rows


def _probe_check_row(name: str, rows: list[dict]) -> str:
    """The collected confidences against the default run's probes: every question below 0.55 was probed,
    and the rest of its probes are random ones (rate 0.02 a word)."""
    below = [row for row in rows if row["top_share"] < DEFAULT_THRESHOLD]
    above = [row for row in rows if row["top_share"] >= DEFAULT_THRESHOLD]
    return (f"| {name} | {len(below)} | {sum(row['default_probed'] for row in below)} | {len(above)} | "
            f"{sum(row['default_probed'] for row in above)} |")


def _auc_row(name: str, rows: list[dict]) -> str:
    wrong = [not row["generator_right"] for row in rows]
    helps = [row["mentor_right"] and not row["generator_right"] for row in rows]
    cells = []
    for signal in SIGNALS:
        doubt = [DOUBT_SIGN[signal] * row[signal] for row in rows]
        cells.append(f"{auc(doubt, wrong):.2f} / {auc(doubt, helps):.2f}")
    return f"| {name} | {len(rows)} | {sum(wrong)} / {sum(helps)} | " + " | ".join(cells) + " |"


def gap_recovered_by_doubt(rows: list[dict]) -> list[float]:
    """Share of the gap recovered when the k most doubtful questions (by ``top_share``) take the mentor's
    answer, for k = 0..n."""
    ordered = sorted(rows, key=lambda row: row["top_share"])
    gap = sum(row["mentor_right"] for row in rows) - sum(row["generator_right"] for row in rows)
    recovered, gained = [0.0], 0
    for row in ordered:
        gained += row["mentor_right"] - row["generator_right"]
        recovered.append(gained / gap)
    return recovered


def report() -> None:
    print("# Does the generator's confidence find the questions worth asking the mentor about?")
    print()
    print("Made by `docs/results/confidence.py` (its docstring says how); nothing here was tuned on.")
    print()
    print("AUC of each signal, the generator's doubt at the answer slot: for the generator being wrong / for")
    print("the mentor's answer helping (the mentor right where the generator is wrong). 0.5 is a coin.")
    print()
    print("| questions | n | generator wrong / mentor helps | top_share | top_probability | entropy |")
    print("|---|---|---|---|---|---|")
    print(_auc_row("ARC-Challenge validation (tuning slice)", _tuning_rows("arc_challenge")))
    print(_auc_row("CommonsenseQA validation from 200 (tuning slice)", _tuning_rows("csqa")))
    evaluation = {"arc_challenge": _evaluation_rows("arc_challenge"), "csqa": _evaluation_rows("csqa")}
    print(_auc_row("ARC-Challenge test (evaluation sample)", evaluation["arc_challenge"]))
    print(_auc_row("CommonsenseQA validation (evaluation sample)", evaluation["csqa"]))
    print()
    print("The collected confidences are the ones the evaluation acted on: the default run (`rerun/`, threshold")
    print("0.55) probed every question below the threshold; its probes above it are random ones.")
    print()
    print("| evaluation sample | below 0.55 | of them probed | at or above | of them probed (random) |")
    print("|---|---|---|---|---|")
    print(_probe_check_row("ARC-Challenge test", evaluation["arc_challenge"]))
    print(_probe_check_row("CommonsenseQA validation", evaluation["csqa"]))
    print()
    print("On the evaluation samples, in hindsight: the k most doubtful questions (lowest `top_share`) take the")
    print("mentor's answer. Share of the gap recovered, against random probes of the same share (whose")
    print("expectation is the share itself); then the best share at most 0.6 any threshold could pick.")
    print()
    print("| evaluation sample | " + " | ".join(f"{share:.0%} probed" for share in SHARES)
          + " | best at ≤ 60% probed |")
    print("|---|" + "---|" * (len(SHARES) + 1))
    for name, rows in (("ARC-Challenge test", evaluation["arc_challenge"]),
                       ("CommonsenseQA validation", evaluation["csqa"])):
        recovered = gap_recovered_by_doubt(rows)
        n = len(rows)
        cells = [f"{recovered[round(share * n)]:.0%}" for share in SHARES]
        best = max(range(round(0.6 * n) + 1), key=lambda k: recovered[k])
        print(f"| {name} | " + " | ".join(cells) + f" | {recovered[best]:.0%} at {best / n:.0%} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["collect"]:
        collect(sys.argv[2], Path(sys.argv[3]))
    else:
        report()
