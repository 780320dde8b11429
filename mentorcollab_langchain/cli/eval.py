"""``mentorcollab eval``: run benchmarks, resume, and rebuild the report.

    mentorcollab eval --benchmark arc_challenge --limit 100 --methods generator,mentor,mentorcollab
    mentorcollab eval --benchmark arc_challenge --split validation --limit 50 --sweep
    mentorcollab eval --benchmark gsm8k --offset 1000 --limit 50 --sweep    a tuning slice of a test-only set
    mentorcollab eval --report runs/eval           rebuild report.md and the plot from the JSONL

The collaboration settings are the same flags as ``run``'s; a benchmark's prompt kind sets the prompt
style and adds its stop strings per question, and the answer budget defaults per kind of answer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mentorcollab_langchain.cli.loading import add_model_arguments, load_models
from mentorcollab_langchain.cli.settings import add_config_arguments, config_overrides
from mentorcollab_langchain.errors import ConfigError

if TYPE_CHECKING:
    from mentorcollab_langchain.evals.runner import ModelPair

def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``eval`` sub-command to the main parser's sub-commands."""
    from mentorcollab_langchain.evals.data import BENCHMARKS
    from mentorcollab_langchain.evals.runner import (
        METHOD_NAMES,
        SWEEP_PROBE_RATES,
        SWEEP_SEGMENT_TOKENS,
        SWEEP_VERIFIERS,
    )
    from mentorcollab_langchain.verifiers import DEFAULT_VERIFIER, NAMED_VERIFIERS

    evaluate = commands.add_parser("eval", help="accuracy and cost on real benchmarks (resumable), or --report")
    evaluate.add_argument("--benchmark", help=f"comma-separated: {', '.join(BENCHMARKS)}")
    evaluate.add_argument("--split", help="default: test (validation for csqa)")
    evaluate.add_argument("--limit", type=int, help="the first N questions of the fixed shuffled order")
    evaluate.add_argument("--offset", type=int, default=0,
                          help="skip the first N questions (a tuning slice of a test-only benchmark, e.g. GSM8K)")
    evaluate.add_argument("--methods", default="generator,mentor,mentorcollab",
                          help=f"comma-separated: {', '.join(METHOD_NAMES)}")
    evaluate.add_argument("--sweep", action="store_true",
                          help="probe rate x segment length x verifier grid (use a dev split)")
    evaluate.add_argument("--sweep-probe-rates", help=f"comma-separated (default {_listed(SWEEP_PROBE_RATES)})")
    evaluate.add_argument("--sweep-segment-tokens", help=f"comma-separated (default {_listed(SWEEP_SEGMENT_TOKENS)})")
    evaluate.add_argument("--sweep-verifiers", help=f"comma-separated (default {_listed(SWEEP_VERIFIERS)})")
    evaluate.add_argument("--prompt", choices=["auto", "chat", "fewshot"], default="auto",
                          help="auto: the standard few-shot context (measured better than chat for the small "
                               "generator: in chat it copies the option list instead of answering)")
    evaluate.add_argument("--out", default="runs/eval", help="folder of the results JSONL and the report")
    evaluate.add_argument("--report", metavar="DIR", help="only rebuild the report from the JSONL under DIR")
    evaluate.add_argument("--report-out", metavar="DIR",
                          help="where --report writes report.md and the plot (default: DIR)")
    evaluate.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    evaluate.add_argument("--verifier", default=DEFAULT_VERIFIER, metavar="NAME",
                          help=f"{', '.join(sorted(NAMED_VERIFIERS))}, or mlp:PATH (default: {DEFAULT_VERIFIER})")
    add_model_arguments(evaluate)
    add_config_arguments(evaluate, notes={
        "max_new_tokens": "default: 256 GSM8K, 512 MATH, 16 multiple choice",
        "prompt_style": "eval: set by --prompt, per question",
        "stop": "eval: added to each benchmark's own",
    })
    evaluate.set_defaults(handler=command)
    return evaluate


