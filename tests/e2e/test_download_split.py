"""End to end through the real CLI: large files split over several connections.

A file of at least ``--split-min`` whose first ``Range: bytes=0-`` request got a 206 is fetched
over up to ``--connections-per-file`` connections, each with a bounded range (``If-Range`` on
every one). The tests check, from the fault server's side: the bytes on disk, the ranges asked
for, how many requests were in flight at once, and what was fetched twice.

The engine never lets one connection take less than 4 MiB from another (``split_piece``), but
from a measured straggler, so a file splits in two from 8 MiB on, and a 16 MiB file in three or
four (the first connection's half splits again only if it has not started to write yet); the
tests use those sizes with ``--split-min 1M``. Servers are throttled (a pause after each 64 KiB
chunk) so that the ranges really run side by side and a kill falls inside the job.
"""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from clirun import (
    Result,
    assert_files,
    download_args,
    entry,
    files_under,
    kill,
    run_cli,
    start_cli,
    wait_until,
    write_manifest,
)
from faultserver import FaultServer, FileStats, KiB, MiB, RequestRecord, Rule

from bulkflex.core.ranges import Extents, Segment

PER_FILE = 4
#: The engine's ``split_piece`` (no CLI flag): a request for less comes from a straggler steal.
PIECE = 4 * MiB
WINDOW = 256 * KiB
#: Bytes the server may have written to a socket that the client never read when a request is
#: dropped or the client dies (a few throttled chunks; more if the client was descheduled).
IN_FLIGHT = 256 * KiB
SPLIT = ("--split-min", "1M", "--connections-per-file", str(PER_FILE))
FLUSH = ("--flush-bytes", str(WINDOW), "--flush-seconds", "30")
#: One CLI run of these tests takes a few seconds; a run this long is a hang.
TIMEOUT = 20.0
#: The cap tests finish in about a second; fail fast if they hang (the engine once deadlocked
#: there: connections that owned bytes queued for the slots held by idle connections).
CAP_TIMEOUT = 10.0


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(chunk_size=64 * KiB, chunk_delay=0.004) as running:
        yield running


def served(record: RequestRecord, size: int) -> Segment:
    """The bytes of the file a request was sent: from its range start, ``bytes_sent`` long."""
    start = 0
    if record.status == 206 and record.range is not None:
        start = int(record.range.removeprefix("bytes=").partition("-")[0])
    return Segment(start, min(size, start + record.bytes_sent))


def bounded(record: RequestRecord) -> tuple[int, int]:
    """``[start, end)`` of a ``Range: bytes=a-b`` header (fails for any other form)."""
    assert record.range is not None and record.range.startswith("bytes="), record.range
    first, _, last = record.range.removeprefix("bytes=").partition("-")
    assert first.isdigit() and last.isdigit(), record.range
    return int(first), int(last) + 1


def is_bounded(record: RequestRecord) -> bool:
    """A ``Range: bytes=a-b`` request (a split range, not a stream to the end of the file)."""
    return record.range is not None and not record.range.endswith("-")


def overlap(records: list[RequestRecord], size: int) -> int:
    """Bytes sent more than once over ``records`` (the sum minus the union)."""
    segments = [served(r, size) for r in records]
    return sum(s.length for s in segments) - Extents.of(segments).total


def request_log(stats: FileStats) -> str:
    return "\n".join(
        f"  {r.method} {r.range} -> {r.status} {r.bytes_sent} {r.ended}" for r in stats.requests
    )


def split_run(
    server: FaultServer, tmp_path: Path, size: int, *rules: Rule
) -> tuple[Result, FileStats, str]:
    """Serve ``a.bin`` (with ``rules``), download it split, return the CLI result, the
    server's stats for the file and its request log."""
    server.add_file("a.bin", size, *rules)
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin")])
    result = run_cli(*download_args(manifest, tmp_path / "d", *SPLIT, *FLUSH), timeout=TIMEOUT)
    stats = server.stats("a.bin")
    return result, stats, request_log(stats)


