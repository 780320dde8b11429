"""Speed benchmark: every case measured in one run, on the same prompts, so the ratios compare.

Machines here are shared and noisy, so absolute tokens/s drift from run to run; the ratios to the
generator alone, measured minutes apart in the same process, are the figures to read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mentorcollab_langchain.backends.base import Backend
from mentorcollab_langchain.engine import CollabConfig, run_collaboration

BENCH_PROMPTS = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn?",
)


@dataclass(frozen=True)
class BenchCase:
    """One row of the benchmark: a label, the two backends it runs, and its probe rate (0: no mentor)."""

    label: str
    generator: Backend
    mentor: Backend
    probe_rate: float


@dataclass(frozen=True)
class Row:
    label: str
    tokens: int
    seconds: float
    mentor_share: float
    mentor_tokens_generated: int

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def measure(
    cases: Sequence[BenchCase],
    prompts: Sequence[str],
    config: CollabConfig,
    report: Callable[[str], None] = lambda message: None,
) -> list[Row]:
    rows = []
    for case in cases:
        report(f"measuring {case.label}")
        case_config = config.model_copy(update={"probe_rate": case.probe_rate})
        warm_up = case_config.model_copy(update={"max_new_tokens": 4})
        run_collaboration(prompts[0], case.generator, case.mentor, config=warm_up)
        tokens = mentor_committed = mentor_generated = 0
        began = time.perf_counter()
        for prompt in prompts:
            state = run_collaboration(prompt, case.generator, case.mentor, config=case_config)
            tokens += state.stats.tokens_committed
            mentor_committed += state.stats.mentor_tokens_committed
            mentor_generated += state.stats.mentor_tokens_generated
        seconds = time.perf_counter() - began
        rows.append(Row(case.label, tokens, seconds, mentor_committed / tokens if tokens else 0.0, mentor_generated))
    return rows


def format_table(rows: Sequence[Row]) -> str:
    baseline = rows[0].tokens_per_second or 1.0
    width = max(len(row.label) for row in rows)
    lines = [
        f"{'setup':{width}} {'tokens':>7} {'seconds':>8} {'tok/s':>7} {'vs first':>9} "
        f"{'mentor share':>13} {'mentor gen':>11}"
    ]
    for row in rows:
        lines.append(
            f"{row.label:{width}} {row.tokens:7d} {row.seconds:8.1f} {row.tokens_per_second:7.1f} "
            f"{row.tokens_per_second / baseline:8.2f}x {row.mentor_share:13.1%} {row.mentor_tokens_generated:11d}"
        )
    return "\n".join(lines)
