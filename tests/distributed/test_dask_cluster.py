"""One manifest over a real Dask LocalCluster of 3 worker processes.

What must hold, as on one machine: bytes equal after a clean run and after a worker is
SIGKILLed mid-run; the split into shards is stable; the per-host cap holds across the cluster
(the server counts requests in flight); status adds the shards up after a partial run.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest
from dask_helpers import WORKERS, assert_bytes_equal, file_size, make_manifest

from bulkflex.cli._main import main as cli_main
from bulkflex.distributed import (
    combined_counts,
    download_on_cluster,
    read_plan,
    shard_index,
    shard_manifest_path,
    split_evenly,
    split_manifest,
)
from bulkflex.distributed._client import _DaskBackend, processes_per_host
from bulkflex.distributed._shard import ShardTask
from bulkflex.errors import ManifestError
from bulkflex.manifest import read_manifest
from bulkflex.transfer import DownloadOptions
from bulkflex.transfer import events as ev
from bulkflex.transfer.engine import LOOP_DISK_MEAN_S

distributed = pytest.importorskip("distributed")


class Recorder:
    """on_event for tests: counts events by type and sums Progress bytes."""

    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        self.progress = 0

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.Progress):
            self.progress += event.nbytes
        else:
            self.events.append(event)

    def of(self, kind: type[ev.Event]) -> list[ev.Event]:
        return [e for e in self.events if isinstance(e, kind)]


# -- the split ------------------------------------------------------------------------------


def test_shard_of_a_path_is_pinned() -> None:
    """blake2b of the UTF-8 path: the same on every run, machine and Python version."""
    assert [shard_index(p, 7) for p in ["a/b.nc", "FLX_L1C/flx_0001.nc", "x"]] == [6, 3, 5]
    assert shard_index("anything", 1) == 0


def test_split_is_stable_and_covers_every_path_once(tmp_path: Path, server: object) -> None:
    manifest, expected = make_manifest(server, tmp_path, 300)  # type: ignore[arg-type]
    first = split_manifest(manifest, tmp_path / "dest", 5)
    texts = [shard_manifest_path(tmp_path / "dest", i).read_bytes() for i in range(5)]
    again = split_manifest(manifest, tmp_path / "dest", 5)
    assert [shard_manifest_path(tmp_path / "dest", i).read_bytes() for i in range(5)] == texts
    assert first == again
    assert read_plan(tmp_path / "dest") == 5
    seen: list[str] = []
    for info in first.shards:
        paths = [entry.path for _, entry in read_manifest(info.manifest)]
        assert all(shard_index(p, 5) == info.index for p in paths)
        assert len(paths) == info.entries
        seen += paths
    assert sorted(seen) == sorted(expected)
    assert first.expected_bytes == sum(len(b) for b in expected.values())


def test_split_reports_a_duplicate_with_the_manifests_own_line_numbers(tmp_path: Path) -> None:
    line = json.dumps({"url": "http://127.0.0.1:9/a", "path": "same/a.bin"})
    other = json.dumps({"url": "http://127.0.0.1:9/b", "path": "b.bin"})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(f"{line}\n{other}\n{line}\n", encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        split_manifest(manifest, tmp_path / "dest", 4)
    assert str(caught.value) == f"{manifest}:3: duplicate path 'same/a.bin' (first on line 1)"
    assert read_plan(tmp_path / "dest") is None  # nothing recorded


def test_cap_shares_add_up_to_the_cap() -> None:
    assert split_evenly(8, 3) == [3, 3, 2]
    assert split_evenly(3, 3) == [1, 1, 1]
    assert sum(split_evenly(16, 5)) == 16


# -- on the cluster -------------------------------------------------------------------------


def test_2000_files_over_3_workers(tmp_path: Path, server, client) -> None:  # type: ignore[no-untyped-def]
    manifest, expected = make_manifest(server, tmp_path, 2000)
    dest = tmp_path / "dest"
    recorder = Recorder()
    summary = download_on_cluster(
        manifest, dest, client, DownloadOptions(per_host=6), on_event=recorder
    )
    assert summary.ok, summary
    assert summary.files_total == 2000
    assert summary.files_done + summary.files_skipped == 2000
    assert_bytes_equal(dest, expected)
    total = sum(len(b) for b in expected.values())
    assert summary.bytes_downloaded == total
    assert server.total_bytes_sent == total  # nothing fetched twice
    assert server.max_concurrent <= 6
    # one progress stream for the whole job
    assert len(recorder.of(ev.Started)) == 1 and len(recorder.of(ev.Finished)) == 1
    assert recorder.progress == total
    assert len(recorder.of(ev.Verified)) == 2000
    # more than one worker did the job: each shard task ran where Dask put it
    assert len({p.name for p in (dest / ".bulkflex").glob("shard-*.sqlite")}) == read_plan(dest)
    counts = combined_counts(dest)
    assert (counts.done, counts.pending, counts.failed) == (2000, 0, 0)
    assert counts.done_bytes == total
    # a rerun fetches nothing and finds the same shards
    again = download_on_cluster(manifest, dest, client, DownloadOptions(per_host=6))
    assert again.ok and again.files_skipped == 2000 and again.bytes_downloaded == 0
    assert server.total_bytes_sent == total


def test_processes_per_host_from_worker_addresses(client) -> None:  # type: ignore[no-untyped-def]
    # the test cluster: WORKERS processes of one thread on 127.0.0.1
    assert processes_per_host(client.nthreads()) == WORKERS
    two_hosts = {"tcp://10.0.0.1:1": 1, "tcp://10.0.0.1:2": 1, "tcp://10.0.0.2:1": 1}
    assert processes_per_host(two_hosts) == 1  # the fewest on any host
    assert processes_per_host({"tcp://[::1]:1": 1, "tcp://[::1]:2": 1}) == 2
    # several tasks in one worker share its process, as do in-process workers
    assert processes_per_host({"tcp://10.0.0.1:1": 2, "tcp://10.0.0.1:2": 1}) == 1
    assert processes_per_host({"inproc://10.0.0.1/7/1": 1, "inproc://10.0.0.1/7/2": 1}) == 1
    assert processes_per_host({}) == 0  # no worker yet


@pytest.mark.parametrize(("given", "sent"), [(None, LOOP_DISK_MEAN_S), (0.0, 0.0)])
def test_shards_on_several_workers_of_a_host_keep_small_files_disk_work_on_their_loop(
    tmp_path: Path,
    server,  # type: ignore[no-untyped-def]
    client,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    given: float | None,
    sent: float,
) -> None:
    """As with --processes: the cluster runs 3 one-thread worker processes on this host, so the
    shards get the loop's limit unless the options chose (0: always the disk threads)."""
    tasks: list[ShardTask] = []
    real_submit = _DaskBackend.submit

    def submit(self: _DaskBackend, task: ShardTask) -> object:
        tasks.append(task)
        return real_submit(self, task)

    monkeypatch.setattr(_DaskBackend, "submit", submit)
    manifest, expected = make_manifest(server, tmp_path, 60)
    options = DownloadOptions(per_host=6, loop_disk_mean_s=given)
    summary = download_on_cluster(manifest, tmp_path / "dest", client, options)
    assert summary.ok, summary
    assert_bytes_equal(tmp_path / "dest", expected)
    assert tasks and {task.options.loop_disk_mean_s for task in tasks} == {sent}


