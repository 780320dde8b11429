"""``mentorcollab train-verifier``: train the ``mlp`` verifier on divergences from training-only questions.

The flags and the model loading live here; what is collected, how it is labelled and how the network
is trained live in ``evals.verifier_training``. The models run on transformers: the verifier reads the
generator's hidden state, which only that backend gives.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from mentorcollab_langchain.cli.loading import add_model_arguments, load_models
from mentorcollab_langchain.cli.settings import add_config_arguments, config_overrides
from mentorcollab_langchain.errors import ConfigError
from mentorcollab_langchain.evals.verifier_training import COLLECTION_SETTINGS, DEFAULT_SOURCES, TrainSettings


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train-verifier`` sub-command to the main parser's sub-commands."""
    from mentorcollab_langchain.verifiers.mlp import FEATURE_GROUPS

    parser = commands.add_parser("train-verifier", help="train the mlp verifier on divergences from training data")
    parser.add_argument("--source", action="append", metavar="BENCHMARK:SPLIT:OFFSET:LIMIT",
                        help=f"training questions (repeatable; default: {' '.join(DEFAULT_SOURCES)})")
    parser.add_argument("--features", default=",".join(FEATURE_GROUPS), help="comma-separated feature groups")
    parser.add_argument("--hidden-units", type=int, default=TrainSettings.hidden_units)
    parser.add_argument("--epochs", type=int, default=TrainSettings.epochs)
    parser.add_argument("--weight-decay", type=float, default=TrainSettings.weight_decay)
    parser.add_argument("--validation-fraction", type=float, default=TrainSettings.validation_fraction)
    parser.add_argument("--minutes", type=float, help="stop collecting after this long (sources are taken in turn)")
    parser.add_argument("--data", default="runs/verifier/divergences.jsonl", help="where the collected divergences go")
    parser.add_argument("--from-data", action="store_true", help="train on --data as it is, without collecting")
    parser.add_argument("--out", required=True, help="the verifier's path (NAME.safetensors and NAME.json are written)")
    add_model_arguments(parser, any_backend=False, remote_mentor=False)
    add_config_arguments(
        parser, only=("probe_policy", "probe_rate", "segment_tokens", "seed"), defaults=COLLECTION_SETTINGS,
        notes={"probe_policy": f"default: {COLLECTION_SETTINGS['probe_policy']}; GSM8K answers only, a multiple-choice "
                               "answer is probed at its letter",
               "seed": "default: 0; also seeds the training"},
    )
    parser.set_defaults(handler=command)
    return parser


def command(args: argparse.Namespace) -> int:
    """Collect divergences (or read them back with ``--from-data``), train, and write the verifier."""
    from mentorcollab_langchain.backends.transformers import pick_device, pick_dtype
    from mentorcollab_langchain.engine import CollabConfig
    from mentorcollab_langchain.evals.data import load_questions
    from mentorcollab_langchain.evals.verifier_training import (
        TrainingRun,
        TrainingSource,
        build_verifier,
        collect,
        label_counts,
        read_records,
        write_records,
    )
    from mentorcollab_langchain.verifiers.mlp import feature_names

    sources = [TrainingSource.parse(spec) for spec in (args.source or DEFAULT_SOURCES)]
    groups = tuple(group.strip() for group in args.features.split(",") if group.strip())
    feature_names(groups, 0)  # an unknown group fails now
    config = CollabConfig(**(COLLECTION_SETTINGS | config_overrides(args)))
    settings = TrainSettings(hidden_units=args.hidden_units, epochs=args.epochs, weight_decay=args.weight_decay,
                             validation_fraction=args.validation_fraction, seed=config.seed)
    dtype = str(pick_dtype(args.dtype, pick_device(args.device))).removeprefix("torch.")
    run = TrainingRun(args.generator, args.mentor, dtype, sources, config, groups, settings,
                      shlex.join(["mentorcollab", *args.invocation]))

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - began:6.0f}s] {message}", file=sys.stderr, flush=True)

    began = time.perf_counter()
    if args.from_data:
        records = read_records(Path(args.data))
    else:
        models = load_models(args, report=log)
        batches = [load_questions(source.benchmark, source.split, limit=source.limit, offset=source.offset)
                   for source in sources]
        deadline = time.monotonic() + args.minutes * 60 if args.minutes else None
        records, run.questions = collect(batches, models.generator, models.mentor, config, groups, deadline, log)
        write_records(records, Path(args.data))
        run.seconds = time.perf_counter() - began
        log(f"collected: {label_counts(records)}")
    if not records:
        raise ConfigError("no divergences were collected; add training sources or raise --probe-rate")
    verifier = build_verifier(records, run)
    files = verifier.save(args.out)
    log(f"wrote {files.weights} and {files.card}")
    print(json.dumps({"totals": verifier.card["training_data"]["totals"], "threshold": verifier.threshold,
                      "validation": verifier.card["validation"]}, indent=2))
    return 0
