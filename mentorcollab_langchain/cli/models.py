"""``mentorcollab models``: the packaged models, whether each is installed and cached, and how to install it."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``models`` sub-command to the main parser's sub-commands."""
    parser = commands.add_parser("models", help="list the packaged models and whether each is installed and cached")
    parser.set_defaults(handler=command)
    return parser


def command(args: argparse.Namespace) -> int:
    """One line per packaged model (with its install command when missing), then the cache folder."""
    from mentorcollab_langchain.models import PACKAGED_MODELS, cache_dir, is_converted, is_installed

    print(f"{'name':30} {'role':38} {'installed':10} {'cached':7}")
    for model in PACKAGED_MODELS.values():
        installed, cached = is_installed(model), is_converted(model)
        print(f"{model.name:30} {model.role:38} {'yes' if installed else 'no':10} {'yes' if cached else 'no':7}")
        if not installed:
            print(f"  install: {model.install_command()}")
    print(f"cache: {cache_dir()}")
    return 0
