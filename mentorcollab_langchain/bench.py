"""Speed benchmark: the whole story in one run and one table, every figure measured in the same process.

What each row measures:

- **a model alone** on one backend: per prompt, its cursor reads the prompt (``read_prompt``: the
  *read* cost per token, prefill) and then writes word after word, as the engine's generator does,
  until the end of its answer, a stop string or ``max_new_tokens`` (the *write* cost per token, decode).
  Its tok/s is the writing rate. Its share of the **memory-bandwidth limit** is weight bytes × tok/s ÷
  the bandwidth this bench measures itself (``measure_bandwidth``, a numpy copy of a large array; on a
  GPU ``measure_gpu_bandwidth``, a device-to-device copy): each written token reads every weight once,
  so that bandwidth caps the writing rate.
- **MentorCollab**, at the engine's default settings, and its **cost-model ratio**: measured wall time
  ÷ what the two models alone would take for the same work, each at its own per-token costs from its
  alone row on the same backend: generator (read × tokens it read + write × tokens it wrote) + mentor
  (read × tokens it read + write × tokens it wrote), with the token counts from the run's own stats. Above
  1 is overhead (Python, word steps, rollbacks, reading in small batches, which costs more per token
  than a prompt read in one go); below 1 is work done at the same time (the mentor reading the prompt
  ahead while the generator writes).
- **N requests at once** (threads calling ``run_collaboration`` on the shared backends, as
  ``ChatMentorCollab.batch`` does) against the same N run one at a time, with whether their answers
  were the same.
- **the first probe's latency**, with and without the mentor reading its prompt ahead, on a long
  few-shot prompt: the time the engine spends inside its first mentor call (``stats.seconds["probe"]``
  at the first probe), which is what the request waits for. Then once more with read-ahead, after both
  models read the prompt of another question with the same worked examples, so that they find the
  examples in their prefix cache (``LlamaCppBackend``), as every request but the first does in a
  few-shot or RAG service. Every other row runs without the prefix cache: each request as if it ran alone.

Machines here are shared and noisy, so the header gives the date, the CPU, its cores and the load.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from mentorcollab_langchain.backends.base import Backend, Prompt, PromptStyle, ReadsPrompt
from mentorcollab_langchain.backends.llama_cpp import default_threads
from mentorcollab_langchain.engine import CollabConfig, CollabState, MentorFailed, Probed, collaborate


class BenchPrompt(Protocol):
    """A prompt with the style it is rendered in and the stop strings that end its answer (an eval's
    ``BuiltPrompt`` is one)."""

    @property
    def prompt(self) -> Prompt: ...

    @property
    def style(self) -> PromptStyle: ...

    @property
    def stop(self) -> tuple[str, ...]: ...


# -- the machine -------------------------------------------------------------------------------


def measure_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Memory bandwidth in GB/s, counting the bytes read and the bytes written: the fastest of ``repeats``
    copies of an array far larger than any cache, split across one thread per core (numpy copies without
    the GIL), since one core alone does not saturate memory and llama.cpp decodes on every core."""
    source = np.ones(megabytes * 2**20 // 8)
    target = np.empty_like(source)
    parts = np.array_split(np.arange(len(source)), default_threads())
    bounds = [(part[0], part[-1] + 1) for part in parts if len(part)]

    def copy(bound: tuple[int, int]) -> None:
        np.copyto(target[bound[0] : bound[1]], source[bound[0] : bound[1]])

    fastest = float("inf")
    with ThreadPoolExecutor(max_workers=len(bounds)) as pool:
        for _ in range(repeats):
            began = time.perf_counter()
            list(pool.map(copy, bounds))
            fastest = min(fastest, time.perf_counter() - began)
    return 2 * source.nbytes / fastest / 1e9


def measure_gpu_bandwidth(device: str, megabytes: int = 2048, repeats: int = 10) -> float:
    """A CUDA device's memory bandwidth in GB/s, counting the bytes read and written: the fastest of
    ``repeats`` device-to-device copies of a ``megabytes`` buffer, far larger than the GPU's caches."""
    import torch

    source = torch.ones(megabytes * 2**20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)  # the first copy pays for the kernel's launch set-up
    fastest = float("inf")
    for _ in range(repeats):
        torch.cuda.synchronize(device)
        began = time.perf_counter()
        target.copy_(source)
        torch.cuda.synchronize(device)
        fastest = min(fastest, time.perf_counter() - began)
    return 2 * source.numel() / fastest / 1e9


def describe_machine(bandwidth: float, gpu: str | None = None) -> str:
    """The date, the CPU, its cores, the load, the GPU (where one runs the models) and the measured
    bandwidth (of the GPU's memory where it runs them), for the table's header."""
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    load = f", load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = f"; {gpu}" if gpu else ""
    return f"{date}; {cpu}, {default_threads()} cores{load}{where}; measured memory bandwidth {bandwidth:.1f} GB/s"


def describe_settings(config: CollabConfig) -> str:
    """The run's settings, as the engine's defaults and what differs from them."""
    defaults = CollabConfig()
    changed = [f"{name}={value}" for name, value in config if value != getattr(defaults, name)]
    return "the engine's defaults" + (f" but {', '.join(changed)}" if changed else "")


# -- a model alone -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AloneRow:
    """One model alone on one backend: what it read and wrote, and how long each took."""

    label: str
    weight_bytes: int | None
    read_tokens: int
    read_seconds: float
    written_tokens: int
    write_seconds: float

    @property
    def seconds(self) -> float:
        return self.read_seconds + self.write_seconds

    @property
    def read_cost(self) -> float:
        """Seconds per token read (prefill)."""
        return self.read_seconds / self.read_tokens if self.read_tokens else 0.0

    @property
    def write_cost(self) -> float:
        """Seconds per token written (decode)."""
        return self.write_seconds / self.written_tokens if self.written_tokens else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.written_tokens / self.write_seconds if self.write_seconds else 0.0

    def bandwidth_share(self, bandwidth: float) -> float | None:
        """Weight bytes read per second of writing, as a share of ``bandwidth`` (GB/s)."""
        if self.weight_bytes is None or not bandwidth:
            return None
        return self.weight_bytes * self.tokens_per_second / (bandwidth * 1e9)


def measure_alone(
    label: str, backend: Backend, prompts: Sequence[BenchPrompt], config: CollabConfig, weight_bytes: int | None
) -> AloneRow:
    """The model reads each prompt, then writes its answer word by word (module docstring)."""
    read_tokens = written_tokens = 0
    read_seconds = write_seconds = 0.0
    for prompt in prompts:
        cursor = backend.open(prompt.prompt, prompt.style, config.sampling)
        try:
            began = time.perf_counter()
            if isinstance(cursor, ReadsPrompt):
                cursor.read_prompt(threading.Event())
            read_seconds += time.perf_counter() - began
            read_tokens += cursor.tokens_read
            began = time.perf_counter()
            written_tokens += _write_alone(cursor, prompt.stop, config)
            write_seconds += time.perf_counter() - began
        finally:
            cursor.close()
    return AloneRow(label, weight_bytes, read_tokens, read_seconds, written_tokens, write_seconds)


def _write_alone(cursor: object, stop: Sequence[str], config: CollabConfig) -> int:
    """Write words until the answer ends; the tokens generated."""
    text, written = "", 0
    while written < config.max_new_tokens:
        piece = cursor.next_word(text, min(config.max_word_tokens, config.max_new_tokens - written))  # type: ignore[attr-defined]
        text += piece.text
        written += piece.cost
        if piece.eos or not piece.tokens or any(marker in text for marker in stop):
            break
    return written


# -- MentorCollab ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CollabRow:
    """MentorCollab over the prompts: wall time, the answer's tokens and each model's reading and writing."""

    label: str
    seconds: float
    tokens: int
    generator_read: int
    generator_written: int
    mentor_read: int
    mentor_written: int
    probes: int

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def predicted_seconds(self, generator: AloneRow, mentor: AloneRow) -> float:
        """The cost model: each model's reading and writing at its per-token costs when alone."""
        return (generator.read_cost * self.generator_read + generator.write_cost * self.generator_written
                + mentor.read_cost * self.mentor_read + mentor.write_cost * self.mentor_written)


def run_prompt(generator: Backend, mentor: Backend, prompt: BenchPrompt, config: CollabConfig) -> CollabState:
    """One collaboration on ``prompt``, in its prompt style and with its stop strings."""
    state = CollabState()
    settings = config.model_copy(update={"prompt_style": prompt.style, "stop": prompt.stop})
    for _ in collaborate(prompt.prompt, generator, mentor, config=settings, state=state):
        pass
    return state


def measure_collab(
    label: str, generator: Backend, mentor: Backend, prompts: Sequence[BenchPrompt], config: CollabConfig
) -> CollabRow:
    began = time.perf_counter()
    states = [run_prompt(generator, mentor, prompt, config) for prompt in prompts]
    seconds = time.perf_counter() - began
    return CollabRow(
        label,
        seconds,
        tokens=sum(state.stats.tokens_committed for state in states),
        generator_read=sum(state.stats.generator_tokens_read for state in states),
        generator_written=sum(state.stats.generator_tokens_generated for state in states),
        mentor_read=sum(state.stats.mentor_tokens_read for state in states),
        mentor_written=sum(state.stats.mentor_tokens_generated for state in states),
        probes=sum(state.stats.probes for state in states),
    )


# -- requests at once --------------------------------------------------------------------------


@dataclass(frozen=True)
class ConcurrencyRow:
    requests: int
    tokens: int
    sequential_seconds: float
    concurrent_seconds: float
    same_answers: bool

    @property
    def ratio(self) -> float:
        """Concurrent wall time ÷ one-at-a-time wall time: below 1, running together helped."""
        return self.concurrent_seconds / self.sequential_seconds if self.sequential_seconds else 0.0


def measure_concurrency(
    generator: Backend, mentor: Backend, prompts: Sequence[BenchPrompt], config: CollabConfig
) -> ConcurrencyRow:
    """The prompts run one at a time, then all at once on as many threads."""
    def run(prompt: BenchPrompt) -> CollabState:
        return run_prompt(generator, mentor, prompt, config)

    began = time.perf_counter()
    one_by_one = [run(prompt) for prompt in prompts]
    sequential = time.perf_counter() - began
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        together = list(pool.map(run, prompts))
    concurrent = time.perf_counter() - began
    return ConcurrencyRow(
        requests=len(prompts),
        tokens=sum(state.stats.tokens_committed for state in one_by_one),
        sequential_seconds=sequential,
        concurrent_seconds=concurrent,
        same_answers=[state.text for state in one_by_one] == [state.text for state in together],
    )


# -- the first probe ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FirstProbe:
    """How long the engine waited in its first mentor call, after how many words and seconds of the run, and
    how many prompt tokens the mentor found cached."""

    latency: float
    words_before: int
    seconds_before: float
    mentor_cached: int = 0


def measure_first_probe(
    generator: Backend, mentor: Backend, prompt: BenchPrompt, config: CollabConfig
) -> FirstProbe | None:
    """Run until the first probe (None if the answer ended before one) and stop there."""
    state = CollabState()
    settings = config.model_copy(update={"prompt_style": prompt.style, "stop": prompt.stop})
    began = time.perf_counter()
    events = collaborate(prompt.prompt, generator, mentor, config=settings, state=state)
    try:
        for event in events:
            if isinstance(event, Probed | MentorFailed):
                latency = state.stats.seconds.get("probe", 0.0)
                before = time.perf_counter() - began - latency
                return FirstProbe(latency, state.stats.words - 1, before, state.stats.mentor_tokens_cached)
    finally:
        events.close()  # closes the team, and with it the cursors
    return None


# -- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchResult:
    machine: str
    bandwidth: float
    alone: Sequence[AloneRow]
    collab: Sequence[tuple[CollabRow, AloneRow, AloneRow]]  # each with its generator's and mentor's alone rows
    concurrency: ConcurrencyRow | None = None
    # the prompt's tokens, then each case's label and probe; the first case (without read-ahead) is the reference
    first_probe: tuple[int, Sequence[tuple[str, FirstProbe | None]]] | None = None
    failed: Sequence[tuple[str, str]] = ()  # each part that raised, and its error


LEGEND = (
    "tok/s: answer tokens per second (a model alone: while writing); read, write: milliseconds per token read "
    "(prefill) and written (decode) alone; of bandwidth: weight bytes x tok/s / measured memory bandwidth; "
    "cost model: each model's reading and writing in the run at its alone costs; first probe: seconds inside "
    "the engine's first mentor call"
)


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference else "-"


def format_table(result: BenchResult) -> str:
    """The header line and one table: what each row is, its figures, and what it compares with."""
    rows: list[tuple[str, str, str, str, str, str, str, str]] = []
    for alone in result.alone:
        share = alone.bandwidth_share(result.bandwidth)
        rows.append((alone.label, str(alone.written_tokens), f"{alone.seconds:.1f}", f"{alone.tokens_per_second:.1f}",
                     f"{alone.read_cost * 1e3:.1f}", f"{alone.write_cost * 1e3:.1f}",
                     "-" if share is None else f"{share:.0%}", ""))
    for collab, generator, mentor in result.collab:
        predicted = collab.predicted_seconds(generator, mentor)
        rows.append((collab.label, str(collab.tokens), f"{collab.seconds:.1f}", f"{collab.tokens_per_second:.1f}",
                     "", "", "", f"{_ratio(collab.seconds, predicted)} cost model ({predicted:.1f} s), "
                     f"{_ratio(collab.seconds, mentor.seconds)} mentor alone; {collab.probes} probes"))
    if result.concurrency is not None:
        c = result.concurrency
        same = "same answers" if c.same_answers else "ANSWERS DIFFER"
        rows.append((f"{c.requests} requests one at a time", str(c.tokens), f"{c.sequential_seconds:.1f}",
                     f"{c.tokens / c.sequential_seconds:.1f}", "", "", "", ""))
        rows.append((f"{c.requests} requests at once", str(c.tokens), f"{c.concurrent_seconds:.1f}",
                     f"{c.tokens / c.concurrent_seconds:.1f}", "", "", "", f"{c.ratio:.2f}x one at a time; {same}"))
    if result.first_probe is not None:
        tokens, cases = result.first_probe
        reference = cases[0][1]
        for index, (label, probe) in enumerate(cases):
            compared = []
            if index and probe is not None and reference is not None:
                compared.append(f"{_ratio(probe.latency, reference.latency)} {cases[0][0]}")
            if probe is not None:
                compared.append(f"after {probe.words_before} words, {probe.seconds_before:.1f} s")
            if probe is not None and probe.mentor_cached:
                compared.append(f"mentor found {probe.mentor_cached} tokens cached")
            rows.append((f"first probe, {tokens}-token prompt, {label}", "",
                         "no probe" if probe is None else f"{probe.latency:.2f}", "", "", "", "", "; ".join(compared)))
    rows += [(part, "", "failed", "", "", "", "", error) for part, error in result.failed]
    header = ("setup", "tokens", "seconds", "tok/s", "read", "write", "of bandwidth", "compared")
    widths = [max(len(row[index]) for row in [header, *rows]) for index in range(len(header) - 1)]
    lines = [f"mentorcollab bench, {result.machine}"]
    for row in [header, *rows]:
        numbers = (cell.rjust(width) for cell, width in zip(row[1:-1], widths[1:], strict=True))
        cells = [row[0].ljust(widths[0]), *numbers]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    lines.append(LEGEND)
    return "\n".join(lines)
