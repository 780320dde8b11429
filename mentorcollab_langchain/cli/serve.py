"""``mentorcollab serve``: a packaged model behind llama.cpp's OpenAI-compatible server, as a remote mentor.

The command replaces itself with the server (``exec``), so Ctrl-C and signals reach the server directly.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``serve`` sub-command to the main parser's sub-commands."""
    from mentorcollab_langchain.models import DEFAULT_MENTOR

    parser = commands.add_parser("serve", help="serve a packaged model with llama.cpp on 127.0.0.1")
    parser.add_argument("model", nargs="?", default=DEFAULT_MENTOR)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads, for decoding and reading prompts")
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.set_defaults(handler=command)
    return parser


def command(args: argparse.Namespace) -> int:
    """Run llama.cpp's server in the foreground on the packaged model's verified GGUF."""
    import os

    from mentorcollab_langchain.models.registry import get_packaged_model, verified_gguf
    from mentorcollab_langchain.serving import server_command

    gguf = verified_gguf(get_packaged_model(args.model))
    command_line = server_command(gguf, args.port, args.n_ctx, args.threads)
    print(f"serving {args.model} at http://127.0.0.1:{args.port}/v1 (Ctrl-C stops)", file=sys.stderr)
    os.execv(command_line[0], command_line)
    return 0  # not reached
