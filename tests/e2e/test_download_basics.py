"""End to end through the real CLI: a clean job, reruns, bad manifests, status and the JSON log.

Each test starts the fault server (tests/faultserver.py) in a thread and runs
``python -m bulkflex`` as a subprocess; assertions are on bytes on disk, exit codes, the exact
error lines, and what the server saw.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import (
    assert_files,
    download_args,
    entry,
    files_under,
    finish,
    read_events,
    run_cli,
    start_cli,
    wait_until,
    write_manifest,
)
from faultserver import FaultServer, KiB, MiB, Rule


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


def test_downloads_every_file_byte_exact_then_a_rerun_fetches_nothing(
    server: FaultServer, tmp_path: Path
) -> None:
    sizes = {"a.bin": 3 * MiB, "b.bin": 1, "empty.bin": 0, "c.bin": 200 * KiB + 7}
    for name, size in sizes.items():
        server.add_file(name, size)
    server.add_file("bare.bin", 70 * KiB, etag=False, last_modified=False)
    manifest = write_manifest(
        tmp_path / "m.jsonl",
        [
            entry(server, "a.bin", "x/y/a.bin", collection="C1", roles=["data"]),
            entry(server, "b.bin"),
            entry(server, "empty.bin", "x/empty.bin"),
            entry(server, "c.bin", size=False),
            entry(server, "bare.bin", "z/bare.bin", size=False, checksum=False),
        ],
    )
    dest = tmp_path / "dest"
    result = run_cli(*download_args(manifest, dest))
    assert result.returncode == 0, result.describe()
    assert result.stderr == "", result.describe()
    expected = {
        "x/y/a.bin": server.content("a.bin"),
        "b.bin": server.content("b.bin"),
        "x/empty.bin": b"",
        "c.bin": server.content("c.bin"),
        "z/bare.bin": server.content("bare.bin"),
    }
    assert_files(dest, expected)
    names = [*sizes, "bare.bin"]
    for name in names:
        stats = server.stats(name)
        assert len(stats.gets) == 1, (name, [r.range for r in stats.requests])
        assert stats.gets[0].accept_encoding == "identity", name
        assert stats.bytes_sent == len(server.content(name)), name
    requests_before = server.total_requests

    again = run_cli(*download_args(manifest, dest))
    assert again.returncode == 0, again.describe()
    assert_files(dest, expected)
    assert [len(server.stats(n).gets) for n in names] == [1] * len(names), "data requested again"
    assert server.total_requests == requests_before, "a finished job made requests"


def test_per_host_cap_bounds_concurrent_requests(server: FaultServer, tmp_path: Path) -> None:
    names = [f"f{i}.bin" for i in range(6)]
    for name in names:
        server.add_file(name, 128 * KiB, chunk_size=16 * KiB, chunk_delay=0.01)
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, n) for n in names])
    result = run_cli(
        *download_args(manifest, tmp_path / "d", "--connections", "8", "--per-host", "2")
    )
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {n: server.content(n) for n in names})
    assert server.max_concurrent == 2


@pytest.mark.parametrize(
    ("bad_path", "problem"),
    [
        ("../escape.bin", "path escapes the destination with '..'"),
        ("a/../../escape.bin", "path escapes the destination with '..'"),
        ("/etc/escape.bin", "path is absolute"),
        ("C:/escape.bin", "path starts with a drive letter"),
        ("a\u0000b.bin", "path contains a NUL byte"),
        (".bulkflex/state.sqlite", "path is inside bulkflex's state folder .bulkflex/"),
    ],
)
def test_unsafe_path_stops_the_run_before_any_request(
    server: FaultServer, tmp_path: Path, bad_path: str, problem: str
) -> None:
    server.add_file("a.bin", 1000)
    bad = {"url": server.url("a.bin"), "path": bad_path, "size": 1000, "checksum": None}
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin"), "", bad])
    dest = tmp_path / "dest"
    result = run_cli(*download_args(manifest, dest))
    assert result.returncode == 2, result.describe()
    assert result.stderr_lines == [
        f"bulkflex: error: {manifest}:3: unsafe path {bad_path!r}: {problem}"
    ], result.describe()
    assert server.total_requests == 0
    assert not dest.exists() or files_under(dest) == {}
    assert not (tmp_path / "escape.bin").exists()


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"url": "http://127.0.0.1:9/a", "path": "a.bin"', "not valid JSON ("),
        ('{"path": "a.bin"}', "missing 'url'"),
        ('["http://127.0.0.1:9/a", "a.bin"]', "line is not a JSON object"),
        ('{"url": "http://127.0.0.1:9/a", "path": "a.bin", "checksum": "12"}', "bad checksum: "),
        ('{"url": "http://127.0.0.1:9/a", "path": "a.bin", "size": -1}', "'size' must be"),
        # the token scope's scan of the hosts used to end here in a traceback
        ('{"url": "http://[::1/a", "path": "a.bin"}', "'url' is not a valid URL (Invalid IPv6"),
        ('{"url": "ftp://127.0.0.1/a", "path": "a.bin"}', "'url' is not an absolute http(s)"),
    ],
    ids=[
        "truncated-json",
        "no-url",
        "not-object",
        "bad-multihash",
        "negative-size",
        "bad-ipv6-host",
        "ftp-url",
    ],
)
def test_malformed_manifest_line_stops_the_run_before_any_request(
    server: FaultServer, tmp_path: Path, line: str, problem: str
) -> None:
    server.add_file("ok.bin", 1000)
    manifest = write_manifest(
        tmp_path / "m.jsonl",
        ["# a comment", entry(server, "ok.bin"), line, entry(server, "ok.bin", "b")],
    )
    result = run_cli(*download_args(manifest, tmp_path / "dest"))
    assert result.returncode == 2, result.describe()
    assert len(result.stderr_lines) == 1, result.describe()
    assert result.stderr_lines[0].startswith(f"bulkflex: error: {manifest}:3: {problem}"), (
        result.describe()
    )
    assert server.total_requests == 0


@pytest.mark.parametrize("processes", [[], ["--processes", "1"], ["--processes", "2"]])
@pytest.mark.parametrize(("what", "reason"), [("missing", "No such file or directory"),
                                              ("folder", "Is a directory")])  # fmt: skip
def test_unreadable_manifest_is_one_line_and_exit_2(
    tmp_path: Path, processes: list[str], what: str, reason: str
) -> None:
    manifest = tmp_path / "m.jsonl"
    if what == "folder":
        manifest.mkdir()
    result = run_cli(*download_args(manifest, tmp_path / "dest"), *processes)
    assert result.returncode == 2, result.describe()
    assert result.stderr_lines == [f"bulkflex: error: cannot read {manifest}: {reason}"], (
        result.describe()
    )


def test_duplicate_path_stops_the_run_before_any_request(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("a.bin", 1000)
    server.add_file("b.bin", 1000)
    manifest = write_manifest(
        tmp_path / "m.jsonl",
        [
            entry(server, "a.bin", "same.bin"),
            entry(server, "b.bin"),
            entry(server, "b.bin", "./same.bin"),
        ],
    )
    result = run_cli(*download_args(manifest, tmp_path / "dest"))
    assert result.returncode == 2, result.describe()
    assert len(result.stderr_lines) == 1, result.describe()
    line = result.stderr_lines[0]
    assert line.startswith(f"bulkflex: error: {manifest}:3: "), line
    assert "duplicate" in line and "same.bin" in line, line
    assert server.total_requests == 0


@pytest.mark.parametrize("processes", [["--processes", "1"], ["--processes", "2"]])
@pytest.mark.parametrize("dest_was", ["missing", "empty-folder"])
def test_rejected_manifest_leaves_a_new_destination_as_it_was(
    server: FaultServer, tmp_path: Path, processes: list[str], dest_was: str
) -> None:
    # the state folder is made before the manifest streams into it: it used to stay behind
    server.add_file("a.bin", 1000)
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin"), "{not json"])
    dest = tmp_path / "new" / "deeper" / "dest"
    if dest_was == "empty-folder":
        dest.mkdir(parents=True)
    result = run_cli(*download_args(manifest, dest), *processes)
    assert result.returncode == 2, result.describe()
    assert result.stderr_lines[0].startswith(f"bulkflex: error: {manifest}:2: not valid JSON")
    if dest_was == "missing":
        assert not (tmp_path / "new").exists()
    else:
        assert list(dest.iterdir()) == []
    assert server.total_requests == 0
    fixed = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin")])
    result = run_cli(*download_args(fixed, dest), *processes)
    assert result.returncode == 0, result.describe()
    assert_files(dest, {"a.bin": server.content("a.bin")})


@pytest.mark.parametrize("processes", [["--processes", "1"], ["--processes", "2"]])
def test_rejected_manifest_changes_nothing_of_an_earlier_run(
    server: FaultServer, tmp_path: Path, processes: list[str]
) -> None:
    names = [f"f{i}.bin" for i in range(4)]
    for name in names:
        server.add_file(name, 3000)
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, name) for name in names])
    dest = tmp_path / "dest"
    assert run_cli(*download_args(manifest, dest), *processes).returncode == 0
    state = {p.relative_to(dest): p.stat().st_size for p in (dest / ".bulkflex").rglob("*")}
    before = server.total_requests
    # the next manifest drops two entries and breaks on its last line
    bad = write_manifest(
        tmp_path / "bad.jsonl", [entry(server, "f0.bin"), entry(server, "f1.bin"), "[]"]
    )
    result = run_cli(*download_args(bad, dest), *processes)
    assert result.returncode == 2, result.describe()
    assert result.stderr_lines[0].startswith(f"bulkflex: error: {bad}:3: "), result.describe()
    assert_files(dest, {name: server.content(name) for name in names})
    assert state.keys() <= {p.relative_to(dest) for p in (dest / ".bulkflex").rglob("*")}
    result = run_cli(*download_args(manifest, dest), *processes)
    assert result.returncode == 0, result.describe()
    assert "4 files: 0 downloaded, 4 already complete, 0 failed" in result.stdout
    assert server.total_requests == before


def test_manifest_of_comments_only_is_an_empty_job_and_the_next_one_loads(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("a.bin", 1000)
    dest = tmp_path / "dest"
    empty = write_manifest(tmp_path / "empty.jsonl", ["# nothing planned yet", ""])
    result = run_cli(*download_args(empty, dest))
    assert result.returncode == 0, result.describe()
    assert "0 files: 0 downloaded, 0 failed" in result.stdout, result.describe()
    assert server.total_requests == 0
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin")])
    result = run_cli(*download_args(manifest, dest))
    assert result.returncode == 0, result.describe()
    assert_files(dest, {"a.bin": server.content("a.bin")})


@pytest.mark.parametrize("status", [404, 410])
def test_not_found_fails_fast_with_one_request(
    server: FaultServer, tmp_path: Path, status: int
) -> None:
    server.add_file("gone.bin", 5000, Rule(status=status, times=None))
    server.add_file("ok.bin", 5000)
    manifest = write_manifest(
        tmp_path / "m.jsonl", [entry(server, "gone.bin", "sub/gone.bin"), entry(server, "ok.bin")]
    )
    result = run_cli(*download_args(manifest, tmp_path / "dest"))
    assert result.returncode == 1, result.describe()
    assert len(result.failed_lines) == 1, result.describe()
    assert result.failed_lines[0].startswith("FAILED sub/gone.bin: "), result.describe()
    assert str(status) in result.failed_lines[0]
    assert len(server.stats("gone.bin").requests) == 1
    assert_files(tmp_path / "dest", {"ok.bin": server.content("ok.bin")})


def test_status_shows_done_pending_failed_and_the_last_error(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("ok.bin", 10 * KiB)
    server.add_file("missing.bin", 10 * KiB, Rule(status=404, times=None))
    server.add_file("slow.bin", 512 * KiB, Rule(stall_after=64 * KiB, times=None))
    manifest = write_manifest(
        tmp_path / "m.jsonl",
        [entry(server, "ok.bin"), entry(server, "missing.bin"), entry(server, "slow.bin")],
    )
    dest = tmp_path / "dest"
    proc = start_cli(*download_args(manifest, dest, "--read-timeout", "30"))
    wait_until(
        lambda: (
            server.bytes_sent("slow.bin") >= 64 * KiB
            and len(server.stats("missing.bin").requests) == 1
            and server.bytes_sent("ok.bin") == 10 * KiB
        ),
        timeout=20,
        what="ok.bin sent, missing.bin answered and slow.bin stalled",
        proc=proc,
    )
    wait_until(lambda: (dest / "ok.bin").exists(), timeout=10, what="ok.bin in place", proc=proc)
    proc.send_signal(signal.SIGINT)
    interrupted = finish(proc, timeout=30)
    assert interrupted.returncode == 130, interrupted.describe()

    text = run_cli("status", dest)
    assert text.returncode == 0, text.describe()
    lines = text.stdout.splitlines()
    for word, count in [("done", 1), ("pending", 1), ("failed", 1)]:
        assert any(re.match(rf"\s*{word}\s+{count}\b", line) for line in lines), text.stdout
    failed = [line for line in lines if line.startswith("FAILED ")]
    assert len(failed) == 1 and failed[0].startswith("FAILED missing.bin: "), text.stdout
    assert "404" in failed[0]

    machine = run_cli("status", dest, "--json")
    assert machine.returncode == 0, machine.describe()
    report = json.loads(machine.stdout)
    assert (report["done"], report["pending"], report["failed"]) == (1, 1, 1), report
    assert [f["path"] for f in report["failures"]] == ["missing.bin"]
    assert "404" in report["failures"][0]["error"]


def test_log_json_records_start_retry_resumed_verified_failed(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("ok.bin", 20 * KiB)
    server.add_file("flaky.bin", 600 * KiB, Rule(reset_after=200 * KiB))
    server.add_file("missing.bin", 100, Rule(status=404, times=None))
    manifest = write_manifest(
        tmp_path / "m.jsonl",
        [entry(server, "ok.bin"), entry(server, "flaky.bin"), entry(server, "missing.bin")],
    )
    log = tmp_path / "events.jsonl"
    result = run_cli(*download_args(manifest, tmp_path / "dest", "--log-json", log))
    assert result.returncode == 1, result.describe()
    events = read_events(log)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start", kinds
    assert {"start", "retry", "resumed", "verified", "failed"} <= set(kinds), kinds

    def of(kind: str) -> list[dict[str, object]]:
        return [e for e in events if e["event"] == kind]

    assert sorted(str(e["path"]) for e in of("verified")) == ["flaky.bin", "ok.bin"]
    assert [e["path"] for e in of("retry")] == ["flaky.bin"]
    resumed = of("resumed")
    assert [e["path"] for e in resumed] == ["flaky.bin"]
    assert resumed[0]["offset"] == 200 * KiB
    assert [(e["path"], e["kind"]) for e in of("failed")] == [("missing.bin", "not-found")]
    assert all(isinstance(e.get("time"), float | int) for e in events)
