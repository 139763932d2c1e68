"""Where a small file's disk hop runs (``LoopDisk``): on the event loop while the disk answers
fast, in the disk threads otherwise, and after the first slow stretch for the rest of the run.

The rules are checked on ``LoopDisk`` itself, with a clock the test moves. The engine is then
run against the fault server on real files, recording the thread each ``PartFile.finish`` ran
in (the real method still does the work): the bytes on disk are checked every time.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultserver import FaultServer, KiB, MiB, sha256_multihash

from bulkflex.distributed._job import with_loop_disk
from bulkflex.transfer import DownloadOptions, download_async
from bulkflex.transfer.engine import LOOP_DISK_MEAN_S, LoopDisk
from bulkflex.transfer.files import PartFile

ENGINE_LOG = "bulkflex.transfer.engine"
SLOW_LINE = "goes to threads for the rest of the run"


class Clocks:
    """Wall and CPU time that the test advances."""

    def __init__(self) -> None:
        self.wall = 100.0
        self.cpu = 10.0

    def __call__(self) -> tuple[float, float]:
        return self.wall, self.cpu

    def spend(self, wall: float, cpu_share: float) -> None:
        self.wall += wall
        self.cpu += wall * cpu_share


def test_hops_of_a_local_disk_stay_on_the_loop() -> None:
    disk = LoopDisk(LOOP_DISK_MEAN_S)
    for seconds in [0.0004, 0.0005, 0.0017, 0.0004] * 500:  # p50 and p99 measured on ext4
        disk.record(seconds)
    assert disk.on_loop


def test_a_slow_mean_moves_the_hops_to_threads_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=ENGINE_LOG)
    disk = LoopDisk(LOOP_DISK_MEAN_S)
    disk.record(0.004)  # one hop at twice the limit is not a slow disk yet
    assert disk.on_loop
    for _ in range(40):
        disk.record(0.004)
    assert not disk.on_loop
    lines = [r.getMessage() for r in caplog.records if SLOW_LINE in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("the destination's disk is slow (a small file's hop took 4.0 ms")


def test_one_stalled_hop_moves_the_hops_to_threads_at_once() -> None:
    disk = LoopDisk(LOOP_DISK_MEAN_S)
    for _ in range(100):
        disk.record(0.0005)
    disk.record(0.010)  # a journal commit's wait: not yet
    assert disk.on_loop
    disk.record(0.040)  # a network file system's round trips, a disk that stalls
    assert not disk.on_loop


def test_a_zero_limit_never_uses_the_loop() -> None:
    assert not LoopDisk(0.0).on_loop


def test_worker_processes_put_the_hop_on_their_loops_unless_the_options_chose() -> None:
    """The rule of --processes and of Dask hosts: one loop per core from two workers up."""
    default = DownloadOptions()
    assert with_loop_disk(default, 1).loop_disk_mean_s is None  # one process: disk threads
    assert with_loop_disk(default, 0).loop_disk_mean_s is None
    assert with_loop_disk(default, 2).loop_disk_mean_s == LOOP_DISK_MEAN_S
    chosen = DownloadOptions(loop_disk_mean_s=0.0)  # always threads, as the user said
    assert with_loop_disk(chosen, 4).loop_disk_mean_s == 0.0
    assert with_loop_disk(DownloadOptions(loop_disk_mean_s=0.01), 1).loop_disk_mean_s == 0.01


def test_busy_follows_the_process_cpu_share_over_the_last_64_hops() -> None:
    clocks = Clocks()
    disk = LoopDisk(LOOP_DISK_MEAN_S, clocks=clocks)
    assert not disk.busy  # nothing known yet: the waiting request goes first
    before = False
    for share, busy in [(0.9, True), (0.7, True), (0.4, False), (1.0, True), (0.1, False)]:
        for _ in range(63):
            clocks.spend(0.001, share)
            disk.record(0.0005)
            assert disk.busy is before  # looked at once per 64 hops, not in between
        clocks.spend(0.001, share)
        disk.record(0.0005)
        assert disk.busy is busy, share
        before = busy


# -- the engine, on real files ---------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


@pytest.fixture
def finish_threads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(file, thread name) of every ``PartFile.finish``, in order; the real method runs."""
    calls: list[tuple[str, str]] = []
    real = PartFile.finish

    def record(self: PartFile, *args: object, **kwargs: object) -> object:
        calls.append((self.rel_path, threading.current_thread().name))
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(PartFile, "finish", record)
    return calls


def write_job(server: FaultServer, tmp_path: Path, sizes: dict[str, int]) -> Path:
    lines = []
    for name, size in sizes.items():
        server.add_file(name, size)
        data = server.content(name)
        checksum = sha256_multihash(data)
        record = {"url": server.url(name), "path": name, "size": size, "checksum": checksum}
        lines.append(json.dumps(record) + "\n")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(lines))
    return manifest


def assert_bytes(server: FaultServer, dest: Path, names: list[str]) -> None:
    for name in names:
        assert (dest / name).read_bytes() == server.content(name), name
    assert not list(dest.rglob("*.part"))


SIZES = {**{f"s{i:02d}.bin": 16 * KiB + i for i in range(24)}, "big.bin": 3 * MiB}


@pytest.mark.anyio
async def test_small_files_finish_on_the_loop_and_a_large_one_in_a_disk_thread(
    server: FaultServer, tmp_path: Path, finish_threads: list[tuple[str, str]]
) -> None:
    manifest = write_job(server, tmp_path, SIZES)
    options = DownloadOptions(connections=4, per_host=4, loop_disk_mean_s=1.0)
    summary = await download_async(manifest, tmp_path / "d", options)
    assert summary.ok and summary.files_done == len(SIZES)
    assert_bytes(server, tmp_path / "d", list(SIZES))
    loop_thread = threading.current_thread().name
    where = dict(finish_threads)
    assert len(finish_threads) == len(SIZES)
    assert where.pop("big.bin").startswith("bulkflex-disk")
    assert set(where.values()) == {loop_thread}


@pytest.mark.anyio
async def test_after_a_slow_hop_every_later_small_file_finishes_in_a_disk_thread(
    server: FaultServer,
    tmp_path: Path,
    finish_threads: list[tuple[str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A limit no real hop can meet stands in for a slow disk: the first hop runs on the loop,
    is found slow, and the rest go to the threads; the run logs it once and ends complete."""
    caplog.set_level(logging.INFO, logger=ENGINE_LOG)
    manifest = write_job(server, tmp_path, SIZES)
    options = DownloadOptions(connections=4, per_host=4, loop_disk_mean_s=1e-9)
    summary = await download_async(manifest, tmp_path / "d", options)
    assert summary.ok and summary.files_done == len(SIZES)
    assert_bytes(server, tmp_path / "d", list(SIZES))
    loop_thread = threading.current_thread().name
    small = [thread for name, thread in finish_threads if name != "big.bin"]
    assert small[0] == loop_thread
    assert all(thread.startswith("bulkflex-disk") for thread in small[1:]), small
    assert sum(SLOW_LINE in r.getMessage() for r in caplog.records) == 1


@pytest.mark.anyio
async def test_a_run_in_one_process_keeps_its_disk_work_in_threads_by_default(
    server: FaultServer, tmp_path: Path, finish_threads: list[tuple[str, str]]
) -> None:
    manifest = write_job(server, tmp_path, SIZES)
    summary = await download_async(manifest, tmp_path / "d", DownloadOptions())
    assert summary.ok
    assert_bytes(server, tmp_path / "d", list(SIZES))
    assert all(thread.startswith("bulkflex-disk") for _, thread in finish_threads)
