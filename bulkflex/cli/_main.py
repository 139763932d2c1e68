"""Entry point: argument parsing, log set-up, and the one table from errors to exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from bulkflex import __version__
from bulkflex.cli import _commands, _exit
from bulkflex.errors import BulkflexError


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bulkflex",
        description="Fast, resumable, verified bulk downloads from STAC catalogs.",
    )
    parser.add_argument("--version", action="version", version=f"bulkflex {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # -v also works after the command (`bulkflex download ... -vv`): every sub-parser inherits it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="more log output (-vv for debug)",
    )
    original = sub.add_parser

    def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs["parents"] = [*kwargs.get("parents", []), common]
        return original(name, **kwargs)

    sub.add_parser = add_parser  # type: ignore[method-assign]
    for module in _commands.modules(argv):
        module.add_parser(sub)
    return parser


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("bulkflex: %(levelname)s: %(message)s"))
    root = logging.getLogger("bulkflex")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (``__main__`` passes it to ``sys.exit``)."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(arguments)
    args = parser.parse_args(arguments)
    _setup_logging(args.verbose)
    try:
        status: int = args.func(args)
    except BulkflexError as exc:
        print(f"bulkflex: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # the reader went away (`bulkflex status DEST | head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(
            "bulkflex: interrupted; progress is saved, run the same command to finish",
            file=sys.stderr,
        )
        return _exit.INTERRUPTED
    return status
