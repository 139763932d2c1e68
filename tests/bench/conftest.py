"""Fixtures of the benchmark harness's tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def harness_on_path() -> Iterator[Path]:
    """``benchmarks/`` on ``sys.path`` (and its path): the harness's modules import each other
    as top-level modules (``_peers``, ``_report``, ...), as ``run.py`` does."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield BENCHMARKS
    finally:
        sys.path.remove(str(BENCHMARKS))
