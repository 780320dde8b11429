"""The per-process request limit: a burst queues instead of opening a cache and a thread per call."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from mentorcollab_langchain import ChatMentorCollab, ConfigError, ScriptedBackend
from mentorcollab_langchain.backends.base import Piece, Prompt, PromptStyle
from mentorcollab_langchain.backends.sampling import GREEDY, Sampling
from mentorcollab_langchain.backends.scripted import ScriptedCursor
from mentorcollab_langchain.engine import slots
from mentorcollab_langchain.engine.slots import RequestSlots, set_max_concurrent_requests


class Gauge:
    """How many of something are live now, and the most there ever were."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = self.most = 0

    def up(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def down(self) -> None:
        with self._lock:
            self.now -= 1


def test_threads_beyond_the_limit_wait_and_enter_in_arrival_order() -> None:
    # One slot, so that the order in which requests get in is the order in which they enter the block:
    # with more, two woken together race to their first line.
    gate, live, entered = RequestSlots(1), Gauge(), []
    holding = threading.Event()  # the first request holds the slot until the others have queued

    def request(index: int) -> None:
        with gate.held():
            entered.append(index)
            live.up()
            if index == 0:
                holding.wait(10)
            time.sleep(0.005)
            live.down()

    first = threading.Thread(target=request, args=(0,))
    first.start()
    while gate.running < 1:
        time.sleep(0.001)
    later = []
    for index in range(1, 6):
        later.append(threading.Thread(target=request, args=(index,)))
        later[-1].start()
        while gate.waiting < index:  # each joins the queue before the next starts
            time.sleep(0.001)
    holding.set()
    for thread in [first, *later]:
        thread.join(10)
    assert live.most == 1 and gate.running == 0 and gate.waiting == 0
    assert entered == [0, 1, 2, 3, 4, 5]


async def test_a_coroutine_cancelled_while_queued_leaves_the_queue_and_loses_no_slot() -> None:
    gate = RequestSlots(1)
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.held_async():
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    queued = asyncio.create_task(hold())
    await asyncio.sleep(0)
    assert (gate.running, gate.waiting) == (1, 1)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert (gate.running, gate.waiting) == (1, 0)
    release.set()
    await holder
    assert gate.running == 0
    async with asyncio.timeout(5):  # the slot is free again
        async with gate.held_async():
            assert gate.running == 1


async def test_a_slot_that_reaches_a_cancelled_waiter_is_handed_on() -> None:
    gate = RequestSlots(1)
    inside = []

    async def enter(name: str) -> None:
        async with gate.held_async():
            inside.append(name)

    with gate.held():  # a thread holds the only slot
        leaving = asyncio.create_task(enter("leaving"))
        staying = asyncio.create_task(enter("staying"))
        await asyncio.sleep(0)
        assert gate.waiting == 2
    # The slot was handed to "leaving" (its delivery is scheduled on the loop); it cancels before that runs.
    leaving.cancel()
    await asyncio.wait_for(staying, 5)
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert inside == ["staying"] and gate.running == 0


def test_raising_the_limit_lets_waiting_requests_in_at_once() -> None:
    gate = RequestSlots(1)
    entered, leave = threading.Event(), threading.Event()

    def wait_for_a_slot() -> None:
        with gate.held():
            entered.set()
            leave.wait(5)

    with gate.held():
        waiter = threading.Thread(target=wait_for_a_slot)
        waiter.start()
        while gate.waiting < 1:
            time.sleep(0.001)
        gate.set_limit(2)
        assert entered.wait(5) and gate.running == 2
        leave.set()
    waiter.join()
    assert gate.running == 0


@pytest.mark.parametrize("limit", [0, -1, 1.5, "2", True])
def test_a_limit_that_is_not_a_positive_whole_number_is_refused(limit: object) -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        RequestSlots(limit)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="at least 1"):
        set_max_concurrent_requests(limit)  # type: ignore[arg-type]


def test_the_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(slots.LIMIT_VARIABLE, "7")
    assert slots._limit_from_environment() == 7
    monkeypatch.setenv(slots.LIMIT_VARIABLE, "lots")
    with pytest.raises(ConfigError, match=f"{slots.LIMIT_VARIABLE}.*'lots'"):
        slots._limit_from_environment()


class CountedCursor(ScriptedCursor):
    """A scripted cursor that is slow enough for requests to overlap and says while it is open."""

    def __init__(self, backend: CountedBackend) -> None:
        super().__init__(backend)
        backend.cursors.up()

    def next_word(self, text: str, max_tokens: int, with_confidence: bool = False) -> Piece:
        time.sleep(0.002)
        return super().next_word(text, max_tokens, with_confidence)

    def close(self) -> None:
        self.backend.cursors.down()
        super().close()


class CountedBackend(ScriptedBackend):
    def __init__(self, answer: str, name: str) -> None:
        super().__init__(answer, name=name)
        self.cursors = Gauge()

    def open(self, prompt: Prompt, style: PromptStyle = "chat", sampling: Sampling = GREEDY) -> CountedCursor:
        self.prompts.append(prompt)
        return CountedCursor(self)


@pytest.fixture
def limit_of_two() -> Iterator[None]:
    before = slots.REQUEST_SLOTS.limit
    set_max_concurrent_requests(2)
    yield
    set_max_concurrent_requests(before)


async def test_a_burst_of_async_calls_holds_at_most_the_limit_of_caches_and_threads(limit_of_two: None) -> None:
    generator = CountedBackend("one two three four five six seven eight nine ten", "generator")
    mentor = CountedBackend("one two three four five six seven eight nine ten", "mentor")
    model = ChatMentorCollab(generator=generator, mentor=mentor, probe_rate=0.5, max_tokens=12)
    workers = Gauge()
    stop = threading.Event()

    def watch_threads() -> None:
        while not stop.is_set():
            count = sum(thread.name == "mentorcollab-request" for thread in threading.enumerate())
            workers.most = max(workers.most, count)
            time.sleep(0.001)

    watcher = threading.Thread(target=watch_threads)
    watcher.start()
    try:
        answers = await asyncio.gather(*(model.ainvoke(f"question {index}", seed=index) for index in range(12)))
    finally:
        stop.set()
        watcher.join()
    assert generator.cursors.most == 2 and mentor.cursors.most == 2  # the burst did overlap, up to the limit
    assert generator.cursors.now == mentor.cursors.now == 0 and slots.REQUEST_SLOTS.running == 0
    assert 1 <= workers.most <= 2
    alone = [model.invoke(f"question {index}", seed=index) for index in range(12)]
    assert [answer.content for answer in answers] == [answer.content for answer in alone]


def test_sync_calls_from_many_threads_queue_too(limit_of_two: None) -> None:
    generator = CountedBackend("one two three four five six", "generator")
    mentor = CountedBackend("one two three four five six", "mentor")
    model = ChatMentorCollab(generator=generator, mentor=mentor, probe_rate=0.5, max_tokens=8)
    threads = [threading.Thread(target=model.invoke, args=(f"question {index}",)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert generator.cursors.most == 2 and generator.cursors.now == 0
