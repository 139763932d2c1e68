# The client side of a cluster run: split, submit, watch, aggregate.
#
# Shape of a job::
#
#   manifest ──split (stable hash)──> shard-0.jsonl ... shard-(K-1).jsonl  (DEST/.bulkflex/shards)
#   at most P shard tasks run at once (P = min(worker threads, per-host cap, K)); each gets one
#   share of the per-host cap and of the connection cap; a finished task hands its share to
#   the next shard. Workers send progress on an event topic; the client turns it into one
#   stream of engine events (one progress bar).
#
# Rules kept here:
# - The per-host cap holds across the cluster: the shares of the tasks that may run at once add
#   up to the user's cap, and every engine keeps its own share.
# - A worker that dies takes its task with it; Dask reruns the task elsewhere (pure=False, the
#   scheduler's allowed-failures), and the rerun resumes from the shard's state file.
# - Ctrl-C (or ``stop``) sets the job's stop Event: running shards save their progress and
#   return; shards not started are not submitted. A second Ctrl-C cancels at once.
# - A fatal error in one shard (no token, destination full) stops the job the same way and is
#   raised once the others have saved their progress: the one-machine semantics.
"""Run a manifest over a Dask cluster: :func:`download_on_cluster` and :func:`connect`."""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio.from_thread
import dask.config
import distributed

import bulkflex.errors
from bulkflex.auth import Credentials
from bulkflex.core.paths import STATE_DIR
from bulkflex.distributed._auth import TokenRelay
from bulkflex.distributed._shards import (
    ShardInfo,
    ShardPlan,
    choose_shards,
    count_entries,
    read_plan,
    shard_state_name,
    split_manifest,
)
from bulkflex.distributed._worker import FORWARD_INTERVAL_S, JobNames, ShardFailure, ShardTask
from bulkflex.distributed._worker import run_shard as _run_shard
from bulkflex.errors import BulkflexError, DestinationError, UsageError
from bulkflex.state import StateDB
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

#: How long running shards get to save their progress after a stop before they are cancelled.
STOP_GRACE_S = 60.0
_LOCAL = "local:"


class ClusterError(BulkflexError):
    """A shard failed in a way the engine does not report per file (a bug, a worker that kept
    dying). Progress of every other shard is saved; the same command resumes."""

    exit_code = 1


