"""The HTTP client's fault handling against a loopback server that answers by a script.

The circuit breaker's whole cycle (closed, open after consecutive failures, half-open after the
cool-down with exactly one trial, closed again when the trial succeeds) and ``Retry-After``: honoured
on both the sync and the async path, capped, and ignored (for the backoff) where it cannot be read.
Times are measured with generous bounds; where only the requested wait matters, ``sleep`` is recorded
instead of slept. The same client runs against a real llama.cpp server in
tests/integration/backends/test_remote_mentor.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from types import SimpleNamespace

import pytest

from mentorcollab_langchain.backends import http_client
from mentorcollab_langchain.backends.http_client import (
    CURRENT_ASYNC_SCOPE,
    MAX_RETRY_WAIT,
    AsyncScope,
    CircuitBreaker,
    OpenAICompatibleClient,
)
from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleBackend
from mentorcollab_langchain.errors import BackendError
from tests.servers import serve_in_thread

OK = (200, {}, b'{"ok": true}')


@dataclass
class Script:
    """The server's answers in order, (status, headers, body), then ``OK`` forever; ``delay`` before each
    answer. ``arrivals`` holds when each request arrived (``time.monotonic``)."""

    answers: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    delay: float = 0.0
    arrivals: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def requests(self) -> int:
        return len(self.arrivals)


@pytest.fixture(scope="module")
def loopback() -> Iterator[tuple[str, Script]]:
    """One server for the module (stopping one takes half a second); each test gets its script fresh."""
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the http.server API
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with script.lock:
                script.arrivals.append(time.monotonic())
                status, headers, body = script.answers.pop(0) if script.answers else OK
            time.sleep(script.delay)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

    with serve_in_thread(Handler) as url:
        yield url, script


@pytest.fixture
def server(loopback: tuple[str, Script]) -> tuple[str, Script]:
    url, script = loopback
    with script.lock:
        script.answers, script.delay, script.arrivals = [], 0.0, []
    return url, script


def failing(status: int = 500, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return (status, headers, b"")


def client(url: str, **options: object) -> OpenAICompatibleClient:
    settings = {"max_retries": 0, "backoff": 0.01, "api_key_env": None} | options
    return OpenAICompatibleClient(url, **settings)  # type: ignore[arg-type]


def refused(call: OpenAICompatibleClient) -> bool:
    try:
        call.post("/v1/completions", {})
    except BackendError as error:
        return "circuit open" in str(error)
    return False


# -- the circuit breaker -----------------------------------------------------------------------

COOLDOWN = 0.5


def test_the_circuit_opens_after_consecutive_failures_and_then_refuses_without_the_network(server) -> None:
    url, script = server
    script.answers = [failing(), OK, failing(), failing()]
    api = client(url, breaker=CircuitBreaker(threshold=2, cooldown=60))
    with pytest.raises(BackendError, match="HTTP 500"):
        api.post("/v1/completions", {})
    assert api.post("/v1/completions", {}) == {"ok": True}  # a success in between: the count starts over
    for _ in range(2):
        with pytest.raises(BackendError, match="HTTP 500"):
            api.post("/v1/completions", {})
    assert script.requests == 4
    with pytest.raises(BackendError, match="circuit open after 2 consecutive failures"):
        api.post("/v1/completions", {})
    assert script.requests == 4, "an open circuit does not touch the network"


def test_after_the_cooldown_one_trial_goes_through_and_its_success_closes_the_circuit(server) -> None:
    url, script = server
    script.answers = [failing()]
    api = client(url, breaker=CircuitBreaker(threshold=1, cooldown=COOLDOWN))
    opened = time.monotonic()
    with pytest.raises(BackendError, match="HTTP 500"):
        api.post("/v1/completions", {})
    assert refused(api) and script.requests == 1
    time.sleep(COOLDOWN + 0.1)
    assert api.post("/v1/completions", {}) == {"ok": True}  # the half-open trial
    assert time.monotonic() - opened >= COOLDOWN
    for _ in range(3):  # closed again: every call goes through
        assert api.post("/v1/completions", {}) == {"ok": True}
    assert script.requests == 5
    # ... concurrent ones too: a closed circuit, not one that stays half-open with a trial at a time
    script.delay = 0.3
    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(lambda _: api.post("/v1/completions", {}), range(3))) == [{"ok": True}] * 3
    assert script.requests == 8


def test_a_failed_trial_opens_the_circuit_for_another_cooldown(server) -> None:
    url, script = server
    script.answers = [failing(), failing(503)]
    api = client(url, breaker=CircuitBreaker(threshold=1, cooldown=COOLDOWN))
    with pytest.raises(BackendError, match="HTTP 500"):
        api.post("/v1/completions", {})
    time.sleep(COOLDOWN + 0.1)
    with pytest.raises(BackendError, match="HTTP 503"):  # the trial, and it fails
        api.post("/v1/completions", {})
    assert refused(api) and script.requests == 2, "a failed trial opens the circuit again at once"
    time.sleep(COOLDOWN + 0.1)
    assert api.post("/v1/completions", {}) == {"ok": True} and not refused(api)
    assert script.requests == 4


def test_while_the_half_open_trial_is_in_flight_the_other_calls_are_refused(server) -> None:
    url, script = server
    script.answers = [failing()]
    api = client(url, breaker=CircuitBreaker(threshold=1, cooldown=COOLDOWN))
    with pytest.raises(BackendError, match="HTTP 500"):
        api.post("/v1/completions", {})
    time.sleep(COOLDOWN + 0.1)
    script.delay = 1.0  # the trial is slow: the others arrive while it is in flight

    def call(wait: float) -> str:
        time.sleep(wait)
        try:
            return str(api.post("/v1/completions", {}))
        except BackendError as error:
            return f"refused: {error}"

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(call, [0.0, 0.2, 0.2, 0.2]))
    assert answers[0] == "{'ok': True}"
    assert all("circuit open" in answer for answer in answers[1:]), answers
    assert script.requests == 2, "only the trial reaches the server while the circuit is half-open"
    script.delay = 0.0
    assert api.post("/v1/completions", {}) == {"ok": True} and script.requests == 3  # closed


# -- Retry-After -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_delays_the_retry_by_about_that_long(server, status: int) -> None:
    url, script = server
    script.answers = [failing(status, **{"Retry-After": "1"})]
    api = client(url, max_retries=1, backoff=0.01)
    assert api.post("/v1/completions", {}) == {"ok": True}
    assert script.requests == 2
    waited = script.arrivals[1] - script.arrivals[0]
    assert 0.9 <= waited < 3.0, f"the retry came {waited:.2f} s after the first try, not about 1 s"
    # Without the header the backoff (0.01 s here) sets the wait: the header made the difference.
    script.answers = [failing(status)]
    assert api.post("/v1/completions", {}) == {"ok": True}
    assert script.arrivals[3] - script.arrivals[2] < 0.5


def test_retry_after_is_honoured_on_the_async_path(server) -> None:
    url, script = server
    script.answers = [failing(503, **{"Retry-After": "1"})]
    api = client(url, max_retries=1, backoff=0.01)

    async def main() -> object:
        scope = AsyncScope(asyncio.get_running_loop())

        def in_worker() -> object:  # as ainvoke's engine thread calls a remote model
            CURRENT_ASYNC_SCOPE.set(scope)
            return api.post("/v1/completions", {})

        try:
            return await asyncio.to_thread(in_worker)
        finally:
            await scope.aclose()

    assert asyncio.run(main()) == {"ok": True}
    assert script.requests == 2 and 0.9 <= script.arrivals[1] - script.arrivals[0] < 3.0


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the client asks for between attempts, recorded instead of slept."""
    asked: list[float] = []
    monkeypatch.setattr(http_client, "time", SimpleNamespace(sleep=asked.append, monotonic=time.monotonic))
    return asked


