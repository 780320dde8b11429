"""``mentorcollab calibrate``: the uncertain policy's threshold for a probe share, on a development slice.

    mentorcollab calibrate --benchmark csqa --offset 200 --limit 200 --probe-share 0.55
    mentorcollab calibrate --benchmark arc_challenge --split validation --limit 200 --probe-share 0.55 --out arc.json

Only the generator runs (``evals.calibration``). It prints the threshold with what it probed on the
slice, and writes the whole record as JSON with ``--out``; pass the threshold to ``eval``, ``run`` or the
chat model as ``uncertainty_threshold``. Calibrate on questions you will not evaluate on: for a test-only
benchmark, take a slice past the evaluation's (``--offset``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from mentorcollab_langchain.cli.loading import add_model_arguments, load_models
from mentorcollab_langchain.cli.settings import add_config_arguments, config_overrides
from mentorcollab_langchain.errors import ConfigError


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``calibrate`` sub-command to the main parser's sub-commands."""
    from mentorcollab_langchain.evals.data import BENCHMARKS

    parser = commands.add_parser(
        "calibrate", help="the uncertain policy's threshold for a probe share, from the generator on a dev slice"
    )
    parser.add_argument("--benchmark", required=True, help=", ".join(BENCHMARKS))
    parser.add_argument("--split", help="default: test (validation for csqa)")
    parser.add_argument("--offset", type=int, default=0, help="skip the first N questions of the fixed shuffled order")
    parser.add_argument("--limit", type=int, required=True, help="calibrate on N questions")
    parser.add_argument("--probe-share", type=float, required=True,
                        help="the share of words to probe, random probes included (on a one-word answer: of "
                             "questions, and about the mentor's compute against the mentor alone)")
    parser.add_argument("--prompt", choices=["auto", "chat", "fewshot"], default="auto",
                        help="as eval's: auto is the standard few-shot context")
    parser.add_argument("--out", metavar="FILE", help="write the calibration record as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines")
    add_model_arguments(parser, remote_mentor=False)
    add_config_arguments(parser, only=("uncertainty_signal", "probe_rate", "max_new_tokens"), notes={
        "max_new_tokens": "default: as eval's, 256 GSM8K, 512 MATH, 16 multiple choice",
    })
    parser.set_defaults(handler=command)
    return parser


def command(args: argparse.Namespace) -> int:
    """Run the generator alone on the slice and print (and write) the threshold for the probe share."""
    from mentorcollab_langchain.engine import CollabConfig
    from mentorcollab_langchain.evals.calibration import calibrate_on_questions, check_share
    from mentorcollab_langchain.evals.data import load_questions
    from mentorcollab_langchain.evals.prompts import ANSWER_BUDGET

    questions = load_questions(args.benchmark, args.split, args.limit, offset=args.offset)
    if not questions:
        raise ConfigError(f"{args.benchmark}: no questions")
    config = CollabConfig(**({"max_new_tokens": ANSWER_BUDGET[questions[0].kind]} | config_overrides(args)))
    check_share(args.probe_share, config)  # before the model loads
    models = load_models(args, needs_mentor=False)
    log = (lambda line: None) if args.no_progress else (lambda line: print(line, file=sys.stderr, flush=True))
    prompt = "fewshot" if args.prompt == "auto" else args.prompt
    calibration = calibrate_on_questions(questions, models.generator, config, prompt, args.probe_share, log)
    record = calibration.as_dict() | {
        "benchmark": questions[0].benchmark, "split": questions[0].split, "generator": models.generator_info.name,
        "backend": models.generator_info.backend, "prompt": prompt, "max_new_tokens": config.max_new_tokens,
        "command": shlex.join(["mentorcollab", *args.invocation]),
        "question_ids": [question.id for question in questions],  # so a test can prove them never evaluated
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    shown = {name: value for name, value in record.items() if name != "question_ids"}  # the file has them
    print(json.dumps(shown, indent=2))
    print(f"--uncertainty-signal {calibration.uncertainty_signal} "
          f"--uncertainty-threshold {calibration.uncertainty_threshold!r}", file=sys.stderr)
    return 0
