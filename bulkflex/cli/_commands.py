"""The list of sub-command modules, in the order ``bulkflex --help`` shows them."""

from __future__ import annotations

from types import ModuleType

from bulkflex.cli import download, status

MODULES: list[ModuleType] = [download, status]
