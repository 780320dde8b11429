"""The ``mentorcollab`` command line: run real models offline and see who wrote what.

    mentorcollab run "PROMPT"     stream an answer, mentor spans marked, then one summary line
    mentorcollab run --json ...   the whole record (text, spans, decisions, stats) as JSON
    mentorcollab models           the packaged models, and whether each is installed and cached
    mentorcollab serve MODEL      serve a packaged model's GGUF with llama.cpp (an OpenAI-compatible mentor)
    mentorcollab bench            tokens/s of each setup (generator, mentor, both; local and remote mentor)
    mentorcollab eval ...         accuracy and cost on real benchmarks (see mentorcollab eval --help)
    mentorcollab train-verifier   train the mlp verifier on divergences from training data
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from mentorcollab_langchain.errors import MentorCollabError
from mentorcollab_langchain.evals.cli import add_eval_parser, eval_command
from mentorcollab_langchain.evals.verifier_training import add_train_verifier_parser, train_verifier_command

MENTOR_COLOUR, RESET = "\033[1;36m", "\033[0m"


def build_parser() -> argparse.ArgumentParser:
    from mentorcollab_langchain.models import DEFAULT_GENERATOR, DEFAULT_MENTOR
    from mentorcollab_langchain.verifiers import DEFAULT_VERIFIER, NAMED_VERIFIERS, PAPER_VERIFIER

    parser = argparse.ArgumentParser(prog="mentorcollab", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="answer a prompt with the generator, guided by the mentor")
    run.add_argument("prompt", help="the question or instruction")
    run.add_argument("--generator", default=DEFAULT_GENERATOR, help="packaged name, Hugging Face id or folder")
    run.add_argument("--mentor", default=DEFAULT_MENTOR, help="packaged name, Hugging Face id or folder")
    run.add_argument("--verifier", metavar="NAME", help=f"{', '.join(sorted(NAMED_VERIFIERS))}, or mlp:PATH for a "
                     f"trained verifier; default: {DEFAULT_VERIFIER} ({PAPER_VERIFIER} with --faithful)")
    _add_probe_policy_arguments(run)
    run.add_argument("--segment-tokens", type=int, help="lookahead length at a divergence (default 16)")
    run.add_argument("--max-new-tokens", type=int, help="most tokens in the answer (default 512)")
    run.add_argument("--seed", type=int, help="seeds the probe positions (default 0)")
    run.add_argument("--stop", action="append", help="a stop string (repeatable)")
    run.add_argument("--system", help="a system message placed before the prompt")
    run.add_argument("--faithful", action="store_true", help="the paper's settings (probe rate 0.04, raw prompt)")
    _add_backend_argument(run)
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    run.add_argument("--dtype", default="auto", help="auto (bfloat16 on CPU and CUDA), float32 or bfloat16")
    run.add_argument("--json", action="store_true", help="print the whole record as JSON instead of streaming")
    run.add_argument("--color", choices=["auto", "always", "never"], default="auto", help="mark mentor spans")
    _add_remote_mentor_arguments(run)

    commands.add_parser("models", help="list the packaged models and whether each is installed and cached")

    serve = commands.add_parser("serve", help="serve a packaged model with llama.cpp on 127.0.0.1")
    serve.add_argument("model", nargs="?", default=DEFAULT_MENTOR)
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--threads", type=int, default=2)
    serve.add_argument("--n-ctx", type=int, default=4096)

    bench = commands.add_parser("bench", help="measure tokens/s of each setup in one run")
    bench.add_argument("--generator", default=DEFAULT_GENERATOR)
    bench.add_argument("--mentor", default=DEFAULT_MENTOR)
    bench.add_argument("--max-new-tokens", type=int, default=64)
    bench.add_argument("--probe-rate", type=float, default=0.1)
    bench.add_argument("--no-remote", action="store_true", help="skip the setups with a llama.cpp-served mentor")
    bench.add_argument("--device", default="auto")

    add_eval_parser(commands)
    add_train_verifier_parser(commands)
    return parser


def _add_probe_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """Where to probe (CollabConfig's probe fields); unset flags keep the config's defaults."""
    from mentorcollab_langchain.engine.policies import NAMED_POLICIES

    parser.add_argument("--probe-policy", choices=sorted(NAMED_POLICIES),
                        help="random (the paper) or uncertain (where the generator is unsure of its word)")
    parser.add_argument("--probe-rate", type=float, help="probability of a random probe at each word (both policies)")
    parser.add_argument("--uncertainty-signal", choices=["top_share", "top_probability", "entropy"],
                        help="uncertain policy: the measure of the generator's doubt at a word's first token")
    parser.add_argument("--uncertainty-threshold", type=float,
                        help="uncertain policy: probe below this top_share/top_probability, above this entropy")


def probe_policy_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The probe settings given on the command line, by CollabConfig field name."""
    names = ("probe_policy", "probe_rate", "uncertainty_signal", "uncertainty_threshold")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=["auto", "llama.cpp", "transformers"], default="auto",
                        help="how the local models run: auto takes llama.cpp in process for packaged models on the "
                             "CPU (about 3x faster here), transformers for GPUs, Hugging Face ids and hidden states")
    parser.add_argument("--threads", type=int, help="llama.cpp threads per model (default: the cores)")


