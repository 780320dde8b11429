"""``mentorcollab eval``: run benchmarks, resume, and rebuild the report.

    mentorcollab eval --benchmark arc_challenge --limit 100 --methods generator,mentor,mentorcollab
    mentorcollab eval --benchmark arc_challenge --split validation --limit 50 --sweep
    mentorcollab eval --benchmark gsm8k --offset 1000 --limit 50 --sweep    a tuning slice of a test-only set
    mentorcollab eval --report runs/eval           rebuild report.md and the plot from the JSONL

Wire it into the main command line with ``add_eval_parser(commands)`` and ``eval_command(args)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mentorcollab_langchain.errors import ConfigError

DEFAULT_MAX_NEW_TOKENS = {"number": 256, "math": 512, "choice": 16}


def add_eval_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``eval`` sub-command to the main parser's sub-commands."""
    from mentorcollab_langchain.cli import _add_backend_argument, _add_probe_policy_arguments, _add_remote_mentor_arguments
    from mentorcollab_langchain.evals.data import BENCHMARKS
    from mentorcollab_langchain.evals.runner import METHOD_NAMES
    from mentorcollab_langchain.models import DEFAULT_GENERATOR, DEFAULT_MENTOR
    from mentorcollab_langchain.verifiers import DEFAULT_VERIFIER, NAMED_VERIFIERS

    evaluate = commands.add_parser("eval", help="accuracy and cost on real benchmarks (resumable), or --report")
    evaluate.add_argument("--benchmark", help=f"comma-separated: {', '.join(BENCHMARKS)}")
    evaluate.add_argument("--split", help="default: test (validation for csqa)")
    evaluate.add_argument("--limit", type=int, help="the first N questions of the fixed shuffled order")
    evaluate.add_argument("--offset", type=int, default=0,
                          help="skip the first N questions (a tuning slice of a test-only benchmark, e.g. GSM8K)")
    evaluate.add_argument("--methods", default="generator,mentor,mentorcollab", help=f"comma-separated: {', '.join(METHOD_NAMES)}")
    evaluate.add_argument("--sweep", action="store_true", help="probe rate x segment length x verifier grid (use a dev split)")
    evaluate.add_argument("--sweep-probe-rates", help="comma-separated (default 0.02,0.05,0.1,0.2)")
    evaluate.add_argument("--sweep-segment-tokens", help="comma-separated (default 4,8,16)")
    evaluate.add_argument("--sweep-verifiers", help="comma-separated (default self-consult,self-consult-both-orders,always-mentor)")
    evaluate.add_argument("--prompt", choices=["auto", "chat", "fewshot"], default="auto",
                          help="auto: the standard few-shot context (measured better than chat for the small "
                               "generator: in chat it copies the option list instead of answering)")
    evaluate.add_argument("--out", default="runs/eval", help="folder of the results JSONL and the report")
    evaluate.add_argument("--report", metavar="DIR", help="only rebuild the report from the JSONL under DIR")
    evaluate.add_argument("--report-out", metavar="DIR", help="where --report writes report.md and the plot (default: DIR)")
    evaluate.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    evaluate.add_argument("--generator", default=DEFAULT_GENERATOR)
    evaluate.add_argument("--mentor", default=DEFAULT_MENTOR)
    _add_backend_argument(evaluate)
    evaluate.add_argument("--verifier", default=DEFAULT_VERIFIER, metavar="NAME",
                          help=f"{', '.join(sorted(NAMED_VERIFIERS))}, or mlp:PATH (default: {DEFAULT_VERIFIER})")
    _add_probe_policy_arguments(evaluate)
    evaluate.add_argument("--segment-tokens", type=int, help="default: CollabConfig's")
    evaluate.add_argument("--max-new-tokens", type=int, help="default: 256 GSM8K, 512 MATH, 16 multiple choice")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--dtype", default="auto")
    _add_remote_mentor_arguments(evaluate)
    return evaluate


def eval_command(args: argparse.Namespace) -> int:
    from mentorcollab_langchain.evals.report import build_report

    if args.report:
        report, image = build_report(Path(args.report), Path(args.report_out) if args.report_out else None)
        print(report.read_text(encoding="utf-8"))
        print(f"wrote {report} and {image}", file=sys.stderr)
        return 0
    if not args.benchmark:
        raise ConfigError("name a --benchmark (or pass --report DIR)")
    from mentorcollab_langchain.verifiers import get_verifier

    get_verifier(args.verifier, generator=args.generator)  # an unknown name fails now, not once per question
    out = Path(args.out)
    names = {name.strip() for name in args.methods.split(",")}
    needs_mentor = args.sweep or bool(names & {"mentor", "mentorcollab", "faithful"})
    players = _players(args, needs_mentor)
    for benchmark in [name.strip() for name in args.benchmark.split(",") if name.strip()]:
        _run_benchmark(args, benchmark, players, out)
    report, image = build_report(out)
    print(f"wrote {report} and {image}", file=sys.stderr)
    return 0


