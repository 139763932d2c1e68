# The Dask side of a cluster run: connect to a scheduler (or start a LocalCluster) and run the
# sharded job (``_job``) with Dask as its backend.
#
# Rules kept here:
# - A worker that dies takes its task with it; Dask reruns the task elsewhere (pure=False, the
#   scheduler's allowed-failures), and the rerun resumes from the shard's state file.
# - Shard messages travel on the worker's event topics; the token in a Dask Variable, the stop
#   signal in a Dask Event; all of them are removed when the job ends.
"""Run a manifest over a Dask cluster: :func:`download_on_cluster` and :func:`connect`."""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Hashable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dask.config
import distributed
from distributed.comm.addressing import get_address_host, parse_address

from bulkflex.auth import Credentials
from bulkflex.distributed._auth import TokenState
from bulkflex.distributed._job import (
    ClusterError,
    Outcome,
    run_job,
    split_evenly,
    with_loop_disk,
)
from bulkflex.distributed._shard import FORWARD_INTERVAL_S, JobNames, ShardTask
from bulkflex.distributed._worker import run_shard as _run_shard
from bulkflex.errors import UsageError
from bulkflex.transfer import DownloadOptions, Summary
from bulkflex.transfer import events as ev

__all__ = [
    "ClusterError",
    "ClusterUnreachable",
    "connect",
    "download_on_cluster",
    "split_evenly",
]

log = logging.getLogger(__name__)

_LOCAL = "local:"