def command(args: argparse.Namespace) -> int:
    """Rebuild the report (``--report``), or run each benchmark's methods and then rebuild it."""
    from mentorcollab_langchain.evals.report import build_report

    if args.report:
        report, image = build_report(Path(args.report), Path(args.report_out) if args.report_out else None)
        print(report.read_text(encoding="utf-8"))
        print(f"wrote {report} and {image}", file=sys.stderr)
        return 0
    if not args.benchmark:
        raise ConfigError("name a --benchmark (or pass --report DIR)")
    if args.prompt_style is not None:
        raise ConfigError("eval sets the prompt style from --prompt (chat or fewshot); leave --prompt-style out")
    from mentorcollab_langchain.engine import CollabConfig
    from mentorcollab_langchain.evals.data import load_questions
    from mentorcollab_langchain.evals.runner import METHOD_NAMES
    from mentorcollab_langchain.verifiers import get_verifier

    get_verifier(args.verifier, generator=args.generator)  # an unknown name fails now, not once per question
    CollabConfig(**config_overrides(args))  # so does a bad setting or calibration, before the models load
    out = Path(args.out)
    names = {name.strip() for name in args.methods.split(",") if name.strip()}
    unknown = sorted(names - set(METHOD_NAMES)) if not args.sweep else []
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHOD_NAMES)}")
    benchmarks = [name.strip() for name in args.benchmark.split(",") if name.strip()]
    for benchmark in benchmarks:  # an unknown benchmark or split, or missing data, fails before any model loads
        if not load_questions(benchmark, args.split, args.limit, offset=args.offset):
            raise ConfigError(f"{benchmark}: no questions")
    needs_mentor = args.sweep or bool(names & {"mentor", "mentorcollab", "faithful"})
    # Methods run question by question on the same models: with a prefix cache, one method would read the
    # prompt another just read, and its tokens read and seconds would no longer be its own.
    models = load_models(args, needs_mentor=needs_mentor, prefix_cache=False)
    for benchmark in benchmarks:
        _run_benchmark(args, benchmark, models, out)
    report, image = build_report(out)
    print(f"wrote {report} and {image}", file=sys.stderr)
    return 0


def _run_benchmark(args: argparse.Namespace, benchmark: str, models: ModelPair, out: Path) -> None:
    from mentorcollab_langchain.engine import CollabConfig
    from mentorcollab_langchain.evals.data import load_questions
    from mentorcollab_langchain.evals.prompts import ANSWER_BUDGET
    from mentorcollab_langchain.evals.runner import (
        SWEEP_PROBE_RATES,
        SWEEP_SEGMENT_TOKENS,
        SWEEP_VERIFIERS,
        EvalRun,
        make_methods,
        sweep_methods,
    )

    questions = load_questions(benchmark, args.split, args.limit, offset=args.offset)
    if not questions:
        raise ConfigError(f"{benchmark}: no questions")
    prompt = "fewshot" if args.prompt == "auto" else args.prompt
    base = CollabConfig(**({"max_new_tokens": ANSWER_BUDGET[questions[0].kind]} | config_overrides(args)))
    if args.sweep:
        methods = sweep_methods(
            base, prompt,
            probe_rates=_floats(args.sweep_probe_rates) or SWEEP_PROBE_RATES,
            segment_tokens=[int(value) for value in _floats(args.sweep_segment_tokens)] or SWEEP_SEGMENT_TOKENS,
            verifiers=[value.strip() for value in args.sweep_verifiers.split(",")] if args.sweep_verifiers
            else SWEEP_VERIFIERS,
        )
    else:
        methods = make_methods([name.strip() for name in args.methods.split(",") if name.strip()], base, prompt,
                               args.verifier)
    print(f"{benchmark} ({questions[0].split}): {len(questions)} questions, {len(methods)} methods, {prompt} prompt, "
          f"results in {out / 'results.jsonl'}", file=sys.stderr)
    EvalRun(out / "results.jsonl", models, show_progress=not args.no_progress,
            log=lambda line: print(line, file=sys.stderr, flush=True)).run(questions, methods)


def _floats(text: str | None) -> list[float]:
    return [float(value) for value in text.split(",") if value.strip()] if text else []


def _listed(values: tuple[object, ...]) -> str:
    return ",".join(f"{value:g}" if isinstance(value, float) else str(value) for value in values)
