# What runs on a Dask worker: one shard = one task = one engine run with its own state file.
#
# Rules kept here:
# - A shard's state file is written by one process at a time: the task holds an exclusive
#   flock on DEST/.bulkflex/shard-<i>.lock for its whole run. A rerun of the task (Dask moved it
#   after a worker died) waits for the lock, which the kernel drops with the dead process; a
#   worker that lost the scheduler but still runs the old attempt keeps it, so the new attempt
#   waits instead of corrupting the shard.
# - Progress reaches the client as a few messages a second per shard (bytes summed, other
#   events as records), through the worker's event topic: never one message per chunk.
# - The task stops early, with every transfer's progress saved, when the job's stop Event is
#   set (client Ctrl-C) or Dask cancelled the task (the client went away).
"""The shard task: :func:`run_shard` (runs on a worker, returns the engine's Summary)."""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import distributed

from bulkflex.auth import HostScope
from bulkflex.core.paths import STATE_DIR
from bulkflex.distributed._auth import ClusterCredentials, TokenState
from bulkflex.distributed._shards import shard_state_name
from bulkflex.errors import BulkflexError, StateError
from bulkflex.transfer import DownloadOptions, Summary, download_async
from bulkflex.transfer import events as ev

__all__ = ["JobNames", "ShardFailure", "ShardTask", "run_shard"]

log = logging.getLogger(__name__)

#: Seconds between two progress messages of one shard.
FORWARD_INTERVAL_S = 0.25
#: Seconds between two looks at the stop Event and the token Variable.
WATCH_INTERVAL_S = 0.5


@dataclass(frozen=True, slots=True)
class JobNames:
    """Names of one job's Dask objects (unique per job, so nothing leaks into the next)."""

    job: str

    @property
    def stop(self) -> str:
        return f"bulkflex-stop-{self.job}"

    @property
    def token(self) -> str:
        return f"bulkflex-token-{self.job}"

    @property
    def progress_topic(self) -> str:
        return f"bulkflex-progress-{self.job}"

    @property
    def auth_topic(self) -> str:
        return f"bulkflex-auth-{self.job}"


@dataclass(frozen=True, slots=True)
class ShardTask:
    """Everything a worker needs for one shard. Paths are absolute, as the workers see them."""

    names: JobNames
    index: int
    manifest: str
    dest: str
    options: DownloadOptions
    #: token scope when the client holds credentials; None: requests go out without a token
    token_scope: HostScope | None
    #: how long a rerun waits for an older attempt of the same shard to let go of it
    lock_timeout_s: float = 120.0


@dataclass(frozen=True, slots=True)
class ShardFailure:
    """A BulkflexError raised in a shard, as plain values (some error classes do not pickle)."""

    index: int
    error_type: str
    exit_code: int
    message: str


class _ShardLock:
    """Exclusive flock on the shard's lock file, polled until ``timeout_s``."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._fd: int | None = None

    def __enter__(self) -> _ShardLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StateError(
                        f"{self.path.name}: another process still runs this shard after "
                        f"{self.timeout_s:.0f} s; stop it, then run the same command again"
                    ) from None
                time.sleep(0.2)
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


class _Forwarder:
    """The engine's ``on_event``: buffers events, sends them to the client a few times a second."""

    def __init__(self, worker: distributed.Worker, topic: str, index: int) -> None:
        self.worker = worker
        self.topic = topic
        self.index = index
        #: one id per attempt, so the client can tell a rerun from the attempt that died
        self.attempt = uuid.uuid4().hex
        self.bytes = 0
        self.records: list[list[Any]] = []

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.Progress):
            self.bytes += event.nbytes
        elif not isinstance(event, ev.Finished):
            self.records.append([type(event).__name__, dataclasses.asdict(event)])

    def flush(self) -> None:
        if not self.bytes and not self.records:
            return
        message = {
            "shard": self.index,
            "attempt": self.attempt,
            "bytes": self.bytes,
            "events": self.records,
        }
        self.bytes, self.records = 0, []
        self.worker.log_event(self.topic, message)  # thread-safe, never blocks

    async def run(self) -> None:
        while True:
            await anyio.sleep(FORWARD_INTERVAL_S)
            self.flush()


def run_shard(task: ShardTask) -> Summary | ShardFailure:
    """Download one shard on this worker (a Dask task; blocking).

    Returns the engine's :class:`~bulkflex.transfer.Summary`, or a :class:`ShardFailure` for a
    fatal BulkflexError (no token, destination full, unusable state): the client decides.
    """
    worker = distributed.get_worker()
    client = distributed.get_client()
    stop_event = distributed.Event(task.names.stop, client=client)
    variable = distributed.Variable(task.names.token, client=client)
    key = worker.get_current_task()
    lock_path = Path(task.dest) / STATE_DIR / f"shard-{task.index}.lock"
    try:
        with _ShardLock(lock_path, task.lock_timeout_s):
            return anyio.run(_main, task, worker, stop_event, variable, key)
    except BulkflexError as exc:
        return ShardFailure(task.index, type(exc).__name__, exc.exit_code, str(exc))


async def _main(
    task: ShardTask,
    worker: distributed.Worker,
    stop_event: distributed.Event,
    variable: distributed.Variable,
    key: Any,
) -> Summary:
    forwarder = _Forwarder(worker, task.names.progress_topic, task.index)
    credentials: ClusterCredentials | None = None
    if task.token_scope is not None:

        def read_state() -> TokenState:
            value = variable.get(timeout=30)
            return value if isinstance(value, dict) else {}

        def ask_refresh(generation: int, host: str) -> None:
            worker.log_event(task.names.auth_topic, {"generation": generation, "host": host})

        credentials = ClusterCredentials(task.token_scope, read_state, ask_refresh)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(forwarder.run)
        tg.start_soon(_watch, stop, stop_event, credentials, worker, key)
        try:
            summary = await download_async(
                task.manifest,
                task.dest,
                task.options,
                on_event=forwarder,
                credentials=credentials,
                stop=stop,
                state_name=shard_state_name(task.index),
            )
        finally:
            forwarder.flush()
            tg.cancel_scope.cancel()
    return summary


async def _watch(
    stop: anyio.Event,
    stop_event: distributed.Event,
    credentials: ClusterCredentials | None,
    worker: distributed.Worker,
    key: Any,
) -> None:
    """Stop on the job's stop Event or a cancelled task; keep the token in step with the client."""
    while not stop.is_set():
        await anyio.sleep(WATCH_INTERVAL_S)
        if await anyio.to_thread.run_sync(stop_event.is_set) or _cancelled(worker, key):
            log.info("shard asked to stop; saving progress")
            stop.set()
            return
        if credentials is not None:
            await credentials.sync()


def _cancelled(worker: distributed.Worker, key: Any) -> bool:
    """True when Dask cancelled this task (its client released it); best effort."""
    try:
        state = worker.state.tasks.get(key)
    except AttributeError:  # a Worker without the state machine API
        return False
    return state is not None and state.state == "cancelled"
