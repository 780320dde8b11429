"""A model server started by this package never outlives the process that started it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's"),
    pytest.mark.allow_skip(reason="a platform's limit, not a missing part: CI runs on Linux"),
]

STARTER = """
import subprocess, sys, time
from mentorcollab_langchain.serving import _die_with_parent
server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], preexec_fn=_die_with_parent)
print(server.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        state = next(line for line in status.read_text().splitlines() if line.startswith("State:"))
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "zombie" not in state  # a dead child not yet reaped by init


@pytest.mark.slow  # a few seconds: kept out of the fast set
def test_a_server_dies_when_its_starter_is_killed() -> None:
    starter = subprocess.Popen([sys.executable, "-c", STARTER], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    assert starter.stdout is not None
    server_pid = int(starter.stdout.readline())
    assert _alive(server_pid)
    starter.kill()  # SIGKILL: no finally block of the starter runs
    starter.wait()
    deadline = time.monotonic() + 10
    while _alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(server_pid), "the server outlived the process that started it"
