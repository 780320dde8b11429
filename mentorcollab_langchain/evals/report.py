"""Turn result JSONL into a report: a markdown table per benchmark and a PNG plot of accuracy
against the mentor's share of committed tokens (one point per method/setting).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mentorcollab_langchain.evals.runner import label_for_key, read_results


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound at small n and near 0 or 1)."""
    if total == 0:
        return 0.0, 0.0
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Row:
    benchmark: str
    split: str
    method: str
    config_hash: str
    key: dict[str, Any]
    n: int
    correct: int
    unparsed: int
    errors: int
    mentor_share: float  # mentor tokens committed / all tokens committed, over all questions
    mentor_tokens_per_q: float
    tokens_per_q: float
    probes_per_q: float
    adoptions_per_q: float
    seconds_per_q: float
    question_ids: frozenset[str]
    correct_ids: frozenset[str]
    cost_vs_mentor: float | None = None  # mentor tokens generated per question / mentor alone's
    time_vs_mentor: float | None = None
    paired: str = ""  # vs the generator alone on the questions both answered

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.n)

    @property
    def backends(self) -> str:
        models = self.key.get("models", {})
        return ", ".join(f"{role}: {info['name']} ({info['backend']})" for role, info in models.items())

    @property
    def setting(self) -> str:
        config = self.key.get("config", {})
        if self.key.get("role") != "collab":
            return f"{self.key.get('prompt')} prompt, max {config.get('max_new_tokens')} tokens"
        return (f"p={config.get('probe_rate')}, seg={config.get('segment_tokens')}, {self.key.get('verifier')}, "
                f"{self.key.get('prompt')} prompt, max {config.get('max_new_tokens')} tokens")


def _label(record: dict[str, Any]) -> str:
    """The stored label, except that default-named collaborations are renamed against today's defaults."""
    if record["method"].startswith("mentorcollab"):
        return label_for_key(record.get("method_key", {})) or record["method"]
    return record["method"]


