"""``bulkflex download --processes N`` end to end: real CLI processes, real worker processes,
real loopback servers, real signals.

The local multi-process mode needs no Dask, so this file lives with the other end-to-end tests
(tests/distributed/ is skipped as a whole where Dask is not installed).

What is checked: bytes on disk, exit codes, exact stderr lines, what the server counted (every
file fetched once, the per-host cap across processes), the destination's layout (shard state
files or state.sqlite), and that no worker process outlives its job, whether the job ends, is
interrupted (Ctrl-C to the process group, SIGTERM to the parent, a second Ctrl-C), or its parent
is SIGKILLed; that fatal errors (no token, full disk) and bad input exit as one process does; and
that tokens are read by the parent alone, once per expiry, and written nowhere.

Worker processes are found through /proc (Linux only, as the fork-based worker pool is): the
descendants of the CLI process, identified by pid and start time so a reused pid is never
mistaken for a worker. Each CLI that is signalled runs in its own session; whatever a test
leaves running (a worker that outlived its parent included) is killed when the test ends.

Four tests here first failed on real bugs of the worker pool (workers outliving a SIGKILLed
parent, fatal shard errors reported as crashes, error lines naming resolved paths); they pass
since those were fixed.

A shard plan needs at least 25 entries per shard (``MIN_ENTRIES_PER_SHARD``), so every job that
must really run on two workers has 50 entries or more.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from authserver import OFFLINE_TOKEN, AuthServer
from authserver import sha256_multihash as auth_multihash
from clirun import (
    Result,
    assert_files,
    assert_no_token_anywhere,
    command,
    download_args,
    finish,
    read_events,
    remount,
    run_cli,
    start_cli,
    tmpfs,
    wait_until,
    write_manifest,
)
from faultserver import FaultServer, KiB, Rule, sha256_multihash

from bulkflex.distributed._shards import shard_index

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="finds worker processes through /proc (Linux)"
)

STATE = ".bulkflex"


# -- processes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    """A process as /proc shows it: a pid is only the same process with the same start time."""

    pid: int
    started: int


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of ``pid``; None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces or parentheses itself
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (a CLI started in its own session, and its workers)."""
    found = []
    for item in Path("/proc").iterdir():
        if not item.name.isdigit():
            continue
        try:
            text = (item / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X") and int(fields[3]) == sid:
            found.append(int(item.name))
    return found


def alive(proc: Proc) -> bool:
    """True while the process runs (a zombie has ended: only its exit status is left)."""
    stat = _stat(proc.pid)
    return stat is not None and stat[2] == proc.started and stat[0] not in ("Z", "X")


def descendants(pid: int) -> list[Proc]:
    """Every live process below ``pid`` (children, grandchildren, ...)."""
    children: dict[int, list[Proc]] = {}
    for item in Path("/proc").iterdir():
        if not item.name.isdigit():
            continue
        stat = _stat(int(item.name))
        if stat is not None and stat[0] not in ("Z", "X"):
            children.setdefault(stat[1], []).append(Proc(int(item.name), stat[2]))
    found: list[Proc] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


def wait_gone(procs: Iterable[Proc], *, timeout: float, what: str) -> None:
    procs = list(procs)
    deadline = time.monotonic() + timeout
    while (left := [p for p in procs if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"{what}: {len(left)} worker process(es) still running: {left}"


class Jobs:
    """CLI processes started by a test, each in its own session (so a Ctrl-C can go to its
    whole process group, as a terminal sends it). At the end of the test every one still
    running, and every worker process seen under one, is killed."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []
        self.workers: list[Proc] = []

    def start(self, *args: str | os.PathLike[str]) -> subprocess.Popen[str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.lower().endswith("_proxy") and k != "COLUMNS"
        }
        env.update(PYTHONUNBUFFERED="1", NO_PROXY="*")
        proc = subprocess.Popen(
            command(*args),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.started.append(proc)
        return proc

    def workers_of(self, proc: subprocess.Popen[str], count: int) -> list[Proc]:
        """Wait (bounded) until ``proc`` has ``count`` worker processes; return them."""
        wait_until(
            lambda: len(descendants(proc.pid)) >= count,
            timeout=30,
            what=f"{count} worker processes",
            proc=proc,
        )
        found = descendants(proc.pid)
        self.workers += found
        return found

    def close(self) -> None:
        for worker in self.workers:
            if alive(worker):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
        for proc in self.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            # a worker left behind by a parent that has ended holds its stdout and stderr open
            for pid in session_members(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=30)


@pytest.fixture
def jobs() -> Iterator[Jobs]:
    running = Jobs()
    try:
        yield running
    finally:
        running.close()


def bulkflex_processes(mark: str) -> list[int]:
    """Pids of live ``python -m bulkflex`` processes whose command line mentions ``mark`` (a
    destination): the CLI and the workers it forked, which keep its command line."""
    found = []
    for item in Path("/proc").iterdir():
        if not item.name.isdigit():
            continue
        try:
            argv = (item / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        stat = _stat(int(item.name))
        if stat is None or stat[0] in ("Z", "X"):
            continue
        if b"bulkflex" in argv and os.fsencode(mark) in argv:
            found.append(int(item.name))
    return found


# -- jobs -----------------------------------------------------------------------------------


def file_size(i: int) -> int:
    """4 to 16 KiB, varied."""
    return 4096 + (i * 977) % 12289


def make_job(
    server: FaultServer,
    folder: Path,
    count: int,
    *,
    size: int | None = None,
    missing: Iterable[str] = (),
) -> tuple[Path, dict[str, bytes]]:
    """Serve ``count`` files (plus ``missing``: manifest entries the server does not have, so
    404) and write their manifest; returns it and {path: expected bytes} of the served ones."""
    records: list[dict[str, object]] = []
    expected: dict[str, bytes] = {}
    for i in range(count):
        file = f"f{i:04d}.bin"
        server.add_file(file, size or file_size(i))
        data = server.content(file)
        path = f"d{i % 5}/{file}"
        expected[path] = data
        records.append(
            {
                "url": server.url(file),
                "path": path,
                "size": len(data),
                "checksum": sha256_multihash(data),
            }
        )
    for file in missing:
        records.append({"url": server.url(file), "path": f"missing/{file}"})
    return write_manifest(folder / "manifest.jsonl", records), expected


#: connections per host and in all for the jobs that check how two workers share them
CONNECTIONS = 4


def two_worker_args(
    manifest: Path, dest: Path, *extra: str | os.PathLike[str]
) -> list[str | os.PathLike[str]]:
    """Download arguments for two worker processes sharing ``CONNECTIONS`` per host and in
    all (2 each while both run)."""
    return download_args(
        manifest,
        dest,
        "--processes",
        "2",
        "--connections",
        str(CONNECTIONS),
        "--per-host",
        str(CONNECTIONS),
        *extra,
    )


def shard_files(dest: Path) -> list[str]:
    return sorted(p.name for p in (dest / STATE).glob("shard-*.sqlite"))


def status(dest: Path) -> dict[str, Any]:
    """``bulkflex status DEST --json``: the counts added up over the shard state files."""
    result = run_cli("status", dest, "--json", timeout=30)
    assert result.returncode == 0, result.describe()
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def summary_line(result: Result) -> str:
    lines = [line for line in result.stdout.splitlines() if line.startswith("bulkflex: ")]
    assert len(lines) == 1, result.describe()
    return lines[0]


def shard_status(dest: Path, path: str) -> str:
    """The status of ``path`` in the one shard state file that lists it."""
    found = []
    for file in sorted((dest / STATE).glob("shard-*.sqlite")):
        db = sqlite3.connect(f"{file.as_uri()}?mode=ro", uri=True)
        try:
            found += [
                row[0] for row in db.execute("SELECT status FROM entries WHERE path = ?", (path,))
            ]
        finally:
            db.close()
    assert len(found) == 1, f"{path} is in {len(found)} shard state files"
    return str(found[0])


# -- a clean job ----------------------------------------------------------------------------


def test_three_processes_fetch_every_file_once_and_a_rerun_fetches_nothing(
    tmp_path: Path,
) -> None:
    with FaultServer() as server:
        manifest, expected = make_job(server, tmp_path, 120)
        dest = tmp_path / "dest"
        args = download_args(manifest, dest, "--processes", "3")

        result = run_cli(*args)
        assert result.returncode == 0, result.describe()
        assert_files(dest, expected)
        assert shard_files(dest) == ["shard-0.sqlite", "shard-1.sqlite", "shard-2.sqlite"]
        assert not (dest / STATE / "state.sqlite").exists()
        assert json.loads((dest / STATE / "shards" / "plan.json").read_text())["shards"] == 3
        line = summary_line(result)
        assert line.startswith("bulkflex: 120 files: 120 downloaded, 0 failed;"), line
        assert result.stderr_lines == [], result.describe()
        names = [p.rsplit("/", 1)[1] for p in expected]
        fetched = {n: len(server.stats(n).requests) for n in names}
        assert set(fetched.values()) == {1}, {n: c for n, c in fetched.items() if c != 1}
        assert server.total_requests == 120

        counts = status(dest)
        assert (counts["done"], counts["pending"], counts["failed"]) == (120, 0, 0), counts
        assert counts["done_bytes"] == sum(map(len, expected.values())), counts

        again = run_cli(*args)
        assert again.returncode == 0, again.describe()
        assert server.total_requests == 120, "the rerun made requests"
        line = summary_line(again)
        assert line.startswith("bulkflex: 120 files: 0 downloaded, 120 already complete"), line
        assert_files(dest, expected)


def test_per_host_cap_holds_across_worker_processes(tmp_path: Path) -> None:
    # 60 files of 8 KiB in 1 KiB chunks 20 ms apart: each request lasts about 0.14 s, so the
    # two workers' requests overlap for most of the job
    with FaultServer(chunk_size=1 * KiB, chunk_delay=0.02) as server:
        manifest, expected = make_job(server, tmp_path, 60, size=8 * KiB)
        dest = tmp_path / "dest"
        result = run_cli(*two_worker_args(manifest, dest))
        assert result.returncode == 0, result.describe()
        assert_files(dest, expected)
        assert len(shard_files(dest)) == 2
        assert server.max_concurrent <= 4, f"{server.max_concurrent} requests at once"
        # more than one worker's share (2) at once: both processes did download together
        assert server.max_concurrent > 2, f"only {server.max_concurrent} requests at once"


def test_a_worker_left_alone_takes_over_the_connections_of_the_one_that_finished(
    tmp_path: Path,
) -> None:
    # Shard 0's files are quick, shard 1's slow (8 KiB in 1 KiB chunks 40 ms apart: 0.3 s
    # each). Once shard 0 is done, shard 1 runs alone: it gets the whole per-host cap (4), not
    # its half (2), and the cap still holds.
    quick, slow = paths_of_shards(2, counts={0: 26, 1: 34})
    with FaultServer(chunk_size=1 * KiB) as server:
        records: list[dict[str, object]] = []
        expected: dict[str, bytes] = {}
        for path in quick + slow:
            name = path.replace("/", "-")
            if path in slow:
                server.add_file(name, 8 * KiB, chunk_delay=0.04)
            else:
                server.add_file(name, 4 * KiB)
            data = expected[path] = server.content(name)
            records.append(
                {
                    "url": server.url(name),
                    "path": path,
                    "size": len(data),
                    "checksum": sha256_multihash(data),
                }
            )
        manifest = write_manifest(tmp_path / "manifest.jsonl", records)
        dest = tmp_path / "dest"
        proc = start_cli(*two_worker_args(manifest, dest))
        quick_names = [p.replace("/", "-") for p in quick]
        wait_until(
            lambda: all(
                any(r.ended == "complete" for r in server.stats(n).requests) for n in quick_names
            ),
            timeout=60,
            what="shard 0's files served",
            proc=proc,
        )
        server.reset_peak()  # from here on, only shard 1 downloads
        result = finish(proc)
        assert result.returncode == 0, result.describe()
        assert_files(dest, expected)
        assert server.max_concurrent <= 4, f"{server.max_concurrent} requests at once"
        assert server.max_concurrent > 2, (
            f"shard 1 alone ran at most {server.max_concurrent} requests at once"
        )


def paths_of_shards(shards: int, counts: dict[int, int]) -> tuple[list[str], ...]:
    """Manifest paths that fall into each shard, ``counts[i]`` of them for shard ``i``."""
    found: dict[int, list[str]] = {i: [] for i in range(shards)}
    for n in range(100_000):
        path = f"d{n % 3}/g{n:05d}.bin"
        index = shard_index(path, shards)
        if len(found[index]) < counts.get(index, 0):
            found[index].append(path)
        if all(len(found[i]) >= counts.get(i, 0) for i in found):
            break
    return tuple(found[i] for i in range(shards))


# -- the layout of a destination sticks ----------------------------------------------------


def test_destination_started_in_one_process_resumes_in_one(tmp_path: Path) -> None:
    with FaultServer() as server:
        manifest, expected = make_job(server, tmp_path, 60)
        # one file answers 404 the first time: the first run leaves work for the second
        flaky = sorted(expected)[7]
        server.add_rule(flaky.rsplit("/", 1)[1], Rule(status=404, times=1))
        dest = tmp_path / "dest"

        first = run_cli(*download_args(manifest, dest))
        assert first.returncode == 1, first.describe()
        assert [line.split(":")[0] for line in first.failed_lines] == [f"FAILED {flaky}"]

        again = run_cli(*download_args(manifest, dest, "--processes", "2"))
        assert again.returncode == 0, again.describe()
        assert again.stderr_lines == [
            f"bulkflex: {dest} was started in one process; it resumes in one "
            "(--processes applies to a new destination)"
        ], again.describe()
        assert_files(dest, expected)
        assert (dest / STATE / "state.sqlite").exists()
        assert not (dest / STATE / "shards").exists()
        assert shard_files(dest) == []
        assert summary_line(again).startswith("bulkflex: 60 files: 1 downloaded, 59 already")


def test_sharded_destination_resumes_sharded_without_the_flag(tmp_path: Path) -> None:
    with FaultServer() as server:
        manifest, expected = make_job(server, tmp_path, 60)
        flaky = sorted(expected)[3]
        server.add_rule(flaky.rsplit("/", 1)[1], Rule(status=404, times=1))
        dest = tmp_path / "dest"

        first = run_cli(*download_args(manifest, dest, "--processes", "2"))
        assert first.returncode == 1, first.describe()
        assert [line.split(":")[0] for line in first.failed_lines] == [f"FAILED {flaky}"]
        assert shard_files(dest) == ["shard-0.sqlite", "shard-1.sqlite"]
        assert shard_status(dest, flaky) == "failed"

        again = run_cli(*download_args(manifest, dest))  # no --processes: 1
        assert again.returncode == 0, again.describe()
        assert again.stderr_lines == [], again.describe()
        assert_files(dest, expected)
        assert shard_status(dest, flaky) == "done"
        assert not (dest / STATE / "state.sqlite").exists()
        assert shard_files(dest) == ["shard-0.sqlite", "shard-1.sqlite"]
        assert summary_line(again).startswith("bulkflex: 60 files: 1 downloaded, 59 already")
        counts = status(dest)
        assert (counts["done"], counts["pending"], counts["failed"]) == (60, 0, 0), counts


# -- interruptions --------------------------------------------------------------------------

#: throttled job for the interruption tests: 80 files of 16 KiB in 2 KiB chunks 20 ms apart,
#: about 0.15 s a request, 4 at once: about 3 s in all
SLOW_FILES = 80
SLOW_SIZE = 16 * KiB
SLOW_TOTAL = SLOW_FILES * SLOW_SIZE


@pytest.fixture
def slow_server() -> Iterator[FaultServer]:
    with FaultServer(chunk_size=2 * KiB, chunk_delay=0.02) as running:
        yield running


def slow_args(
    manifest: Path, dest: Path, *extra: str | os.PathLike[str]
) -> list[str | os.PathLike[str]]:
    return two_worker_args(manifest, dest, "--flush-bytes", "4K", *extra)


def slow_job_under_way(
    server: FaultServer, folder: Path, jobs: Jobs
) -> tuple[Path, dict[str, bytes], Path, subprocess.Popen[str], list[Proc]]:
    """Start the slow job on two workers and return once 30% of its bytes are served:
    (manifest, expected files, destination, the CLI process, its workers)."""
    manifest, expected = make_job(server, folder, SLOW_FILES, size=SLOW_SIZE)
    dest = folder / "dest"
    proc = jobs.start(*slow_args(manifest, dest))
    workers = jobs.workers_of(proc, 2)
    wait_until(
        lambda: server.total_bytes_sent >= 0.3 * SLOW_TOTAL,
        timeout=30,
        what="30% of the job's bytes to be served",
        proc=proc,
    )
    return manifest, expected, dest, proc, workers


@pytest.mark.parametrize(
    ("sig", "to_group"),
    [(signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["ctrl-c-to-the-process-group", "sigterm-to-the-parent"],
)
def test_interrupt_saves_progress_stops_workers_and_rerun_finishes(
    slow_server: FaultServer, tmp_path: Path, jobs: Jobs, sig: int, to_group: bool
) -> None:
    manifest, expected, dest, proc, workers = slow_job_under_way(slow_server, tmp_path, jobs)
    if to_group:
        os.killpg(proc.pid, sig)  # as a terminal's Ctrl-C: the parent and every worker
    else:
        os.kill(proc.pid, sig)
    result = finish(proc, timeout=60)
    assert result.returncode == 130, result.describe()
    assert result.stderr_lines[-1] == (
        "bulkflex: interrupted; progress is saved, run the same command to finish"
    ), result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    wait_gone(workers, timeout=10, what="after the job was interrupted")
    assert bulkflex_processes(os.fspath(dest)) == []
    counts = status(dest)
    assert counts["done"] + counts["pending"] == SLOW_FILES, counts
    assert 0 < counts["done"] < SLOW_FILES, counts
    line = summary_line(result)
    assert f"{counts['done']} downloaded" in line and "pending" in line, line

    again = run_cli(*slow_args(manifest, dest))
    assert again.returncode == 0, again.describe()
    assert_files(dest, expected)
    assert f"{counts['done']} already complete" in summary_line(again)
    assert not (dest / STATE / "state.sqlite").exists()


def test_sigkill_of_the_parent_workers_save_and_exit_then_rerun_finishes(
    slow_server: FaultServer, tmp_path: Path, jobs: Jobs
) -> None:
    manifest, expected, dest, proc, workers = slow_job_under_way(slow_server, tmp_path, jobs)
    os.kill(proc.pid, signal.SIGKILL)  # the parent only: its workers see their pipes close
    proc.wait(timeout=30)
    wait_gone(workers, timeout=10, what="after their parent was SIGKILLed")
    # the workers held the parent's stdout and stderr: with them gone, the pipes close
    killed = finish(proc, timeout=30)
    assert killed.returncode == -signal.SIGKILL
    assert "Traceback" not in killed.stderr, killed.describe()
    served_at_kill = slow_server.total_bytes_sent

    again = run_cli(*slow_args(manifest, dest))
    assert again.returncode == 0, again.describe()
    assert_files(dest, expected)
    # The workers saved their progress before they left: at most the unflushed part of the
    # file on each connection is fetched again (a file is 16 KiB here), far below the job.
    refetched = slow_server.total_bytes_sent - SLOW_TOTAL
    assert refetched <= CONNECTIONS * SLOW_SIZE, (
        f"re-fetched {refetched} bytes; served when killed: {served_at_kill} of {SLOW_TOTAL}"
    )


def test_second_ctrl_c_cancels_and_rerun_finishes(
    slow_server: FaultServer, tmp_path: Path, jobs: Jobs
) -> None:
    manifest, expected, dest, proc, workers = slow_job_under_way(slow_server, tmp_path, jobs)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.05)  # two signals, not one: a signal still pending is not delivered twice
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    result = finish(proc, timeout=60)
    assert result.returncode == 130, result.describe()
    assert result.stderr_lines[-1] == (
        "bulkflex: interrupted; progress is saved, run the same command to finish"
    ), result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    wait_gone(workers, timeout=10, what="after a second Ctrl-C")
    assert bulkflex_processes(os.fspath(dest)) == []

    again = run_cli(*slow_args(manifest, dest))
    assert again.returncode == 0, again.describe()
    assert_files(dest, expected)


# -- failures -------------------------------------------------------------------------------


def test_missing_files_fail_each_on_its_own_line_and_the_rest_are_verified(
    tmp_path: Path,
) -> None:
    with FaultServer() as server:
        missing = [f"gone{i}.bin" for i in range(5)]
        manifest, expected = make_job(server, tmp_path, 60, missing=missing)
        dest = tmp_path / "dest"
        result = run_cli(*download_args(manifest, dest, "--processes", "2"))
        assert result.returncode == 1, result.describe()
        assert_files(dest, expected)
        failed = sorted(result.failed_lines)
        assert len(failed) == len(missing), result.describe()
        for line, name in zip(failed, sorted(missing), strict=True):
            assert line.startswith(f"FAILED missing/{name}: "), line
        assert summary_line(result).startswith("bulkflex: 65 files: 60 downloaded, 5 failed;")
        assert len(shard_files(dest)) == 2
        counts = status(dest)
        assert (counts["done"], counts["failed"]) == (60, 5), counts


def test_malformed_manifest_line_is_one_error_and_nothing_runs(tmp_path: Path) -> None:
    with FaultServer() as server:
        manifest, _ = make_job(server, tmp_path, 60)
        lines = manifest.read_text().splitlines()
        lines[2] = '{"url": "' + server.url("f0002.bin") + '", "path": '  # cut short
        manifest.write_text("\n".join(lines) + "\n")
        dest = tmp_path / "dest"
        result = run_cli(*download_args(manifest, dest, "--processes", "2"))
        assert result.returncode == 2, result.describe()
        assert len(result.stderr_lines) == 1, result.describe()
        assert result.stderr_lines[0].startswith(f"bulkflex: error: {manifest}:3: "), (
            result.describe()
        )
        assert server.total_requests == 0
        assert bulkflex_processes(os.fspath(dest)) == []
        assert shard_files(dest) == []


def test_shard_manifests_that_cannot_be_written_are_a_destination_error(tmp_path: Path) -> None:
    # a file where the shard folder must go: the destination's fault (exit 4), not the
    # manifest's (it used to say "cannot read MANIFEST", exit 2)
    with FaultServer() as server:
        manifest, _ = make_job(server, tmp_path, 60)
        dest = tmp_path / "dest"
        (dest / STATE).mkdir(parents=True)
        (dest / STATE / "shards").write_text("in the way\n")
        result = run_cli(*download_args(manifest, dest, "--processes", "2"))
        assert result.returncode == 4, result.describe()
        assert result.stderr_lines == [
            f"bulkflex: error: cannot write {(dest / STATE / 'shards').resolve()}: File exists"
        ], result.describe()
        assert server.total_requests == 0
        assert manifest.read_text().count("\n") == 60  # the manifest is untouched


def test_error_lines_name_paths_as_one_process_does(tmp_path: Path) -> None:
    """The same bad input gives the same error line whatever --processes says."""
    with FaultServer() as server:
        manifest, _ = make_job(server, tmp_path, 60)
        lines = manifest.read_text().splitlines()
        lines[2] = "{not json"
        manifest.write_text("\n".join(lines) + "\n")
        single = run_cli(*download_args(Path(manifest.name), Path("one")), cwd=tmp_path)
        several = run_cli(
            *download_args(Path(manifest.name), Path("two"), "--processes", "2"), cwd=tmp_path
        )
    assert single.returncode == several.returncode == 2, several.describe()
    assert single.stderr_lines[0].startswith(f"bulkflex: error: {manifest.name}:3: ")
    assert several.stderr_lines == single.stderr_lines, several.describe()


def auth_job(server: AuthServer, manifest: Path, folder: str, size: int) -> dict[str, bytes]:
    """Serve 60 files of ``size`` bytes from ``server`` (under ``folder/`` on disk) and write
    their manifest; returns {path: expected bytes}."""
    expected = {f"{folder}/f{i:03d}.bin": server.add_file(f"f{i:03d}.bin", size) for i in range(60)}
    write_manifest(
        manifest,
        [
            {
                "url": server.url(path.rsplit("/", 1)[1]),
                "path": path,
                "size": len(data),
                "checksum": auth_multihash(data),
            }
            for path, data in expected.items()
        ],
    )
    return expected


def test_no_token_exits_3_with_the_one_process_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAAP_TOKEN", raising=False)
    with AuthServer() as server:
        manifest = tmp_path / "m.jsonl"
        auth_job(server, manifest, "a", 4 * KiB)
        # stdin is /dev/null: no terminal, so no prompt; no token source
        single = run_cli(*download_args(manifest, tmp_path / "one"))
        several = run_cli(*download_args(manifest, tmp_path / "two", "--processes", "2"))
    assert single.returncode == 3, single.describe()
    assert len(single.stderr_lines) == 1, single.describe()
    assert several.returncode == 3, several.describe()
    assert several.stderr_lines == single.stderr_lines, several.describe()
    assert server.token_fetches == 0


def test_full_disk_exits_4_with_one_line_and_rerun_after_freeing_space_completes(
    tmp_path: Path,
) -> None:
    with FaultServer() as server, tmpfs(tmp_path / "small", "size=1m") as dest:
        manifest, expected = make_job(server, tmp_path, 60, size=32 * KiB)  # 1.9 MiB
        args = download_args(manifest, dest, "--processes", "2")
        full = run_cli(*args)
        assert full.returncode == 4, full.describe()
        assert len(full.stderr_lines) == 1, full.describe()
        assert full.stderr_lines[0].startswith("bulkflex: error: "), full.describe()
        assert bulkflex_processes(os.fspath(dest)) == []

        remount(dest, "size=16m")
        again = run_cli(*args)
        assert again.returncode == 0, again.describe()
        assert_files(dest, expected)
        assert len(shard_files(dest)) == 2


# -- tokens ---------------------------------------------------------------------------------

GET_TOKEN = """\
import os, sys, urllib.request

# which bulkflex process ran this command: the nearest `python -m bulkflex` above it
owner, pid = 0, os.getppid()
for _ in range(6):
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        break
    if argv[1:3] == [b"-m", b"bulkflex"]:
        owner = pid
        break
    pid = int(stat[stat.rindex(")") + 2 :].split()[1])
with open(sys.argv[2], "a") as runs:
    runs.write(f"{owner}\\n")
with urllib.request.urlopen(sys.argv[1], timeout=10) as answer:
    sys.stdout.write(answer.read().decode())
"""


def test_tokens_are_read_by_the_parent_once_per_expiry_and_never_written(
    tmp_path: Path, jobs: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAAP_TOKEN", raising=False)
    # a token is good for 10 requests; 4 connections over 2 workers: a fresh token outlives
    # the wave of 401s of the requests that were in flight under the old one
    with AuthServer(rotate_every=10, chunk_delay=0.002) as server:
        manifest = tmp_path / "m.jsonl"
        expected = auth_job(server, manifest, "t", 8 * KiB)
        script = tmp_path / "get_token.py"
        script.write_text(GET_TOKEN)
        runs = tmp_path / "runs.txt"
        token_command = shlex.join(
            [sys.executable, str(script), f"{server.base_url}/token", str(runs)]
        )
        dest = tmp_path / "dest"
        log = tmp_path / "events.jsonl"
        proc = jobs.start(
            "-vv",
            *two_worker_args(
                manifest,
                dest,
                "--token-command",
                token_command,
                "--log-json",
                log,
            ),
        )
        result = finish(proc, timeout=60)
        assert result.returncode == 0, result.describe()
        assert_files(dest, expected)
        assert len(shard_files(dest)) == 2
        assert server.rotations >= 2, f"only {server.rotations} rotations: test too easy"
        # one run at start, then one per expiry, however many workers were refused
        owners = runs.read_text().split()
        assert len(owners) == server.token_fetches == 1 + server.rotations, result.describe()
        # ... and always by the parent, never by a worker process
        assert set(owners) == {str(proc.pid)}, (owners, proc.pid)

        assert list((dest / STATE / "shards").glob("shard-*.jsonl")), "no shard manifests"
        assert_no_token_anywhere(server.issued, dest, result.stdout, result.stderr, log)


def test_oidc_refresh_token_grant_runs_once_per_expiry_for_all_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAAP_TOKEN", raising=False)
    monkeypatch.setenv("OFFLINE_FOR_TEST", OFFLINE_TOKEN)
    # the server stops taking a token after 10 requests; the refresh token then gets a new one
    with AuthServer(rotate_every=10, chunk_delay=0.002) as server:
        manifest = tmp_path / "m.jsonl"
        expected = auth_job(server, manifest, "o", 8 * KiB)
        dest = tmp_path / "dest"
        result = run_cli(
            "-vv",
            *two_worker_args(
                manifest,
                dest,
                *server.oidc_args("OFFLINE_FOR_TEST"),
            ),
            timeout=60,
        )
        assert result.returncode == 0, result.describe()
        assert_files(dest, expected)
        assert len(shard_files(dest)) == 2
        assert server.rotations >= 2, f"only {server.rotations} rotations: test too easy"
        # one grant at start, then one per expiry, however many workers were refused
        assert server.grants == 1 + server.rotations, result.describe()
        tokens = [*server.issued, OFFLINE_TOKEN]
        assert_no_token_anywhere(tokens, dest, result.stdout, result.stderr)


# -- the JSON log ---------------------------------------------------------------------------


def test_json_log_has_one_start_one_finish_and_one_verified_per_file(tmp_path: Path) -> None:
    with FaultServer() as server:
        manifest, expected = make_job(server, tmp_path, 60)
        dest = tmp_path / "dest"
        log = tmp_path / "events.jsonl"
        result = run_cli(*download_args(manifest, dest, "--processes", "2", "--log-json", log))
        assert result.returncode == 0, result.describe()
        assert_files(dest, expected)
        events = read_events(log)
        kinds = [e["event"] for e in events]
        assert kinds.count("start") == 1 and kinds[0] == "start", kinds
        assert kinds.count("finished") == 1 and kinds[-1] == "finished", kinds
        verified = sorted(e["path"] for e in events if e["event"] == "verified")
        assert verified == sorted(expected)
        assert "failed" not in kinds


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@pytest.mark.parametrize(("count", "sharded"), [(999, False), (1000, True)])
def test_without_the_flag_a_new_destination_of_1000_entries_gets_a_worker_per_core(
    tmp_path: Path, count: int, sharded: bool
) -> None:
    with FaultServer() as server:
        manifest, expected = make_job(server, tmp_path, count, size=64)
        dest = tmp_path / "dest"
        result = run_cli(*download_args(manifest, dest), timeout=120)
        assert result.returncode == 0, result.describe()
        assert f"{count} downloaded" in summary_line(result)
        assert all((dest / path).read_bytes() == data for path, data in expected.items())
        workers = min(_cores(), 4) if sharded else 1
        if workers > 1:
            assert shard_files(dest) == [f"shard-{i}.sqlite" for i in range(workers)]
            assert not (dest / STATE / "state.sqlite").exists()
        else:
            assert shard_files(dest) == []
            assert (dest / STATE / "state.sqlite").exists()
        assert server.total_requests == count
