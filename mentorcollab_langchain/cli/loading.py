"""Loading the two models for a command: the flags that choose them, a progress indicator, and one loader.

``run``, ``eval``, ``bench`` and ``train-verifier`` all load a generator and a mentor; they share these
flags and ``load_models`` so that a model is chosen, loaded and labelled the same way everywhere.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from mentorcollab_langchain.backends.base import Backend
    from mentorcollab_langchain.evals.runner import ModelInfo, ModelPair

Report = Callable[[str], None]


def add_model_arguments(
    parser: argparse.ArgumentParser, *, any_backend: bool = True, remote_mentor: bool = True
) -> None:
    """``--generator``, ``--mentor``, ``--device``, ``--dtype``, ``--torch-compile``, and where the command
    allows them the local backend's choice (``--backend``, ``--threads``) and a mentor behind a server
    (``--mentor-url`` ...).

    A command that needs transformers (hidden states, or a torch-only measurement) passes
    ``any_backend=False``; one without a remote mentor passes ``remote_mentor=False``. Their values are
    then fixed here, so ``load_models`` reads the same names for every command.
    """
    from mentorcollab_langchain.backends.choose import BACKEND_NAMES
    from mentorcollab_langchain.models import DEFAULT_GENERATOR, DEFAULT_MENTOR

    parser.add_argument("--generator", default=DEFAULT_GENERATOR, help="packaged name, Hugging Face id or folder")
    parser.add_argument("--mentor", default=DEFAULT_MENTOR, help="packaged name, Hugging Face id or folder")
    if any_backend:
        parser.add_argument("--backend", choices=BACKEND_NAMES, default="auto",
                            help="how the local models run: auto takes llama.cpp in process for packaged models on "
                                 "the CPU (about 3x faster here), transformers for GPUs, Hugging Face ids and hidden "
                                 "states")
        parser.add_argument("--threads", type=int, help="llama.cpp threads per model (default: the cores)")
    else:
        parser.set_defaults(backend="transformers", threads=None)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="auto", help="auto (bfloat16 on CPU and CUDA), float32 or bfloat16")
    parser.add_argument("--torch-compile", action="store_true",
                        help="transformers: decode over a static cache with a compiled step (CUDA graphs on a GPU); "
                             "the first step compiles, for a minute or more")
    if remote_mentor:
        parser.add_argument("--mentor-url",
                            help="an OpenAI-compatible server (vLLM, SGLang, llama.cpp) serving the mentor")
        parser.add_argument("--mentor-served-name", default="mentor",
                            help="the model name the server knows the mentor by")
        parser.add_argument("--mentor-timeout", type=float, default=60.0, help="seconds before a mentor call gives up")
    else:
        parser.set_defaults(mentor_url=None)


def load_models(
    args: argparse.Namespace, *, needs_mentor: bool = True, prefix_cache: bool = True, report: Report | None = None
) -> ModelPair:
    """Load the generator and the mentor in process (``--backend``), or reach the mentor at ``--mentor-url``.

    Both load now, under a progress indicator (or through ``report``, for a command that logs its own
    lines), so the first answer does not pay for it. Without a method that calls the mentor
    (``needs_mentor=False``) the generator stands in for it and nothing else loads. Without
    ``prefix_cache`` every request reads its whole prompt, as if it ran alone (``LlamaCppBackend``).
    """
    if report is not None:
        return _load(args, needs_mentor, prefix_cache, report)
    quiet_transformers()
    with progress("loading models", sys.stderr) as spinner:
        return _load(args, needs_mentor, prefix_cache, spinner)


def _load(args: argparse.Namespace, needs_mentor: bool, prefix_cache: bool, report: Report) -> ModelPair:
    from mentorcollab_langchain.backends import make_backend
    from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleBackend
    from mentorcollab_langchain.evals.runner import ModelInfo, ModelPair

    def local(model: str) -> Backend:
        backend = make_backend(model, args.backend, device=args.device, dtype=args.dtype, threads=args.threads,
                               prefix_cache=prefix_cache, torch_compile=args.torch_compile, report=report)
        _ = backend.loaded  # load now, under the progress indicator
        return backend

    generator = local(args.generator)
    if not needs_mentor:
        return ModelPair(generator, generator, model_info(args.generator, generator),
                         ModelInfo(args.mentor, "not loaded"))
    if args.mentor_url:
        mentor = OpenAICompatibleBackend(args.mentor_url, model=args.mentor_served_name, tokenizer=args.mentor,
                                         timeout=args.mentor_timeout, report=report)
        _ = mentor.tokenizer  # the only part of a remote mentor that loads here
        mentor_info = ModelInfo(args.mentor, f"server {args.mentor_url}")
    else:
        mentor = local(args.mentor)
        mentor_info = model_info(args.mentor, mentor)
    return ModelPair(generator, mentor, model_info(args.generator, generator), mentor_info)


def model_info(model: str, backend: Backend) -> ModelInfo:
    """A local model for the records: its name, what ran it, and what that backend's arithmetic depends on."""
    from importlib.metadata import version

    from mentorcollab_langchain.backends import LlamaCppBackend, TransformersBackend
    from mentorcollab_langchain.backends.local import READ_PROMPT_STEP_TOKENS
    from mentorcollab_langchain.evals.runner import ModelInfo

    if isinstance(backend, LlamaCppBackend):
        libraries = ["llama-cpp-python"]
    elif isinstance(backend, TransformersBackend):
        libraries = ["torch", "transformers"]
    else:
        return ModelInfo(model, backend_label(backend))
    numerics = ", ".join(f"{library} {version(library)}" for library in libraries)
    return ModelInfo(model, backend_label(backend), f"{numerics}, prompt batches of {READ_PROMPT_STEP_TOKENS}")


def backend_label(backend: object) -> str:
    """What ran a model, for records: ``llama.cpp GGUF``, or ``transformers`` with its dtype (and compiling)."""
    from mentorcollab_langchain.backends import LlamaCppBackend, TransformersBackend

    if isinstance(backend, LlamaCppBackend):
        return "llama.cpp GGUF (in process)"
    if isinstance(backend, TransformersBackend):
        label = f"transformers {backend.loaded.network.dtype}".replace("torch.", "")
        if backend.torch_compile:  # other arithmetic: records of the two must not mix
            label += f", compiled over a static cache of {backend.static_cache_tokens} tokens"
        return label
    return type(backend).__name__


def quiet_transformers() -> None:
    """The CLI shows its own progress; transformers' bars and advice would bury it."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


@contextmanager
def progress(title: str, out: TextIO) -> Iterator[Report]:
    """A spinner with elapsed seconds on a terminal, plain lines otherwise; yields a ``report(message)``."""
    message = [title]
    began = time.perf_counter()
    if not out.isatty():
        def report(text: str) -> None:
            print(f"[{time.perf_counter() - began:5.1f}s] {text}", file=out, flush=True)

        yield report
        return

    done = threading.Event()

    def spin() -> None:
        for frame in itertools.cycle("|/-\\"):
            out.write(f"\r\033[K{frame} {message[0]} ({time.perf_counter() - began:.0f}s)")
            out.flush()
            if done.wait(0.2):
                break
        out.write("\r\033[K")
        out.flush()

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        yield lambda text: message.__setitem__(0, text)
    finally:
        done.set()
        spinner.join()
