# Shards over worker processes of this machine: for jobs where one event loop, one core, is the
# limit (thousands of small files: per-file work is Python; or fast links that cost CPU per
# byte). The same sharded job as on a Dask cluster (``_job``), with a pool of processes as
# its backend and pipes instead of a scheduler: no start-up cost beyond a fork.
#
# Pipe protocol (pickled tuples; one duplex pipe per worker):
#   job -> worker: ("task", ShardTask) | ("token", TokenState) | ("stop",) | ("exit",)
#   worker -> job: ("progress", message) | ("auth", {"generation", "host"})
#                  | ("result", Summary | ShardFailure) | ("crash", "Type: message")
#
# Rules kept here:
# - Workers ignore SIGINT: a Ctrl-C in the terminal reaches the whole process group, and the
#   job (the parent) alone decides: it asks every shard to save and return. SIGTERM to a worker
#   does the same for that worker.
# - A worker whose parent is gone (SIGKILL, crash) sees its pipe close, saves its progress and
#   exits: no orphan keeps downloading into a destination nobody watches.
# - Tokens never leave the parent's sources: workers get the current token over their pipe
#   (as Dask workers get it from a Variable), never read files, commands or prompts.
# - Workers are forked when the calling process has no other thread (the CLI: nothing to
#   copy but the imports); otherwise they come from a fork server, as forking a threaded
#   process can copy a lock in a locked state.
"""Local multi-process downloads: :func:`download_in_processes` over a :class:`ProcessPool`."""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
import threading
import uuid
from collections.abc import Hashable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from bulkflex.auth import Credentials
from bulkflex.distributed._auth import TokenState
from bulkflex.distributed._job import Outcome, run_job, with_loop_disk
from bulkflex.distributed._shard import JobNames, ShardLink, ShardTask, run_shard_locked
from bulkflex.state import destination_lock
from bulkflex.transfer import DownloadOptions, Summary
from bulkflex.transfer import events as ev

__all__ = ["ProcessPool", "WorkerDied", "download_in_processes"]

log = logging.getLogger(__name__)

#: Seconds a worker gets to finish after "exit" (it is idle then) before it is killed.
_JOIN_S = 10.0
#: Seconds between a worker's looks at the stop flag and the token.
_WATCH_S = 0.1
#: Seconds between a worker's checks that its parent is still there.
_PARENT_CHECK_S = 1.0


class WorkerDied(Exception):
    """A worker process ended without a result (killed, or crashed in C code)."""


# -- the worker side ------------------------------------------------------------------------


