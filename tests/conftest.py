"""Shared fixtures: tiny randomly initialized models wearing the real tokenizers of both families.

The tiny models run the real ``TransformersBackend`` code path (loaded from a folder with
``from_pretrained``) in well under a second, so cache, rollback and word-boundary behaviour is tested on
real transformers machinery without waiting for real weights.

Under ``CI=true`` a skip fails the run (issue 15): a missing package, server, model or data set must not
turn a red run green by skipping the tests that need it. Two kinds of skip are by design and stay skips:
a reason that starts with ``opt-in:`` (the vLLM tests, which run only when MENTORCOLLAB_VLLM_PYTHON is
set), and a test marked ``allow_skip`` (LangChain's standard suites skip what the class declares it does
not support). Every skip, allowed or not, is listed with its reason at the end of the run (``-ra``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import torch

from mentorcollab_langchain.models import PACKAGED_MODELS, ensure_converted

pytest_plugins = ("pytester",)  # tests/test_ci_strictness.py runs pytest on small test files

OPT_IN = "opt-in:"
ALLOW_SKIP = "allow_skip"


def ci_strict() -> bool:
    """Whether skips fail the run: ``CI`` is set to true (read at each report, so a test can set it)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{ALLOW_SKIP}(reason): a skip in this test is by design (a capability the tested class declares it "
        "lacks), not a missing package, server or data set, so it does not fail a CI=true run",
    )
    if ci_strict() and not config.pluginmanager.hasplugin("timeout"):  # a missing package fails in CI
        raise pytest.UsageError(
            "CI=true: the per-test timeout (pyproject.toml) needs pytest-timeout: pip install -e '.[dev]'"
        )


def pytest_report_header(config: pytest.Config) -> str | None:
    if ci_strict():
        return f"CI=true: a skip fails the run unless its reason starts with {OPT_IN!r} or it is marked {ALLOW_SKIP}"
    return None


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _fail_the_skip(report: pytest.TestReport | pytest.CollectReport, allowed: bool) -> None:
    """Under CI=true, turn a skip that is not by design into a failure that names its reason."""
    if not (ci_strict() and report.skipped) or hasattr(report, "wasxfail") or allowed:
        return
    reason = _skip_reason(report)
    if reason.startswith(OPT_IN):
        return
    location = "{}:{}".format(*report.longrepr[:2]) if isinstance(report.longrepr, tuple) else report.nodeid
    report.outcome = "failed"
    report.longrepr = (
        f"CI=true: skipped, which fails the run: {reason}\n"
        f"(skipped at {location}; a missing package, server, model or data set fails in CI, and a skip by "
        f"design has a reason starting {OPT_IN!r} or is marked {ALLOW_SKIP})"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    _fail_the_skip(report, allowed=item.get_closest_marker(ALLOW_SKIP) is not None)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, Any]:
    """A whole module skipped at import (``pytest.importorskip`` of a missing package): under CI=true a
    collection error, which stops the run before it spends half an hour on the rest."""
    report = yield
    _fail_the_skip(report, allowed=False)
    return report


GSM8K_NATALIA = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)


def _tiny_model_folder(root: Path, packaged_name: str) -> Path:
    """A tiny random Llama beside a copy of a packaged model's tokenizer files, with its vocabulary and its
    start and end tokens (copied, not loaded and saved: Gemma 3's 262k-token tokenizer takes seconds)."""
    from transformers import LlamaForCausalLM

    folder = root / f"tiny-{packaged_name}"
    packaged = _with_packaged_tokenizer(folder, packaged_name)
    torch.manual_seed(0)
    config = _tiny_llama_config(packaged["vocab_size"], packaged["bos_token_id"], packaged["eos_token_id"])
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def _with_packaged_tokenizer(folder: Path, packaged_name: str) -> dict[str, Any]:
    """Make ``folder`` with a copy of a packaged model's tokenizer files; that model's config."""
    source = ensure_converted(PACKAGED_MODELS[packaged_name])
    folder.mkdir()
    for tokenizer_file in [*source.glob("tokenizer*"), *source.glob("chat_template*")]:
        shutil.copy(tokenizer_file, folder)
    return json.loads((source / "config.json").read_text())


def _tiny_llama_config(vocab_size: int, bos_token_id: int | None, eos_token_id: int | None) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=eos_token_id,
        bos_token_id=bos_token_id,
        tie_word_embeddings=True,
    )


@pytest.fixture(scope="session")
def tiny_llama2_style_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny Llama wearing a Llama-2-family tokenizer: SentencePiece BPE with byte fallback whose
    normalizer prepends a dummy "▁" and whose decoder strips the first space. No Llama-2 tokenizer is
    packaged here, so it is built from the ``tokenizers`` library's components on Gemma 3's vocabulary."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerFast

    gemma = AutoTokenizer.from_pretrained(ensure_converted(PACKAGED_MODELS["gemma3-270m"]))
    spec = json.loads(gemma.backend_tokenizer.to_str())
    spec["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
    ]}
    spec["pre_tokenizer"] = None
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0},
    ]}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    folder = tmp_path_factory.mktemp("models") / "tiny-llama2-style"
    torch.manual_seed(0)
    config = _tiny_llama_config(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_sliding_window_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny Gemma 3 (its real architecture: one sliding-window layer of 8 tokens, one global layer) with
    Gemma 3's tokenizer, so prompts run past the window and a rollback must crop a full window."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    folder = tmp_path_factory.mktemp("models") / "tiny-gemma3-sliding"
    packaged = _with_packaged_tokenizer(folder, "gemma3-270m")
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=packaged["vocab_size"],
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        eos_token_id=packaged["eos_token_id"],
        bos_token_id=packaged["bos_token_id"],
        pad_token_id=packaged["pad_token_id"],
    )
    Gemma3ForCausalLM(config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_byte_level_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny Llama with SmolLM2's byte-level BPE tokenizer and ChatML template."""
    return str(_tiny_model_folder(tmp_path_factory.mktemp("models"), "smollm2-135m-instruct"))


@pytest.fixture(scope="session")
def tiny_sentencepiece_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny Llama with Gemma 3's SentencePiece-style tokenizer (no chat template)."""
    return str(_tiny_model_folder(tmp_path_factory.mktemp("models"), "gemma3-270m"))
