"""Helpers for end-to-end tests that drive the real ``bulkflex`` CLI in a subprocess.

Every process started here is waited for with a timeout and killed if it outlives it, so a hung
CLI fails its test instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faultserver import FaultServer, sha256_multihash

#: Default ceiling on one CLI run; the suite's files are small, so a run this long is a hang.
RUN_TIMEOUT = 60.0


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    @property
    def failed_lines(self) -> list[str]:
        """The ``FAILED <path>: <reason>`` lines of the run's summary."""
        return [line for line in self.stderr_lines if line.startswith("FAILED ")]

    def describe(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def _env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k != "COLUMNS"
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_PROXY"] = "*"
    return env


def command(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "bulkflex", *map(os.fspath, args)]


def download_args(
    manifest: Path, dest: Path, *extra: str | os.PathLike[str]
) -> list[str | os.PathLike[str]]:
    return ["download", manifest, "-d", dest, "--no-progress", *extra]


def run_cli(
    *args: str | os.PathLike[str], cwd: Path | None = None, timeout: float = RUN_TIMEOUT
) -> Result:
    """Run ``bulkflex ARGS`` to completion (killed after ``timeout`` seconds)."""
    proc = start_cli(*args, cwd=cwd)
    return finish(proc, timeout=timeout)


def start_cli(*args: str | os.PathLike[str], cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command(*args),
        cwd=cwd,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def started_cli(
    *args: str | os.PathLike[str], cwd: Path | None = None
) -> Iterator[subprocess.Popen[str]]:
    """``start_cli`` for a ``with`` block: a process still running at its end (a failed
    assertion) is killed and collected, so no test leaves one behind."""
    proc = start_cli(*args, cwd=cwd)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def finish(proc: subprocess.Popen[str], *, timeout: float = RUN_TIMEOUT) -> Result:
    """Wait for ``proc``; on timeout kill it and fail with its output."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate(timeout=30)
        raise AssertionError(
            f"bulkflex did not finish within {timeout} s\n--- stdout\n{stdout}\n--- stderr\n"
            f"{stderr}"
        ) from None
    return Result(proc.returncode, stdout, stderr)


def kill(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> Result:
    """Send ``sig`` and collect the process (SIGKILL: no chance to save anything)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    return finish(proc, timeout=30)


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    proc: subprocess.Popen[str] | None = None,
    interval: float = 0.002,
) -> None:
    """Poll ``condition`` until true; fail after ``timeout`` s or if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            result = finish(proc)
            raise AssertionError(f"bulkflex exited before {what}\n{result.describe()}")
        if time.monotonic() > deadline:
            if proc is not None:
                kill(proc)
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def entry(
    server: FaultServer,
    name: str,
    path: str | None = None,
    *,
    size: bool = True,
    checksum: bool = True,
    query: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """A manifest record for a file of ``server`` (its current version)."""
    data = server.content(name)
    return {
        "url": server.url(name, query),
        "path": path or name,
        "size": len(data) if size else None,
        "checksum": sha256_multihash(data) if checksum else None,
        **extra,
    }


def write_manifest(path: Path, records: Iterable[Mapping[str, Any] | str]) -> Path:
    """Write one JSON line per record (a ``str`` is written as is: for malformed lines)."""
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(record if isinstance(record, str) else json.dumps(record))
            handle.write("\n")
    return path


def files_under(dest: Path) -> dict[str, bytes]:
    """Every file under ``dest`` outside bulkflex's state folder, by relative POSIX path."""
    found: dict[str, bytes] = {}
    for item in sorted(dest.rglob("*")):
        rel = item.relative_to(dest).as_posix()
        if rel == ".bulkflex" or rel.startswith(".bulkflex/") or not item.is_file():
            continue
        found[rel] = item.read_bytes()
    return found


def assert_files(dest: Path, expected: Mapping[str, bytes]) -> None:
    """``dest`` holds exactly ``expected`` (no ``.part`` or stray file), byte for byte."""
    found = files_under(dest)
    assert sorted(found) == sorted(expected), f"files under dest: {sorted(found)}"
    for rel, data in expected.items():
        got = found[rel]
        if got != data:
            first = next(
                (i for i, (a, b) in enumerate(zip(got, data, strict=False)) if a != b),
                min(len(got), len(data)),
            )
            raise AssertionError(
                f"{rel}: {len(got)} bytes on disk differ from the {len(data)}-byte source "
                f"(first difference at offset {first})"
            )


def read_events(path: Path) -> list[dict[str, Any]]:
    """The records of a ``--log-json`` file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """Mount a tmpfs at ``path`` for the block (skips the test where that is impossible)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8); this runs as a normal user")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", os.fspath(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", os.fspath(path)], capture_output=True, timeout=30).returncode:
            subprocess.run(["umount", "-l", os.fspath(path)], capture_output=True, timeout=30)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", os.fspath(path)], check=True, timeout=30)


def assert_no_token_anywhere(tokens: Iterable[str], dest: Path, *texts: str | Path) -> None:
    """No token text in any file under ``dest`` (state database included), nor in ``texts``
    (strings, or paths of files such as the --log-json file)."""
    blobs: dict[str, bytes] = {}
    for item in sorted(dest.rglob("*")):
        if item.is_file():
            blobs[item.relative_to(dest).as_posix()] = item.read_bytes()
    assert any(name.startswith(".bulkflex/") for name in blobs), sorted(blobs)
    for index, text in enumerate(texts):
        if isinstance(text, Path):
            blobs[str(text.name)] = text.read_bytes()
        else:
            blobs[f"output #{index}"] = text.encode()
    for token in tokens:
        for name, blob in blobs.items():
            assert token.encode() not in blob, f"a token leaked into {name}"
