"""A small, careful HTTP client for OpenAI-compatible servers: retries, backoff, a circuit breaker.

Mentor calls sit on the answer's critical path, so this client fails in bounded time: it retries
connection errors, 429 and 5xx with exponential backoff (honouring ``Retry-After``), never retries a
request that timed out, and stops calling a server that keeps failing (the circuit opens for a while,
and calls fail at once without touching the network). The API key is read from the environment and
never appears in a message, a log line or ``repr``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import httpx

from mentorcollab_langchain.errors import BackendError

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures and stays open for ``cooldown`` seconds."""

    def __init__(self, threshold: int = 3, cooldown: float = 30.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._failures = 0
        self._opened_at: float | None = None
        self._lock = threading.Lock()

    def check(self, target: str) -> None:
        with self._lock:
            if self._opened_at is None:
                return
            if time.monotonic() - self._opened_at >= self.cooldown:
                self._opened_at = None  # half-open: let one call try again
                return
        raise BackendError(
            f"{target}: circuit open after {self.threshold} consecutive failures; "
            f"not calling it again for {self.cooldown:.0f} s"
        )

    def record(self, ok: bool) -> None:
        with self._lock:
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
        api_key = os.environ.get(api_key_env) if api_key_env else None
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
        target = f"{self.base_url}{path}"
        self.breaker.check(target)
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            try:
                response = self._http.post(path, json=payload)
            except httpx.TimeoutException as error:
                self.breaker.record(ok=False)
                raise BackendError(f"{target}: no answer within the timeout ({type(error).__name__})") from None
            except httpx.TransportError as error:
                problem = f"cannot reach the server ({type(error).__name__}: {error})"
            else:
                if response.status_code < 400:
                    self.breaker.record(ok=True)
                    return response.json()
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code not in RETRYABLE_STATUS:
                    self.breaker.record(ok=False)
                    raise BackendError(f"{target}: {problem}")
                retry_after = _seconds(response.headers.get("Retry-After"))
            if attempt < self.max_retries:
                time.sleep(min(retry_after if retry_after is not None else self.backoff * 2**attempt, 10.0))
        self.breaker.record(ok=False)
        raise BackendError(f"{target}: {problem} (after {self.max_retries} retries)")

    def close(self) -> None:
        self._http.close()


def _seconds(header: str | None) -> float | None:
    try:
        return float(header) if header is not None else None
    except ValueError:
        return None
