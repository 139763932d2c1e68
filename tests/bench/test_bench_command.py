"""``bulkflex bench``: real runs against the embedded server, every file checked by sha256; a
missing peer is reported and skipped; a tool that writes wrong bytes fails the bench (exit 1)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from bulkflex.bench import BenchOptions, BenchPlan, Tool, plan_bench, render, run_bench
from bulkflex.bench.tools import RunContext, tool_by_key
from bulkflex.cli._main import main

REPO = Path(__file__).resolve().parents[2]


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bulkflex", "bench", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
        check=False,
    )


def table_rows(stdout: str) -> dict[str, list[str]]:
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("| ") and not line.startswith(("| tool", "|---")):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_tiny_bench_of_bulkflex_and_requests_verifies_and_prints_both_rows() -> None:
    done = bench(
        "--workload", "tiny", "--files", "50", "--tools", "bulkflex,requests", "--no-progress"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tiny, 50 × 16 KiB (800 KiB), unthrottled" in done.stdout
    assert "| tool | verified runs | MiB/s | CPU s/GiB | peak RSS MiB | bulkflex × |" in done.stdout
    rows = table_rows(done.stdout)
    assert list(rows) == ["bulkflex", "requests loop"]
    for cells in rows.values():
        assert cells[0] == "1/1"
        assert all(float(value) > 0 for value in cells[1:])
    assert rows["bulkflex"][4] == "1.00"
    assert "embedded **Python** (aiohttp) server" in done.stdout
    assert "`python benchmarks/run.py`" in done.stdout
    assert "Failed runs" not in done.stdout
    assert done.stderr == ""  # no progress bar, nothing missing


def test_a_missing_peer_is_reported_and_skipped(tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    env = dict(os.environ, PATH=str(empty))  # curl and aria2c cannot be found
    done = bench("--files", "3", "--size", "64K", "--tools", "bulkflex,curl,aria2c", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bulkflex bench: skipping curl --parallel 16: curl not installed" in done.stderr
    # --files and --size alone: a set of no workload, named as such
    assert "## bulkflex bench: custom, 3 × 64 KiB (192 KiB), unthrottled" in done.stdout
    assert list(table_rows(done.stdout)) == ["bulkflex"]
    assert (
        "Missing (not run): curl --parallel 16 (curl not installed); "
        "aria2c -x16 -s16 -k1M -j16 (aria2c not installed)"
    ) in done.stdout


def test_nothing_to_run_exits_1(tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    done = bench("--files", "1", "--tools", "wget", env=dict(os.environ, PATH=str(empty)))
    assert done.returncode == 1
    assert "No tool ran." in done.stdout
    assert "wget -i (wget not installed)" in done.stdout


def test_unknown_tool_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--tools", "bulkflex,rsync"])
    assert exit_info.value.code == 2
    assert "unknown tool 'rsync'" in capsys.readouterr().err


def _liar(ctx: RunContext) -> list[str]:
    """A 'downloader' that writes wrong bytes to the first file and skips the others."""
    first = ctx.dest / ctx.files[0].path
    code = f"open({str(first)!r}, 'wb').write(b'x' * {ctx.files[0].size})"
    return [sys.executable, "-c", code]


def test_wrong_bytes_fail_the_bench() -> None:
    options = BenchOptions("tiny", files=3, size=1000, tools=())
    plan = BenchPlan(options, (Tool("liar", "liar", _liar, lambda: None),), ())
    report = run_bench(plan)
    assert not report.ok
    (run,) = report.results[0].runs
    assert run.measured.exit_code == 0
    assert run.bad_files == 3
    assert run.problems == (
        "000000.bin: sha256 mismatch",
        "000001.bin: missing",
        "000002.bin: missing",
    )
    text = render(report)
    assert "| liar | 0/1 | — | — | — | — |" in text
    assert "- liar run 1: exit 0, 3 bad files" in text


def test_keep_leaves_manifest_and_verified_files(tmp_path: Path) -> None:
    options = BenchOptions(
        "tiny", files=4, size=70_000, tools=("requests",), repeat=2, wan=True, keep=tmp_path / "k"
    )
    seen: list[tuple[str, int, bool]] = []
    report = run_bench(
        plan_bench(options), on_done=lambda tool, rep, run: seen.append((tool.key, rep, run.ok))
    )
    assert report.ok
    assert seen == [("requests", 0, True), ("requests", 1, True)]
    assert report.kept is not None and report.kept.parent == tmp_path / "k"
    lines = (report.kept / "manifest.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["path"] for r in records] == [f"00000{i}.bin" for i in range(4)]
    for rep in (1, 2):
        for record in records:
            data = (report.kept / f"requests-{rep}" / "dest" / record["path"]).read_bytes()
            assert len(data) == record["size"] == 70_000
            assert record["checksum"] == "1220" + hashlib.sha256(data).hexdigest()
    assert "WAN-like (each response capped at 25 MiB/s, 20 ms before it starts)" in render(report)
    assert "median of 2 runs per tool" in render(report)


def test_a_tool_named_twice_runs_once() -> None:
    plan = plan_bench(BenchOptions("small", files=1, size=1, tools=("bulkflex", "bulkflex")))
    assert [t.key for t in plan.tools] == ["bulkflex"]
    assert tool_by_key("curl").label == "curl --parallel 16"


def test_ctrl_c_stops_the_tool_and_the_server(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    cmd = [sys.executable, "-m", "bulkflex", "bench", "--workload", "large", "--wan"]
    cmd += ["--tools", "requests", "--no-progress", "--keep", str(keep)]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        for _ in range(600):  # until the requests loop has its input (at most 60 s)
            if list(keep.glob("bench-*/requests-1/work/requests.tsv")):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the bench never started the requests loop")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert err.endswith(
        "bulkflex bench: interrupted; the running tool and the server are stopped\n"
    )
    assert out == ""
    (manifest,) = keep.glob("bench-*/manifest.jsonl")
    url = json.loads(manifest.read_text().splitlines()[0])["url"]
    session = requests.Session()
    session.trust_env = False  # loopback, never a proxy
    with pytest.raises(requests.ConnectionError):
        session.get(url, timeout=10)