def _run_benchmark(args: argparse.Namespace, benchmark: str, players, out: Path) -> None:  # noqa: ANN001
    from mentorcollab_langchain.cli import probe_policy_overrides
    from mentorcollab_langchain.engine import CollabConfig
    from mentorcollab_langchain.evals.data import load_questions
    from mentorcollab_langchain.evals.runner import SWEEP_VERIFIERS, EvalRun, make_methods, sweep_methods

    questions = load_questions(benchmark, args.split, args.limit, offset=args.offset)
    if not questions:
        raise ConfigError(f"{benchmark}: no questions")
    kind = questions[0].kind
    prompt = args.prompt
    if prompt == "auto":
        prompt = "fewshot"
    overrides = probe_policy_overrides(args) | {
        "max_new_tokens": args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[kind],
        "seed": args.seed,
        "segment_tokens": args.segment_tokens,
        "max_mentor_calls": args.max_mentor_calls,
        "max_mentor_tokens": args.max_mentor_tokens,
        "on_mentor_error": args.on_mentor_error,
    }
    base = CollabConfig(**{name: value for name, value in overrides.items() if value is not None})
    if args.sweep:
        methods = sweep_methods(
            base, prompt,
            probe_rates=_floats(args.sweep_probe_rates) or (0.02, 0.05, 0.1, 0.2),
            segment_tokens=[int(value) for value in _floats(args.sweep_segment_tokens)] or (4, 8, 16),
            verifiers=[value.strip() for value in args.sweep_verifiers.split(",")] if args.sweep_verifiers else SWEEP_VERIFIERS,
        )
    else:
        methods = make_methods([name.strip() for name in args.methods.split(",") if name.strip()], base, prompt, args.verifier)
    print(f"{benchmark} ({questions[0].split}): {len(questions)} questions, {len(methods)} methods, {prompt} prompt, "
          f"results in {out / 'results.jsonl'}", file=sys.stderr)
    EvalRun(out / "results.jsonl", players, show_progress=not args.no_progress,
            log=lambda line: print(line, file=sys.stderr, flush=True)).run(questions, methods)


def _floats(text: str | None) -> list[float]:
    return [float(value) for value in text.split(",") if value.strip()] if text else []


def _players(args: argparse.Namespace, needs_mentor: bool = True):  # noqa: ANN202
    """Load the generator and the mentor in process (``--backend``), or reach the mentor at ``--mentor-url``.

    Without a method that calls the mentor, the generator stands in for it and nothing else loads."""
    from mentorcollab_langchain.backends import make_backend
    from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleBackend
    from mentorcollab_langchain.cli import _quiet_transformers, backend_label, progress
    from mentorcollab_langchain.evals.runner import ModelInfo, ModelPair

    _quiet_transformers()
    with progress("loading models", sys.stderr) as report:
        generator = make_backend(args.generator, args.backend, device=args.device, dtype=args.dtype,
                                 threads=args.threads, report=report)
        generator.loaded
        generator_info = ModelInfo(args.generator, backend_label(generator))
        if not needs_mentor:
            mentor, mentor_info = generator, ModelInfo(args.mentor, "not loaded")
        elif args.mentor_url:
            mentor = OpenAICompatibleBackend(args.mentor_url, model=args.mentor_served_name, tokenizer=args.mentor,
                                             timeout=args.mentor_timeout, report=report)
            mentor_info = ModelInfo(args.mentor, f"server {args.mentor_url}")
        else:
            mentor = make_backend(args.mentor, args.backend, device=args.device, dtype=args.dtype,
                                  threads=args.threads, report=report)
            mentor.loaded
            mentor_info = ModelInfo(args.mentor, backend_label(mentor))
    return ModelPair(generator, mentor, generator_info, mentor_info)


def main(argv: list[str] | None = None) -> int:
    """``python -m mentorcollab_langchain.evals.cli ...`` is ``mentorcollab eval ...``."""
    from mentorcollab_langchain.cli import main as mentorcollab

    return mentorcollab(["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