def backend_label(backend: object) -> str:
    """What ran a model, for records: ``llama.cpp GGUF``, or ``transformers`` with its device and dtype."""
    from mentorcollab_langchain.backends import LlamaCppBackend, TransformersBackend

    if isinstance(backend, LlamaCppBackend):
        return "llama.cpp GGUF (in process)"
    if isinstance(backend, TransformersBackend):
        return f"transformers {backend.loaded.network.dtype}".replace("torch.", "")
    return type(backend).__name__


def _add_remote_mentor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mentor-url", help="an OpenAI-compatible server (vLLM, SGLang, llama.cpp) serving the mentor")
    parser.add_argument("--mentor-served-name", default="mentor", help="the model name the server knows the mentor by")
    parser.add_argument("--mentor-timeout", type=float, default=60.0, help="seconds before a mentor call gives up")
    parser.add_argument("--max-mentor-calls", type=int, help="per-request budget of mentor calls")
    parser.add_argument("--max-mentor-tokens", type=int, help="per-request budget of mentor tokens")
    parser.add_argument("--on-mentor-error", choices=["fallback", "raise"], help="default: fallback")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "models":
            return list_models(sys.stdout)
        if args.command == "serve":
            return serve_command(args)
        if args.command == "bench":
            return bench_command(args)
        if args.command == "eval":
            return eval_command(args)
        if args.command == "train-verifier":
            return train_verifier_command(args, argv)
        return run_command(args)
    except MentorCollabError as error:
        print(f"mentorcollab: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nmentorcollab: interrupted", file=sys.stderr)
        return 130


def list_models(out: TextIO) -> int:
    from mentorcollab_langchain.models import PACKAGED_MODELS, cache_dir, is_converted, is_installed

    print(f"{'name':30} {'role':38} {'installed':10} {'cached':7}", file=out)
    for model in PACKAGED_MODELS.values():
        installed, cached = is_installed(model), is_converted(model)
        print(f"{model.name:30} {model.role:38} {'yes' if installed else 'no':10} {'yes' if cached else 'no':7}", file=out)
        if not installed:
            print(f"  install: {model.install_command()}", file=out)
    print(f"cache: {cache_dir()}", file=out)
    return 0


def run_command(args: argparse.Namespace) -> int:
    from mentorcollab_langchain.backends import make_backend
    from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleBackend
    from mentorcollab_langchain.engine import CollabConfig, CollabState, MentorFailed, TextCommitted, collaborate
    from mentorcollab_langchain.verifiers import DEFAULT_VERIFIER, PAPER_VERIFIER, get_verifier

    overrides = probe_policy_overrides(args) | {
        field: value
        for field, value in {
            "segment_tokens": args.segment_tokens,
            "max_new_tokens": args.max_new_tokens,
            "seed": args.seed,
            "stop": tuple(args.stop) if args.stop else None,
            "max_mentor_calls": args.max_mentor_calls,
            "max_mentor_tokens": args.max_mentor_tokens,
            "on_mentor_error": args.on_mentor_error,
        }.items()
        if value is not None
    }
    config = CollabConfig.faithful(**overrides) if args.faithful else CollabConfig(**overrides)
    args.verifier = args.verifier or (PAPER_VERIFIER if args.faithful else DEFAULT_VERIFIER)
    get_verifier(args.verifier, generator=args.generator)  # an unknown name fails before any model loads
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}
    ]

    _quiet_transformers()
    with progress("loading models", sys.stderr) as report:
        generator = make_backend(args.generator, args.backend, device=args.device, dtype=args.dtype,
                                 threads=args.threads, report=report)
        generator.loaded  # load now, under the progress indicator
        if args.mentor_url:
            mentor = OpenAICompatibleBackend(
                args.mentor_url,
                model=args.mentor_served_name,
                tokenizer=args.mentor,
                timeout=args.mentor_timeout,
                report=report,
            )
            mentor.tokenizer
        else:
            mentor = make_backend(args.mentor, args.backend, device=args.device, dtype=args.dtype,
                                  threads=args.threads, report=report)
            mentor.loaded

    state = CollabState()
    colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    began = time.perf_counter()
    for event in collaborate(messages, generator, mentor, verifier=args.verifier, config=config, state=state):
        if args.json:
            continue
        if isinstance(event, TextCommitted):
            sys.stdout.write(_marked(event.text, event.source == "mentor", colour))
            sys.stdout.flush()
        elif isinstance(event, MentorFailed):
            print(f"\n[mentor failed: {event.error}; continuing with the generator alone]", file=sys.stderr)
    seconds = time.perf_counter() - began

    if args.json:
        record = state.record() | {
            "generator": args.generator,
            "mentor": args.mentor if not args.mentor_url else f"{args.mentor} at {args.mentor_url}",
            "verifier": args.verifier,
            "config": config.model_dump(),
            "seconds": seconds,
        }
        print(json.dumps(record, indent=2, ensure_ascii=False))
    else:
        print()
        print(summary_line(state, seconds))
    return 0


