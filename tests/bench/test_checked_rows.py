"""The benchmark's rows that run a peer, then a sha256 pass (and then a sync) over its files,
and the report's lines comparing bulkflex with the best of them (``benchmarks/_peers.py``,
``benchmarks/_report.py``). The chains run for real: a copy as the "peer", the real checker and
coreutils' ``sync -f``."""

from __future__ import annotations

import hashlib
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.usefixtures("harness_on_path")


def _context(tmp_path: Path, files: dict[str, bytes]) -> Any:
    from _peers import Context
    from _workloads import FileSet, FileSpec

    source = tmp_path / "source"
    specs = []
    for rel, data in files.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(data)
        specs.append(FileSpec(rel, len(data), hashlib.sha256(data).hexdigest()))
    (tmp_path / "dest").mkdir()
    (tmp_path / "work").mkdir()
    return Context(
        files=FileSet("set", source, tuple(specs)),
        base_url="http://127.0.0.1:9",  # never contacted: the "peer" below copies
        dest=tmp_path / "dest",
        work=tmp_path / "work",
    )


def _copy_peer(ctx: Any) -> list[str]:
    """A stand-in for curl or rclone that puts the source's files under DEST."""
    return ["cp", "-r", f"{ctx.files.root}/.", str(ctx.dest)]


def _run_chain(ctx: Any, *, sync: bool) -> subprocess.CompletedProcess[str]:
    from _peers import _then_check

    return subprocess.run(
        _then_check(_copy_peer, sync=sync)(ctx),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


FILES = {"d000/a.bin": b"a" * 70_000, "d001/b.bin": bytes(range(256)) * 9}


@pytest.mark.parametrize("sync", [False, True], ids=["then-sha256", "then-sha256-and-sync"])
def test_chain_passes_when_the_copy_is_intact(tmp_path: Path, sync: bool) -> None:
    ctx = _context(tmp_path, FILES)
    result = _run_chain(ctx, sync=sync)
    assert (result.returncode, result.stderr) == (0, "")
    for rel, data in FILES.items():
        assert (tmp_path / "dest" / rel).read_bytes() == data


def test_chain_fails_on_the_first_bad_file_before_the_sync(tmp_path: Path) -> None:
    ctx = _context(tmp_path, FILES)
    # the source changes after its sums were taken: the "download" is wrong
    (tmp_path / "source" / "d001" / "b.bin").write_bytes(b"not the planned bytes")
    result = _run_chain(ctx, sync=True)
    assert result.returncode == 1
    assert result.stderr.startswith("d001/b.bin: sha256 ")
    assert len(result.stderr.splitlines()) == 1


def test_chain_stops_when_the_peer_fails(tmp_path: Path) -> None:
    from _peers import _then_check

    ctx = _context(tmp_path, FILES)
    refusing = ["sh", "-c", "echo refused >&2; exit 7"]
    command = _then_check(lambda _: refusing, sync=True)(ctx)
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stderr) == (7, "refused\n")
    assert shlex.split(command[-1])[-3:] == ["sync", "-f", str(tmp_path / "dest")]


def _row(tool: str, label: str, mib_s: float) -> Any:
    from _report import MiB, Row, ToolRun

    run = ToolRun(
        wall=100 / mib_s,
        cpu=1.0,
        maxrss_kib=1024,
        exit_code=0,
        timed_out=False,
        problems=0,
        requests=10,
        served_bytes=100 * MiB,
    )
    return Row("small", "unthrottled", tool, label, 10, 100 * MiB, [run])


def test_report_compares_bulkflex_with_each_kind_of_row() -> None:
    from _report import CHECKED_AFTER, SYNCED_AFTER, render

    rows = [
        _row("bulkflex", "bulkflex", 100.0),
        _row("curl", "curl --parallel 16", 200.0),
        _row("wget", "wget -i", 120.0),
        _row(f"curl{CHECKED_AFTER}", "curl --parallel 16, then sha256", 150.0),
        _row(f"rclone{CHECKED_AFTER}", "rclone, then sha256", 140.0),
        _row(f"curl{SYNCED_AFTER}", "curl --parallel 16, then sha256 and sync", 80.0),
        _row(f"rclone{SYNCED_AFTER}", "rclone, then sha256 and sync", 90.0),
    ]
    text = render(rows, [], [], [])
    lines = [line for line in text.splitlines() if line.startswith("bulkflex / ")]
    assert lines == [
        "bulkflex / best peer (curl --parallel 16, 200.0 MiB/s): **0.50×**",
        "bulkflex / best row with a sha256 pass after the download "
        "(curl --parallel 16, then sha256, 150.0 MiB/s): **0.67×**",
        "bulkflex / best row with a sha256 pass and a sync after the download "
        "(bulkflex's guarantee: every byte verified and on disk) "
        "(rclone, then sha256 and sync, 90.0 MiB/s): **1.11×**",
    ]