class _Inbox:
    """A worker's view of its pipe: a reader thread files each message where it belongs."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.tasks: queue.SimpleQueue[ShardTask | None] = queue.SimpleQueue()
        self.token: TokenState = {}
        #: caps the job widened the running shard to (None: those of its task)
        self.caps: tuple[int, int] | None = None
        self.stop = threading.Event()
        self._send_lock = threading.Lock()

    def read(self) -> None:
        parent = os.getppid()
        while True:
            try:
                # a bounded wait, to notice a parent that died without closing the pipe (one
                # of its other processes may still hold it)
                if not self.conn.poll(_PARENT_CHECK_S):
                    if os.getppid() != parent:
                        break
                    continue
                message = self.conn.recv()
            except (EOFError, OSError):  # the parent is gone: save and leave
                break
            kind = message[0]
            if kind == "task":
                self.caps = None  # a widening was for the shard before
                self.tasks.put(message[1])
            elif kind == "caps":
                self.caps = message[1]
            elif kind == "token":
                self.token = message[1]
            elif kind == "stop":
                self.stop.set()
            elif kind == "exit":
                break
        self.stop.set()
        self.tasks.put(None)

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock, contextlib.suppress(OSError):  # a parent that is gone
            self.conn.send(message)


def _worker_main(conn: Connection, use_uvloop: bool, inherited: list[int]) -> None:
    """Body of a worker process: run shard tasks from the pipe until told to exit.

    ``inherited`` are descriptors a forked worker must close first: the parent's ends of the
    pipes (its own and earlier workers'). Held open here, they would keep this worker's pipe
    from ever reporting the parent's death.
    """
    for fd in inherited:
        with contextlib.suppress(OSError):
            os.close(fd)
    inbox = _Inbox(conn)

    def on_term(signum: int, frame: FrameType | None) -> None:
        inbox.stop.set()

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=inbox.read, name="bulkflex-pipe", daemon=True).start()
    link = ShardLink(
        send_progress=lambda message: inbox.send(("progress", message)),
        read_token=lambda: inbox.token,
        ask_refresh=lambda generation, host: inbox.send(
            ("auth", {"generation": generation, "host": host})
        ),
        should_stop=inbox.stop.is_set,
        read_caps=lambda: inbox.caps,
        watch_s=_WATCH_S,
    )
    while (task := inbox.tasks.get()) is not None:
        try:
            result = run_shard_locked(task, link, backend_options={"use_uvloop": use_uvloop})
        except Exception as exc:  # a bug: the job reports it and stops the others
            log.exception("shard %d crashed", task.index)
            inbox.send(("crash", f"{type(exc).__name__}: {exc}"))
        else:
            inbox.send(("result", result))


# -- the job side ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Worker:
    process: BaseProcess
    conn: Connection
    task: Hashable | None = None
    alive: bool = True


class ProcessPool:
    """Worker processes for a sharded job (a :class:`~bulkflex.distributed._job.Backend`).

    Use as a context manager: the workers start on entry and are always stopped on exit.
    """

    def __init__(self, processes: int, *, use_uvloop: bool = False) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.processes = processes
        self.use_uvloop = use_uvloop
        self.names = JobNames(uuid.uuid4().hex)
        self._workers: list[_Worker] = []
        self._inbox: list[tuple[str, dict[str, Any]]] = []

    def __enter__(self) -> ProcessPool:
        method = "fork" if _fork_is_safe() else "forkserver"
        if method not in multiprocessing.get_all_start_methods():
            method = "spawn"
        log.debug("starting %d worker processes (%s)", self.processes, method)
        # typed as BaseContext, which typeshed gives no Process; every concrete context has one
        ctx: Any = multiprocessing.get_context(method)
        if method == "fork":
            _import_event_loop(self.use_uvloop)
        try:
            for i in range(self.processes):
                here, there = ctx.Pipe(duplex=True)
                # a forked worker inherits every descriptor; a spawned one only its pipe
                inherited = (
                    [w.conn.fileno() for w in self._workers] + [here.fileno()]
                    if method == "fork"
                    else []
                )
                process = ctx.Process(
                    target=_worker_main,
                    args=(there, self.use_uvloop, inherited),
                    name=f"bulkflex-worker-{i}",
                    daemon=True,
                )
                process.start()
                there.close()
                self._workers.append(_Worker(process, here))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- Backend ---------------------------------------------------------------------------

    def slots(self) -> int:
        return sum(1 for w in self._workers if w.alive)

    def submit(self, task: ShardTask) -> Hashable:
        worker = next(w for w in self._workers if w.alive and w.task is None)
        handle = task.index
        worker.task = handle
        worker.conn.send(("task", task))
        return handle

    def widen(self, handle: Hashable, per_host: int, connections: int) -> None:
        for worker in self._workers:
            if worker.alive and worker.task == handle:
                with contextlib.suppress(OSError):  # it died: wait() reports that
                    worker.conn.send(("caps", (per_host, connections)))

    def wait(self, timeout: float) -> list[tuple[Hashable, Outcome]]:
        busy = [w for w in self._workers if w.task is not None]
        if not busy:
            return []
        handles: list[Any] = [w.conn for w in busy] + [w.process.sentinel for w in busy]
        ready = set(multiprocessing.connection.wait(handles, timeout))
        done: list[tuple[Hashable, Outcome]] = []
        for worker in busy:
            outcome = self._receive(worker) if worker.conn in ready else None
            if outcome is None and worker.process.sentinel in ready:
                outcome = self._receive(worker)  # what it sent before it ended
                if outcome is None:
                    worker.alive = False
                    worker.process.join(1.0)
                    outcome = WorkerDied(
                        f"worker process {worker.process.pid} ended without a result "
                        f"(exit code {worker.process.exitcode})"
                    )
            if outcome is not None:
                assert worker.task is not None
                done.append((worker.task, outcome))
                worker.task = None
        return done

    def _receive(self, worker: _Worker) -> Outcome | None:
        """Read every message waiting on the worker's pipe; its result, if one came."""
        outcome: Outcome | None = None
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                kind = message[0]
                if kind in ("progress", "auth"):
                    self._inbox.append((kind, message[1]))
                elif kind == "result":
                    outcome = message[1]
                elif kind == "crash":
                    outcome = RuntimeError(message[1])
        except (EOFError, OSError):
            pass
        return outcome

    def messages(self) -> list[tuple[str, dict[str, Any]]]:
        out, self._inbox = self._inbox, []
        return out

    def publish(self, state: TokenState) -> None:
        self._broadcast(("token", state))  # idle workers too: every worker has the latest

    def stop(self) -> None:
        self._broadcast(("stop",))

    def cancel(self, handles: list[Hashable]) -> None:
        for worker in self._workers:
            if worker.task in handles and worker.alive:
                worker.process.kill()
                worker.alive = False

    def settle(self) -> None:
        """Nothing to wait for: a pipe delivers a shard's messages before its result."""

    # -- life cycle ------------------------------------------------------------------------

    def _broadcast(self, message: tuple[Any, ...]) -> None:
        for worker in self._workers:
            if worker.alive:
                with contextlib.suppress(OSError):
                    worker.conn.send(message)

    def close(self) -> None:
        """Tell every worker to exit; kill the ones that do not within a few seconds."""
        self._broadcast(("exit",))
        for worker in self._workers:
            worker.process.join(_JOIN_S)
            if worker.process.is_alive():
                log.warning("worker process %s did not exit; killing it", worker.process.pid)
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers = []


def _import_event_loop(use_uvloop: bool) -> None:
    """Import what every worker's event loop needs before forking, so that the workers share
    it instead of each importing it again (anyio's asyncio backend and uvloop: about 40 ms of
    a worker's start on 2 cores)."""
    importlib.import_module("anyio._backends._asyncio")
    if use_uvloop:
        with contextlib.suppress(ImportError):
            importlib.import_module("uvloop")


def _fork_is_safe() -> bool:
    """Forking copies only the calling thread: safe when it is the only one (and on Linux)."""
    return sys.platform == "linux" and threading.active_count() == 1


def download_in_processes(
    manifest: str | Path,
    dest: str | Path,
    processes: int,
    options: DownloadOptions | None = None,
    *,
    credentials: Credentials | None = None,
    on_event: ev.EventCallback | None = None,
    stop: threading.Event | None = None,
    shards: int | None = None,
    use_uvloop: bool = False,
) -> Summary:
    """Download ``manifest`` into ``dest`` with ``processes`` worker processes (blocking).

    The manifest is split into shards as for a cluster (:func:`download_on_cluster`, whose
    destination layout this shares: a job can move between a cluster and this machine), and
    each worker runs the ordinary engine on one shard at a time. ``options.per_host`` and
    ``options.connections`` are caps for the whole job, split over the workers.

    The calling thread runs the job: Ctrl-C there (KeyboardInterrupt) or ``stop`` asks every
    shard to save its progress; the result then has ``interrupted`` set. Tokens come from
    ``credentials`` in this process only.

    Raises:
        ManifestError: a malformed manifest (nothing was started).
        DestinationError, AuthError, StateError: a shard hit it; the others saved progress.
        DestinationError: another run holds ``dest``'s lock (nothing was started).
        ClusterError: a worker process died or a shard crashed.
    """
    options = with_loop_disk(options or DownloadOptions(), processes)
    # taken before the workers start: forked ones share it, so even when this process is
    # killed, no second run enters the destination until they are gone too
    with destination_lock(dest), ProcessPool(processes, use_uvloop=use_uvloop) as pool:
        return run_job(
            pool,
            manifest,
            dest,
            options,
            credentials=credentials,
            on_event=on_event,
            stop=stop,
            shards=shards,
            where="in a worker process",
            # one shard per process: every shard runs from the start, so none waits for a
            # slot, and each shard's start and final sync is paid once
            shards_per_slot=1,
        )
