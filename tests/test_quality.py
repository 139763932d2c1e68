"""Lint, format and type checks run as part of the test suite (the README's one test command)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    "command",
    [
        ("ruff", "check", "bulkflex", "tests", "benchmarks"),
        ("ruff", "format", "--check", "bulkflex", "tests", "benchmarks"),
        ("mypy",),
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_code_quality(command: tuple[str, ...]) -> None:
    result = _run(*command)
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_imports_nothing_of_the_shell() -> None:
    """bulkflex.core is pure: no aiohttp, anyio, sqlite3, and nothing of bulkflex outside core."""
    forbidden = ("aiohttp", "anyio", "sqlite3", "asyncio", "tqdm")
    for source in (ROOT / "bulkflex" / "core").glob("*.py"):
        for line in source.read_text().splitlines():
            text = line.strip()
            if not text.startswith(("import ", "from ")):
                continue
            module = text.split()[1]
            assert not module.startswith(forbidden), f"{source.name}: {text}"
            if module.startswith("bulkflex"):
                assert module.startswith("bulkflex.core"), f"{source.name}: {text}"
