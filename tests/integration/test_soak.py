"""A soak test: 16 concurrent async requests for about two minutes against a real llama.cpp mentor that
is killed and restarted midway.

The generator is the packaged default, in process on llama.cpp; the mentor is the packaged default
served by ``llama_server`` on a fixed loopback port and reached with ``OpenAICompatibleBackend``. Sixteen
asyncio loops call ``ainvoke`` back to back with varied prompts. A while in, the server is killed; a few
seconds later a new one is started on the same port. Afterwards:

- every request completed (no exception, an answer, a finish reason) within a hard bound;
- every mentor failure is in its request's record: the failures seen where the mentor's cursor hands
  them to the engine are, request by request, the record's ``errors`` and ``stats.mentor_errors``, and
  a failed request says ``probing_stopped``; failures happen only between the kill and the recovery;
- the restarted mentor is reached again (once the circuit breaker's cool-down lets a trial through);
- no thread, file descriptor or server process leaks, and memory is flat.

Servers are started and killed from the main thread (``serving._die_with_parent`` ties a server's life
to the thread that started it), so the requests' event loop runs in a helper thread.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import re
import statistics
import sys
import threading
import time
from collections import defaultdict
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from mentorcollab_langchain import ChatMentorCollab
from mentorcollab_langchain.backends.http_client import CircuitBreaker
from mentorcollab_langchain.backends.llama_cpp import LlamaCppBackend
from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleBackend
from mentorcollab_langchain.errors import MentorCollabError
from mentorcollab_langchain.models import DEFAULT_GENERATOR, DEFAULT_MENTOR
from mentorcollab_langchain.serving import free_port, llama_server

pytest.importorskip("llama_cpp", reason="llama-cpp-python[server] is installed by scripts/install.sh")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads threads, descriptors and memory in /proc"),
    pytest.mark.allow_skip(reason="a platform's limit, not a missing part: CI runs on Linux"),
]

CONCURRENCY = 16
# One llama.cpp server slot answers every mentor call in turn, a call in 1-1.5 s on two busy cores (it
# re-reads each request's prompt), so the 16 requests still in flight when issuing stops take about
# 16 x (mentor calls per request) x 1.4 s to finish. With the default verifier (the mentor scores both
# segments) a request made about 2.7 calls even on a budget of one, and the drain took over a minute;
# one budgeted probe and the generator judging divergences (self-consult, the paper's verifier) make
# about 1.2 calls, a drain near 30 s, and a soak of about two minutes.
ISSUE_SECONDS = 85.0  # new requests are issued back to back this long; those in flight then finish
SOAK_LIMIT = 150.0  # every request must have completed this long after the soak began, or it counts as hung
KILL_AT = 40.0  # the mentor server is killed this far in (about a third of the soak)...
OUTAGE = 5.0  # ...stays dead this long, then a new one starts on the same port
COOLDOWN = 10.0  # the breaker's cool-down (default 30 s), so that recovery happens well inside the soak
TRIAL_SLACK = 10.0  # the half-open trial call's own duration, on a loaded machine
QUESTIONS = [
    "What is 17 * 3?",
    "Name a prime number above 50.",
    "Explain recursion in one sentence.",
    "What is the capital of France?",
    "Write a Python expression that reverses a list.",
    "How many days are in a leap year?",
    "Give a synonym for 'quick'.",
    "What does HTTP stand for?",
    "Convert 100 Celsius to Fahrenheit.",
    "What is the square root of 144?",
    "Name the largest planet in the solar system.",
    "What is a linked list?",
    "Translate 'good morning' into Spanish.",
    "How many sides does a hexagon have?",
    "What is 2 to the power of 10?",
    "Which gas do plants absorb from the air?",
]
TAG = re.compile(r"\[request (-?\d+)\]")


def prompt(number: int) -> str:
    return f"{QUESTIONS[number % len(QUESTIONS)]} [request {number}]"  # the tag names the request to the tap


# -- the mentor, tapped where its cursor hands results and failures to the engine ---------------------


@dataclass
class Tap:
    """Every mentor call, per request, as the engine received it: when it failed and how, when it succeeded."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    failures: dict[int, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    successes: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))

    def failed(self, request: int, message: str) -> None:
        with self.lock:
            self.failures[request].append((time.monotonic(), message))

    def succeeded(self, request: int) -> None:
        with self.lock:
            self.successes[request].append(time.monotonic())


# Every call that asks the mentor's server something, the read-ahead's warm-up of its prefix cache included
# (its failure is the first mentor call's, recorded by the engine like any other).
MODEL_CALLS = frozenset(
    {"next_word", "generate", "label_logprobs", "score_continuation", "hidden_state", "read_prompt"}
)