def test_a_huge_retry_after_is_capped(server, waits: list[float]) -> None:
    url, script = server
    script.answers = [failing(429, **{"Retry-After": "86400"})]
    assert client(url, max_retries=1).post("/v1/completions", {}) == {"ok": True}
    assert waits == [MAX_RETRY_WAIT] and MAX_RETRY_WAIT <= 10


def test_a_retry_after_date_is_honoured(server, waits: list[float]) -> None:
    url, script = server
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=6), usegmt=True)
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    script.answers = [failing(503, **{"Retry-After": soon}), failing(503, **{"Retry-After": past})]
    assert client(url, max_retries=2).post("/v1/completions", {}) == {"ok": True}
    assert 4.0 <= waits[0] <= 6.5 and waits[1] == 0.0


@pytest.mark.parametrize("header", ["-1", "nan", "inf", "soon", ""])
def test_an_unreadable_retry_after_falls_back_to_the_backoff(server, waits: list[float], header: str) -> None:
    """A negative or non-finite number once reached ``sleep`` and raised a bare ValueError."""
    url, script = server
    script.answers = [failing(503, **{"Retry-After": header}), failing(429, **{"Retry-After": header})]
    assert client(url, max_retries=2, backoff=0.25).post("/v1/completions", {}) == {"ok": True}
    assert waits == [0.25, 0.5]


def test_an_answer_that_is_a_json_number_is_the_answer_not_a_wait(server, waits: list[float]) -> None:
    """The retry policy once answered 'wait' with a bare float, so a server answering 2.5 made the client
    sleep 2.5 s (any length: the cap did not apply) and ask again."""
    url, script = server
    script.answers = [(200, {}, b"2.5")]
    assert client(url, max_retries=3).post("/v1/completions", {}) == 2.5
    assert waits == [] and script.requests == 1
    script.answers = [(200, {}, b"1e9")]
    backend = OpenAICompatibleBackend(url, model="mentor", tokenizer="unused", api_key_env=None, max_retries=3)
    with pytest.raises(BackendError, match=r"unexpected completion response 1000000000\.0"):
        backend.complete("hi", 1)
    assert waits == [] and script.requests == 2
