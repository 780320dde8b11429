"""The ``serve``, ``bench`` and ``eval`` commands run end to end, so a broken path in one fails here.

A NameError in one of these commands was once caught only by a run from a fresh clone: no test ran
them. Here they run in process through ``main`` on the tiny local models (``eval`` on one or two real
benchmark questions from the installed data wheel), ``bench`` also with its llama.cpp mentor replaced
by a loopback completion server, and ``serve`` down to the server command it replaces itself with; the
slow set starts ``serve`` for real on the smallest packaged model.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from mentorcollab_langchain.cli import COMMANDS, build_parser, main
from mentorcollab_langchain.evals.data import load_questions
from mentorcollab_langchain.models import PACKAGED_MODELS
from mentorcollab_langchain.models.registry import verified_gguf
from mentorcollab_langchain.serving import free_port, serve, server_command
from tests.unit.backends.test_shared_remote_mentor import hash_model_server

SMALLEST_PACKAGED = "smollm2-135m-instruct"  # one 98 MB GGUF


def tiny_models(folder: str) -> list[str]:
    return ["--generator", folder, "--mentor", folder, "--device", "cpu", "--dtype", "float32"]


@pytest.fixture(scope="module")
def tokenizer(tiny_byte_level_model: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_byte_level_model)


# -- every command -----------------------------------------------------------------------------


def command_names() -> list[str]:
    subparsers = next(action for action in build_parser()._actions if action.dest == "command")
    return list(subparsers.choices)  # type: ignore[union-attr]


def test_every_command_answers_help(capsys: pytest.CaptureFixture[str]) -> None:
    names = command_names()
    assert len(names) == len(COMMANDS) and {"serve", "bench", "eval"} <= set(names)
    for name in names:
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0, name
        assert capsys.readouterr().out.startswith(f"usage: mentorcollab {name}")


# -- serve -------------------------------------------------------------------------------------


def test_serve_replaces_itself_with_llama_cpps_server_on_the_verified_gguf(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    executed: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: executed.append((path, list(argv))))
    assert main(["serve", SMALLEST_PACKAGED, "--port", "18123", "--threads", "1", "--n-ctx", "512"]) == 0
    gguf = verified_gguf(PACKAGED_MODELS[SMALLEST_PACKAGED])
    expected = server_command(gguf, 18123, 512, 1)
    assert executed == [(expected[0], expected)]
    assert expected[1:3] == ["-m", "llama_cpp.server"] and "127.0.0.1" in expected  # loopback only
    threads = {flag: expected[expected.index(flag) + 1] for flag in ("--n_threads", "--n_threads_batch")}
    assert threads == {"--n_threads": "1", "--n_threads_batch": "1"}  # prompts read on as many threads as in process
    assert f"serving {SMALLEST_PACKAGED} at http://127.0.0.1:18123/v1" in capsys.readouterr().err


def test_serve_takes_the_default_mentor_and_its_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from mentorcollab_langchain.models import DEFAULT_MENTOR

    args = build_parser().parse_args(["serve"])
    assert (args.model, args.port, args.threads, args.n_ctx) == (DEFAULT_MENTOR, 8080, 2, 4096)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "gpt-17"], "unknown packaged model 'gpt-17'"),
        (["serve", "/tmp"], "unknown packaged model '/tmp'"),  # serve takes packaged models only
    ],
)
def test_serve_refuses_what_it_cannot_serve_in_one_line(
    argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "execv", lambda *args: pytest.fail("nothing may be executed"))
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("mentorcollab: error: ") and message in error and "Traceback" not in error


def test_serve_refuses_a_port_that_is_not_a_number(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["serve", "--port", "eighty"])
    assert done.value.code == 2 and "argument --port: invalid int value" in capsys.readouterr().err


@pytest.mark.slow
def test_serve_serves_a_packaged_model_that_answers_completions(tmp_path: Path) -> None:
    """The command as a user runs it, in its own process: it must come up and complete a prompt."""
    port = free_port()
    command = [sys.executable, "-m", "mentorcollab_langchain.cli", "serve", SMALLEST_PACKAGED, "--port", str(port),
               "--threads", "1", "--n-ctx", "512"]
    with serve(command, f"http://127.0.0.1:{port}", tmp_path / "serve.log", ready_within=120) as server:
        answer = httpx.post(f"{server.url}/v1/completions", timeout=60,
                            json={"model": "mentor", "prompt": "The capital of France is", "max_tokens": 3,
                                  "temperature": 0.0}).json()
        assert isinstance(answer["choices"][0]["text"], str) and answer["usage"]["completion_tokens"] >= 1
    assert server.process.poll() is not None  # stopped with the block


# -- bench -------------------------------------------------------------------------------------


def table_rows(out: str) -> list[str]:
    """The table's rows, without the header lines above it and the legend below it."""
    lines = out.strip().splitlines()
    assert lines[0].startswith("mentorcollab bench, ") and "measured memory bandwidth" in lines[0], out
    assert lines[1].startswith("MentorCollab settings: the engine's defaults but max_new_tokens=3"), out
    assert lines[2].split()[:4] == ["setup", "tokens", "seconds", "tok/s"], out
    return lines[3:-1]


