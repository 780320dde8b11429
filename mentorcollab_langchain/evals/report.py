"""Turn result JSONL into a report: a leading summary table, a markdown table per benchmark, and a PNG
plot of accuracy against the mentor's compute relative to the mentor alone (one point per method).

The mentor's cost is counted in tokens processed: every token it reads (the prompt, the text the
generator wrote since its last call, a verifier's scoring) and every token it generates is one forward
position of the mentor. Counting only the tokens it generates flatters collaboration, because each
probe makes the mentor read all that the generator wrote in between, and on few-shot prompts reading
is most of the work. Measured seconds are reported beside the tokens, but they depend on the machine's
load at the time; token counts do not.

Records written before the runner recorded tokens read lack the figure: the report shows "n/a" for it,
and leaves those questions out of the compute ratios, rather than counting their reading as zero.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mentorcollab_langchain.evals.runner import label_for_key, read_results

PLOT_NAME = "accuracy_vs_mentor_compute.png"


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound at small n and near 0 or 1)."""
    if total == 0:
        return 0.0, 0.0
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial (sign) test of questions gained against questions lost, ties left out.

    The probability, were gaining and losing a question equally likely, of a split at least as uneven
    as this one. Exact, because the counts here are small (8 against 0 is p = 2/256).
    """
    trials = wins + losses
    if trials == 0:
        return 1.0
    tail = sum(math.comb(trials, k) for k in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2**trials)


@dataclass(frozen=True)
class Answer:
    """One question's outcome and what it cost the mentor, as its record holds them."""

    correct: bool
    seconds: float
    mentor_generated: int
    mentor_read: int | None  # None where the record predates the figure, or its run failed

    @property
    def mentor_processed(self) -> int | None:
        """The mentor's forward positions on this question: tokens read plus tokens generated."""
        return None if self.mentor_read is None else self.mentor_read + self.mentor_generated

    @classmethod
    def of(cls, record: dict[str, Any]) -> Answer:
        """Read a record; the generator alone never calls the mentor, so its mentor reading is zero."""
        stats = record["stats"]
        generator_alone = record.get("method_key", {}).get("role") == "generator"
        return cls(
            correct=bool(record["correct"]),
            seconds=record["seconds"],
            mentor_generated=stats["mentor_tokens_generated"],
            mentor_read=0 if generator_alone else stats.get("mentor_tokens_read"),
        )


@dataclass(frozen=True)
class PairedCounts:
    """A method against a baseline on the questions both answered: questions gained and lost."""

    questions: int
    gained: int
    lost: int

    @property
    def difference(self) -> float:
        return (self.gained - self.lost) / self.questions

    @property
    def p_value(self) -> float:
        return sign_test(self.gained, self.lost)

    def __str__(self) -> str:
        return f"{self.difference:+.1%} on {self.questions} (+{self.gained}/-{self.lost}, {_p(self.p_value)})"


@dataclass(frozen=True)
class PairedRatio:
    """A ratio of two methods' totals over the questions both answered (and both have the figure for)."""

    value: float
    questions: int


@dataclass
class Row:
    """One method on one benchmark split: its answers, their aggregates, and its paired comparisons."""

    benchmark: str
    split: str
    method: str
    config_hash: str
    key: dict[str, Any]
    answers: dict[str, Answer]  # by question id
    unparsed: int
    errors: int
    mentor_share: float  # mentor tokens committed / all tokens committed, over all questions
    tokens_per_q: float
    probes_per_q: float
    adoptions_per_q: float
    vs_generator: PairedCounts | None = None
    gap_recovered: PairedRatio | None = None  # (method - generator) / (mentor - generator), in questions right
    compute_vs_mentor: PairedRatio | None = None  # mentor tokens processed / the mentor alone's
    seconds_vs_mentor: PairedRatio | None = None

    @property
    def n(self) -> int:
        return len(self.answers)

    @property
    def correct(self) -> int:
        return sum(answer.correct for answer in self.answers.values())

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.n)

    @property
    def role(self) -> str:
        return self.key.get("role", "")

    @property
    def seconds_per_q(self) -> float:
        return sum(answer.seconds for answer in self.answers.values()) / self.n

    @property
    def mentor_generated_per_q(self) -> float:
        return sum(answer.mentor_generated for answer in self.answers.values()) / self.n

    @property
    def mentor_read_per_q(self) -> tuple[float | None, int]:
        """The mean over the questions whose record has the figure, and how many those are."""
        known = [answer.mentor_read for answer in self.answers.values() if answer.mentor_read is not None]
        return (sum(known) / len(known) if known else None), len(known)

    @property
    def backends(self) -> str:
        models = self.key.get("models", {})
        return ", ".join(f"{role}: {info['name']} ({info['backend']})" for role, info in models.items())

    @property
    def setting(self) -> str:
        config = self.key.get("config", {})
        if self.role != "collab":
            return f"{self.key.get('prompt')} prompt, max {config.get('max_new_tokens')} tokens"
        policy = config.get("probe_policy", "random")  # records from before probe policies probed at random
        signal = config.get("uncertainty_signal")
        below = ">" if signal == "entropy" else "<"
        where = (f"uncertain ({signal} {below} {config.get('uncertainty_threshold')}) + "
                 if policy == "uncertain" else "random ")
        return (f"{where}p={config.get('probe_rate')}, seg={config.get('segment_tokens')}, {self.key.get('verifier')}, "
                f"{self.key.get('prompt')} prompt, max {config.get('max_new_tokens')} tokens")