class TappedCursor:
    def __init__(self, cursor: Any, request: int, tap: Tap) -> None:
        self._cursor, self._request, self._tap = cursor, request, tap

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._cursor, name)
        if name not in MODEL_CALLS:
            return attribute

        def call(*args: Any, **options: Any) -> Any:
            try:
                result = attribute(*args, **options)
            except MentorCollabError as error:  # recorded as the engine records it, then handed on
                self._tap.failed(self._request, f"{type(error).__name__}: {error}")
                raise
            self._tap.succeeded(self._request)
            return result

        return call


class TappedMentor:
    def __init__(self, backend: OpenAICompatibleBackend, tap: Tap) -> None:
        self._backend, self._tap = backend, tap

    @property
    def model_name(self) -> str:
        return self._backend.model_name

    def open(self, prompt: Any, *args: Any, **options: Any) -> TappedCursor:
        request = int(TAG.search(str(prompt)).group(1))
        return TappedCursor(self._backend.open(prompt, *args, **options), request, self._tap)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


# -- what the process holds -----------------------------------------------------------------------


def status_field(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/self/status has no {name}")


def rss_mb() -> float:
    return status_field("VmRSS") / 1024


def open_descriptors() -> dict[int, str]:
    described = {}
    for fd in os.listdir("/proc/self/fd"):
        with suppress(OSError):  # the listing's own descriptor, closed by now
            described[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
    return described


def child_processes() -> dict[int, str]:
    """Every live descendant of this process (pid: command line), read from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z":  # a zombie is an exit not yet collected; it holds no memory or port
                parents[int(entry)] = int(fields[1])
    found, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    commands = {}
    for pid in found:
        with suppress(OSError):  # it ended meanwhile
            commands[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    return commands


def request_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name == "mentorcollab-request"]


@dataclass
class Snapshot:
    python_threads: list[str]
    os_threads: int
    descriptors: dict[int, str]
    children: dict[int, str]
    rss_mb: float


def snapshot() -> Snapshot:
    # A request's worker thread ends just after it hands over its last event; give it a moment.
    deadline = time.monotonic() + 5
    while request_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    gc.collect()
    return Snapshot(
        python_threads=sorted(thread.name for thread in threading.enumerate()),
        os_threads=status_field("Threads"),
        descriptors=open_descriptors(),
        children=child_processes(),
        rss_mb=rss_mb(),
    )


# -- the requests ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    number: int
    started: float
    ended: float
    message: AIMessage | None = None
    error: BaseException | None = None

    @property
    def record(self) -> dict[str, Any]:
        assert self.message is not None
        return self.message.response_metadata["mentorcollab"]


@dataclass
class Soak:
    began: float
    outcomes: list[Outcome] = field(default_factory=list)
    in_flight: dict[int, float] = field(default_factory=dict)
    samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds in, RSS MB) while it runs
    hung: list[int] = field(default_factory=list)
    threads_at_limit: int = 0
    crashed: BaseException | None = None
    ended: float | None = None


async def ask(model: ChatMentorCollab, number: int, soak: Soak | None = None) -> Outcome:
    outcome = Outcome(number, started=time.monotonic(), ended=0.0)
    if soak is not None:
        soak.in_flight[number] = outcome.started
    try:
        # A seed per request varies the probe schedule as the prompts vary the text.
        outcome.message = await model.ainvoke(prompt(number), seed=abs(number))
    except Exception as error:  # noqa: BLE001 - kept and reported: every request must complete
        outcome.error = error
    outcome.ended = time.monotonic()
    if soak is not None:
        soak.in_flight.pop(number, None)
    return outcome


async def run_soak(model: ChatMentorCollab, soak: Soak) -> None:
    numbers = itertools.count()
    stop_issuing = soak.began + ISSUE_SECONDS

    async def requests_back_to_back() -> None:
        while time.monotonic() < stop_issuing:
            soak.outcomes.append(await ask(model, next(numbers), soak))

    async def sample_memory() -> None:
        while True:
            soak.samples.append((time.monotonic() - soak.began, rss_mb()))
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample_memory())
    loops = [asyncio.create_task(requests_back_to_back()) for _ in range(CONCURRENCY)]
    _, unfinished = await asyncio.wait(loops, timeout=soak.began + SOAK_LIMIT - time.monotonic())
    soak.hung = sorted(soak.in_flight)
    soak.threads_at_limit = len(request_threads())
    for task in [*unfinished, sampler]:
        task.cancel()
    await asyncio.gather(*unfinished, sampler, return_exceptions=True)


def soak_in_thread(model: ChatMentorCollab, soak: Soak) -> threading.Thread:
    def main() -> None:
        try:
            asyncio.run(run_soak(model, soak))
        except BaseException as error:  # noqa: BLE001 - reported by the test
            soak.crashed = error
        finally:
            soak.ended = time.monotonic()

    thread = threading.Thread(target=main, name="soak-event-loop", daemon=True)
    thread.start()
    return thread


def median_rss(samples: list[tuple[float, float]], start: float, end: float) -> float:
    window = [rss for seconds, rss in samples if start <= seconds < end]
    assert window, f"no memory sample between {start:.0f} s and {end:.0f} s"
    return statistics.median(window)


# -- the test -------------------------------------------------------------------------------------


@pytest.mark.timeout(420)
def test_soak_with_the_mentor_killed_and_restarted(tmp_path: Path) -> None:
    port = free_port()  # both servers listen here, so the mentor's URL stays the same across the restart
    tap = Tap()
    children_before_servers = child_processes()
    with ExitStack() as servers:
        first = servers.enter_context(
            llama_server(DEFAULT_MENTOR, tmp_path / "mentor-1.log", port=port, threads=1, n_ctx=2048)
        )
        # A generous timeout: one server slot serves every request's calls in turn on a loaded machine.
        mentor = OpenAICompatibleBackend(
            first.url,
            model="mentor",
            tokenizer=DEFAULT_MENTOR,
            timeout=120.0,
            breaker=CircuitBreaker(threshold=3, cooldown=COOLDOWN),
        )
        # One thread each: the generator and the mentor server share two cores (llama_cpp.default_threads).
        generator = LlamaCppBackend(DEFAULT_GENERATOR, n_ctx=1024, n_threads=1)
        model = ChatMentorCollab(
            generator=generator,
            mentor=TappedMentor(mentor, tap),
            probe_rate=0.3,
            segment_tokens=4,
            max_tokens=24,
            max_mentor_calls=1,  # see CONCURRENCY
            verifier="self-consult",
        )

        async def warm_up() -> list[Outcome]:
            return await asyncio.gather(*(ask(model, -number) for number in range(1, 3)))

        warm = asyncio.run(warm_up())  # loads both tokenizers and the generator, creates whatever is lazy
        assert all(outcome.error is None for outcome in warm), [outcome.error for outcome in warm]
        assert not tap.failures, dict(tap.failures)
        before = snapshot()

        soak = Soak(began=time.monotonic())
        loop_thread = soak_in_thread(model, soak)
        time.sleep(max(0.0, soak.began + KILL_AT - time.monotonic()))
        killed_at = time.monotonic()
        first.kill()
        time.sleep(OUTAGE)
        second = servers.enter_context(
            llama_server(DEFAULT_MENTOR, tmp_path / "mentor-2.log", port=port, threads=1, n_ctx=2048)
        )
        assert second.url == first.url
        ready_at = time.monotonic()
        loop_thread.join(timeout=SOAK_LIMIT + 30 - (time.monotonic() - soak.began))
        assert not loop_thread.is_alive(), "the soak's event loop did not finish"
        after = snapshot()
        server_pids = {first.process.pid, second.process.pid}
    children_after_servers = child_processes()

    began = soak.began
    seconds = {  # when things happened, in seconds since the soak began
        "kill": killed_at - began,
        "restarted": ready_at - began,
        "soak ended": soak.ended - began,
    }
    outcomes = sorted(soak.outcomes, key=lambda outcome: outcome.number)
    failed = {number: calls for number, calls in tap.failures.items() if number >= 0}
    figures = {
        "requests": len(outcomes),
        "requests with a mentor failure": len(failed),
        "mentor failures": sum(len(calls) for calls in failed.values()),
        "successful mentor calls": sum(len(calls) for calls in tap.successes.values()),
        **{f"{event} at s": round(value, 1) for event, value in seconds.items()},
        "python threads before/after": (len(before.python_threads), len(after.python_threads)),
        "os threads before/after": (before.os_threads, after.os_threads),
        "descriptors before/after": (len(before.descriptors), len(after.descriptors)),
        "children before/after": (len(before.children), len(after.children)),
    }
    middle = median_rss(soak.samples, ISSUE_SECONDS / 4, KILL_AT)  # under load, before the kill
    late = median_rss(soak.samples, ISSUE_SECONDS * 3 / 4, ISSUE_SECONDS)  # under load, after the restart
    figures["RSS MB warm/middle/late/end"] = (round(before.rss_mb), round(middle), round(late), round(after.rss_mb))
    stopped = [outcome.record["probing_stopped"] or "" for outcome in outcomes if outcome.message is not None]
    figures["probing stopped: budget/failure/neither"] = (
        sum(reason.startswith("mentor call budget") for reason in stopped),
        sum(reason.startswith("mentor failed") for reason in stopped),
        sum(not reason for reason in stopped),
    )
    durations = [outcome.ended - outcome.started for outcome in outcomes]
    if durations:
        figures["request seconds median/max"] = (round(statistics.median(durations), 1), round(max(durations), 1))
    calls = sorted(moment - began for moments in tap.successes.values() for moment in moments if moment >= began)
    figures["last successful mentor call at s"] = round(calls[-1], 1) if calls else None
    print("\nsoak:", figures)

    # Every request completed, within the bound.
    assert soak.crashed is None, repr(soak.crashed)
    assert not soak.hung, (
        f"requests {soak.hung} had not completed {SOAK_LIMIT:.0f} s after the soak began "
        f"({soak.threads_at_limit} of them were running; figures above say whether the mentor still answered)"
    )
    errors = [(outcome.number, repr(outcome.error)) for outcome in outcomes if outcome.error is not None]
    assert not errors, errors
    assert len(outcomes) >= CONCURRENCY * 2, f"only {len(outcomes)} requests completed: was the machine that busy?"
    for outcome in outcomes:
        assert outcome.message.content, (outcome.number, outcome.record)
        assert outcome.record["finish_reason"] in {"eos", "length", "stop"}, (outcome.number, outcome.record)

    # Every failure is in its record, as it was raised.
    for outcome in outcomes:
        raised = [message for _, message in tap.failures.get(outcome.number, [])]
        record = outcome.record
        assert record["errors"] == raised, (outcome.number, record["errors"], raised)
        assert record["stats"]["mentor_errors"] == len(raised), (outcome.number, record["stats"])
        if raised:
            assert record["probing_stopped"].startswith("mentor failed"), (outcome.number, record["probing_stopped"])
        else:  # the one budgeted call was made, or the answer ended before its first probe
            assert (record["probing_stopped"] or "mentor call budget spent").startswith("mentor call budget spent"), (
                outcome.number, record["probing_stopped"]
            )
    assert set(failed) <= {outcome.number for outcome in outcomes}, "a failure belongs to no completed request"

    # Failures happened exactly while the mentor was away: after the kill, and until the breaker let a
    # trial through to the new server (its cool-down, counted from the last failure at the latest when
    # the new server answered, plus the trial itself).
    assert failed, "killing the mentor mid-soak was never noticed"
    when = sorted(moment for calls in failed.values() for moment, _ in calls)
    recovered_by = ready_at + COOLDOWN + TRIAL_SLACK
    assert when[0] >= killed_at, f"a mentor call failed {killed_at - when[0]:.1f} s before the kill"
    assert when[-1] <= recovered_by, f"a mentor call failed {when[-1] - ready_at:.1f} s after the restart"
    spanning = [outcome for outcome in outcomes if outcome.started < killed_at < outcome.ended]
    assert any(outcome.number in failed for outcome in spanning), "no request in flight at the kill saw it"
    # The new server is reached again: calls succeed after the recovery, and requests begun after the
    # restart got mentor words (some of those begun before the breaker closed were refused, and say so).
    assert any(moment > recovered_by for calls in tap.successes.values() for moment in calls), (
        f"no mentor call succeeded after {recovered_by - began:.0f} s (the new server was ready at "
        f"{ready_at - began:.0f} s)"
    )
    after_restart = [outcome for outcome in outcomes if outcome.started > ready_at]
    assert any(
        outcome.record["stats"]["mentor_calls"] > 0 and not outcome.record["errors"] for outcome in after_restart
    ), "no request begun after the restart reached the mentor"

    # No leaks: the request threads ended, descriptors were closed, server processes were collected.
    assert not request_threads()
    assert after.python_threads == before.python_threads, (before.python_threads, after.python_threads)
    assert after.os_threads <= before.os_threads + 2, (before.os_threads, after.os_threads)
    opened = {fd: target for fd, target in after.descriptors.items() if before.descriptors.get(fd) != target}
    assert len(after.descriptors) <= len(before.descriptors) + 2, opened
    theirs = set(children_before_servers)  # anything an earlier test left is not this test's to judge
    assert set(before.children) - theirs == {first.process.pid}, before.children  # only the first server
    assert set(after.children) - theirs == {second.process.pid}, after.children  # the first was reaped
    assert not (set(children_after_servers) - set(children_before_servers)), children_after_servers
    assert not (server_pids & set(children_after_servers))

    # Memory is flat: under the same load late in the soak as in its middle, and no higher once drained.
    # Measured here: the late median 12-15 MB above the middle one, and the drained end within 5 MB of the
    # late one (glibc keeps what the request threads freed). One generator context (KV cache of 1024
    # tokens, ~24 MB) leaked per request would add several hundred MB between the two windows.
    margin = 100.0
    assert late <= middle + margin, (before.rss_mb, middle, late, after.rss_mb)
    assert after.rss_mb <= middle + margin, (before.rss_mb, middle, late, after.rss_mb)