# The smallest packaged model as both models, on llama.cpp in one thread: every part, in seconds.
QUICK_BENCH = ["bench", "--generator", SMALLEST_PACKAGED, "--mentor", SMALLEST_PACKAGED, "--threads", "1",
               "--questions", "1", "--concurrency", "2", "--max-new-tokens", "3", "--skip-torch",
               "--skip-first-probe"]


@pytest.mark.slow  # half a minute on a busy 2-core machine
def test_bench_measures_every_local_part(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by scripts/install.sh")
    assert main([*QUICK_BENCH, "--no-remote"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert [row.split("  ")[0].split(",")[0] for row in rows] == [
        f"{SMALLEST_PACKAGED} alone", f"{SMALLEST_PACKAGED} alone", "MentorCollab", "2 requests one at a time",
        "2 requests at once"]
    assert all(int(row.split()[3]) == 3 for row in rows[:2])  # each model alone wrote its 3 tokens
    assert "x cost model" in rows[2] and "x mentor alone" in rows[2] and "same answers" in rows[4]


@pytest.mark.slow  # loads the model on transformers too
def test_bench_on_transformers_runs_the_gpu_checks_path_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/gpu-check.sh's bench (``--backend transformers --device cuda``), with the CPU for the GPU: the
    models' rows and MentorCollab's are torch's, and the torch rows beside llama.cpp's are not repeated."""
    assert main([*QUICK_BENCH, "--no-remote", "--backend", "transformers", "--device", "cpu", "--dtype",
                 "bfloat16"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert [row.split("  ")[0] for row in rows[:3]] == [
        f"{SMALLEST_PACKAGED} alone, torch bfloat16, cpu", f"{SMALLEST_PACKAGED} alone, torch bfloat16, cpu",
        "MentorCollab, torch bfloat16, cpu"]
    assert len(rows) == 5 and "same answers" in rows[4]
    assert all(row.split()[-1].endswith("%") for row in rows[:2])  # a share of the measured bandwidth


def test_a_failing_bench_part_is_named_in_the_table_and_the_parts_after_it_still_run(
    tiny_byte_level_model: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A GPU check lent for minutes must keep what it measured: the requests at once raise here (as CUDA graphs
    on threads might), and the first probe after them is still measured (on a prompt the tiny model's 256-token
    context holds), and every figure is also on stderr."""
    from mentorcollab_langchain import bench
    from mentorcollab_langchain.cli import bench as bench_command
    from mentorcollab_langchain.evals.prompts import BuiltPrompt

    def broken(*_: object) -> None:
        raise RuntimeError("graphs recorded on another thread")

    monkeypatch.setattr(bench, "measure_concurrency", broken)
    monkeypatch.setattr(bench_command, "long_fewshot_prompt",
                        lambda question=0: BuiltPrompt(f"Example {question}: 2 + 2 = 4.\nQuestion: 3 + 3 =", "raw", ()))
    assert main(["bench", *tiny_models(tiny_byte_level_model), "--backend", "transformers", "--questions", "1",
                 "--concurrency", "2", "--max-new-tokens", "3", "--no-remote"]) == 1
    captured = capsys.readouterr()
    rows = table_rows(captured.out)
    assert [row.split("  ")[0] for row in rows[:3]] == [
        f"{tiny_byte_level_model} alone, torch float32, cpu", f"{tiny_byte_level_model} alone, torch float32, cpu",
        "MentorCollab, torch float32, cpu"]
    assert [row.split(",")[0] for row in rows[3:6]] == ["first probe"] * 3  # measured after the failure
    assert rows[6].split() == ["requests", "at", "once:", "failed", "failed", "RuntimeError:", "graphs", "recorded",
                               "on", "another", "thread"]
    assert "Traceback" in captured.err and "MentorCollab, torch float32, cpu: 3 tokens in" in captured.err
    assert "first probe, read-ahead, examples cached: " in captured.err


@pytest.mark.slow
def test_bench_measures_the_served_mentor_too(
    tokenizer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The remote cases, with the llama.cpp server the command starts replaced by a loopback one."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by scripts/install.sh")
    from mentorcollab_langchain import serving

    started: list[str] = []

    @contextmanager
    def loopback_llama_server(model: str, log: Path, **_: object) -> Iterator[SimpleNamespace]:
        started.append(model)
        with hash_model_server(tokenizer) as (url, completions):
            yield SimpleNamespace(url=url, completions=completions)
        assert completions.requests > 0

    monkeypatch.setattr(serving, "llama_server", loopback_llama_server)
    assert main([*QUICK_BENCH, "--skip-concurrency"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert started == [SMALLEST_PACKAGED]
    assert [row.split(",")[1].split()[0] for row in rows[2:]] == ["llama.cpp", "llama.cpp", "served"]
    assert "x cost model" in rows[4]


# -- eval --------------------------------------------------------------------------------------


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_eval_runs_resumes_and_reports(tiny_byte_level_model: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    argv = ["eval", "--benchmark", "csqa,arc_easy", "--limit", "1", "--prompt", "chat",
            "--methods", "generator,mentor,mentorcollab", *tiny_models(tiny_byte_level_model), "--backend",
            "transformers", "--max-new-tokens", "3", "--probe-rate", "1", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    first = records(out)
    assert sorted((r["benchmark"], r["method"]) for r in first) == sorted(
        (benchmark, method) for benchmark in ("csqa", "arc_easy")
        for method in ("generator", "mentor", "mentorcollab (p=1)")
    )
    assert all(r["error"] is None and r["finish_reason"] != "error" for r in first), [r["error"] for r in first]
    collab = [r for r in first if r["method"].startswith("mentorcollab")]
    assert all(r["stats"]["probes"] >= 1 and r["stats"]["mentor_calls"] >= 1 for r in collab)
    torch_numerics = f"torch {version('torch')}, transformers {version('transformers')}, prompt batches of 64"
    assert collab[0]["numerics"] == {"generator": torch_numerics, "mentor": torch_numerics}
    assert (out / "report.md").is_file() and "mentorcollab (p=1)" in (out / "report.md").read_text()
    capsys.readouterr()

    assert main(argv) == 0  # resumed: every question already answered, nothing is run again
    assert records(out) == first

    assert main(["eval", "--report", str(out), "--report-out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("# MentorCollab evaluation") and "csqa (validation)" in printed
    assert (tmp_path / "report" / "report.md").read_text().strip() == printed.strip()


def test_eval_with_the_mentor_behind_a_server(tiny_byte_level_model: str, tokenizer, tmp_path: Path) -> None:
    with hash_model_server(tokenizer) as (url, completions):
        argv = ["eval", "--benchmark", "csqa", "--limit", "1", "--prompt", "chat", "--methods", "mentor,mentorcollab",
                *tiny_models(tiny_byte_level_model), "--backend", "transformers", "--mentor-url", url,
                "--max-new-tokens", "3", "--probe-rate", "1", "--out", str(tmp_path), "--no-progress"]
        assert main(argv) == 0
    found = records(tmp_path)
    assert [r["method"] for r in found] == ["mentor", "mentorcollab (p=1)"]
    assert all(r["error"] is None for r in found) and completions.requests > 0
    assert found[0]["method_key"]["models"]["mentor"]["backend"] == f"server {url}"
    assert found[0]["numerics"] == {"mentor": ""}, "a server's numerics are its own, unknown here"
    assert found[0]["response"].strip(), "the served mentor's answer is in the record"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--limit", "1"], "name a --benchmark"),
        (["--benchmark", "csqa", "--prompt-style", "raw"], "eval sets the prompt style"),
        (["--benchmark", "nope", "--limit", "1"], "unknown benchmark 'nope'"),
        (["--benchmark", "csqa", "--split", "test", "--limit", "1"], "csqa has no split 'test'"),
        (["--benchmark", "csqa", "--limit", "1", "--methods", "generator,oracle"], "unknown method 'oracle'"),
        (["--benchmark", "csqa", "--limit", "1", "--offset", "100000"], "csqa: no questions"),
        (["--benchmark", "csqa", "--limit", "1", "--probe-rate", "2"], "probe_rate"),
        (["--benchmark", "csqa", "--limit", "1", "--calibration", "/no/such/calibration.json"],
         "calibration /no/such/calibration.json: cannot read it"),
    ],
)
def test_eval_refuses_bad_settings_before_loading_a_model(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The generator named here does not exist: an error about it would mean a model was being loaded
    (minutes, for real ones) before the bad setting was noticed."""
    assert main(["eval", *options, "--generator", "/nonexistent/model", "--mentor", "/nonexistent/model"]) == 2
    error = capsys.readouterr().err
    assert message in error and "nonexistent" not in error, error


def test_calibrate_writes_the_threshold_and_the_questions_it_read(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """On the smallest packaged model (a random tiny one writes only blank lines, which no policy probes)."""
    out = tmp_path / "calibration.json"
    argv = ["calibrate", "--benchmark", "csqa", "--offset", "100", "--limit", "2", "--generator", SMALLEST_PACKAGED,
            "--threads", "1", "--probe-share", "0.5", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    written = json.loads(out.read_text())
    assert written["question_ids"] == [question.id for question in load_questions("csqa", None, 2, offset=100)]
    assert written["words"] == 2 and written["word_share"] == 0.5 and written["max_new_tokens"] == 16
    assert written["benchmark"] == "csqa" and written["backend"] == "llama.cpp GGUF (in process)"
    assert written["generator_sha256"] == PACKAGED_MODELS[SMALLEST_PACKAGED].sha256
    assert written["command"].startswith("mentorcollab calibrate --benchmark csqa")
    assert f"--uncertainty-threshold {written['uncertainty_threshold']!r}" in capsys.readouterr().err


def test_calibrate_on_your_own_prompts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('"What is the capital of France?"\n\n'
                       '[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]\n')
    out = tmp_path / "calibration.json"
    argv = ["calibrate", "--prompts", str(prompts), "--generator", SMALLEST_PACKAGED, "--threads", "1",
            "--max-new-tokens", "8", "--probe-share", "0.5", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    written = json.loads(out.read_text())
    assert written["answers"] == 2 and written["words"] >= 2 and written["max_new_tokens"] == 8
    assert written["prompts"] == str(prompts) and len(written["prompts_sha256"]) == 64 and "question_ids" not in written
    capsys.readouterr()
    # the record sets a run's policy, and only for the generator it was made with, known by its weights
    other = next(name for name in PACKAGED_MODELS if name != SMALLEST_PACKAGED)
    assert main(["run", "--calibration", str(out), "--generator", other, "a prompt"]) == 2
    assert f"was made for the generator {SMALLEST_PACKAGED!r}, not {other!r} (weights sha256" in capsys.readouterr().err
    assert main(["run", "--calibration", str(out), "--generator", "/nonexistent/model", "a prompt"]) == 2
    assert "cannot check it against the generator" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('"fine"\n{"prompt": "x"}\n', "line 2: want a non-empty string or a list of"),
        ("not json\n", "line 1: not JSON"),
        ("\n\n", "no prompts in it"),
    ],
)
def test_calibrate_refuses_a_bad_prompts_file_by_line(lines: str, message: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(lines)
    assert main(["calibrate", "--prompts", str(prompts), "--probe-share", "0.5", "--generator", "/nonexistent/x"]) == 2
    error = capsys.readouterr().err
    assert message in error and "nonexistent" not in error, error


def test_calibrate_takes_one_source_of_prompts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):  # argparse's own usage error
        main(["calibrate", "--benchmark", "csqa", "--prompts", "p.jsonl", "--probe-share", "0.5"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["calibrate", "--benchmark", "csqa", "--probe-share", "0.5"]) == 2
    assert "--benchmark needs --limit" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--probe-share", "1.5"], "probe share 1.5 must lie between"),
        (["--probe-share", "0.01"], "probe share 0.01 must lie between the random probe rate (0.02) and 1"),
        (["--probe-share", "0.5", "--offset", "100000"], "csqa: no questions"),
    ],
)
def test_calibrate_refuses_bad_settings_before_loading_a_model(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["calibrate", "--benchmark", "csqa", "--limit", "2", *options, "--generator", "/nonexistent/model"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and "nonexistent" not in error, error