def summarize(records: Sequence[dict[str, Any]]) -> list[Row]:
    """One row per (benchmark, split, config hash), with costs relative to the mentor alone."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["benchmark"], record["split"], record["config_hash"])].append(record)
    rows = []
    for (benchmark, split, config_hash), items in groups.items():
        # the last answer per question wins (a file edited by hand may hold duplicates)
        by_question = {str(item["question_id"]): item for item in items}
        items = list(by_question.values())
        n = len(items)
        committed = sum(item["stats"]["tokens_committed"] for item in items)
        mentor_committed = sum(item["stats"]["mentor_tokens_committed"] for item in items)
        rows.append(Row(
            benchmark=benchmark,
            split=split,
            method=_label(items[-1]),
            config_hash=config_hash,
            key=items[-1].get("method_key", {}),
            n=n,
            correct=sum(bool(item["correct"]) for item in items),
            unparsed=sum(not item["parsed"] for item in items),
            errors=sum(bool(item.get("error")) for item in items),
            mentor_share=mentor_committed / committed if committed else 0.0,
            mentor_tokens_per_q=sum(item["stats"]["mentor_tokens_generated"] for item in items) / n,
            tokens_per_q=committed / n,
            probes_per_q=sum(item["stats"]["probes"] for item in items) / n,
            adoptions_per_q=sum(item["stats"]["adoptions"] for item in items) / n,
            seconds_per_q=sum(item["seconds"] for item in items) / n,
            question_ids=frozenset(by_question),
            correct_ids=frozenset(qid for qid, item in by_question.items() if item["correct"]),
        ))
    for (benchmark, split), members in _by_benchmark(rows).items():
        mentors = [row for row in members if row.key.get("role") == "mentor"]
        generators = [row for row in members if row.key.get("role") == "generator"]
        mentor = max(mentors, key=lambda row: row.n) if mentors else None
        generator = max(generators, key=lambda row: row.n) if generators else None
        for row in members:
            if mentor is not None and mentor.mentor_tokens_per_q:
                row.cost_vs_mentor = row.mentor_tokens_per_q / mentor.mentor_tokens_per_q
                row.time_vs_mentor = row.seconds_per_q / mentor.seconds_per_q if mentor.seconds_per_q else None
            if generator is not None and row is not generator:
                row.paired = paired_difference(row, generator)
    rows.sort(key=lambda row: (row.benchmark, row.split, _role_order(row), row.method))
    return rows


def paired_difference(row: Row, baseline: Row) -> str:
    """Accuracy difference on the questions both answered, with how many each got that the other missed."""
    common = row.question_ids & baseline.question_ids
    if not common:
        return ""
    gained = len((row.correct_ids - baseline.correct_ids) & common)
    lost = len((baseline.correct_ids - row.correct_ids) & common)
    return f"{(gained - lost) / len(common):+.1%} on {len(common)} (+{gained}/-{lost})"


def _role_order(row: Row) -> int:
    return {"generator": 0, "mentor": 1}.get(row.key.get("role", ""), 2)


def _by_benchmark(rows: Sequence[Row]) -> dict[tuple[str, str], list[Row]]:
    grouped: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        grouped[(row.benchmark, row.split)].append(row)
    return grouped


def markdown_table(rows: Sequence[Row]) -> str:
    lines = []
    for (benchmark, split), members in _by_benchmark(rows).items():
        lines += [
            f"### {benchmark} ({split})",
            "",
            "| method | n | accuracy | 95% CI | vs generator (paired) | unparsed | mentor share | mentor tok/q | "
            "tokens/q | probes/q | adoptions/q | s/q | mentor tokens vs mentor alone | time vs mentor alone | setting | config |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in members:
            low, high = row.interval
            lines.append(
                f"| {row.method} | {row.n} | {row.accuracy:.1%} | {low:.1%}–{high:.1%} | {row.paired or '—'} | "
                f"{row.unparsed}{f' ({row.errors} errors)' if row.errors else ''} | {row.mentor_share:.1%} | "
                f"{row.mentor_tokens_per_q:.1f} | {row.tokens_per_q:.1f} | {row.probes_per_q:.2f} | "
                f"{row.adoptions_per_q:.2f} | {row.seconds_per_q:.1f} | {_ratio(row.cost_vs_mentor)} | "
                f"{_ratio(row.time_vs_mentor)} | {row.setting} | `{row.config_hash}` |"
            )
        lines += ["", "Which backend ran each model:", ""] + [f"- {row.method}: {row.backends}" for row in members] + [""]
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def plot(rows: Sequence[Row], path: Path) -> Path:
    """Accuracy (with 95% intervals) against mentor share of committed tokens, one panel per benchmark."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = _by_benchmark(rows)
    labels = sorted({row.method for row in rows}, key=lambda label: (label not in ("generator", "mentor"), label))
    colours = {label: f"C{index % 10}" for index, label in enumerate(labels)}  # one colour per method in every panel
    figure, axes = plt.subplots(1, max(1, len(grouped)), figsize=(5.5 * max(1, len(grouped)), 4.5), squeeze=False)
    for axis, ((benchmark, split), members) in zip(axes[0], grouped.items()):
        for index, row in enumerate(members):
            low, high = row.interval
            marker = {"generator": "s", "mentor": "D"}.get(row.key.get("role", ""), "o")
            nudge = (index - (len(members) - 1) / 2) * 0.8  # points at the same share stay apart
            axis.errorbar(row.mentor_share * 100 + nudge, row.accuracy * 100,
                          yerr=[[max(0.0, (row.accuracy - low) * 100)], [max(0.0, (high - row.accuracy) * 100)]],
                          fmt=marker, capsize=3, color=colours[row.method], label=f"{row.method} (n={row.n})")
        axis.set_title(f"{benchmark} ({split})")
        axis.set_xlabel("mentor share of committed tokens (%)")
        axis.set_ylabel("accuracy (%)")
        axis.set_xlim(-5, 105)
        axis.set_ylim(0, 100)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def build_report(results: Path, out_dir: Path | None = None, title: str = "MentorCollab evaluation",
                 preamble: str = "") -> tuple[Path, Path]:
    """Read every result under ``results`` and write ``report.md`` and ``accuracy_vs_mentor_share.png``."""
    out_dir = out_dir or (results if results.is_dir() else results.parent)
    rows = summarize(read_results(results))
    out_dir.mkdir(parents=True, exist_ok=True)
    image = plot(rows, out_dir / "accuracy_vs_mentor_share.png")
    text = "\n".join([
        f"# {title}",
        "",
        preamble.strip() or f"Rebuilt from the result JSONL under `{results}` by `mentorcollab eval --report`.",
        "",
        "Accuracy with a 95% Wilson interval; unparsed answers count as wrong and are counted. Mentor share = "
        "mentor-written tokens / all committed tokens. Mentor tok/q = tokens the mentor generated per question "
        "(probes, kept and rejected lookaheads, overshoot). \"vs mentor alone\" divides by the mentor-alone row of "
        "the same benchmark. \"vs generator (paired)\" compares on the questions both answered: "
        "(+questions gained / -questions lost).",
        "",
        markdown_table(rows) if rows else "_no results yet_",
        "",
        f"![accuracy against mentor share]({image.name})",
        "",
    ])
    report = out_dir / "report.md"
    report.write_text(text, encoding="utf-8")
    return report, image