class ClusterUnreachable(ClusterError):
    """The Dask scheduler did not answer; nothing was started."""


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Worker processes started in here ignore SIGINT (an ignored signal stays ignored across
    exec), so a Ctrl-C in the terminal reaches the client only, which stops the shards cleanly
    instead of the whole process group dying mid-write. Only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def connect(address: str, *, timeout_s: float = 5.0) -> Iterator[distributed.Client]:
    """A Dask client for ``address``: ``tcp://host:8786`` (any scheduler address Dask takes) or
    ``local:N`` (a LocalCluster of N worker processes, one thread each, closed on exit).

    Raises:
        UsageError: ``local:N`` with N not a positive whole number.
        ClusterUnreachable: the scheduler did not answer within ``timeout_s``.
    """
    if address.startswith(_LOCAL):
        text = address[len(_LOCAL) :]
        if not text.isdigit() or int(text) < 1:
            raise UsageError(f"--dask {address}: expected local:N with N a number of workers")
        # the workers' statistical profiler samples every thread 100 times a second: a few
        # percent of a core that the downloads want more than a flame graph
        with _sigint_ignored(), dask.config.set({"distributed.worker.profile.enabled": False}):
            cluster = distributed.LocalCluster(
                n_workers=int(text),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
        try:
            with distributed.Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = distributed.Client(address, timeout=timeout_s)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterUnreachable(
            f"cannot reach the Dask scheduler at {address} within {timeout_s:.0f} s "
            f"({type(exc).__name__}); nothing was started"
        ) from None
    try:
        yield client
    finally:
        client.close()


def _slots(client: distributed.Client, wait_s: float) -> int:
    """Tasks the cluster can run at once (worker threads); waits a little for a first worker."""
    nthreads = client.nthreads()
    if not nthreads:
        try:
            client.wait_for_workers(1, timeout=wait_s)
        except TimeoutError:
            raise ClusterError(
                f"the Dask cluster has no workers (waited {wait_s:.0f} s); nothing was started"
            ) from None
        nthreads = client.nthreads()
    return max(1, sum(int(n) for n in nthreads.values()))


def processes_per_host(nthreads: Mapping[str, int]) -> int:
    """The fewest worker processes any host runs, from ``Client.nthreads()`` (worker address ->
    threads); 1 when shards share a process (a worker that runs several tasks at once, or
    in-process workers), 0 with no worker yet."""
    hosts: Counter[str] = Counter()
    for address, threads in nthreads.items():
        scheme, _ = parse_address(address)
        if threads != 1 or scheme == "inproc":
            return 1
        hosts[get_address_host(address)] += 1
    return min(hosts.values(), default=0)


class _DaskBackend:
    """Shard tasks on the workers of ``client`` (a :class:`~bulkflex.distributed._job.Backend`)."""

    def __init__(self, client: distributed.Client) -> None:
        self.client = client
        self.names = JobNames(uuid.uuid4().hex)
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._stop = distributed.Event(self.names.stop, client=client)
        self._variable = distributed.Variable(self.names.token, client=client)
        self._running: dict[Hashable, distributed.Future[Any]] = {}

    @contextlib.contextmanager
    def subscribed(self) -> Iterator[_DaskBackend]:
        names, inbox = self.names, self._inbox
        self.client.subscribe_topic(names.progress_topic, lambda e: inbox.put(("progress", e[1])))
        self.client.subscribe_topic(names.auth_topic, lambda e: inbox.put(("auth", e[1])))
        try:
            yield self
        finally:
            self.client.unsubscribe_topic(names.progress_topic)
            self.client.unsubscribe_topic(names.auth_topic)
            with contextlib.suppress(Exception):
                self._variable.delete()
            with contextlib.suppress(Exception):
                self._stop.clear()

    def slots(self) -> int:
        return _slots(self.client, wait_s=60.0)

    def submit(self, task: ShardTask) -> Hashable:
        key = f"bulkflex-shard-{task.index}-{self.names.job}"
        self._running[key] = self.client.submit(_run_shard, task, key=key, pure=False)
        return key

    def widen(self, handle: Hashable, per_host: int, connections: int) -> None:
        """Not on a cluster: a shard keeps the share it started with. There are several shards
        per slot there (``SHARDS_PER_SLOT``), so the last ones running are short."""

    def wait(self, timeout: float) -> list[tuple[Hashable, Outcome]]:
        futures = list(self._running.values())
        if not futures:
            return []
        with contextlib.suppress(TimeoutError):
            distributed.wait(futures, timeout=timeout, return_when="FIRST_COMPLETED")
        done: list[tuple[Hashable, Outcome]] = []
        for key, future in list(self._running.items()):
            if not future.done():
                continue
            del self._running[key]
            outcome: Outcome
            try:
                outcome = future.result()
            except Exception as exc:  # a bug, or KilledWorker after many deaths
                outcome = exc
            finally:
                future.release()
            done.append((key, outcome))
        return done

    def messages(self) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        while True:
            try:
                kind, message = self._inbox.get_nowait()
            except queue.Empty:
                return out
            if isinstance(message, dict):
                out.append((kind, message))

    def publish(self, state: TokenState) -> None:
        self._variable.set(state)

    def stop(self) -> None:
        self._stop.set()

    def cancel(self, handles: list[Hashable]) -> None:
        self.client.cancel([self._running[h] for h in handles if h in self._running])

    def settle(self) -> None:
        time.sleep(FORWARD_INTERVAL_S)  # topic messages may trail the task's result


def download_on_cluster(
    manifest: str | Path,
    dest: str | Path,
    client: distributed.Client,
    options: DownloadOptions | None = None,
    *,
    credentials: Credentials | None = None,
    on_event: ev.EventCallback | None = None,
    stop: threading.Event | None = None,
    shards: int | None = None,
) -> Summary:
    """Download ``manifest`` into ``dest`` with the workers of ``client`` (blocking).

    ``dest`` must be the same path on the client and on every worker (a shared filesystem, or
    one machine). The manifest is split into K shards by a stable hash of each path; K is
    chosen on the first run (``shards``, or 4 per task that may run at once, fewer for small
    manifests) and reused by later runs. Shard ``i`` keeps its state in
    ``DEST/.bulkflex/shard-<i>.sqlite``; ``bulkflex status DEST`` adds them up.

    Args:
        client: a synchronous :class:`distributed.Client`; its workers need bulkflex installed.
        options: as for one machine; ``per_host`` and ``connections`` are caps for the whole
            cluster, split over the shards that run at once.
        credentials: the token holder (from the user's token options); it runs on the client
            and the workers borrow its token (see :mod:`bulkflex.distributed._auth`).
        on_event: called on the calling thread with engine events for the whole job: one
            ``Started``, ``Progress`` (path ``""``), per-file events, one ``Finished``.
        stop: when set, running shards save their progress and the job returns early with
            ``Summary.interrupted`` (as does Ctrl-C in the calling thread).
        shards: force K (the split changes: shards' old state is not reused, files already
            complete on disk are adopted by checksum).

    Returns:
        The combined :class:`~bulkflex.transfer.Summary` (``seconds`` is wall time).

    Raises:
        ManifestError: a malformed manifest (nothing was started).
        DestinationError: ``dest`` cannot be created.
        AuthError, DestinationError, StateError: a shard hit it; the others saved progress.
        ClusterError: a shard failed otherwise (e.g. it kept killing its worker).
    """
    backend = _DaskBackend(client)
    # as with --processes: several one-task workers on each host (local:N with N > 1) keep a
    # small file's disk work on their event loops; a cluster whose workers have not joined yet
    # keeps the disk threads
    options = with_loop_disk(options or DownloadOptions(), processes_per_host(client.nthreads()))
    with backend.subscribed():
        return run_job(
            backend,
            manifest,
            dest,
            options,
            credentials=credentials,
            on_event=on_event,
            stop=stop,
            shards=shards,
            where="on the cluster",
        )