def serve_command(args: argparse.Namespace) -> int:
    """Run llama.cpp's server in the foreground on the packaged model's verified GGUF."""
    import os

    from mentorcollab_langchain.models.registry import get_packaged_model, verified_gguf
    from mentorcollab_langchain.serving import server_command

    gguf = verified_gguf(get_packaged_model(args.model))
    command = server_command(gguf, args.port, args.n_ctx, args.threads)
    print(f"serving {args.model} at http://127.0.0.1:{args.port}/v1 (Ctrl-C stops)", file=sys.stderr)
    os.execv(command[0], command)
    return 0  # not reached


def bench_command(args: argparse.Namespace) -> int:
    import tempfile
    from contextlib import ExitStack
    from pathlib import Path

    from mentorcollab_langchain.backends import TransformersBackend
    from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleBackend
    from mentorcollab_langchain.bench import BENCH_PROMPTS, BenchCase, format_table, measure
    from mentorcollab_langchain.engine import CollabConfig
    from mentorcollab_langchain.serving import llama_server

    _quiet_transformers()
    config = CollabConfig(max_new_tokens=args.max_new_tokens, repetition_guard=False)
    with ExitStack() as stack, progress("loading models", sys.stderr) as report:
        generator = TransformersBackend(args.generator, device=args.device, report=report)
        mentor = TransformersBackend(args.mentor, device=args.device, report=report)
        setups = [
            BenchCase(f"generator alone ({args.generator}, torch)", generator, generator, 0.0),
            BenchCase(f"mentor alone ({args.mentor}, torch)", mentor, mentor, 0.0),
            BenchCase(f"mentorcollab p={args.probe_rate}, both local (torch)", generator, mentor, args.probe_rate),
        ]
        if not args.no_remote:
            report("starting a llama.cpp server for the mentor")
            log = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "llama-server.log"
            server = stack.enter_context(llama_server(args.mentor, log))
            remote = OpenAICompatibleBackend(server.url, model="mentor", tokenizer=args.mentor)
            setups += [
                BenchCase(f"mentor alone ({args.mentor}, llama.cpp)", remote, remote, 0.0),
                BenchCase(f"mentorcollab p={args.probe_rate}, remote mentor (llama.cpp)", generator, remote, args.probe_rate),
            ]
        rows = measure(setups, BENCH_PROMPTS, config, report)
    print(format_table(rows))
    return 0


def summary_line(state, seconds: float) -> str:  # noqa: ANN001 - CollabState, imported lazily
    stats = state.stats
    return (
        f"-- probes {stats.probes} | divergences {stats.divergences} | adoptions {stats.adoptions} | "
        f"mentor share {stats.mentor_share:.1%} of {stats.tokens_committed} tokens | "
        f"mentor read {stats.mentor_tokens_read} and generated {stats.mentor_tokens_generated} tokens | "
        f"{stats.tokens_committed / seconds if seconds else 0.0:.1f} tokens/s | {seconds:.1f} s | "
        f"stop: {state.finish_reason}"
    )


def _marked(text: str, from_mentor: bool, colour: bool) -> str:
    if not from_mentor:
        return text
    return f"{MENTOR_COLOUR}{text}{RESET}" if colour else f"[[{text}]]"


def _quiet_transformers() -> None:
    """The CLI shows its own progress; transformers' bars and advice would bury it."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


@contextmanager
def progress(title: str, out: TextIO) -> Iterator:
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


if __name__ == "__main__":
    sys.exit(main())
