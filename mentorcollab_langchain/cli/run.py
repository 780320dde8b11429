"""``mentorcollab run``: answer one prompt and show who wrote what.

The answer streams as it is committed, the mentor's spans marked (in colour on a terminal, ``[[...]]``
otherwise), then one summary line; ``--json`` prints the whole record instead, for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

from mentorcollab_langchain.cli.loading import add_model_arguments, load_models
from mentorcollab_langchain.cli.settings import add_config_arguments, config_overrides

if TYPE_CHECKING:
    from mentorcollab_langchain.engine import CollabState

MENTOR_COLOUR, RESET = "\033[1;36m", "\033[0m"


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``run`` sub-command to the main parser's sub-commands."""
    from mentorcollab_langchain.verifiers import DEFAULT_VERIFIER, NAMED_VERIFIERS, PAPER_VERIFIER

    parser = commands.add_parser("run", help="answer a prompt with the generator, guided by the mentor")
    parser.add_argument("prompt", help="the question or instruction")
    parser.add_argument("--verifier", metavar="NAME", help=f"{', '.join(sorted(NAMED_VERIFIERS))}, or mlp:PATH for a "
                        f"trained verifier; default: {DEFAULT_VERIFIER} ({PAPER_VERIFIER} with --faithful)")
    parser.add_argument("--system", help="a system message placed before the prompt")
    parser.add_argument("--faithful", action="store_true",
                        help="the paper's settings (probe rate 0.04, raw prompt); the settings given still apply")
    parser.add_argument("--json", action="store_true", help="print the whole record as JSON instead of streaming")
    parser.add_argument("--color", choices=["auto", "always", "never"], default="auto", help="mark mentor spans")
    add_model_arguments(parser)
    add_config_arguments(parser)
    parser.set_defaults(handler=command)
    return parser


def command(args: argparse.Namespace) -> int:
    """Stream (or record) one answer; an unknown verifier fails before any model loads."""
    from mentorcollab_langchain.engine import CollabConfig, CollabState, MentorFailed, TextCommitted, collaborate
    from mentorcollab_langchain.verifiers import DEFAULT_VERIFIER, PAPER_VERIFIER, get_verifier

    overrides = config_overrides(args)
    config = CollabConfig.faithful(**overrides) if args.faithful else CollabConfig(**overrides)
    verifier = args.verifier or (PAPER_VERIFIER if args.faithful else DEFAULT_VERIFIER)
    get_verifier(verifier, generator=args.generator)
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}
    ]
    models = load_models(args)

    state = CollabState()
    colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    began = time.perf_counter()
    for event in collaborate(messages, models.generator, models.mentor, verifier=verifier, config=config, state=state):
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
            "verifier": verifier,
            "config": config.model_dump(),
            "seconds": seconds,
        }
        print(json.dumps(record, indent=2, ensure_ascii=False))
    else:
        print()
        print(summary_line(state, seconds))
    return 0


def summary_line(state: CollabState, seconds: float) -> str:
    """The one line after a streamed answer: what the mentor did, what it cost, and why the answer ended."""
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
