"""``mentorcollab bench``: the whole speed story in one run and one table (``mentorcollab_langchain.bench``).

In order: each model alone on llama.cpp in process, on transformers (unless ``--skip-torch``; on the first
question only, since its rates are what is compared) and the mentor behind a llama.cpp server that the
command starts and stops itself (unless ``--no-remote``);
MentorCollab at the engine's defaults on llama.cpp in process (and with the served mentor); the same
requests one at a time and at once (unless ``--skip-concurrency``); the first probe's latency with and
without read-ahead on a long few-shot prompt, and with its worked examples in the prefix cache (unless
``--skip-first-probe``). Only that last row uses the prefix cache: every other request reads its whole
prompt, as if it ran alone. The prompts are GSM8K
questions in chat form (``--questions``). The default run takes some minutes on a 2-core CPU;
``--questions 1 --concurrency 2 --max-new-tokens 8 --skip-torch --no-remote --skip-first-probe`` is a
quick check that every part works.

Each figure also goes to stderr as it is measured, so a run stopped by a time limit keeps what it had. A
part after MentorCollab that fails (the torch rows, the served mentor, the requests at once, the first
probe) is named in the table with its error, and the command exits 1; the other parts still run.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from mentorcollab_langchain.cli.loading import progress, quiet_transformers
from mentorcollab_langchain.cli.settings import add_config_arguments, config_overrides

if TYPE_CHECKING:
    from mentorcollab_langchain.backends.base import Backend
    from mentorcollab_langchain.bench import AloneRow, CollabRow, ConcurrencyRow, FirstProbe
    from mentorcollab_langchain.cli.loading import Report
    from mentorcollab_langchain.engine import CollabConfig
    from mentorcollab_langchain.evals.prompts import BuiltPrompt

T = TypeVar("T")

BENCH_DEFAULTS = {"max_new_tokens": 96}
"""GSM8K answers are longer; everything else stays at the engine's defaults, which is what is measured."""


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``bench`` sub-command to the main parser's sub-commands."""
    from mentorcollab_langchain.models import DEFAULT_GENERATOR, DEFAULT_MENTOR

    parser = commands.add_parser("bench", help="measure the speed of each setup in one run, in one table")
    parser.add_argument("--generator", default=DEFAULT_GENERATOR, help="packaged model name")
    parser.add_argument("--mentor", default=DEFAULT_MENTOR, help="packaged model name")
    parser.add_argument("--backend", choices=("llama.cpp", "transformers"), default="llama.cpp",
                        help="how both models run in process for the main rows: llama.cpp (the CPU default) or "
                             "transformers (with --device cuda: the GPU check, scripts/gpu-check.sh)")
    parser.add_argument("--device", default="cpu", help="the transformers rows' device: cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="llama.cpp threads per model (default: the cores)")
    parser.add_argument("--dtype", default="auto", help="transformers dtype: auto (bfloat16), float32 or bfloat16")
    parser.add_argument("--torch-compile", action="store_true",
                        help="the transformers rows decode over a static cache with a compiled step (each model "
                             "compiles in its warm-up, which is not timed)")
    parser.add_argument("--questions", type=int, default=4, help="GSM8K questions per case (default: 4)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests run at once (default: 8)")
    parser.add_argument("--skip-torch", action="store_true",
                        help="skip the models alone on transformers beside llama.cpp's (with --backend transformers "
                             "they are the main rows)")
    parser.add_argument("--no-remote", action="store_true", help="skip the setups with a llama.cpp-served mentor")
    parser.add_argument("--skip-concurrency", action="store_true", help="skip the requests at once")
    parser.add_argument("--skip-first-probe", action="store_true", help="skip the first probe's latency")
    add_config_arguments(parser, defaults=BENCH_DEFAULTS)
    parser.set_defaults(handler=command)
    return parser


def long_fewshot_prompt(question: int = 0) -> BuiltPrompt:
    """A few-shot prompt of some 1,400 tokens, as long as a small RAG context: the MATH500 worked examples,
    then the GSM8K few-shot prompt of GSM8K question ``question`` (each alone is about 700 tokens)."""
    from mentorcollab_langchain.evals.data import load_questions
    from mentorcollab_langchain.evals.prompts import BuiltPrompt, build_prompt

    gsm8k = build_prompt(load_questions("gsm8k", offset=question, limit=1)[0], "fewshot")
    math = load_questions("math500", limit=1)[0].fewshot
    examples = math[: math.rindex("Problem:")]  # its worked examples, without its own question
    return BuiltPrompt(examples + str(gsm8k.prompt), gsm8k.style, gsm8k.stop)


def command(args: argparse.Namespace) -> int:
    """Load the models, measure every part asked for, print the table."""
    from mentorcollab_langchain import bench
    from mentorcollab_langchain.engine import CollabConfig
    from mentorcollab_langchain.evals.data import load_questions
    from mentorcollab_langchain.evals.prompts import build_prompt

    config = CollabConfig(**(BENCH_DEFAULTS | config_overrides(args)))
    questions = load_questions("gsm8k", limit=max(args.questions, args.concurrency))
    prompts = [build_prompt(question, "chat") for question in questions]
    quiet_transformers()
    on_gpu = args.backend == "transformers" and args.device.startswith("cuda")
    with progress("benchmark", sys.stderr) as report:
        report("measuring the memory bandwidth")
        bandwidth = bench.measure_gpu_bandwidth(args.device) if on_gpu else bench.measure_bandwidth()
        gpu = _gpu_name(args.device) if on_gpu else None
        machine = f"{bench.describe_machine(bandwidth, gpu)}\nMentorCollab settings: {bench.describe_settings(config)}"
        parts = _Parts(args, config, prompts, report)
        rows, collabs = parts.in_process()
        if not args.skip_torch and args.backend == "llama.cpp":
            rows += parts.attempt("the models alone on torch", parts.torch) or []
        if not args.no_remote and (served := parts.attempt("the served mentor", lambda: parts.served(rows[0]))):
            rows.append(served[0])
            collabs.append(served[1])
        concurrency = None if args.skip_concurrency else parts.attempt("requests at once", parts.concurrency)
        first_probe = None if args.skip_first_probe else parts.attempt("the first probe", parts.first_probe)
    result = bench.BenchResult(machine, bandwidth, rows, collabs, concurrency, first_probe, parts.failed)
    print(bench.format_table(result))
    return 1 if parts.failed else 0


class _Parts:
    """Each part of the bench, on the models and prompts of this run (llama.cpp backends shared by all)."""

    def __init__(self, args: argparse.Namespace, config: CollabConfig, prompts: list[BuiltPrompt],
                 report: Report) -> None:
        self.args, self.config, self.prompts, self.report = args, config, prompts, report
        self.generator, self.mentor = self.load(args.generator), self.load(args.mentor)
        self.compiled = ", compiled" if args.torch_compile else ""
        self.failed: list[tuple[str, str]] = []
        on_torch = args.backend == "transformers"
        self.where = f"torch {args.dtype}, {args.device}{self.compiled}" if on_torch else "llama.cpp"

    def attempt(self, part: str, measure: Callable[[], T]) -> T | None:
        """``measure()``, a part after the models alone and MentorCollab (which every run needs). Where it fails,
        its traceback goes to stderr, the table names it and the command exits 1, but the other parts still
        run: a GPU check lent for minutes keeps what it measured."""
        try:
            return measure()
        except Exception as error:  # noqa: BLE001 - reported in the table and the exit status, never dropped
            traceback.print_exc(file=sys.stderr)
            self.failed.append((f"{part}: failed", f"{type(error).__name__}: {error}"))
            return None

    def load(self, name: str, prefix_cache: bool = False) -> Backend:
        """``name`` on the bench's backend; without ``prefix_cache`` each request reads its whole prompt."""
        if self.args.backend == "transformers":
            return self.transformers(name, prefix_cache=prefix_cache)
        return self.llama_cpp(name, prefix_cache)

    def llama_cpp(self, name: str, prefix_cache: bool = False) -> Backend:
        from mentorcollab_langchain.backends import LlamaCppBackend

        return LlamaCppBackend(name, n_threads=self.args.threads, prefix_cache=prefix_cache, report=self.report)

    def transformers(self, name: str, device: str | None = None, prefix_cache: bool = False) -> Backend:
        from mentorcollab_langchain.backends import TransformersBackend

        return TransformersBackend(name, device=device or self.args.device, dtype=self.args.dtype,
                                   prefix_cache=prefix_cache, torch_compile=self.args.torch_compile,
                                   report=self.report)

    def weight_bytes(self, backend: Backend) -> int:
        """The bytes of weights each written token reads: the GGUF file's, or the torch parameters'."""
        from mentorcollab_langchain.backends import TransformersBackend

        if isinstance(backend, TransformersBackend):
            parameters = backend.loaded.network.parameters()
            return sum(parameter.numel() * parameter.element_size() for parameter in parameters)
        return _gguf_bytes(backend.model_name)

    def alone(self, label: str, backend: Backend, weight_bytes: int | None, questions: int) -> AloneRow:
        """A model alone on ``questions`` prompts, after a short warm-up that loads what it loads lazily (on a
        prompt of its own, so that a server's prefix cache does not hold the first measured one)."""
        from mentorcollab_langchain.bench import measure_alone
        from mentorcollab_langchain.evals.prompts import BuiltPrompt

        self.report(f"measuring {label}")
        warm_up = BuiltPrompt([{"role": "user", "content": "Say hello."}], "chat", ())
        measure_alone(label, backend, [warm_up], self.config.model_copy(update={"max_new_tokens": 4}), None)
        row = measure_alone(label, backend, self.prompts[:questions], self.config, weight_bytes)
        self.report(f"{label}: {row.written_tokens} tokens in {row.seconds:.1f} s, {row.tokens_per_second:.1f} tok/s")
        return row

    def collab(self, label: str, mentor: Backend) -> CollabRow:
        from mentorcollab_langchain.bench import measure_collab

        self.report(f"measuring {label}")
        row = measure_collab(label, self.generator, mentor, self.prompts[: self.args.questions], self.config)
        self.report(f"{label}: {row.tokens} tokens in {row.seconds:.1f} s, {row.probes} probes")
        return row

    def in_process(self) -> tuple[list[AloneRow], list[tuple[CollabRow, AloneRow, AloneRow]]]:
        """Both models alone on llama.cpp in process, and MentorCollab there."""
        generator = self.alone(f"{self.args.generator} alone, {self.where}", self.generator,
                               self.weight_bytes(self.generator), self.args.questions)
        mentor = self.alone(f"{self.args.mentor} alone, {self.where}", self.mentor, self.weight_bytes(self.mentor),
                            self.args.questions)
        return [generator, mentor], [(self.collab(f"MentorCollab, {self.where}", self.mentor), generator, mentor)]

    def torch(self) -> list[AloneRow]:
        """Both models alone on transformers: on the first prompt only, since only their rates are compared
        (torch decodes the mentor several times slower than llama.cpp)."""
        rows = []
        for name in (self.args.generator, self.args.mentor):
            backend = self.transformers(name, device="cpu")
            dtype = str(backend.loaded.network.dtype).removeprefix("torch.")
            rows.append(self.alone(f"{name} alone, torch {dtype}{self.compiled}", backend,
                                   self.weight_bytes(backend), questions=1))
        return rows

    def served(self, generator_alone: AloneRow) -> tuple[AloneRow, tuple[CollabRow, AloneRow, AloneRow]]:
        """The mentor alone behind a llama.cpp server this command starts, and MentorCollab with it there."""
        import tempfile
        from pathlib import Path

        from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleBackend
        from mentorcollab_langchain.serving import llama_server

        self.report("starting a llama.cpp server for the mentor")
        with tempfile.TemporaryDirectory() as folder, llama_server(
            self.args.mentor, Path(folder) / "llama-server.log", threads=self.args.threads or 2
        ) as server:
            remote = OpenAICompatibleBackend(server.url, model="mentor", tokenizer=self.args.mentor)
            alone = self.alone(f"{self.args.mentor} alone, llama.cpp server", remote, _gguf_bytes(self.args.mentor),
                               self.args.questions)
            return alone, (self.collab("MentorCollab, served mentor", remote), generator_alone, alone)

    def concurrency(self) -> ConcurrencyRow:
        from mentorcollab_langchain.bench import measure_concurrency

        self.report(f"measuring {self.args.concurrency} requests one at a time, then at once")
        row = measure_concurrency(self.generator, self.mentor, self.prompts[: self.args.concurrency], self.config)
        self.report(f"{row.requests} requests: {row.sequential_seconds:.1f} s one at a time, "
                    f"{row.concurrent_seconds:.1f} s at once")
        return row

    def first_probe(self) -> tuple[int, list[tuple[str, FirstProbe | None]]]:
        """The first probe's latency on the long few-shot prompt: without read-ahead, with it, and with it
        after both models read the prompt of another question with the same worked examples (as an earlier
        request's models have by its first probe)."""
        import threading

        from mentorcollab_langchain.bench import measure_first_probe

        prompt = long_fewshot_prompt()
        tokens = len(self.mentor.prompt_ids(prompt.prompt, prompt.style))
        cases: list[tuple[str, FirstProbe | None]] = []

        def measured(label: str, probe: FirstProbe | None) -> None:
            cases.append((label, probe))
            self.report(f"first probe, {label}: {'no probe' if probe is None else f'{probe.latency:.2f} s'}")

        for read_ahead in (False, True):
            self.report(f"measuring the first probe on a {tokens}-token prompt, read_ahead={read_ahead}")
            settings = self.config.model_copy(update={"read_ahead": read_ahead})
            measured(f"{'with' if read_ahead else 'without'} read-ahead",
                     measure_first_probe(self.generator, self.mentor, prompt, settings))
        self.report(f"measuring the first probe on a {tokens}-token prompt, its examples cached")
        settings = self.config.model_copy(update={"read_ahead": True})
        generator, mentor = self.load(self.args.generator, True), self.load(self.args.mentor, True)
        earlier = long_fewshot_prompt(question=1)
        for backend in (generator, mentor):
            cursor = backend.open(earlier.prompt, earlier.style)
            cursor.read_prompt(threading.Event())
            cursor.close()
        measured("read-ahead, examples cached", measure_first_probe(generator, mentor, prompt, settings))
        return tokens, cases


def _gpu_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(torch.device(device))


def _gguf_bytes(model: str) -> int:
    from mentorcollab_langchain.models import PACKAGED_MODELS

    return PACKAGED_MODELS[model].size
