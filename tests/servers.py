"""Servers for the remote-backend tests: a loopback fault proxy, and vLLM's OpenAI server (opt-in).
The llama.cpp server lives in ``mentorcollab_langchain.serving``, for users too. Everything listens on
127.0.0.1 only and every wait is bounded.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from mentorcollab_langchain.serving import ModelServer, free_port, serve


@dataclass
class FaultPlan:
    """What the proxy does: answer the first requests with these statuses, delay every forward."""

    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    retry_after: str | None = None
    requests: int = 0
    authorizations: list[str | None] = field(default_factory=list)


@contextmanager
def fault_proxy(upstream: str, plan: FaultPlan) -> Iterator[str]:
    """A loopback HTTP proxy in front of ``upstream`` that injects errors and delays per ``plan``."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the http.server API
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                plan.requests += 1
                plan.authorizations.append(self.headers.get("Authorization"))
                status = plan.statuses.pop(0) if plan.statuses else None
            if status is not None:
                self.send_response(status)
                if plan.retry_after is not None:
                    self.send_header("Retry-After", plan.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            time.sleep(plan.delay)
            try:
                answer = httpx.post(
                    upstream + self.path, content=body, headers={"Content-Type": "application/json"}, timeout=120
                )
            except httpx.TransportError:
                self.send_response(502)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(answer.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

    with serve_in_thread(Handler) as url:
        yield url


@contextmanager
def serve_in_thread(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server on a free loopback port, answering with ``handler`` from a thread; its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def vllm_server(python: str, model_folder: str, log: Path) -> Iterator[ModelServer]:
    """vLLM's OpenAI server (CPU build, its own venv: scripts/install-vllm.sh) on a loopback port."""
    port = free_port()
    command = [
        python, "-m", "vllm.entrypoints.openai.api_server", "--model", model_folder, "--served-model-name", "mentor",
        "--dtype", "bfloat16", "--max-model-len", "2048", "--host", "127.0.0.1", "--port", str(port),
    ]
    env = os.environ | {"VLLM_CPU_KVCACHE_SPACE": "1"}
    with serve(command, f"http://127.0.0.1:{port}", log, ready_within=900, env=env) as server:
        yield server
