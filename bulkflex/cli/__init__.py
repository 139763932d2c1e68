"""The command line: the only part of bulkflex that prints or picks an exit code.

One module per command (``download``, ``status``, ``plan``, ...); each exposes
``add_parser(subparsers)`` which registers its sub-command with ``func=run`` where
``run(args) -> int`` returns the exit status. :func:`main` maps errors to exit codes in one table.
"""

from bulkflex.cli._main import main

__all__ = ["main"]
