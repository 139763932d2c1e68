"""The sub-commands, in the order ``bulkflex --help`` shows them.

Each is a module of ``bulkflex.cli`` with ``add_parser(subparsers)``. They are imported on
demand: ``bulkflex download`` loads the engine only, not the planner or the demo server, which
saves a good part of a second on every start (it shows in benchmarks of small jobs).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from types import ModuleType

NAMES: tuple[str, ...] = (
    "demo",
    "collections",
    "plan",
    "download",
    "get",
    "status",
    "serve-demo",
    "bench",
)


def modules(argv: Sequence[str]) -> Iterator[ModuleType]:
    """The command modules to register: just the one named in ``argv`` when there is one
    (the parser then knows only that command), none for ``--version``, else all of them
    (``--help``, a typo)."""
    wanted = next((arg for arg in argv if not arg.startswith("-")), None)
    if wanted is None and "--version" in argv and not {"-h", "--help"} & set(argv):
        return  # argparse prints the version and exits before it needs any command
    names = (wanted,) if wanted in NAMES else NAMES
    for name in names:
        yield importlib.import_module(f"bulkflex.cli.{name.replace('-', '_')}")
