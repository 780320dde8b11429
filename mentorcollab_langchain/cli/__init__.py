"""The ``mentorcollab`` command line: run real models offline and see who wrote what.

    mentorcollab run "PROMPT"     stream an answer, mentor spans marked, then one summary line
    mentorcollab run --json ...   the whole record (text, spans, decisions, stats) as JSON
    mentorcollab models           the packaged models, and whether each is installed and cached
    mentorcollab serve MODEL      serve a packaged model's GGUF with llama.cpp (an OpenAI-compatible mentor)
    mentorcollab bench            the speed story in one table: each model alone, MentorCollab, requests at once
    mentorcollab eval ...         accuracy and cost on real benchmarks (see mentorcollab eval --help)
    mentorcollab calibrate ...    the uncertain policy's threshold for a probe share, from the generator alone
    mentorcollab train-verifier   train the mlp verifier on divergences from training data

One module per command, each with ``add_parser(commands)`` and ``command(args)``; they share the model
loading (``loading``) and the collaboration-setting flags (``settings``) and never import each other.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mentorcollab_langchain.cli import bench, calibrate, models, run, serve, train_verifier
from mentorcollab_langchain.cli import eval as evaluate
from mentorcollab_langchain.errors import MentorCollabError

COMMANDS = (run, models, serve, bench, evaluate, calibrate, train_verifier)
"""In the order ``mentorcollab --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every sub-command with its flags, each one's ``handler`` set."""
    parser = argparse.ArgumentParser(prog="mentorcollab", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a known error is one line on stderr and exit status 2, Ctrl-C is status 130."""
    args = build_parser().parse_args(argv)
    args.invocation = list(sys.argv[1:] if argv is None else argv)  # train-verifier writes it on its card
    try:
        return args.handler(args)
    except MentorCollabError as error:
        print(f"mentorcollab: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nmentorcollab: interrupted", file=sys.stderr)
        return 130