def _label(record: dict[str, Any]) -> str:
    """The stored label, except that default-named collaborations are renamed against today's defaults."""
    if record["method"].startswith("mentorcollab"):
        return label_for_key(record.get("method_key", {})) or record["method"]
    return record["method"]


def summarize(records: Sequence[dict[str, Any]]) -> list[Row]:
    """One row per (benchmark, split, config hash), compared with the generator and the mentor alone."""
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
            answers={qid: Answer.of(item) for qid, item in by_question.items()},
            unparsed=sum(not item["parsed"] for item in items),
            errors=sum(bool(item.get("error")) for item in items),
            mentor_share=mentor_committed / committed if committed else 0.0,
            tokens_per_q=committed / n,
            probes_per_q=sum(item["stats"]["probes"] for item in items) / n,
            adoptions_per_q=sum(item["stats"]["adoptions"] for item in items) / n,
        ))
    for members in _by_benchmark(rows).values():
        generator, mentor = _baselines(members)
        for row in members:
            if generator is not None and row is not generator:
                row.vs_generator = paired_counts(row, generator)
            if generator is not None and mentor is not None:
                row.gap_recovered = gap_recovered(row, generator, mentor)
            if mentor is not None:
                row.compute_vs_mentor = paired_ratio(row, mentor, lambda answer: answer.mentor_processed)
                row.seconds_vs_mentor = paired_ratio(row, mentor, lambda answer: answer.seconds)
    rows.sort(key=lambda row: (row.benchmark, row.split, _role_order(row), row.method))
    return rows


def _baselines(members: Sequence[Row]) -> tuple[Row | None, Row | None]:
    """The generator-alone and mentor-alone rows of one benchmark (the one with most questions of each)."""
    def largest(role: str) -> Row | None:
        return max((row for row in members if row.role == role), key=lambda row: row.n, default=None)

    return largest("generator"), largest("mentor")


def paired_counts(row: Row, baseline: Row) -> PairedCounts | None:
    """Questions gained and lost against ``baseline`` on the questions both answered."""
    common = row.answers.keys() & baseline.answers.keys()
    if not common:
        return None
    gained = sum(row.answers[qid].correct and not baseline.answers[qid].correct for qid in common)
    lost = sum(baseline.answers[qid].correct and not row.answers[qid].correct for qid in common)
    return PairedCounts(len(common), gained, lost)


def paired_ratio(row: Row, baseline: Row, figure: Callable[[Answer], float | None]) -> PairedRatio | None:
    """Sum of ``figure`` over ``row`` / over ``baseline``, on the questions both answered and both know.

    A ratio of totals, not a mean of per-question ratios: it is the share of the baseline's whole cost.
    """
    mine: list[float] = []
    theirs: list[float] = []
    for qid in row.answers.keys() & baseline.answers.keys():
        own, other = figure(row.answers[qid]), figure(baseline.answers[qid])
        if own is not None and other is not None:
            mine.append(own)
            theirs.append(other)
    if not sum(theirs):
        return None
    return PairedRatio(sum(mine) / sum(theirs), len(mine))


