"""A small, careful HTTP client for OpenAI-compatible servers: retries, backoff, a circuit breaker.

Mentor calls sit on the answer's critical path, so this client fails in bounded time: it retries
connection errors, 429 and 5xx with exponential backoff (honouring ``Retry-After``), never retries a
request that timed out, and stops calling a server that keeps failing (the circuit opens for a while,
and calls fail at once without touching the network). The API key is read from the environment and
never appears in a message, a log line or ``repr``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import math
import os
import threading
import time
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from mentorcollab_langchain.errors import BackendError, GenerationCancelled

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_WAIT = 10.0
"""The longest wait before a retry, whatever a server's ``Retry-After`` asks: a call fails in bounded time."""


@dataclass(frozen=True)
class _Retry:
    """The retry policy's answer when the call is worth another attempt: wait this long first."""

    seconds: float


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures and stays open for ``cooldown`` seconds.

    Then it is half-open: exactly one call goes through as a trial while the others are still refused.
    The trial's success closes the circuit; its failure opens it for another ``cooldown``. A trial that
    never reports back (its caller went away) stops blocking the others after ``cooldown`` seconds.
    """

    def __init__(self, threshold: int = 3, cooldown: float = 30.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_since: float | None = None
        self._lock = threading.Lock()

    def check(self, target: str) -> None:
        with self._lock:
            now = time.monotonic()
            if self._opened_at is None:
                return
            cooled = now - self._opened_at >= self.cooldown
            trial_running = self._trial_since is not None and now - self._trial_since < self.cooldown
            if cooled and not trial_running:
                self._trial_since = now  # half-open: this call is the one trial
                return
        raise BackendError(
            f"{target}: circuit open after {self.threshold} consecutive failures; "
            f"not calling it again for {self.cooldown:.0f} s"
        )

    def record(self, ok: bool) -> None:
        with self._lock:
            self._trial_since = None
            if ok:
                self._failures, self._opened_at = 0, None
            else:
                self._failures += 1
                if self._failures >= self.threshold:
                    self._opened_at = time.monotonic()


class OpenAICompatibleClient:
    """POSTs JSON to one OpenAI-compatible server, reusing connections, with bounded retries."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        api_key: str | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_retries: int = 3,
        backoff: float = 0.25,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff = backoff
        self.breaker = breaker or CircuitBreaker()
        headers = {"Content-Type": "application/json"}
        # A key given here (the chat model's ``mentor_api_key``) wins over the environment's.
        api_key = api_key or (os.environ.get(api_key_env) if api_key_env else None)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
        )

    def __repr__(self) -> str:
        return f"OpenAICompatibleClient({self.base_url!r})"

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST ``payload``; on the async path (see ``AsyncScope``) the call runs on the caller's loop."""
        scope = CURRENT_ASYNC_SCOPE.get()
        if scope is not None:
            return scope.run(lambda http: self._apost(http, path, payload), self)
        target = self._begin(path)
        for attempt in range(self.max_retries + 1):
            try:
                outcome: httpx.Response | httpx.HTTPError = self._http.post(path, json=payload)
            except httpx.HTTPError as error:
                outcome = error
            answer = self._judge(target, outcome, attempt)
            if not isinstance(answer, _Retry):
                return answer
            time.sleep(answer.seconds)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _apost(self, http: httpx.AsyncClient, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The same call and retry policy as ``post``, with an ``httpx.AsyncClient``."""
        target = self._begin(path)
        for attempt in range(self.max_retries + 1):
            try:
                outcome: httpx.Response | httpx.HTTPError = await http.post(path, json=payload)
            except httpx.HTTPError as error:
                outcome = error
            answer = self._judge(target, outcome, attempt)
            if not isinstance(answer, _Retry):
                return answer
            await asyncio.sleep(answer.seconds)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def async_client(self) -> httpx.AsyncClient:
        """A new async client with this client's base URL, headers and timeouts."""
        return httpx.AsyncClient(base_url=self.base_url, headers=self._http.headers, timeout=self._http.timeout)

    def _begin(self, path: str) -> str:
        target = f"{self.base_url}{path}"
        self.breaker.check(target)
        return target

    def _judge(self, target: str, outcome: httpx.Response | httpx.HTTPError, attempt: int) -> Any:
        """The retry policy: the answer's JSON (whatever it holds: the caller checks its shape), or a
        ``_Retry`` saying how long to wait before the next attempt; raises when the call has failed (a
        timeout, a status not worth retrying, or the last attempt)."""
        retry_after: float | None = None
        if isinstance(outcome, httpx.TimeoutException):
            self.breaker.record(ok=False)
            raise BackendError(f"{target}: no answer within the timeout ({type(outcome).__name__})") from None
        if isinstance(outcome, httpx.HTTPError):
            problem = f"cannot reach the server ({type(outcome).__name__}: {outcome})"
        elif outcome.status_code < 400:
            self.breaker.record(ok=True)
            return outcome.json()
        else:
            problem = f"HTTP {outcome.status_code}: {outcome.text[:200]}"
            if outcome.status_code not in RETRYABLE_STATUS:
                self.breaker.record(ok=False)
                raise BackendError(f"{target}: {problem}")
            retry_after = _seconds(outcome.headers.get("Retry-After"))
        if attempt >= self.max_retries:
            self.breaker.record(ok=False)
            raise BackendError(f"{target}: {problem} (after {self.max_retries} retries)")
        return _Retry(min(retry_after if retry_after is not None else self.backoff * 2**attempt, MAX_RETRY_WAIT))

    def close(self) -> None:
        self._http.close()


class AsyncScope:
    """The async path of one request: its HTTP calls run on the caller's event loop, cancellably.

    The engine is one synchronous decode loop, so ``ainvoke``/``astream`` run it in a worker thread.
    Inside this scope a remote model's call made by that thread is handed to ``loop`` and sent with an
    ``httpx.AsyncClient`` (one per server, reused for the request's calls), and the thread waits for
    the answer. ``cancel()`` cancels the calls in flight at once, so a caller who cancels never waits
    for a slow server; the thread then gets ``GenerationCancelled``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._clients: dict[int, httpx.AsyncClient] = {}
        self._in_flight: set[concurrent.futures.Future[Any]] = set()
        self._cancelled = False
        self._lock = threading.Lock()

    def run(self, call: Callable[[httpx.AsyncClient], Coroutine[Any, Any, T]], owner: OpenAICompatibleClient) -> T:
        """Run ``call(async_client)`` on the loop and wait for it (from the worker thread)."""
        with self._lock:
            if self._cancelled:
                raise GenerationCancelled("the caller cancelled the request")
            if id(owner) not in self._clients:
                self._clients[id(owner)] = owner.async_client()
            http = self._clients[id(owner)]
            future = asyncio.run_coroutine_threadsafe(call(http), self.loop)
            self._in_flight.add(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise GenerationCancelled("the caller cancelled the request") from None
        finally:
            with self._lock:
                self._in_flight.discard(future)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            for future in self._in_flight:
                future.cancel()

    async def aclose(self) -> None:
        for http in self._clients.values():
            await http.aclose()


CURRENT_ASYNC_SCOPE: ContextVar[AsyncScope | None] = ContextVar("mentorcollab_async_scope", default=None)


def _seconds(header: str | None) -> float | None:
    """``Retry-After`` in seconds from now: a number of seconds, or an HTTP date (in the past: 0). None when
    there is none or it reads as neither (a negative or non-finite number, a malformed date): the backoff
    applies then, rather than a wait the server did not mean or an error from ``sleep``."""
    if header is None:
        return None
    try:
        seconds = float(header)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is in GMT
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
