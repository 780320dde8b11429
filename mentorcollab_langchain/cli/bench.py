"""``mentorcollab bench``: tokens/s of each case in one run, so the ratios to the generator alone compare.

The cases: the generator alone, the mentor alone and MentorCollab, all on transformers; then, unless
``--no-remote``, the mentor alone and MentorCollab with the mentor behind a llama.cpp server that the
command starts and stops itself.
"""

from __future__ import annotations

import argparse
import sys

from mentorcollab_langchain.cli.loading import add_model_arguments, load_models, progress, quiet_transformers
from mentorcollab_langchain.cli.settings import add_config_arguments, config_overrides

BENCH_DEFAULTS = {"max_new_tokens": 64, "probe_rate": 0.1, "repetition_guard": False}
"""Short answers, frequent probes (so the mentor's cost shows), and no early stop on repetition (so every
case commits the same number of tokens)."""


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``bench`` sub-command to the main parser's sub-commands."""
    parser = commands.add_parser("bench", help="measure tokens/s of each setup in one run")
    parser.add_argument("--no-remote", action="store_true", help="skip the setups with a llama.cpp-served mentor")
    add_model_arguments(parser, any_backend=False, remote_mentor=False)
    add_config_arguments(parser, defaults=BENCH_DEFAULTS)
    parser.set_defaults(handler=command)
    return parser


def command(args: argparse.Namespace) -> int:
    """Load both models, measure every case, print the table."""
    import tempfile
    from contextlib import ExitStack
    from pathlib import Path

    from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleBackend
    from mentorcollab_langchain.bench import BENCH_PROMPTS, BenchCase, format_table, measure
    from mentorcollab_langchain.engine import CollabConfig
    from mentorcollab_langchain.serving import llama_server

    config = CollabConfig(**(BENCH_DEFAULTS | config_overrides(args)))
    rate = config.probe_rate
    quiet_transformers()
    with ExitStack() as stack, progress("loading models", sys.stderr) as report:
        models = load_models(args, report=report)
        generator, mentor = models.generator, models.mentor
        cases = [
            BenchCase(f"generator alone ({args.generator}, torch)", generator, generator, 0.0),
            BenchCase(f"mentor alone ({args.mentor}, torch)", mentor, mentor, 0.0),
            BenchCase(f"mentorcollab p={rate}, both local (torch)", generator, mentor, rate),
        ]
        if not args.no_remote:
            report("starting a llama.cpp server for the mentor")
            log = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "llama-server.log"
            server = stack.enter_context(llama_server(args.mentor, log))
            remote = OpenAICompatibleBackend(server.url, model="mentor", tokenizer=args.mentor)
            cases += [
                BenchCase(f"mentor alone ({args.mentor}, llama.cpp)", remote, remote, 0.0),
                BenchCase(f"mentorcollab p={rate}, remote mentor (llama.cpp)", generator, remote, rate),
            ]
        rows = measure(cases, BENCH_PROMPTS, config, report)
    print(format_table(rows))
    return 0
