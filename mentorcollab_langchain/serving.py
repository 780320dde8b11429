"""Start a local llama.cpp OpenAI-compatible server on a packaged model's verified GGUF.

For a laptop, or for tests and benchmarks: ``mentorcollab serve qwen2.5-coder-1.5b-instruct`` gives a
remote-style mentor without a GPU (llama.cpp decodes the 1.5B mentor several times faster than torch
on a small CPU). In production, point ``OpenAICompatibleBackend`` at vLLM or SGLang instead.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from mentorcollab_langchain.errors import BackendError
from mentorcollab_langchain.models.registry import get_packaged_model, verified_gguf


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@dataclass
class ModelServer:
    """A model server process on loopback, its base URL and its log file."""

    url: str
    process: subprocess.Popen
    log: Path

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


def server_command(gguf: Path, port: int, n_ctx: int = 4096, threads: int = 2, host: str = "127.0.0.1") -> list[str]:
    """llama-cpp-python's server on ``gguf``. ``threads`` both decode and read prompts, as in process (the
    server's own default reads prompts on every core, so a served model's reading would not be comparable)."""
    return [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", host,
        "--port", str(port), "--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", str(n_ctx),
    ]


@contextmanager
def serve(
    command: list[str], url: str, log: Path, ready_within: float = 180, env: dict[str, str] | None = None
) -> Iterator[ModelServer]:
    """Run a server ``command`` until the block ends; yield once it answers and is warmed up."""
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
    server = ModelServer(url, process, log)
    try:
        _wait_until_serving(server, ready_within)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@contextmanager
def llama_server(
    model: str | Path,
    log: Path,
    *,
    port: int | None = None,
    n_ctx: int = 4096,
    threads: int = 2,
    ready_within: float = 180,
) -> Iterator[ModelServer]:
    """Serve a packaged model name (or a GGUF path) with llama.cpp on loopback until the block ends."""
    gguf = Path(model) if Path(model).is_file() else verified_gguf(get_packaged_model(str(model)))
    port = port or free_port()
    with serve(server_command(gguf, port, n_ctx, threads), f"http://127.0.0.1:{port}", log, ready_within) as server:
        yield server


def _die_with_parent() -> None:
    """Runs in the server's process before it starts: on Linux, ask the kernel to end it with its parent.

    Without this, a caller killed by a signal (``kill``, a CI timeout) never reaches the ``finally``
    that stops the server, and the server keeps its port and gigabytes of memory as an orphan. The
    kernel watches the thread that started the server, so start servers from a thread that lives as
    long as they should (the main thread, as the CLI and the tests do).
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_until_serving(server: ModelServer, ready_within: float) -> None:
    deadline = time.monotonic() + ready_within
    while time.monotonic() < deadline:
        if server.process.poll() is not None:  # it died: say why, from its log
            raise BackendError(
                f"the model server exited with {server.process.returncode}; its log ({server.log}) ends:\n"
                + server.log.read_text()[-2000:]
            )
        try:
            # llama.cpp's server answers /v1/models only between completions (it holds the model's lock),
            # so a server that clients call as soon as it listens (one restarted on their URL) answers it
            # late: wait for that answer as long as the deadline allows. A fixed 2 s was never met under
            # load, and the server, serving all along, was reported dead when the deadline passed.
            models = httpx.get(f"{server.url}/v1/models", timeout=max(2.0, deadline - time.monotonic()))
            if models.status_code == 200:
                # The first completion pays for loading the weights into memory; pay it here, not
                # inside a caller's timeout. vLLM wants the served name, llama.cpp takes any.
                served = models.json()["data"][0]["id"]
                warm_up = {"model": served, "prompt": "Hello", "max_tokens": 1, "temperature": 0.0}
                httpx.post(f"{server.url}/v1/completions", json=warm_up, timeout=ready_within)
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise BackendError(f"the model server did not answer within {ready_within:.0f} s; see {server.log}")
