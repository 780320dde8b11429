"""At most so many requests run at once in this process; the others wait their turn, first come first served.

Each running request holds both models' caches (a KV cache per cursor) and, on the async path, a worker
thread. Without a limit a burst of calls opens as many of each as there are calls, and memory grows
with the burst. With one, a request waits for a slot before it opens a cursor or starts a thread, so
memory is bounded by the limit, whatever the burst.

The limit is ``MENTORCOLLAB_MAX_CONCURRENT_REQUESTS`` (default 4), or ``set_max_concurrent_requests``.
Sync callers wait in their own thread; async callers wait on their event loop, and one who cancels
while waiting leaves the queue (or hands on a slot that reached it as it left).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

from mentorcollab_langchain.errors import ConfigError

DEFAULT_LIMIT = 4
LIMIT_VARIABLE = "MENTORCOLLAB_MAX_CONCURRENT_REQUESTS"

# A waiter's wake-up call, made under the lock by whoever frees a slot: True once the slot is handed to
# the waiter, False if the waiter can no longer take it (its event loop has closed).
Wake = Callable[[], bool]


def _checked(limit: object, where: str) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"{where} must be a whole number of requests, at least 1 (got {limit!r})")
    return limit


class RequestSlots:
    """A counting gate with a FIFO queue that both threads and coroutines can wait in."""

    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self._limit = _checked(limit, "the request limit")
        self._running = 0
        self._waiting: deque[Wake] = deque()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def set_limit(self, limit: int) -> None:
        """Change the limit; a higher one lets waiting requests in now, a lower one takes effect as requests end."""
        with self._lock:
            self._limit = _checked(limit, "the request limit")
            self._hand_on()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold a slot for the block, waiting in this thread for one if all are taken."""
        granted = threading.Event()

        def wake() -> bool:
            granted.set()
            return True

        with self._lock:
            self._enter(wake)
        try:
            granted.wait()
        except BaseException:  # interrupted while waiting (KeyboardInterrupt): leave the queue, or hand on
            with self._lock:
                still_queued = wake in self._waiting
                if still_queued:
                    self._waiting.remove(wake)
            if not still_queued:
                self._release()
            raise
        try:
            yield
        finally:
            self._release()

    @asynccontextmanager
    async def held_async(self) -> AsyncIterator[None]:
        """Hold a slot for the block, waiting on the event loop (never blocking it) if all are taken."""
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[None] = loop.create_future()

        def deliver() -> None:  # on the loop: take the slot, or pass it on if the waiter has gone
            if granted.cancelled():
                self._release()
            else:
                granted.set_result(None)

        def wake() -> bool:
            try:
                loop.call_soon_threadsafe(deliver)
            except RuntimeError:  # the loop has closed: this waiter will never run again
                return False
            return True

        with self._lock:
            self._enter(wake)
        try:
            await granted
        except asyncio.CancelledError:
            with self._lock:
                still_queued = wake in self._waiting
                if still_queued:
                    self._waiting.remove(wake)
            if not still_queued and granted.done() and not granted.cancelled():
                self._release()  # the slot arrived as the caller left: hand it on
            raise
        try:
            yield
        finally:
            self._release()

    def _enter(self, wake: Wake) -> None:
        """Under the lock: take a free slot now, or join the queue."""
        if self._running < self._limit and not self._waiting:
            self._running += 1
            wake()
        else:
            self._waiting.append(wake)

    def _release(self) -> None:
        with self._lock:
            self._running -= 1
            self._hand_on()

    def _hand_on(self) -> None:
        """Under the lock: give free slots to waiters, oldest first, skipping any that can no longer wake."""
        while self._waiting and self._running < self._limit:
            self._running += 1
            if not self._waiting.popleft()():
                self._running -= 1


def _limit_from_environment() -> int:
    text = os.environ.get(LIMIT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_LIMIT
    if not text.isdigit():
        raise ConfigError(f"{LIMIT_VARIABLE} must be a whole number of requests, at least 1 (got {text!r})")
    return _checked(int(text), LIMIT_VARIABLE)


REQUEST_SLOTS = RequestSlots(_limit_from_environment())


def set_max_concurrent_requests(limit: int) -> None:
    """How many requests may run at once in this process (chat model calls, sync and async); the rest queue."""
    REQUEST_SLOTS.set_limit(limit)
