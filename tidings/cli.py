"""The ``tidings`` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import trio

from . import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidings", description="Publish/subscribe events on an embedded broker or Redis."
    )
    parser.add_argument("--version", action="version", version=f"tidings {__version__}")
    parser.add_argument(
        "--url",
        default=os.environ.get("TIDINGS_URL", "memory://demo"),
        help="store URL (default: $TIDINGS_URL, else memory://demo)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("demo", help="a short tour of the library on the embedded broker")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from ._demo import demo

        try:
            return trio.run(demo, args.url)
        except KeyboardInterrupt:
            return 130
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
