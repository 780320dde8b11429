"""The command line: bad input that needs no model, and runs on tiny local models."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow  # a few seconds: kept out of the fast set
def test_cli_bad_input_is_a_clear_error() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "mentorcollab_langchain.cli", "run", "--probe-rate", "3", "hi"],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert "probe_rate" in completed.stderr and "Traceback" not in completed.stderr


@pytest.mark.slow
def test_cli_run_records_the_verifier_it_used(tiny_byte_level_model: str) -> None:
    """The default verifier, or the paper's with --faithful (tiny local models, so it runs in seconds)."""
    import json

    def record(*options: str) -> dict:
        completed = subprocess.run(
            [sys.executable, "-m", "mentorcollab_langchain.cli", "run", "--json", "--generator", tiny_byte_level_model,
             "--mentor", tiny_byte_level_model, "--device", "cpu", "--dtype", "float32", "--max-new-tokens", "4",
             *options, "hi"],
            capture_output=True, text=True, timeout=300, check=True,
        )
        return json.loads(completed.stdout)

    from mentorcollab_langchain.verifiers import DEFAULT_VERIFIER, PAPER_VERIFIER

    assert record()["verifier"] == DEFAULT_VERIFIER
    faithful = record("--faithful")
    assert faithful["verifier"] == PAPER_VERIFIER and faithful["config"]["probe_rate"] == 0.04
    assert record("--faithful", "--verifier", "always-mentor")["verifier"] == "always-mentor"


def test_an_unknown_verifier_is_a_clear_error_before_any_model_loads(capsys) -> None:
    from mentorcollab_langchain.cli import main

    assert main(["eval", "--benchmark", "csqa", "--limit", "1", "--verifier", "oracle"]) == 2
    message = capsys.readouterr().err
    assert "unknown verifier 'oracle'" in message and "mentor-margin" in message and "mlp:PATH" in message
