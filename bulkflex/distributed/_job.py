# One sharded job, whatever runs the shards: split, hand out, watch, fold, combine.
#
# Shape of a job::
#
#   manifest ──split (stable hash)──> shard-0.jsonl ... shard-(K-1).jsonl  (DEST/.bulkflex/shards)
#   at most P shard tasks run at once (P = min(backend slots, per-host cap, K)); each gets one
#   share of the per-host cap and of the connection cap; a finished task hands its share to
#   the next shard, or, when no shard is left to start, to the tasks still running (so the last
#   shard does not crawl on its fraction of the connections). Shards send progress as
#   messages; the job turns them into one stream of engine events (one progress bar).
#
# A Backend runs the tasks: Dask workers (``_client``) or processes of this machine
# (``_processes``). This module never imports either.
#
# Rules kept here:
# - The per-host cap holds across the job: the shares of the tasks that may run at once add up
#   to the user's cap, and every engine keeps its own share.
# - Ctrl-C (or ``stop``) asks the running shards to save their progress and return; shards
#   not started are not started. A second Ctrl-C cancels at once.
# - A fatal error in one shard (no token, destination full) stops the job the same way and is
#   raised once the others have saved their progress: the one-machine semantics.
"""The backend-neutral job loop: :func:`run_job`, the :class:`Backend` it drives."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import anyio.from_thread

import bulkflex.errors
from bulkflex.auth import Credentials
from bulkflex.core.paths import STATE_DIR
from bulkflex.distributed._auth import TokenRelay, TokenState
from bulkflex.distributed._shard import JobNames, ShardFailure, ShardTask
from bulkflex.distributed._shards import (
    SHARDS_PER_SLOT,
    ShardInfo,
    ShardPlan,
    choose_shards,
    count_entries,
    read_plan,
    shard_state_name,
    split_manifest,
)
from bulkflex.errors import BulkflexError, DestinationError
from bulkflex.state import StateDB
from bulkflex.transfer import DownloadOptions, Summary
from bulkflex.transfer import events as ev
from bulkflex.transfer.engine import LOOP_DISK_MEAN_S

__all__ = [
    "STOP_GRACE_S",
    "Backend",
    "ClusterError",
    "Outcome",
    "run_job",
    "split_evenly",
    "with_loop_disk",
]

log = logging.getLogger(__name__)

#: How long running shards get to save their progress after a stop before they are cancelled.
STOP_GRACE_S = 60.0
#: Seconds the loop waits for a finished shard before it looks at messages again.
_TICK_S = 0.2

#: What a finished shard task gives back: the engine's summary, a fatal BulkflexError as
#: plain values, or the exception that killed the task (a bug, a dead worker).
Outcome = Summary | ShardFailure | BaseException


class ClusterError(BulkflexError):
    """A shard failed in a way the engine does not report per file (a bug, a worker process
    that died). Progress of every other shard is saved; the same command resumes."""

    exit_code = 1


class Backend(Protocol):
    """What runs shard tasks for :func:`run_job`. Every method is called from the job's thread.

    Messages are ``("progress", message)`` (a shard's forwarded events, see
    :class:`~bulkflex.distributed._shard.Forwarder`) and ``("auth", {"generation", "host"})``
    (a shard's token was refused).
    """

    names: JobNames

    def slots(self) -> int:
        """Shard tasks that can run at once."""
        ...

    def submit(self, task: ShardTask) -> Hashable:
        """Start ``task``; a handle for :meth:`wait` and :meth:`cancel`."""
        ...

    def widen(self, handle: Hashable, per_host: int, connections: int) -> None:
        """Raise the caps of a running task (a backend may ignore it)."""
        ...

    def wait(self, timeout: float) -> list[tuple[Hashable, Outcome]]:
        """Tasks that finished (waiting up to ``timeout`` for the first one)."""
        ...

    def messages(self) -> list[tuple[str, dict[str, Any]]]:
        """Messages that arrived from the shards since the last call."""
        ...

    def publish(self, state: TokenState) -> None:
        """Make ``state`` (the current token) visible to every shard, running or not."""
        ...

    def stop(self) -> None:
        """Ask every running shard to save its progress and return."""
        ...

    def cancel(self, handles: list[Hashable]) -> None:
        """Stop these tasks now (progress since their last flush is lost)."""
        ...

    def settle(self) -> None:
        """Wait for messages still on their way from finished shards (the job is ending)."""
        ...


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` shares that differ by at most one, largest first.

    Every share is at least 1 (so the sum exceeds ``total`` only when ``parts > total``; the
    caller keeps ``parts <= total`` to hold a cap).
    """
    if parts < 1:
        raise ValueError("parts must be at least 1")
    base, extra = divmod(total, parts)
    return [max(1, base + (1 if i < extra else 0)) for i in range(parts)]


def with_loop_disk(options: DownloadOptions, processes_per_host: int) -> DownloadOptions:
    """``options`` for shards on hosts that each run ``processes_per_host`` worker processes of
    one task at a time (the fewest over the hosts).

    With more than one, every core already runs a shard's event loop: a small file's disk work
    stays on that loop (``LoopDisk``), as a thread hop per file only adds CPU. With one, the
    disk threads put that work on another core. A choice the user made is kept.
    """
    if options.loop_disk_mean_s is None and processes_per_host > 1:
        return replace(options, loop_disk_mean_s=LOOP_DISK_MEAN_S)
    return options


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


def run_job(
    backend: Backend,
    manifest: str | Path,
    dest: str | Path,
    options: DownloadOptions,
    *,
    credentials: Credentials | None,
    on_event: ev.EventCallback | None,
    stop: Any | None,
    shards: int | None,
    where: str,
    shards_per_slot: int = SHARDS_PER_SLOT,
) -> Summary:
    """Download ``manifest`` into ``dest`` as shard tasks on ``backend`` (blocking).

    K is ``shards``, else the destination's recorded plan, else chosen from the manifest's
    size and the backend's slots. ``stop`` is anything with ``is_set()`` (a threading.Event).
    ``where`` names the backend in messages ("on the cluster", "in a worker process");
    ``shards_per_slot`` sets K for a new destination (more shards balance stragglers; each
    costs a start and a final sync).

    Raises:
        ManifestError, UsageError: the manifest cannot be split (nothing was started).
        DestinationError: ``dest`` cannot be created.
        AuthError, DestinationError, StateError: a shard hit it; the others saved progress.
        ClusterError: a shard failed otherwise.
    """
    started = time.monotonic()
    # read where the user said (errors name the manifest as given); the shards get absolute
    # paths, as the workers see them
    manifest_path = Path(manifest)
    state_dir = Path(dest) / STATE_DIR
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DestinationError(f"cannot create {state_dir}: {exc.strerror or exc}") from exc
    dest_path = Path(dest).resolve()
    slots = backend.slots()
    per_host = options.per_host
    k = shards or read_plan(dest_path)
    if k is None:
        k = choose_shards(
            count_entries(manifest_path), min(slots, per_host), per_slot=shards_per_slot
        )
    plan = split_manifest(manifest_path, dest_path, k)
    todo = deque(s for s in plan.shards if s.entries)
    parallel = max(1, min(slots, per_host, len(todo)))
    host_shares = split_evenly(per_host, parallel)
    connection_shares = split_evenly(max(options.connections, per_host), parallel)
    free = deque(range(parallel))
    log.info(
        "%d entries in %d shards; %d at once over %d slots; per-host shares %s",
        plan.entries,
        k,
        parallel,
        slots,
        host_shares,
    )

    progress = _JobProgress(on_event, plan, dest_path)
    summaries: list[Summary] = []
    fatal: BulkflexError | None = None
    stopping = False
    deadline = 0.0
    running: dict[Hashable, tuple[int, ShardInfo]] = {}
    #: (per_host, connections) each running task has now
    caps: dict[Hashable, tuple[int, int]] = {}

    def widen_running() -> None:
        """No shard is left to start: the running tasks share the whole caps between them."""
        handles = sorted(running, key=lambda h: running[h][0])
        hosts = split_evenly(per_host, len(handles))
        conns = split_evenly(max(options.connections, per_host), len(handles))
        for handle, host_share, conn_share in zip(handles, hosts, conns, strict=True):
            old = caps[handle]  # a cap is never lowered
            new = (max(host_share, old[0]), max(host_share, conn_share, old[1]))
            if new != old:
                caps[handle] = new
                backend.widen(handle, *new)

    def begin_stop() -> None:
        nonlocal stopping, deadline
        if not stopping:
            stopping = True
            deadline = time.monotonic() + STOP_GRACE_S
            backend.stop()

    def drain(relay: TokenRelay | None) -> None:
        for kind, message in backend.messages():
            if kind == "progress":
                progress.handle(message)
            elif kind == "auth" and relay is not None:
                relay.request(int(message.get("generation", 0)), str(message.get("host", "")))
        if relay is not None:
            relay.poll()

    def finished(handle: Hashable, outcome: Outcome) -> None:
        nonlocal fatal
        free.append(running.pop(handle)[0])
        caps.pop(handle, None)
        if isinstance(outcome, ShardFailure):
            fatal = fatal or _error_from(outcome)
            begin_stop()
        elif isinstance(outcome, Summary):
            summaries.append(outcome)
        else:  # a bug, or a worker that kept dying
            log.error("a shard failed %s: %r", where, outcome)
            fatal = fatal or ClusterError(
                f"a shard failed {where} ({type(outcome).__name__}: {outcome}); "
                "progress is saved, run the same command to resume"
            )
            begin_stop()

    with contextlib.ExitStack() as stack:
        relay: TokenRelay | None = None
        if credentials is not None:
            portal = stack.enter_context(anyio.from_thread.start_blocking_portal("asyncio"))
            relay = TokenRelay(credentials, portal, backend.publish)
            relay.start()
        progress.start()
        while True:
            try:
                while todo and free and not stopping:
                    shard, slot = todo.popleft(), free.popleft()
                    task = ShardTask(
                        names=backend.names,
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
                    handle = backend.submit(task)
                    running[handle] = (slot, shard)
                    caps[handle] = (task.options.per_host, task.options.connections)
                if not running:
                    break
                ended = backend.wait(_TICK_S)
                for handle, outcome in ended:
                    finished(handle, outcome)
                if ended and running and not todo and not stopping:
                    widen_running()
                drain(relay)
                if stop is not None and stop.is_set():
                    begin_stop()
                if stopping and running and time.monotonic() > deadline:
                    log.warning("shards did not stop within %.0f s; cancelling", STOP_GRACE_S)
                    backend.cancel(list(running))
                    break
            except KeyboardInterrupt:
                if stopping:
                    backend.cancel(list(running))
                    break
                begin_stop()
        # shards never started, or cancelled: their entries are pending
        unfinished = sum(s.entries for s in todo) + sum(s.entries for _, s in running.values())
        backend.settle()
        drain(relay)
    if fatal is not None:
        raise fatal
    summary = _combine(
        plan, summaries, time.monotonic() - started, stopped=stopping, unfinished=unfinished
    )
    progress.emit(ev.Finished.of(summary))
    return summary