def durable_extents(dest: Path, path: str) -> Extents:
    """The byte ranges the state database records as durable for ``path``."""
    with sqlite3.connect(dest / ".bulkflex" / "state.sqlite") as db:
        row = db.execute("SELECT durable FROM entries WHERE path = ?", (path,)).fetchone()
    assert row is not None, f"{path} not in the state"
    return Extents.from_text(row[0])


def test_split_file_arrives_exact_over_concurrent_bounded_ranges(
    server: FaultServer, tmp_path: Path
) -> None:
    size = 16 * MiB
    result, stats, log = split_run(server, tmp_path, size)
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin")})

    gets = stats.gets
    # the first request asks for its own share only (a 206 proves ranges work)
    assert bounded(gets[0]) == (0, size // PER_FILE) and gets[0].status == 206, log
    assert gets[0].if_range is None, log  # nothing on disk yet: no version to hold on to
    rest = gets[1:]
    assert len(rest) >= 2, log
    for record in rest:
        start, end = bounded(record)
        assert 0 < start < end <= size, log
        assert record.status == 206, log
        assert record.if_range == server.etag("a.bin"), log
    # the ranges tile the file: together they cover it, and little is sent twice
    assert Extents.of(served(r, size) for r in gets).covers(size), log
    assert overlap(gets, size) <= len(gets) * IN_FLIGHT, log
    # shares are handed out before anything is cut short: no byte is sent twice
    assert sum(r.bytes_sent for r in gets) == size, log
    assert stats.max_connected >= 3, log  # side by side, not one after the other
    assert stats.max_connected <= PER_FILE, log


def test_connections_work_through_a_big_file_in_order_claim_by_claim(
    server: FaultServer, tmp_path: Path
) -> None:
    # two connections, a 16 MiB file: halves of 8 MiB each without --split-claim. With 4 MiB
    # claims they take the file in four claims from the start, so the in-order checksum keeps
    # up with the download instead of reading the second half back at the end
    size = 16 * MiB
    server.add_file("a.bin", size)
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin")])
    args = ("--split-min", "1M", "--connections-per-file", "2", "--split-claim", "4M", *FLUSH)
    result = run_cli(*download_args(manifest, tmp_path / "d", *args), timeout=TIMEOUT)
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin")})
    stats = server.stats("a.bin")
    log = request_log(stats)
    assert bounded(stats.gets[0]) == (0, 4 * MiB), log
    asked = sorted(bounded(r) for r in stats.gets)
    assert asked == [(0, 4 * MiB), (4 * MiB, 8 * MiB), (8 * MiB, 12 * MiB), (12 * MiB, size)], log
    assert sum(r.bytes_sent for r in stats.gets) == size, log
    assert stats.max_connected == 2, log


@pytest.mark.parametrize(
    ("hosts", "cap", "limit"),
    [
        (["127.0.0.1", "127.0.0.1"], ("--per-host", "3"), 3),
        (["127.0.0.1", "localhost"], ("--per-host", "2", "--connections", "3"), 3),
        (["127.0.0.1"], ("--per-host", "1"), 1),
    ],
    ids=["per-host", "global", "per-host-1"],
)
def test_connection_caps_hold_across_split_files(
    server: FaultServer, tmp_path: Path, hosts: list[str], cap: tuple[str, ...], limit: int
) -> None:
    """Each file wants several connections; together they get no more than the cap.

    ``localhost`` names the same server as a second host: the global cap (``--connections``)
    then binds before the per-host one. A cap of 1 leaves no room to split: the file must
    still finish, over its one connection.
    """
    names = [f"f{i}.bin" for i in range(len(hosts))]
    records = []
    for name, host in zip(names, hosts, strict=True):
        server.add_file(name, 8 * MiB)
        record = entry(server, name)
        record["url"] = record["url"].replace("127.0.0.1", host, 1)
        records.append(record)
    manifest = write_manifest(tmp_path / "m.jsonl", records)
    result = run_cli(
        *download_args(manifest, tmp_path / "d", *SPLIT, *FLUSH, *cap), timeout=CAP_TIMEOUT
    )
    log = "\n".join(f"{n}:\n{request_log(server.stats(n))}" for n in names)
    assert result.returncode == 0, result.describe() + "\n" + log
    assert_files(tmp_path / "d", {n: server.content(n) for n in names})
    assert server.max_connected <= limit, log
    assert server.max_connected == limit, log  # the cap was used, not just respected
    if limit > len(names):  # room for more connections than files: some file did split
        assert any(len(server.stats(n).gets) > 1 for n in names), log


@pytest.mark.parametrize("fault", ["ignore_range", "start", "total"])
def test_bad_answer_to_a_split_request_falls_back_to_one_stream(
    server: FaultServer,
    tmp_path: Path,
    fault: Literal["ignore_range", "start", "total"],
) -> None:
    """Every request after the first gets a 200, or a 206 for other bytes than asked.

    No checksum in the manifest: only the engine's check of each answer keeps a misplaced
    body off the disk.
    """
    size = 8 * MiB
    rule = (
        Rule(skip=1, times=None, ignore_range=True)
        if fault == "ignore_range"
        else Rule(skip=1, times=None, wrong_content_range=fault)
    )
    server.add_file("a.bin", size, rule)
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin", checksum=False)])
    result = run_cli(
        "-v", *download_args(manifest, tmp_path / "d", *SPLIT, *FLUSH), timeout=TIMEOUT
    )
    stats = server.stats("a.bin")
    log = request_log(stats)
    assert result.returncode == 0, result.describe() + "\n" + log
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin")})

    reasons = [line for line in result.stderr_lines if "split request answered badly" in line]
    assert reasons and "continuing on one connection" in reasons[0], result.describe()
    gets = stats.gets
    split_requests = [r for r in gets if is_bounded(r)]
    # only the split requests already sent when the first bad answer came back: no more
    assert 1 <= len(split_requests) <= PER_FILE - 1, log
    # then one stream, to the end of the file
    last = gets[-1]
    assert last.range is None or last.range.endswith("-"), log
    assert last.ended == "complete" and served(last, size).end == size, log
    assert len(gets) <= PER_FILE + 3, log  # a few requests, not a retry storm


def test_sigkill_mid_split_then_rerun_resumes_every_range(
    server: FaultServer, tmp_path: Path
) -> None:
    size = 16 * MiB
    server.add_file("a.bin", size, chunk_size=16 * KiB, chunk_delay=0.01)
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin")])
    dest = tmp_path / "d"
    args = download_args(manifest, dest, *SPLIT, *FLUSH)
    proc = start_cli(*args)
    wait_until(
        lambda: server.bytes_sent("a.bin") >= size // 2,
        timeout=TIMEOUT,
        what="half of the file to be served",
        proc=proc,
    )
    killed = kill(proc, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL, killed.describe()
    first = server.stats("a.bin")
    recorded = durable_extents(dest, "a.bin")
    first_served = Extents.of(served(r, size) for r in first.gets)
    assert len(recorded.segments) >= 2, recorded  # several ranges were under way
    allowed = PER_FILE * (WINDOW + IN_FLIGHT)  # one flush window per connection, and in flight
    assert first_served.total - recorded.total <= allowed, (
        f"served {first_served.total}, recorded {recorded.to_text()}\n{request_log(first)}"
    )

    server.set_throttle("a.bin", chunk_size=64 * KiB, chunk_delay=0.004)
    again = run_cli(*args, timeout=TIMEOUT)
    stats = server.stats("a.bin")
    log = request_log(stats)
    assert again.returncode == 0, again.describe() + "\n" + log
    assert_files(dest, {"a.bin": server.content("a.bin")})

    rerun = stats.gets[len(first.gets) :]
    starts = {served(r, size).start for r in rerun}
    gaps = list(recorded.gaps(size))
    for gap in gaps:  # every range resumes exactly where its durable bytes stop
        assert gap.start in starts, f"no request from {gap.start}; recorded {recorded}\n{log}"
    for record in rerun:  # and nothing recorded is asked for again
        start = served(record, size).start
        assert any(g.start <= start < g.end for g in gaps), f"{start} was durable\n{log}"
    assert all(r.if_range == server.etag("a.bin") for r in rerun), log
    second = Extents.of(served(r, size) for r in rerun)
    twice = (
        first_served.total
        + second.total
        - Extents.of([*first_served.segments, *second.segments]).total
    )
    assert twice <= allowed, f"re-fetched {twice} bytes (allowed {allowed})\n{log}"
    # the rerun fetched the gaps, plus at most what its dropped requests had in flight
    again_bytes = sum(served(r, size).length for r in rerun)
    assert again_bytes <= size - recorded.total + len(rerun) * IN_FLIGHT, log


def test_reset_on_one_connection_resumes_that_range(server: FaultServer, tmp_path: Path) -> None:
    size = 16 * MiB
    cut = 1 * MiB
    result, stats, log = split_run(server, tmp_path, size, Rule(skip=2, times=1, reset_after=cut))
    assert result.returncode == 0, result.describe() + "\n" + log
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin")})

    gets = stats.gets
    broken = gets[2]
    assert broken.ended == "reset" and broken.bytes_sent == cut, log
    stopped = served(broken, size).end
    later = [served(r, size).start for r in gets[3:]]
    # the rest of that range is asked for from where the reset cut it (bytes that arrived
    # before the reset are kept), not from the range's start
    assert any(stopped - IN_FLIGHT <= s <= stopped for s in later), log
    assert served(broken, size).start not in later, log
    assert overlap(gets, size) <= len(gets) * IN_FLIGHT, log


def test_checksum_of_a_split_file_is_verified(server: FaultServer, tmp_path: Path) -> None:
    size = 8 * MiB
    bad = 6 * MiB + 12345  # inside the second half: a split range
    result, stats, log = split_run(server, tmp_path, size, Rule(times=None, corrupt_at=bad))
    assert result.returncode == 1, result.describe() + "\n" + log
    assert len(result.failed_lines) == 1, result.describe()
    assert result.failed_lines[0].startswith("FAILED a.bin: "), result.describe()
    assert "checksum" in result.failed_lines[0].lower(), result.describe()
    assert "a.bin" not in files_under(tmp_path / "d"), files_under(tmp_path / "d").keys()
    covering = [r for r in stats.gets if is_bounded(r) and bounded(r)[0] <= bad < bounded(r)[1]]
    assert covering, f"the corrupt byte never came from a split range\n{log}"


def test_straggler_loses_its_tail_and_the_file_finishes(
    server: FaultServer, tmp_path: Path
) -> None:
    """The first connection crawls (its request, for the first share from byte 0, is throttled
    12 times more): an idle connection takes the back half of what it has left.

    Without a steal every bounded request asks for at least ``PIECE`` bytes (halves of runs of
    two pieces or more); the steal asks for half of the straggler's rest, which is less.
    """
    size = 16 * MiB
    result, stats, log = split_run(
        server, tmp_path, size, Rule(times=None, range_from=0, chunk_delay=0.05)
    )
    assert result.returncode == 0, result.describe() + "\n" + log
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin")})

    gets = stats.gets
    slow = gets[0]
    assert bounded(slow) == (0, size // PER_FILE), log
    assert all(is_bounded(r) for r in gets[1:]), log
    stolen = [r for r in gets[1:] if bounded(r)[1] - bounded(r)[0] < PIECE]
    assert stolen, f"no steal from the slow connection\n{log}"
    # the slow request stopped exactly where the (last) stolen part begins; those came in full
    assert slow.bytes_sent == min(bounded(r)[0] for r in stolen), log
    assert all(r.ended == "complete" and r.status == 206 for r in stolen), log
