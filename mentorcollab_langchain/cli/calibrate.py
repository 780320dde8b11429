"""``mentorcollab calibrate``: the uncertain policy's threshold for a probe share, on prompts never evaluated.

    mentorcollab calibrate --benchmark csqa --offset 100 --limit 300 --probe-share 0.55 --out csqa.json
    mentorcollab calibrate --prompts my_questions.jsonl --max-new-tokens 200 --probe-share 0.1 --out mine.json

Only the generator runs (``evals.calibration``), on a benchmark slice exactly as ``eval`` prompts it, or
on your own prompts: a JSONL file, one chat prompt per line, either a string (the user's message) or a
list of ``{"role", "content"}`` messages. It prints the threshold with what it probed, and writes the
whole record as JSON with ``--out``; ``run``, ``eval`` and ``bench`` take that file as ``--calibration``.
Calibrate on prompts you will not evaluate on: for a test-only benchmark, take a slice past the
evaluation's (``--offset``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from mentorcollab_langchain.cli.loading import add_model_arguments, load_models
from mentorcollab_langchain.cli.settings import add_config_arguments, config_overrides
from mentorcollab_langchain.errors import ConfigError


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``calibrate`` sub-command to the main parser's sub-commands."""
    from mentorcollab_langchain.evals.data import BENCHMARKS

    parser = commands.add_parser(
        "calibrate", help="the uncertain policy's threshold for a probe share, from the generator alone"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--benchmark", help=f"calibrate on a slice of {', '.join(BENCHMARKS)}")
    source.add_argument("--prompts", metavar="FILE",
                        help="calibrate on your own chat prompts: JSONL, a user message or a list of messages a line")
    parser.add_argument("--split", help="benchmark split (default: test; validation for csqa)")
    parser.add_argument("--offset", type=int, default=0, help="skip the first N questions of the fixed shuffled order")
    parser.add_argument("--limit", type=int, help="calibrate on N benchmark questions (required with --benchmark)")
    parser.add_argument("--probe-share", type=float, required=True,
                        help="the share of words to probe, random probes included (on a one-word answer: of "
                             "questions, and about the mentor's compute against the mentor alone)")
    parser.add_argument("--prompt", choices=["auto", "chat", "fewshot"], default="auto",
                        help="a benchmark's prompt, as eval's: auto is the standard few-shot context")
    parser.add_argument("--out", metavar="FILE", help="write the calibration record as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines")
    add_model_arguments(parser, remote_mentor=False)
    add_config_arguments(parser, only=("uncertainty_signal", "probe_rate", "max_new_tokens", "stop"), notes={
        "max_new_tokens": "default: as eval's for a benchmark (256 GSM8K, 512 MATH, 16 multiple choice), "
                          "else the engine's",
    })
    parser.set_defaults(handler=command)
    return parser


def command(args: argparse.Namespace) -> int:
    """Run the generator alone on the prompts and print (and write) the threshold for the probe share."""
    from mentorcollab_langchain.engine import CollabConfig
    from mentorcollab_langchain.evals.calibration import calibrate_on_prompts, calibrate_on_questions, check_share
    from mentorcollab_langchain.evals.prompts import ANSWER_BUDGET
    from mentorcollab_langchain.models.identity import weights_sha256

    questions = _questions(args) if args.benchmark else []
    prompts, prompts_sha256 = _prompts(Path(args.prompts)) if args.prompts else ([], "")
    budget = {"max_new_tokens": ANSWER_BUDGET[questions[0].kind]} if questions else {}
    config = CollabConfig(**(budget | config_overrides(args)))
    check_share(args.probe_share, config)  # before the model loads
    generator_sha256 = weights_sha256(args.generator)  # and its identity, before the generator runs
    models = load_models(args, needs_mentor=False)
    log = (lambda line: None) if args.no_progress else (lambda line: print(line, file=sys.stderr, flush=True))
    record: dict[str, Any]
    if questions:
        prompt = "fewshot" if args.prompt == "auto" else args.prompt
        calibration = calibrate_on_questions(questions, models.generator, config, prompt, args.probe_share, log)
        record = calibration.as_dict() | {"benchmark": questions[0].benchmark, "split": questions[0].split,
                                          "prompt": prompt}
    else:
        calibration = calibrate_on_prompts(prompts, models.generator, config, args.probe_share, log)
        record = calibration.as_dict() | {"prompts": args.prompts, "prompts_sha256": prompts_sha256}
    record |= {
        "generator": models.generator_info.name, "generator_sha256": generator_sha256,
        "backend": models.generator_info.backend,
        "max_new_tokens": config.max_new_tokens, "command": shlex.join(["mentorcollab", *args.invocation]),
    }
    if questions:  # so a test can prove them never evaluated
        record["question_ids"] = [question.id for question in questions]
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    shown = {name: value for name, value in record.items() if name != "question_ids"}  # the file has them
    print(json.dumps(shown, indent=2))
    print(f"--uncertainty-signal {calibration.uncertainty_signal} "
          f"--uncertainty-threshold {calibration.uncertainty_threshold!r}", file=sys.stderr)
    return 0


def _questions(args: argparse.Namespace) -> list:
    from mentorcollab_langchain.evals.data import load_questions

    if args.limit is None:
        raise ConfigError("--benchmark needs --limit: how many questions to calibrate on")
    questions = load_questions(args.benchmark, args.split, args.limit, offset=args.offset)
    if not questions:
        raise ConfigError(f"{args.benchmark}: no questions")
    return questions


def _prompts(path: Path) -> tuple[list[Any], str]:
    """The chat prompts in a JSONL file (each line a user message, a string, or a list of messages), and the
    sha256 of the bytes they were read from, for the record."""
    try:
        content = path.read_bytes()
        lines = content.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"--prompts {path}: cannot read it ({error})") from error
    prompts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            prompt = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"--prompts {path}, line {number}: not JSON ({error})") from error
        if isinstance(prompt, str) and prompt.strip():
            prompts.append([{"role": "user", "content": prompt}])
        elif isinstance(prompt, list) and prompt and all(
            isinstance(message, dict) and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str) for message in prompt
        ):
            prompts.append(prompt)
        else:
            raise ConfigError(f"--prompts {path}, line {number}: want a non-empty string or a list of "
                              '{"role": ..., "content": ...} messages')
    if not prompts:
        raise ConfigError(f"--prompts {path}: no prompts in it")
    return prompts, hashlib.sha256(content).hexdigest()
