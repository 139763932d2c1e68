"""The list of sub-command modules, in the order ``bulkflex --help`` shows them."""

from __future__ import annotations

from types import ModuleType

from bulkflex.cli import bench, collections, demo, download, get, plan, serve_demo, status

MODULES: list[ModuleType] = [demo, collections, plan, download, get, status, serve_demo, bench]
