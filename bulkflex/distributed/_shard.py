# One shard = one engine run with its own state file, wherever it runs (a Dask worker, a
# process of this machine). The transport around it (how progress, tokens and the stop signal
# travel) is the caller's: it passes plain callables.
#
# Rules kept here:
# - A shard's state file is written by one process at a time: the run holds an exclusive
#   flock on DEST/.bulkflex/shard-<i>.lock. A rerun of the shard (moved after its process
#   died) waits for the lock, which the kernel drops with the dead process; a process that
#   still runs an old attempt keeps it, so the new attempt waits instead of corrupting the shard.
# - Progress leaves the shard as a few messages a second (bytes summed, other events as
#   records): never one message per chunk.
# - The shard stops early, with every transfer's progress saved, when ``should_stop`` says so.
"""The transport-neutral shard run: :class:`ShardTask` in, Summary or :class:`ShardFailure` out."""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from bulkflex.auth import HostScope
from bulkflex.distributed._auth import ClusterCredentials, TokenState
from bulkflex.distributed._shards import shard_lock_name, shard_state_name
from bulkflex.errors import BulkflexError, StateError
from bulkflex.state import ExclusiveLock, state_path
from bulkflex.transfer import DownloadOptions, Summary, download_async
from bulkflex.transfer import events as ev
from bulkflex.transfer.engine import first_error

__all__ = [
    "FORWARD_INTERVAL_S",
    "Forwarder",
    "JobNames",
    "ShardFailure",
    "ShardLink",
    "ShardTask",
    "run_shard_locked",
]

log = logging.getLogger(__name__)

#: Seconds between two progress messages of one shard.
FORWARD_INTERVAL_S = 0.25


@dataclass(frozen=True, slots=True)
class JobNames:
    """Names of one job's shared objects (unique per job, so nothing leaks into the next)."""

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
    #: token scope when the job holds credentials; None: requests go out without a token
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


@dataclass(frozen=True, slots=True)
class ShardLink:
    """How a running shard talks to its job; every callable may block briefly.

    Attributes:
        send_progress: takes one progress message (see :class:`Forwarder`).
        read_token: the job's current :data:`TokenState` (called in a thread).
        ask_refresh: "generation g was refused by host" (non-blocking).
        should_stop: True once the job asks the shard to save and return (called in a thread).
        read_caps: the ``(per_host, connections)`` the job last gave this shard, or None (no
            change since its task; a backend that never widens). Called on the event loop:
            it must not block.
        watch_s: seconds between two looks at ``should_stop``, the token and the caps.
    """

    send_progress: Callable[[dict[str, Any]], None]
    read_token: Callable[[], TokenState]
    ask_refresh: Callable[[int, str], None]
    should_stop: Callable[[], bool]
    read_caps: Callable[[], tuple[int, int] | None] = lambda: None
    watch_s: float = 0.5


class Forwarder:
    """The engine's ``on_event``: buffers events, sends them to the job a few times a second.

    A message is ``{"shard", "attempt", "bytes", "events": [[name, fields], ...]}``; ``attempt``
    is new for every run of the shard, so the job can tell a rerun from the attempt that died.
    """

    def __init__(self, send: Callable[[dict[str, Any]], None], index: int) -> None:
        self.send = send
        self.index = index
        self.attempt = uuid.uuid4().hex
        self.bytes = 0
        self.records: list[list[Any]] = []

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.Progress):
            self.bytes += event.nbytes
        elif not isinstance(event, ev.Finished):
            self.records.append([type(event).__name__, ev.event_fields(event)])

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
        self.send(message)

    async def run(self) -> None:
        while True:
            await anyio.sleep(FORWARD_INTERVAL_S)
            self.flush()


def run_shard_locked(
    task: ShardTask,
    link: ShardLink,
    *,
    backend: str = "asyncio",
    backend_options: dict[str, Any] | None = None,
) -> Summary | ShardFailure:
    """Run one shard under its lock on a new event loop (blocking).

    Returns the engine's :class:`~bulkflex.transfer.Summary`, or a :class:`ShardFailure` for a
    fatal BulkflexError (no token, destination full, unusable state): the job decides.
    """
    lock_path = state_path(task.dest, shard_lock_name(task.index))

    def busy(holder: str) -> StateError:
        return StateError(
            f"{lock_path.name}: another process ({holder or 'pid unknown'}) still runs this "
            f"shard after {task.lock_timeout_s:.0f} s; stop it, then run the same command again"
        )

    try:
        with ExclusiveLock(lock_path, busy, timeout_s=task.lock_timeout_s):
            return anyio.run(_main, task, link, backend=backend, backend_options=backend_options)
    except BulkflexError as exc:
        return ShardFailure(task.index, type(exc).__name__, exc.exit_code, str(exc))


async def _main(task: ShardTask, link: ShardLink) -> Summary:
    forwarder = Forwarder(link.send_progress, task.index)
    credentials: ClusterCredentials | None = None
    if task.token_scope is not None:
        credentials = ClusterCredentials(task.token_scope, link.read_token, link.ask_refresh)
    stop = anyio.Event()
    caps_in, caps_out = anyio.create_memory_object_stream[tuple[int, int]](math.inf)
    try:
        async with caps_in, caps_out, anyio.create_task_group() as tg:
            tg.start_soon(forwarder.run)
            tg.start_soon(_watch, stop, link, credentials, caps_in)
            try:
                summary = await download_async(
                    task.manifest,
                    task.dest,
                    task.options,
                    on_event=forwarder,
                    credentials=credentials,
                    stop=stop,
                    state_name=shard_state_name(task.index),
                    widen=caps_out,
                    lock=False,  # the shard lock guards this state file
                )
            finally:
                forwarder.flush()
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the engine's own error, not the group around it
        raise first_error(group) from None
    log.info(
        "shard %d: %d done, %d failed, %d pending in %.2f s",
        task.index,
        summary.files_done + summary.files_skipped,
        summary.files_failed,
        summary.files_pending,
        summary.seconds,
    )
    return summary


async def _watch(
    stop: anyio.Event,
    link: ShardLink,
    credentials: ClusterCredentials | None,
    caps: MemoryObjectSendStream[tuple[int, int]],
) -> None:
    """Stop when the job says so; keep the token in step with the job's; pass on wider caps."""
    given: tuple[int, int] | None = None
    while not stop.is_set():
        await anyio.sleep(link.watch_s)
        wanted = link.read_caps()
        if wanted is not None and wanted != given:
            given = wanted
            # the engine may be past its workers (its final commit): nobody reads any more
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                caps.send_nowait(wanted)
        if await anyio.to_thread.run_sync(link.should_stop):
            log.info("shard asked to stop; saving progress")
            stop.set()
            return
        if credentials is not None:
            await credentials.sync()