def test_per_host_cap_holds_across_workers(tmp_path: Path, server, client) -> None:  # type: ignore[no-untyped-def]
    """Throttled files keep requests open long enough to overlap on all workers."""
    manifest, expected = make_manifest(server, tmp_path, 90, chunk_size=2048, chunk_delay=0.01)
    dest = tmp_path / "dest"
    summary = download_on_cluster(manifest, dest, client, DownloadOptions(per_host=4))
    assert summary.ok, summary
    assert_bytes_equal(dest, expected)
    print(f"peak requests in flight: {server.max_concurrent} (cap 4 over {WORKERS} workers)")
    assert 1 <= server.max_concurrent <= 4


def test_worker_killed_mid_run_still_completes(tmp_path: Path, server, client) -> None:  # type: ignore[no-untyped-def]
    manifest, expected = make_manifest(server, tmp_path, 600, chunk_size=4096, chunk_delay=0.005)
    dest = tmp_path / "dest"
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    killed = threading.Event()
    recorder = Recorder()

    def on_event(event: ev.Event) -> None:
        recorder(event)
        if not killed.is_set() and len(recorder.of(ev.Verified)) >= 100:
            killed.set()
            os.kill(victim, signal.SIGKILL)

    per_host = 6
    window = 64 * 1024  # the flush window: small files verified but not yet synced as a group
    summary = download_on_cluster(
        manifest,
        dest,
        client,
        DownloadOptions(per_host=per_host, flush_bytes=window),
        on_event=on_event,
    )
    assert killed.is_set(), "the run ended before a worker could be killed"
    assert summary.files_failed == 0 and summary.files_pending == 0, summary
    assert_bytes_equal(dest, expected)
    counts = combined_counts(dest)
    assert (counts.done, counts.pending, counts.failed) == (600, 0, 0)
    # re-fetched: at most the files the dead worker's connections had in flight, plus one
    # flush window of files it had verified but not yet made durable
    total = sum(len(b) for b in expected.values())
    largest = max(file_size(i) for i in range(600))
    assert total <= server.total_bytes_sent <= total + per_host * largest + window
    client.wait_for_workers(WORKERS, timeout=60)  # the nanny brings the worker back


def test_status_after_a_partial_run(tmp_path: Path, server, client, capsys) -> None:  # type: ignore[no-untyped-def]
    manifest, expected = make_manifest(server, tmp_path, 400, chunk_size=4096, chunk_delay=0.005)
    dest = tmp_path / "dest"
    stop = threading.Event()
    recorder = Recorder()

    def on_event(event: ev.Event) -> None:
        recorder(event)
        if len(recorder.of(ev.Verified)) >= 60:
            stop.set()

    summary = download_on_cluster(
        manifest, dest, client, DownloadOptions(per_host=6), on_event=on_event, stop=stop
    )
    assert summary.interrupted and not summary.ok
    counts = combined_counts(dest)
    assert counts.done >= 60 and counts.failed == 0
    assert counts.done + counts.pending == 400
    assert counts.done == summary.files_done + summary.files_skipped
    assert counts.expected_bytes == sum(len(b) for b in expected.values())

    capsys.readouterr()
    assert cli_main(["status", str(dest), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["done"], shown["pending"], shown["failed"]) == (
        counts.done,
        counts.pending,
        0,
    )

    finished = download_on_cluster(manifest, dest, client, DownloadOptions(per_host=6))
    assert finished.ok, finished
    assert finished.files_skipped == counts.done
    assert_bytes_equal(dest, expected)
    assert combined_counts(dest).done == 400