class ClusterUnreachable(ClusterError):
    """The Dask scheduler did not answer; nothing was started."""


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` shares that differ by at most one, largest first.

    Every share is at least 1 (so the sum exceeds ``total`` only when ``parts > total``; the
    caller keeps ``parts <= total`` to hold a cap).
    """
    if parts < 1:
        raise ValueError("parts must be at least 1")
    base, extra = divmod(total, parts)
    return [max(1, base + (1 if i < extra else 0)) for i in range(parts)]


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


def _event_from(name: str, fields: dict[str, Any]) -> ev.Event | None:
    cls = getattr(ev, name, None)
    if not (isinstance(cls, type) and issubclass(cls, ev.Event)):
        return None
    try:
        return cls(**fields)
    except TypeError:  # a worker with another bulkflex version
        return None


@dataclass(slots=True)
class _ShardProgress:
    #: bytes of the shard on disk when its current attempt started (done + durable partial)
    base: int = 0
    #: bytes reported since
    moved: int = 0
    attempt: str | None = None


class _JobProgress:
    """Folds the shards' messages into one stream of engine events for ``on_event``."""

    def __init__(self, on_event: ev.EventCallback | None, plan: ShardPlan, dest: Path) -> None:
        self.on_event = on_event
        self.plan = plan
        self.shards: dict[int, _ShardProgress] = {}
        self.done_files = 0
        self.partial = 0
        self.done_bytes = 0
        for shard in plan.shards:
            base, files, partial = _estimate(dest, shard)
            self.shards[shard.index] = _ShardProgress(base=base)
            self.done_files += files
            self.partial += partial
            self.done_bytes += base - partial

    def emit(self, event: ev.Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def start(self) -> None:
        self.emit(
            ev.Started(
                files=self.plan.entries,
                total_bytes=self.plan.expected_bytes,
                already_done=self.done_files,
                already_done_bytes=self.done_bytes,
                partial_bytes=self.partial,
            )
        )

    def handle(self, message: dict[str, Any]) -> None:
        shard = self.shards.get(int(message.get("shard", -1)))
        if shard is None:
            return
        attempt = str(message.get("attempt"))
        events = message.get("events") or []
        for name, fields in events:
            if name == "Started" and attempt != shard.attempt:
                # a new attempt: re-base on what is really on disk now (a dead attempt's bytes
                # that were never flushed are gone)
                now = int(fields.get("already_done_bytes") or 0) + int(
                    fields.get("partial_bytes") or 0
                )
                delta = now - (shard.base + shard.moved)
                shard.base, shard.moved, shard.attempt = now, 0, attempt
                if delta:
                    self.emit(ev.Progress("", delta))
        if attempt != shard.attempt:
            return  # a late message of an attempt that was replaced
        nbytes = int(message.get("bytes") or 0)
        if nbytes:
            shard.moved += nbytes
            self.emit(ev.Progress("", nbytes))
        for name, fields in events:
            if name in ("Started", "Finished"):
                continue
            event = _event_from(name, fields)
            if event is not None:
                self.emit(event)


def _estimate(dest: Path, shard: ShardInfo) -> tuple[int, int, int]:
    """(bytes on disk, files done, partial bytes) of a shard as its state file last knew them.

    An estimate for the first progress line; each shard's own start corrects it.
    """
    if shard.entries == 0 or not (dest / STATE_DIR / shard_state_name(shard.index)).exists():
        return 0, 0, 0
    try:
        state = StateDB(dest, create=False, name=shard_state_name(shard.index))
        try:
            counts = state.counts(failures_limit=0)
        finally:
            state.close()
    except BulkflexError:
        return 0, 0, 0
    return counts.done_bytes + counts.partial_bytes, counts.done, counts.partial_bytes


def _error_from(failure: ShardFailure) -> BulkflexError:
    """The shard's error as the same class where it can be rebuilt from its message."""
    cls = getattr(bulkflex.errors, failure.error_type, None)
    if isinstance(cls, type) and issubclass(cls, BulkflexError):
        try:
            error: BulkflexError = cls(failure.message)
        except TypeError:
            pass
        else:
            return error
    error = ClusterError(failure.message)
    error.exit_code = failure.exit_code
    return error


def _combine(
    plan: ShardPlan, summaries: list[Summary], seconds: float, *, stopped: bool, unfinished: int
) -> Summary:
    return Summary(
        files_total=plan.entries,
        files_done=sum(s.files_done for s in summaries),
        files_skipped=sum(s.files_skipped for s in summaries),
        files_failed=sum(s.files_failed for s in summaries),
        files_pending=sum(s.files_pending for s in summaries) + unfinished,
        bytes_downloaded=sum(s.bytes_downloaded for s in summaries),
        seconds=seconds,
        failures=tuple(f for s in summaries for f in s.failures),
        interrupted=stopped or any(s.interrupted for s in summaries),
    )


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
    options = options or DownloadOptions()
    started = time.monotonic()
    dest_path = Path(dest).resolve()
    manifest_path = Path(manifest).resolve()
    try:
        (dest_path / STATE_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DestinationError(f"cannot create {dest_path}: {exc.strerror or exc}") from exc
    slots = _slots(client, wait_s=60.0)
    per_host = options.per_host
    k = shards or read_plan(dest_path)
    if k is None:
        k = choose_shards(count_entries(manifest_path), min(slots, per_host))
    plan = split_manifest(manifest_path, dest_path, k)
    todo = deque(s for s in plan.shards if s.entries)
    parallel = max(1, min(slots, per_host, len(todo)))
    host_shares = split_evenly(per_host, parallel)
    connection_shares = split_evenly(max(options.connections, per_host), parallel)
    free = deque(range(parallel))
    log.info(
        "%d entries in %d shards; %d at once over %d worker threads; per-host shares %s",
        plan.entries,
        k,
        parallel,
        slots,
        host_shares,
    )

    names = JobNames(uuid.uuid4().hex)
    inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    progress = _JobProgress(on_event, plan, dest_path)
    stop_event = distributed.Event(names.stop, client=client)
    variable = distributed.Variable(names.token, client=client)
    summaries: list[Summary] = []
    fatal: BulkflexError | None = None
    stopping = False
    deadline = 0.0
    running: dict[distributed.Future[Any], tuple[int, ShardInfo]] = {}
    unfinished = 0

    def begin_stop() -> None:
        nonlocal stopping, deadline
        if not stopping:
            stopping = True
            deadline = time.monotonic() + STOP_GRACE_S
            stop_event.set()

    def drain(relay: TokenRelay | None) -> None:
        while True:
            try:
                topic, message = inbox.get_nowait()
            except queue.Empty:
                break
            if topic == names.progress_topic and isinstance(message, dict):
                progress.handle(message)
            elif topic == names.auth_topic and relay is not None and isinstance(message, dict):
                relay.request(int(message.get("generation", 0)), str(message.get("host", "")))
        if relay is not None:
            relay.poll()

    client.subscribe_topic(names.progress_topic, lambda e: inbox.put((names.progress_topic, e[1])))
    client.subscribe_topic(names.auth_topic, lambda e: inbox.put((names.auth_topic, e[1])))
    try:
        with contextlib.ExitStack() as stack:
            relay: TokenRelay | None = None
            if credentials is not None:
                portal = stack.enter_context(anyio.from_thread.start_blocking_portal("asyncio"))
                relay = TokenRelay(credentials, portal, variable.set)
                relay.start()
            progress.start()
            while True:
                try:
                    while todo and free and not stopping:
                        shard, slot = todo.popleft(), free.popleft()
                        task = ShardTask(
                            names=names,
                            index=shard.index,
                            manifest=str(shard.manifest),
                            dest=str(dest_path),
                            options=replace(
                                options,
                                per_host=host_shares[slot],
                                connections=max(host_shares[slot], connection_shares[slot]),
                            ),
                            token_scope=credentials.scope if credentials is not None else None,
                        )
                        future = client.submit(
                            _run_shard,
                            task,
                            key=f"bulkflex-shard-{shard.index}-{names.job}",
                            pure=False,
                        )
                        running[future] = (slot, shard)
                    if not running:
                        break
                    with contextlib.suppress(TimeoutError):
                        distributed.wait(list(running), timeout=0.2, return_when="FIRST_COMPLETED")
                    drain(relay)
                    for future in [f for f in running if f.done()]:
                        free.append(running.pop(future)[0])
                        try:
                            result = future.result()
                        except Exception as exc:  # a bug, or KilledWorker after many deaths
                            log.error("a shard failed on the cluster: %r", exc)
                            fatal = fatal or ClusterError(
                                f"a shard failed on the cluster ({type(exc).__name__}: {exc}); "
                                "progress is saved, run the same command to resume"
                            )
                            begin_stop()
                            continue
                        finally:
                            future.release()
                        if isinstance(result, ShardFailure):
                            fatal = fatal or _error_from(result)
                            begin_stop()
                        else:
                            summaries.append(result)
                    if stop is not None and stop.is_set():
                        begin_stop()
                    if stopping and running and time.monotonic() > deadline:
                        log.warning("shards did not stop within %.0f s; cancelling", STOP_GRACE_S)
                        client.cancel(list(running))
                        break
                except KeyboardInterrupt:
                    if stopping:
                        client.cancel(list(running))
                        break
                    begin_stop()
            # shards never submitted, or cancelled: their entries are pending
            unfinished = sum(s.entries for s in todo) + sum(s.entries for _, s in running.values())
            time.sleep(FORWARD_INTERVAL_S)  # last messages of the shards
            drain(relay)
    finally:
        client.unsubscribe_topic(names.progress_topic)
        client.unsubscribe_topic(names.auth_topic)
        with contextlib.suppress(Exception):
            variable.delete()
        with contextlib.suppress(Exception):
            stop_event.clear()
    if fatal is not None:
        raise fatal
    summary = _combine(
        plan, summaries, time.monotonic() - started, stopped=stopping, unfinished=unfinished
    )
    progress.emit(ev.Finished.of(summary))
    return summary
