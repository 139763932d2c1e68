"""The command line loads only what the command needs: ``--version`` loads no command, and
``download`` neither the STAC planner (aiohttp) nor the progress bar's tqdm before a bar is
shown (nor modules only a rare path needs), and ``status`` not the engine. Each check runs in
a fresh interpreter, as a user's command does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bulkflex import __version__

PROBE = """
import json, sys
from bulkflex.cli._main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = (
    "aiohttp", "bulkflex.stac", "bulkflex.demo", "bulkflex.transfer", "tqdm", "email.utils",
    "tempfile",
)
print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
"""


def loaded_after(*argv: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_version_prints_the_version_and_loads_no_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bulkflex", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"bulkflex {__version__}"
    assert loaded_after("--version") == []


@pytest.mark.parametrize("argv", [["download", "--help"], ["status", "--help"]])
def test_download_and_status_load_neither_the_planner_nor_tqdm(argv: list[str]) -> None:
    loaded = loaded_after(*argv)
    assert "aiohttp" not in loaded and "bulkflex.stac" not in loaded, loaded
    assert "tqdm" not in loaded, loaded
    # a date-valued Retry-After and writing a manifest import these when they happen (11 ms)
    assert "email.utils" not in loaded and "tempfile" not in loaded, loaded


def test_status_does_not_load_the_engine() -> None:
    # it reads state files: the engine, the HTTP client and anyio are no part of that
    assert "bulkflex.transfer" not in loaded_after("status", "--help")


def test_help_still_lists_every_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bulkflex", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for command in ("demo", "collections", "plan", "download", "get", "status", "bench"):
        assert command in done.stdout
