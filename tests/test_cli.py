"""Command-line errors that need no model."""

from __future__ import annotations

import subprocess
import sys


def test_cli_bad_input_is_a_clear_error() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "mentorcollab_langchain.cli", "run", "--probe-rate", "3", "hi"],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert "probe_rate" in completed.stderr and "Traceback" not in completed.stderr