def gap_recovered(row: Row, generator: Row, mentor: Row) -> PairedRatio | None:
    """How much of the mentor's lead over the generator ``row`` recovers: (row − generator) / (mentor − generator).

    Counted on the questions all three answered, so that a method run on fewer questions is compared on
    its own questions. None where the mentor is not ahead there: then there is no gap to recover.
    """
    common = row.answers.keys() & generator.answers.keys() & mentor.answers.keys()

    def right(of: Row) -> int:
        return sum(of.answers[qid].correct for qid in common)

    gap = right(mentor) - right(generator)
    if gap <= 0:
        return None
    return PairedRatio((right(row) - right(generator)) / gap, len(common))


def _role_order(row: Row) -> int:
    return {"generator": 0, "mentor": 1}.get(row.role, 2)


def _by_benchmark(rows: Sequence[Row]) -> dict[tuple[str, str], list[Row]]:
    grouped: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        grouped[(row.benchmark, row.split)].append(row)
    return grouped


def summary_table(rows: Sequence[Row], methods: Collection[str] | None = None) -> str:
    """The headline table as markdown, one line per benchmark and collaboration, for README and docs.

    ``methods`` picks collaboration labels (e.g. ``{"mentorcollab"}`` for the defaults); by default every
    collaboration is listed.
    """
    lines = [
        "| benchmark | generator | mentor | method | share of gap recovered | mentor compute vs mentor alone | "
        "paired vs generator (+w/-l, p) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (benchmark, split), members in _by_benchmark(rows).items():
        generator, mentor = _baselines(members)
        for row in members:
            if row.role != "collab" or (methods is not None and row.method not in methods):
                continue
            paired = row.vs_generator
            if paired:
                versus = f"+{paired.gained}/-{paired.lost} on {paired.questions}, {_p(paired.p_value)} |"
            else:
                versus = "— |"
            lines.append(
                f"| {benchmark} ({split}) | {_accuracy(generator)} | {_accuracy(mentor)} | "
                f"{row.method}: {_accuracy(row)} | {_share(row.gap_recovered)} | {_times(row.compute_vs_mentor)} | "
                + versus
            )
    return "\n".join(lines)


def markdown_table(rows: Sequence[Row]) -> str:
    """One table per benchmark split, every figure of every method."""
    lines = []
    for (benchmark, split), members in _by_benchmark(rows).items():
        lines += [
            f"### {benchmark} ({split})",
            "",
            "| method | n | accuracy | 95% CI | gap recovered | vs generator (paired, sign test) | unparsed | "
            "mentor share | mentor read/q | mentor generated/q | mentor compute vs mentor alone | s/q | "
            "seconds vs mentor alone | tokens/q | probes/q | adoptions/q | setting | config |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in members:
            low, high = row.interval
            read, known = row.mentor_read_per_q
            lines.append(
                f"| {row.method} | {row.n} | {row.accuracy:.1%} | {low:.1%}–{high:.1%} | {_share(row.gap_recovered)} | "
                f"{row.vs_generator or '—'} | {row.unparsed}{f' ({row.errors} errors)' if row.errors else ''} | "
                f"{row.mentor_share:.1%} | {_known_mean(read, known, row.n)} | {row.mentor_generated_per_q:.1f} | "
                f"{_times(row.compute_vs_mentor)} | {row.seconds_per_q:.1f} | {_times(row.seconds_vs_mentor)} | "
                f"{row.tokens_per_q:.1f} | {row.probes_per_q:.2f} | {row.adoptions_per_q:.2f} | {row.setting} | "
                f"`{row.config_hash}` |"
            )
        lines += ["", "Which backend ran each model:", "", *(f"- {row.method}: {row.backends}" for row in members), ""]
    return "\n".join(lines)


def _accuracy(row: Row | None) -> str:
    return "—" if row is None else f"{row.accuracy:.1%} (n={row.n})"


def _share(ratio: PairedRatio | None) -> str:
    return "—" if ratio is None else f"{ratio.value:.1%} on {ratio.questions}"


def _times(ratio: PairedRatio | None) -> str:
    """A cost ratio; "n/a" where no question has the figure on both sides (older records, no mentor alone)."""
    return "n/a" if ratio is None else f"{ratio.value:.2f}× on {ratio.questions}"


def _known_mean(mean: float | None, known: int, n: int) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.1f}" if known == n else f"{mean:.1f} ({known} of {n})"


def _p(value: float) -> str:
    return "p<0.001" if value < 0.001 else f"p={value:.2g}"


def plot(rows: Sequence[Row], path: Path) -> Path:
    """Accuracy (with 95% intervals) against mentor compute relative to the mentor alone, one panel per
    benchmark. Rows without a compute ratio (older records) have no x and are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = _by_benchmark(rows)
    labels = sorted({row.method for row in rows}, key=lambda label: (label not in ("generator", "mentor"), label))
    colours = {label: f"C{index % 10}" for index, label in enumerate(labels)}  # one colour per method in every panel
    figure, axes = plt.subplots(1, max(1, len(grouped)), figsize=(5.5 * max(1, len(grouped)), 4.5), squeeze=False)
    # with nothing grouped there is still one (empty) panel, so the lengths may differ
    for axis, ((benchmark, split), members) in zip(axes[0], grouped.items(), strict=False):
        placed = [(row, row.compute_vs_mentor.value) for row in members if row.compute_vs_mentor is not None]
        right = max([1.0, *(compute for _, compute in placed)]) * 1.1
        for index, (row, compute) in enumerate(placed):
            low, high = row.interval
            marker = {"generator": "s", "mentor": "D"}.get(row.role, "o")
            nudge = (index - (len(placed) - 1) / 2) * 0.008 * right  # points at the same cost stay apart
            axis.errorbar(compute + nudge, row.accuracy * 100,
                          yerr=[[max(0.0, (row.accuracy - low) * 100)], [max(0.0, (high - row.accuracy) * 100)]],
                          fmt=marker, capsize=3, color=colours[row.method], label=f"{row.method} (n={row.n})")
        axis.set_title(f"{benchmark} ({split})")
        axis.set_xlabel("mentor compute vs mentor alone (tokens read + generated, ×)")
        axis.set_ylabel("accuracy (%)")
        axis.set_xlim(-0.05 * right, right)
        axis.set_ylim(0, 100)
        axis.grid(alpha=0.3)
        if placed:
            axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


EXPLANATION = (
    "Accuracy with a 95% Wilson interval; unparsed answers count as wrong and are counted. "
    "Gap recovered = (method − generator) / (mentor − generator), in questions right on the questions all "
    "three answered (— where the mentor is not ahead). \"vs generator (paired, sign test)\" compares on the "
    "questions both answered: +questions gained / -questions lost, with a two-sided exact binomial sign test. "
    "Mentor share = mentor-written tokens / all committed tokens. Mentor read/q and generated/q = tokens the "
    "mentor read (prompt, catch-ups, scoring) and generated (probes, kept and rejected lookaheads, overshoot) "
    "per question. Mentor compute vs mentor alone = the mentor's tokens read + generated, each one forward "
    "position, over the mentor-alone row's on the questions both answered (a ratio of totals). Seconds are the "
    "whole question's wall time, measured: they depend on the machine's load at the time, the token counts do "
    "not. \"n/a\": no figure to go on, because the records predate the tokens-read figure (or those runs "
    "failed) or the benchmark has no mentor-alone run; questions without the figure are left out of the ratios, "
    "and \"(k of n)\" says how many questions a mean covers when some lack it."
)


def build_report(results: Path, out_dir: Path | None = None, title: str = "MentorCollab evaluation",
                 preamble: str = "") -> tuple[Path, Path]:
    """Read every result under ``results`` and write ``report.md`` and the accuracy-against-compute plot."""
    out_dir = out_dir or (results if results.is_dir() else results.parent)
    rows = summarize(read_results(results))
    out_dir.mkdir(parents=True, exist_ok=True)
    image = plot(rows, out_dir / PLOT_NAME)
    unplotted = [f"{row.method} ({row.benchmark})" for row in rows if row.compute_vs_mentor is None]
    text = "\n".join([
        f"# {title}",
        "",
        preamble.strip() or f"Rebuilt from the result JSONL under `{results}` by `mentorcollab eval --report`.",
        "",
        EXPLANATION,
        "",
        "## Summary",
        "",
        summary_table(rows) if rows else "_no results yet_",
        "",
        "## Per benchmark",
        "",
        markdown_table(rows) if rows else "_no results yet_",
        "",
        f"![accuracy against mentor compute]({image.name})",
        "",
        *([f"Not in the plot (no mentor compute ratio): {', '.join(unplotted)}.", ""] if unplotted else []),
    ])
    report = out_dir / "report.md"
    report.write_text(text, encoding="utf-8")
    return report, image
