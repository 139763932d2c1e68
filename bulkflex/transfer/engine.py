"""The download engine: a manifest in, verified files out, resumable across any interruption.

Shape of a run::

    load manifest -> state (one transaction)
    producer ──(bounded stream)──> N workers ──> per entry: request, check, stream, verify, rename
                                                   │ every flush window: fdatasync, then record
    committer: every commit_interval_s, fsync renamed folders, then mark entries done, COMMIT

Rules the code keeps:
- Bytes are recorded as durable only after fdatasync; an entry is done only after verification,
  fsync, rename and a folder fsync (files.py, state.py).
- Every response is judged by the pure ``check_response`` before a body byte is written; a body is
  written at an offset only when a 206 names exactly that offset.
- Every retry resumes from the bytes already on disk: bytes that arrived before a connection broke
  are written and flushed first.
- A fatal condition (full disk, no way to get a token) cancels the run; every transfer saves its
  progress in a shielded scope on the way out. So does Ctrl-C.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import urljoin, urlsplit

import anyio
import anyio.abc
from anyio.abc import ObjectReceiveStream, TaskGroup

from bulkflex.core.checksum import Checksum, parse_multihash
from bulkflex.core.digests import WANT_REPR_DIGEST, ServerDigest
from bulkflex.core.ranges import Claim, Extents, Segment, SegmentPlan, range_header
from bulkflex.core.responses import Decision, RangeRequest, Validator, Verdict, check_response
from bulkflex.core.retry import RetryPolicy, StallDetector, StallRule
from bulkflex.errors import (
    AuthError,
    BulkflexError,
    ChecksumMismatch,
    NotEntitled,
    NotFound,
    RemoteLied,
    RetriesExhausted,
    TransferError,
    UntrustedServer,
    redact_url,
)
from bulkflex.state import EntryRow, StateDB, destination_lock
from bulkflex.transfer import events as ev
from bulkflex.transfer.files import (
    Chunks,
    FolderGuard,
    PartFile,
    PrefixHasher,
    Verification,
    finalize_batch,
    fsync_folders,
)
from bulkflex.transfer.hosts import HostPacer, Slot
from bulkflex.transfer.http1 import (
    CertificateNotTrusted,
    ConnectError,
    ConnectionBroken,
    HTTPClient,
    Response,
)

__all__ = ["Credentials", "DownloadOptions", "Summary", "download_async", "first_error"]

log = logging.getLogger(__name__)
T = TypeVar("T")

MiB = 1024 * 1024
_MAX_REDIRECTS = 10
#: state rows read (and checked on disk) at a time for the workers
_BATCH = 512
#: received bytes all connections together may hold while the disk catches up
_RECEIVE_BUDGET = 64 * MiB
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: workers per connection: a worker verifying and finishing a file holds no connection
_WORKERS_PER_CONNECTION = 2
_NETWORK_ERRORS = (TimeoutError, ConnectionError)


class Credentials(Protocol):
    """What the engine needs from a token holder (see :mod:`bulkflex.auth`)."""

    @property
    def generation(self) -> int: ...
    def covers(self, url: str) -> bool: ...
    def header_for(self, url: str, *, origin_url: str | None = None) -> dict[str, str]: ...
    async def start(self) -> None: ...
    async def wait_ready(self) -> None: ...
    async def refresh(self, failed_generation: int, *, host: str) -> None: ...


@dataclass(frozen=True, slots=True)
class DownloadOptions:
    """Settings of one run. Sizes in bytes, times in seconds.

    Attributes:
        connections: global cap on simultaneous requests (and the number of workers).
        per_host: cap on simultaneous requests to one host, across all files.
        retry: per-entry retry policy for transient failures.
        run_retry_budget: retries allowed in the whole run before remaining failures are final.
        connect_timeout_s: TCP connect (and TLS) timeout.
        read_timeout_s: longest silence between two reads of a body before the request is
            abandoned and retried. There is no total timeout: a long file is never cut.
        stall: the low-speed rule that catches a server dripping bytes.
        flush_bytes / flush_seconds: the flush window: progress is fdatasync-ed and recorded when
            either is reached. A SIGKILL loses at most this much per connection.
        write_batch_bytes: bytes gathered before one positional write in a worker thread.
        read_bufsize: a body is received into blocks of this size; a full block goes to the
            writer as it is (one block, one positional write, no copy).
        commit_interval_s: group-commit period of the state database.
        disk_threads: threads doing writes, syncs and hashing.
        loop_disk_mean_s: a small file's one disk hop (create, write, hash, close) runs on the
            event loop itself while the mean of recent hops stays under this (see
            :class:`LoopDisk`); 0: always in the threads. None: ``LOOP_DISK_MEAN_S`` in the
            worker processes of a run that has several, else 0.
        connections_per_file: connections one file may use when its server honours Range.
        split_min: files at least this big are split over several connections.
        split_piece: no connection takes less than this from another one (work stealing).
        split_claim: the most one connection of a split file takes at a time (see
            ``_Run._claim_size``).
        refresh_on_403: treat 403 like 401 (some servers answer 403 to an expired token).
        server_digests: a file without a checksum in the manifest is verified against the
            digest its server announces, if any (``core.digests``); False: by its size only.
    """

    connections: int = 16
    per_host: int = 8
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    run_retry_budget: int = 10_000
    connect_timeout_s: float = 30.0
    read_timeout_s: float = 60.0
    stall: StallRule = field(default_factory=StallRule)
    flush_bytes: int = 64 * MiB
    flush_seconds: float = 5.0
    write_batch_bytes: int = 1 * MiB
    read_bufsize: int = 1 * MiB
    commit_interval_s: float = 0.5
    disk_threads: int = 8
    loop_disk_mean_s: float | None = None
    connections_per_file: int = 4
    split_min: int = 32 * MiB
    split_piece: int = 4 * MiB
    split_claim: int = 64 * MiB
    refresh_on_403: bool = False
    server_digests: bool = True
    user_agent: str = "bulkflex"


@dataclass(frozen=True, slots=True)
class Summary:
    """What a run did. ``files_skipped`` were already complete; ``interrupted`` by a signal."""

    files_total: int
    files_done: int
    files_skipped: int
    files_failed: int
    files_pending: int
    bytes_downloaded: int
    seconds: float
    failures: tuple[tuple[str, str], ...]
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.files_failed and not self.files_pending and not self.interrupted


class _Retry(Exception):
    """A transient failure of one attempt; the entry is tried again."""

    def __init__(self, reason: str, *, retry_after_s: float | None = None, counts: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s
        #: False for events that are not the transfer's fault (a token renewal)
        self.counts = counts


@dataclass(slots=True)
class _Job:
    """One entry being fetched: where the bytes stand. Offsets are bytes of the resource."""

    row: EntryRow
    part: PartFile
    checksum: Checksum | None
    host: str
    #: where ``checksum`` came from: "manifest", or the header of a server's digest (taken
    #: when the manifest has none, see ``core.digests``)
    checksum_from: str | None = None
    #: bytes written to .part in order from 0 (not all durable yet)
    offset: int = 0
    #: bytes fdatasync-ed and recorded in the state
    durable: int = 0
    #: the version the bytes on disk belong to
    validator: Validator | None = None
    #: the resource size the server announced for them
    total: int | None = None
    hasher: PrefixHasher | None = None
    #: the .part file is open for writing at `offset`
    opened: bool = False
    #: the server ignores or botches Range for this file: always fetch it whole
    no_range: bool = False
    #: a split request was answered badly: use one connection for this file
    no_split: bool = False
    #: end (exclusive) of the current request when it asked for a bounded first claim
    request_end: int | None = None
    #: every durable byte range (a split file may have several; one stream uses the prefix)
    extents: Extents = field(default_factory=Extents)
    #: restarts from 0 because the file changed or failed verification, this run
    restarts: int = 0
    #: consecutive 401s, reset by any other answer
    auth_failures: int = 0
    #: send the bearer token (False at first for public paths such as MAAP's quicklooks)
    send_token: bool = True
    last_flush: float = 0.0
    #: body bytes received but not yet written (held for the final hop of small files)
    tail: Chunks = field(default_factory=Chunks)


@dataclass(slots=True)
class _Split:
    """A file being fetched over several connections."""

    job: _Job
    plan: SegmentPlan
    #: bytes (of plan.written) already synced and recorded
    flushed: int
    #: why splitting was abandoned for this file, if it was
    broken: str | None = None
    last_error: str = ""
    flushing: bool = False
    #: a background read-back is extending the in-order hash
    hashing: bool = False
    #: task group running background flushes (None once the split winds down)
    flusher: anyio.abc.TaskGroup | None = None
    #: set (and replaced) whenever a claim is released, to wake connections waiting for work
    released: anyio.Event = field(default_factory=anyio.Event)
    #: per claim being streamed (by id): ends its response's body at a file offset, so a
    #: connection whose tail was stolen stops reading at once (bytes past a cut are waste)
    cutters: dict[int, Callable[[int], None]] = field(default_factory=dict)

    def cut_victim_of(self, new: Claim) -> None:
        """``new`` may have been stolen from the tail of a claim being streamed: cut that one."""
        for claim in self.plan.claims:
            if claim is not new and claim.end == new.start:
                cutter = self.cutters.get(id(claim))
                if cutter is not None:
                    cutter(claim.end)

    def wake(self) -> None:
        self.released.set()
        self.released = anyio.Event()


@asynccontextmanager
async def _no_slot() -> AsyncIterator[None]:
    yield


#: the default of ``DownloadOptions.loop_disk_mean_s`` in a run with several worker processes
LOOP_DISK_MEAN_S = 0.002


def _clocks() -> tuple[float, float]:
    """Wall time and this process's CPU time, in seconds."""
    return time.monotonic(), time.process_time()


class LoopDisk:
    """Where a small file's disk hop runs: on the event loop, or in a disk thread.

    The hop (create the ``.part``, one write, the hash, close) takes 0.4 to 0.5 ms on a local
    disk (p99 1.1 to 1.7 ms, measured on 2000 x 256 KiB and 20,000 x 16 KiB). Handed to a
    thread, it costs CPU of its own: the GIL changes hands around every system call, about 37
    futex calls a file. Where every core already runs a worker process's event loop, that CPU
    is what the run lacks. With 2 processes on 2 cores (nginx on loopback, medians of 4 to 6):
    2000 x 256 KiB took 1.22 s on the loop against 1.45 s in threads, 20,000 x 16 KiB 5.5 s
    against 6.4 s. A run in one process is different: its loop is the bottleneck, and a thread
    puts the disk work on a second core (1.74 s on the loop, 1.66 s in threads), so there the
    default keeps the threads.

    Two things this watches:

    - **A slow disk.** While the loop does the work, every connection of the process waits:
      harmless for half a millisecond, not for a network file system's round trips or a disk
      that stalls. The loop keeps the work only while the mean of recent hops (a moving
      average over about 16) stays under ``mean_limit_s``; one hop over 16 times the limit
      passes it, whatever came before. After that, the threads do it for the rest of the run.
    - **Whether the process is CPU-bound** (``busy``). The hop holds up the request of the
      worker that its file's connection just woke. Where round trips are the limit, that
      worker goes first (one turn of the loop): on the WAN-like profile (20 ms round trip)
      the hop without that turn made 2000 x 256 KiB 5% slower (3.21 s against 3.05 s). Where
      the CPU is the limit, the turn costs more than it saves (1.30 s against 1.22 s on
      loopback; likely because requests sent together are served together). A process that
      used 65% of a core or more since the last look is taken as CPU-bound; measured per 64
      hops, the share was 0.68 to 1.0 on loopback and 0.35 to 0.59 on the WAN-like profile.
    """

    #: weight of the newest hop in the moving mean
    _WEIGHT = 1 / 16
    #: hops between two looks at how busy the process is
    _SAMPLE_HOPS = 64
    #: a process that used this share of a core or more since the last look is CPU-bound
    _BUSY_SHARE = 0.65

    def __init__(
        self, mean_limit_s: float, clocks: Callable[[], tuple[float, float]] = _clocks
    ) -> None:
        self.mean_limit_s = mean_limit_s
        self.on_loop = mean_limit_s > 0
        self.mean_s = 0.0
        #: the process was CPU-bound at the last look (see :meth:`_Run.small_hop`)
        self.busy = False
        self._clocks = clocks
        self._hops = 0
        self._looked = clocks()

    def record(self, seconds: float) -> None:
        """Count one hop that ran on the loop and took ``seconds``."""
        self._hops += 1
        if self._hops % self._SAMPLE_HOPS == 0:
            wall, cpu = self._clocks()
            share = (cpu - self._looked[1]) / max(wall - self._looked[0], 1e-9)
            self.busy = share >= self._BUSY_SHARE
            self._looked = (wall, cpu)
        self.mean_s += (seconds - self.mean_s) * self._WEIGHT
        if self.on_loop and self.mean_s > self.mean_limit_s:
            self.on_loop = False
            log.info(
                "the destination's disk is slow (a small file's hop took %.1f ms, mean %.1f "
                "ms): its disk work goes to threads for the rest of the run",
                seconds * 1000,
                self.mean_s * 1000,
            )


class _Run:
    def __init__(
        self,
        dest: Path,
        state: StateDB,
        options: DownloadOptions,
        client: HTTPClient,
        on_event: ev.EventCallback | None,
        credentials: Credentials | None,
    ) -> None:
        self.dest = dest
        self.state = state
        self.options = options
        self.client = client
        self.on_event = on_event
        self.credentials = credentials
        self.guard = FolderGuard(dest)
        #: the caps (the global one, ``pacer.global_limit``, sets the number of workers)
        self.pacer = HostPacer(per_host=options.per_host, global_limit=options.connections)
        self.rng = random.Random()
        self.refresh_lock = anyio.Lock()
        #: bytes gathered per write: never more than the flush window, or a kill loses more
        self._batch = max(1, min(options.write_batch_bytes, options.flush_bytes))
        self.executor = ThreadPoolExecutor(options.disk_threads, thread_name_prefix="bulkflex-disk")
        self.loop_disk = LoopDisk(options.loop_disk_mean_s or 0.0)
        self.retries_left = options.run_retry_budget
        #: entries waiting for a worker, and the state rows not read yet (None: all read)
        self._queue: deque[tuple[EntryRow, bool]] = deque()
        self._rows: Iterator[EntryRow] | None = state.iter_run()
        self._refill = asyncio.Lock()
        #: entries verified and renamed, waiting for their folder fsync and COMMIT
        self.finished: list[tuple[int, int, Path]] = []
        #: small entries verified in their .part, waiting for the batch sync and rename
        self.pending_final: list[tuple[int, int, PartFile]] = []
        self.pending_bytes = 0
        #: set to run the group commit before its timer (a flush window of files is pending)
        self.commit_due = anyio.Event()
        self.files_done = 0
        self.files_skipped = 0
        self.files_failed = 0
        self.bytes_downloaded = 0
        self.failures: list[tuple[str, str]] = []
        self.interrupted = False

    async def to_thread(self, func: Callable[..., T], *args: object) -> T:
        """Run blocking file work in the engine's own small thread pool.

        Plain asyncio here on purpose: this runs once or twice per file, and anyio's generic
        ``to_thread`` costs several times more per call (measured on 2000 x 256 KiB). A
        cancelled caller still waits for the call (see :func:`run_in_thread`).
        """
        return await run_in_thread(self.executor, func, *args)

    async def small_hop(self, func: Callable[[], T]) -> T:
        """Run one small file's disk work (at most a write batch) on the loop while the disk
        is fast, else in the threads (see :class:`LoopDisk`)."""
        if self.loop_disk.on_loop and not self.loop_disk.busy:
            await asyncio.sleep(0)  # the worker this file's connection woke sends first
        # looked at after that turn: a hop that ran in it may have found the disk slow
        if not self.loop_disk.on_loop:
            return await self.to_thread(func)
        started = time.perf_counter()
        try:
            return func()
        finally:
            self.loop_disk.record(time.perf_counter() - started)

    def emit(self, event: ev.Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def widen(self, per_host: int, connections: int, workers: TaskGroup) -> None:
        """Raise the caps while the run goes on (lower values are ignored) and start the
        workers the new connections need in ``workers``."""
        connections = max(connections, per_host)
        added = connections - self.pacer.global_limit
        self.pacer.widen(per_host=per_host, global_limit=connections)
        self.client.max_idle_per_origin = max(self.client.max_idle_per_origin, connections)
        if added <= 0:
            return
        log.info("caps raised to %d per host, %d in all", self.pacer.per_host, connections)
        for _ in range(_WORKERS_PER_CONNECTION * added):
            workers.start_soon(self.work)

    # -- scheduling -------------------------------------------------------------------------

    async def next_entry(self) -> tuple[EntryRow, bool] | None:
        """The next entry for a worker (and whether its final file is already there), or None.

        Rows are read from the state in batches of ``_BATCH`` and checked on disk in one thread
        hop, by whichever worker finds the queue empty (one at a time). A plain deque and
        asyncio lock: this runs once per file, and a memory object stream costs more.
        """
        while not self._queue:
            if self._rows is None:
                return None
            async with self._refill:
                if self._queue or self._rows is None:
                    continue
                batch = list(itertools.islice(self._rows, _BATCH))
                if not batch:
                    self._rows = None
                    return None
                await self._dispatch(batch)
        return self._queue.popleft()

    async def _dispatch(self, rows: list[EntryRow]) -> None:
        gone, present = await self.to_thread(self._scan, rows)
        for row in rows:
            if row.status == "done" and row.id not in gone:
                self.files_skipped += 1
                continue
            if row.id in gone:
                log.warning(
                    "%s was done but is gone or changed on disk; fetching it again", row.path
                )
                self.state.reset(row.id, restart=False)
                row = self.state.get(row.id)
            self._queue.append((row, row.id in present))

    def _scan(self, rows: list[EntryRow]) -> tuple[set[int], set[int]]:
        """One thread hop per batch: done entries whose file is gone or resized, and pending
        entries with a file already under the final name and no ``.part`` (adoption candidates)."""
        gone: set[int] = set()
        present: set[int] = set()
        for row in rows:
            part = PartFile(self.dest, row.path, self.guard)
            size = part.final_size()
            if row.status == "done":
                if size is None or size != (row.total if row.total is not None else row.size):
                    gone.add(row.id)
            elif size is not None and part.part_size() is None:
                present.add(row.id)
        return gone, present

    async def work(self) -> None:
        while (item := await self.next_entry()) is not None:
            row, final_present = item
            await self.fetch(row, final_present=final_present)

    async def commit_loop(self) -> None:
        while True:
            with anyio.move_on_after(self.options.commit_interval_s):
                await self.commit_due.wait()
            self.commit_due = anyio.Event()
            # shielded: a commit cancelled half-way would drop done-marks it had taken
            with anyio.CancelScope(shield=True):
                await self.commit()

    async def commit(self) -> None:
        """Group commit. Verified small files get one sync and their names as a batch; then
        the folders of renamed files are fsync-ed, the entries marked done, and COMMIT."""
        pending, self.pending_final = self.pending_final, []
        self.pending_bytes = 0
        if pending:
            batch = [(part.part, part.final) for _, _, part in pending]
            await self.to_thread(finalize_batch, self.dest, batch)
            for entry_id, size, part in pending:
                self.finished.append((entry_id, size, part.final.parent))
        finished, self.finished = self.finished, []
        if finished:
            if not pending:
                await self.to_thread(fsync_folders, {folder for _, _, folder in finished})
            for entry_id, size, _ in finished:
                self.state.mark_done(entry_id, size)
        self.state.commit()

    # -- one entry --------------------------------------------------------------------------

    async def fetch(self, row: EntryRow, *, final_present: bool = False) -> None:
        part = PartFile(self.dest, row.path, self.guard)
        checksum = parse_multihash(row.checksum) if row.checksum else None
        parts = urlsplit(row.url)
        job = _Job(
            row=row,
            part=part,
            checksum=checksum,
            host=parts.netloc,
            checksum_from="manifest" if checksum else None,
            send_token=not _is_public(parts.path),
        )
        self.emit(ev.FileStarted(row.path, row.size))
        attempt = 0
        try:
            if final_present and await self._adopt_final(job):
                return
            await self._prepare(job)
            while True:
                try:
                    await self._attempt(job)
                    if await self._complete(job):
                        return
                except _Retry as retry:
                    if not retry.counts:
                        continue
                    attempt += 1
                    delay = self.options.retry.delay(
                        attempt, retry_after_s=retry.retry_after_s, rng=self.rng
                    )
                    if delay is None:
                        raise RetriesExhausted(
                            f"gave up after {attempt} attempts; last error: {retry.reason}"
                        ) from None
                    if self.retries_left <= 0:
                        raise RetriesExhausted(
                            f"the run's retry budget is spent; last error: {retry.reason}"
                        ) from None
                    self.retries_left -= 1
                    self.state.add_attempt(row.id, retry.reason)
                    self.emit(ev.Retrying(row.path, attempt, delay, retry.reason))
                    log.info("%s: %s; retry %d in %.1fs", row.path, retry.reason, attempt, delay)
                    await anyio.sleep(delay)
        except TransferError as exc:
            self.files_failed += 1
            self.failures.append((row.path, str(exc)))
            self.state.mark_failed(row.id, exc.kind, str(exc))
            self.emit(ev.Failed(row.path, exc.kind, str(exc)))
            log.info("%s failed: %s", row.path, exc)
        finally:
            part.close()

    async def _prepare(self, job: _Job) -> None:
        """Pick up durable bytes from an earlier run, if they are still there."""
        row = job.row
        durable = row.durable.prefix()
        if durable == 0 and row.durable.total and self._may_split(job, row.total):
            on_disk = await self.to_thread(job.part.part_size)
            if on_disk is not None:  # a split run left pieces but no prefix: keep them
                job.extents = row.durable
                job.validator = Validator(row.etag, row.last_modified)
                job.total = row.total
                self.emit(ev.Resumed(row.path, 0))
            return
        if durable == 0:
            return
        on_disk = await self.to_thread(job.part.part_size)
        if on_disk is None or on_disk < durable:
            log.warning("%s: partial file missing or truncated; starting over", row.path)
            self.state.reset(row.id, restart=False)
            return
        job.offset = job.durable = durable
        job.extents = row.durable
        job.validator = Validator(row.etag, row.last_modified)
        job.total = row.total
        if job.checksum is not None:
            await self._hash_written(job, job.checksum, durable)
        self.emit(ev.Resumed(row.path, durable))

    async def _hash_written(self, job: _Job, checksum: Checksum, upto: int) -> None:
        """Start the file's in-order hash with the ``upto`` bytes already in its ``.part``
        (read back in a disk thread); the bytes that follow are hashed as they are written."""
        hasher = PrefixHasher(checksum.new_hasher())
        await self.to_thread(hasher.catch_up, job.part.part, upto)
        job.hasher = hasher

    async def _adopt_final(self, job: _Job) -> bool:
        """Take a file already under the final name (and no ``.part``) as done, if it is ours.

        That happens when a run renamed a verified file and stopped before its group commit.
        With a checksum the file must verify. Without one, it is adopted only when the state
        had recorded every byte as durable and the file has exactly the expected size: the
        rename is the only step between those two states. Anything else is fetched again and
        replaces the file.
        """
        row = job.row
        expected = row.size if row.size is not None else row.total
        size = await self.to_thread(job.part.final_size)
        if job.checksum is not None:
            ok = await self.to_thread(job.part.verify_final, job.checksum, row.size)
        else:
            ok = expected is not None and row.durable.covers(expected) and size == expected
        if not ok or size is None:
            return False
        self.finished.append((row.id, size, job.part.final.parent))
        self.files_skipped += 1
        algorithm = job.checksum.algorithm if job.checksum else None
        self.emit(ev.Verified(row.path, size, algorithm, job.checksum_from))
        log.info("%s: already in place from an earlier run; not fetched again", row.path)
        return True

    async def _attempt(self, job: _Job) -> None:
        """One request. Returns with the whole body written (but for ``job.tail``)."""
        row = job.row
        if job.offset > 0 and job.no_range:
            await self._restart(job, "the server cannot resume this file", changed=False)
        # A file worth splitting is asked for with a Range from byte 0: a 206 proves the server
        # serves ranges before a second connection relies on it. It asks only for its first
        # claim (see _claim_size), so that no other connection has to cut this request short
        # (bytes sent past a cut are wasted); a resumed file asks to the end, as its gaps may not
        # be worth splitting (if they are, it is cut at its first claim).
        splitting = self._may_split(job, job.row.size)
        ranged = job.offset > 0 or splitting
        job.request_end = (
            self._claim_size(job.row.size)
            if splitting and job.offset == 0 and job.row.size is not None
            else None
        )
        request = RangeRequest(
            start=job.offset,
            end=job.request_end,
            ranged=ranged,
            validator=job.validator if ranged else None,
            known_total=job.total if ranged else None,
        )
        headers = self._headers(job, job.offset, job.request_end) if ranged else self._headers(job)
        async with self.pacer.slot(job.host) as slot:
            generation = await self._token_generation()
            try:
                async with self._open(row.url, headers, job.send_token) as response:
                    decision = self._judge(job, request, response)
                    await self._act(job, decision, response, generation, slot)
            except CertificateNotTrusted as exc:
                raise UntrustedServer(
                    f"{exc}; set SSL_CERT_FILE to a CA bundle that has its CA"
                ) from None
            except _NETWORK_ERRORS as exc:
                raise _Retry(_describe_network_error(exc)) from None

    def _headers(
        self, job: _Job, start: int | None = None, end: int | None = None
    ) -> dict[str, str]:
        """Headers of a data request; with ``start``, a Range (and If-Range when known)."""
        headers = {"Accept-Encoding": "identity", "User-Agent": self.options.user_agent}
        if job.checksum is None and self.options.server_digests:  # please say its digest
            headers["Want-Repr-Digest"] = WANT_REPR_DIGEST
        if start is not None:
            headers["Range"] = range_header(start, end)
            if job.validator is not None and job.validator.if_range:
                headers["If-Range"] = job.validator.if_range
        return headers

    async def _token_generation(self) -> int:
        """Wait while a token renewal runs; the generation of the token the request will use."""
        if self.credentials is None:
            return 0
        await self.credentials.wait_ready()
        return self.credentials.generation

    def _judge(self, job: _Job, request: RangeRequest, response: Response) -> Decision:
        """``check_response``, plus the run's reading of a 403 (``refresh_on_403``)."""
        decision = check_response(request, response.status, response.headers, now=time.time())
        if (
            decision.verdict is Verdict.FAIL
            and response.status == 403
            and self.options.refresh_on_403
        ):
            decision = Decision(Verdict.AUTH, "403 treated as expired token")
        if decision.verdict is not Verdict.AUTH:
            job.auth_failures = 0
        return decision

    async def _raise_for_common(
        self, job: _Job, decision: Decision, response: Response, generation: int
    ) -> None:
        """What every data request does with a refused token, a transient error or a missing
        file, whole file or split range alike: raise ``_Retry`` or ``NotFound``. Returns for
        every other verdict."""
        verdict = decision.verdict
        if verdict is Verdict.AUTH:
            if not job.send_token:  # a "public" URL that wants the token after all
                job.send_token = True
                raise _Retry(decision.reason, counts=False)
            await self._renew_token(job, generation, decision.reason)
            raise _Retry(decision.reason, counts=False)
        if verdict is Verdict.RETRY:
            if decision.retry_after_s is not None and response.status in (429, 503):
                wait = min(decision.retry_after_s, self.options.retry.retry_after_cap_s)
                self.pacer.pause(job.host, wait)
            raise _Retry(decision.reason, retry_after_s=decision.retry_after_s)
        if verdict is Verdict.FAIL and response.status in (404, 410):
            raise NotFound(f"HTTP {response.status} from {redact_url(job.row.url)}")

    async def _act(
        self, job: _Job, decision: Decision, response: Response, generation: int, slot: Slot
    ) -> None:
        row = job.row
        verdict = decision.verdict
        await self._raise_for_common(job, decision, response, generation)
        if verdict is Verdict.FAIL:
            raise RemoteLied(decision.reason)
        if verdict is Verdict.RANGE_BROKEN:
            job.no_range = True
            await self._restart(job, decision.reason, changed=False)
            raise _Retry(decision.reason)
        if verdict is Verdict.NOT_SATISFIABLE:
            if decision.total is not None and decision.total == job.offset:
                return  # every byte is here already; verification decides
            await self._restart(
                job, f"416 from the server at offset {job.offset} (size {decision.total})", False
            )
            raise _Retry("416 Range Not Satisfiable")
        if verdict is Verdict.WHOLE_FILE:
            if not decision.changed:
                job.no_range = True
            await self._restart(job, decision.reason, changed=decision.changed)
        # ACCEPT, or WHOLE_FILE now treated as a fresh start from 0
        if job.checksum is None and decision.digest is not None and self.options.server_digests:
            await self._adopt_digest(job, decision.digest)
        if job.offset == 0:
            if row.size is not None and decision.total is not None and decision.total != row.size:
                raise RemoteLied(
                    f"size mismatch: the manifest says {row.size} bytes, "
                    f"the server says {decision.total}"
                )
            job.validator = decision.validator
            job.total = decision.total
            if job.checksum is not None:
                job.hasher = PrefixHasher(job.checksum.new_hasher())
        elif job.offset > 0:
            self.emit(ev.Resumed(row.path, job.offset))
        if response.status == 206 and (
            job.request_end is not None or self._may_split(job, decision.total)
        ):
            await self._split(job, response)  # the first split connection keeps its slot
        else:
            # The slot goes to the next request as soon as this body is all in, while this
            # reader still writes it: on many small files over a long round trip, that is
            # one event-loop pass less between one request and the next on a connection.
            response.on_received(slot.release)
            await self._stream(job, response, decision)

    async def _adopt_digest(self, job: _Job, digest: ServerDigest) -> None:
        """Verify a file the manifest has no checksum for against its server's digest.

        A resumed file first hashes the bytes already written; a restart forgets the digest,
        so that the next response says it again (see :meth:`_restart`).
        """
        log.info(
            "%s: no checksum in the manifest; verifying against the server's %s",
            job.row.path,
            digest.describe(),
        )
        job.checksum, job.checksum_from = digest.checksum, digest.header
        if job.offset > 0:
            await self._hash_written(job, digest.checksum, job.offset)

    # -- several connections for one file ----------------------------------------------------

    def _claim_size(self, size: int) -> int:
        """How much of a file about to be split one connection takes at a time: an even share
        of the file, at most ``split_claim``, aligned to a piece, never less than one piece.

        The cap makes the connections work through a big file in order, claim after claim,
        rather than each through a quarter of it. The checksum is hashed in file order: with
        quarters, only the first was hashed as it arrived, and the other three quarters were
        read back and hashed after the last byte came in. On the WAN-like profile (4 x 512 MiB,
        16 connections) that tail took 0.5 to 0.7 s of 6.2 to 7.0 s; with 64 MiB claims it
        took 0.04 s and the runs 5.8 to 6.2 s. Each claim costs a request (a round trip): a
        64 MiB claim lasts 2.6 s at 25 MiB/s.
        """
        share = min(-(-size // self.options.connections_per_file), self.options.split_claim)
        piece = self.options.split_piece
        return min(size, max(piece, -(-share // piece) * piece))

    def _may_split(self, job: _Job, size: int | None) -> bool:
        return (
            self.options.connections_per_file > 1
            and not job.no_range
            and not job.no_split
            and size is not None
            and size >= self.options.split_min
        )

    async def _split(self, job: _Job, first: Response) -> None:
        """Fetch the rest of the file over up to ``connections_per_file`` connections.

        ``first`` is the accepted 206 for ``[job.offset, job.request_end or end of file)``.
        It becomes the first claim; the other connections take shares of what is left, then
        halves of what others still have (see ``SegmentPlan``). Every
        byte is checked like any range: an answer that is not the exact 206 asked for stops
        the split for this file, and the file continues on one stream from its durable prefix.
        Returns with the file complete on disk, or raises ``_Retry``.
        """
        assert job.total is not None
        total = job.total
        written = job.extents.add(Segment(0, job.offset)) if job.offset else job.extents
        plan = SegmentPlan(
            total,
            written,
            min_piece=self.options.split_piece,
            max_claim=self._claim_size(total),
        )
        split = _Split(job=job, plan=plan, flushed=written.total)
        if not job.opened:
            fresh = written.total == 0
            await self.to_thread(lambda: job.part.open(truncate=fresh, preallocate=total))
            job.opened = True
        boundary = next(plan.written.gaps(total)).end if not plan.done() else total
        if job.request_end is not None:
            boundary = min(boundary, job.request_end)
        if plan.max_claim is not None:  # a resumed file asked to the end: it is cut there
            boundary = min(boundary, job.offset + plan.max_claim)
        primary = Claim(job.offset, boundary, job.offset)
        plan.claims.append(primary)
        try:
            async with anyio.create_task_group() as tg:
                split.flusher = tg
                for _ in range(self.options.connections_per_file - 1):
                    tg.start_soon(self._split_worker, split, None)
                await self._split_worker(split, (primary, first))
                if plan.done():
                    # connections still queued for a host slot have nothing left to do, and
                    # that slot may be the one this connection holds until the split ends
                    tg.cancel_scope.cancel()
        finally:
            split.flusher = None
            with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                await self._split_flush(split)
            job.extents = plan.written
            job.offset = job.durable = plan.written.prefix()
        if plan.done():
            job.offset = total
            return
        if split.broken is not None:
            job.no_split = True
            log.warning("%s: %s; continuing on one connection", job.row.path, split.broken)
            if job.hasher is not None:  # the single stream hashes on from the durable prefix
                await self.to_thread(job.hasher.catch_up, job.part.part, job.offset)
            raise _Retry(split.broken)
        raise _Retry(split.last_error or "segments left unfinished")

    async def _split_worker(self, split: _Split, first: tuple[Claim, Response] | None) -> None:
        """One connection of a split file: take a claim, fetch it, repeat until none is left.

        The first connection starts with the response it already has (and keeps its host slot
        for its later requests); the others take a slot per request.
        """
        attempts = 0
        if first is not None:
            first_claim, response = first
            try:
                await self._stream_claim(split, first_claim, response)
            except _Retry as retry:
                split.last_error = retry.reason
            finally:
                if not response.complete:
                    # cut short (its tail was taken, or it was open-ended on a resume): it
                    # would go on sending bytes others own, so drop the connection now
                    response.close()
                split.plan.release(first_claim)
                split.wake()
        while split.broken is None and not split.plan.done():
            delay: float | None = 0.0
            # The slot comes first, the claim second: a connection that owned bytes while it
            # queued for a slot could starve the connections that hold the slots (deadlock).
            async with self.pacer.slot(split.job.host) if first is None else _no_slot():
                released = split.released  # taken before looking, so no release goes unnoticed
                claim = split.plan.claim()
                if claim is not None:
                    split.cut_victim_of(claim)
                    try:
                        await self._fetch_claim(split, claim)
                        attempts = 0
                    except _Retry as retry:
                        split.last_error = retry.reason
                        if retry.counts:
                            attempts += 1
                            delay = self.options.retry.delay(
                                attempts, retry_after_s=retry.retry_after_s, rng=self.rng
                            )
                    finally:
                        split.plan.release(claim)
                        split.wake()
            if delay is None:
                return  # this connection's retries are spent; the others go on
            if claim is None:
                if not any(c.remaining for c in split.plan.claims):
                    return
                await released.wait()  # a connection let go of a claim: look again
            elif delay:
                await anyio.sleep(delay)

    async def _fetch_claim(self, split: _Split, claim: Claim) -> None:
        """Fetch ``[claim.pos, claim.end)``; the caller holds a host slot."""
        job = split.job
        request = RangeRequest(
            start=claim.pos,
            end=claim.end,
            ranged=True,
            validator=job.validator,
            known_total=split.plan.size,
        )
        if claim.remaining == 0:
            return
        headers = self._headers(job, claim.pos, claim.end)
        generation = await self._token_generation()
        try:
            async with self._open(job.row.url, headers, job.send_token) as response:
                decision = self._judge(job, request, response)
                await self._raise_for_common(job, decision, response, generation)
                if decision.verdict is not Verdict.ACCEPT:
                    # a 200, a wrong Content-Range, a 416, another version: stop splitting
                    split.broken = f"split request answered badly ({decision.reason})"
                    raise _Retry(split.broken)
                await self._stream_claim(split, claim, response)
        except _NETWORK_ERRORS as exc:
            raise _Retry(_describe_network_error(exc)) from None

    async def _stream_claim(self, split: _Split, claim: Claim, response: Response) -> None:
        """Write the body at ``claim.pos`` until the claim's (possibly shrunk) end."""
        batch = self._batch
        started = time.monotonic()
        detector = StallDetector(self.options.stall, started)
        received = 0
        buffer = Chunks()
        body_start = claim.pos
        split.cutters[id(claim)] = lambda end: response.limit(end - body_start)
        try:
            async for chunk in response.iter_any():
                room = claim.end - claim.pos - len(buffer)
                if len(chunk) >= room:
                    buffer.append(chunk[: max(room, 0)])
                    break  # the claim is complete, or its tail was taken by another connection
                buffer.append(chunk)
                received += len(chunk)
                if len(buffer) >= batch:
                    await self._write_claim(split, claim, buffer)
                    buffer = Chunks()
                now = time.monotonic()
                claim.rate = received / max(now - started, 1e-3)
                if detector.stalled(now, received):
                    raise _Retry("stalled")
        except _NETWORK_ERRORS as exc:
            # every byte that arrived was yielded before the error: keep them all
            if len(buffer):
                await self._write_claim(split, claim, buffer)
            if split.flusher is not None and not split.flushing:  # keep what arrived: sync now
                split.flushing = True
                split.flusher.start_soon(self._split_flush, split)
            raise _Retry(_describe_network_error(exc)) from None
        except BaseException:
            with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                if len(buffer):
                    await self._write_claim(split, claim, buffer)
            raise
        finally:
            del split.cutters[id(claim)]
        if len(buffer):
            await self._write_claim(split, claim, buffer)
        if claim.remaining:
            raise _Retry(f"short body: {claim.remaining} bytes missing")

    async def _write_claim(self, split: _Split, claim: Claim, data: Chunks) -> None:
        offset = claim.pos
        job = split.job
        await self.to_thread(job.part.write_chunks_at, offset, data, job.hasher)
        split.plan.advance(claim, len(data))
        self.bytes_downloaded += len(data)
        self.emit(ev.Progress(job.row.path, len(data)))
        if split.flusher is not None and not split.flushing and self._flush_due(split):
            # in the background: a connection never waits for an fdatasync of the whole file
            split.flushing = True
            split.flusher.start_soon(self._split_flush, split)
        hasher = job.hasher
        if (
            hasher is not None
            and split.flusher is not None
            and not split.hashing
            and split.plan.written.prefix() - hasher.pos >= self.options.write_batch_bytes * 8
        ):
            # the in-order hash reached bytes other connections wrote: read them back now,
            # from the page cache, rather than all at the end
            split.hashing = True
            split.flusher.start_soon(self._split_hash, split, hasher)

    async def _split_hash(self, split: _Split, hasher: PrefixHasher) -> None:
        try:
            await self.to_thread(hasher.catch_up, split.job.part.part, split.plan.written.prefix())
        finally:
            split.hashing = False

    def _flush_due(self, split: _Split) -> bool:
        pending = split.plan.written.total - split.flushed
        return pending >= self.options.flush_bytes or (
            pending > 0 and time.monotonic() - split.job.last_flush >= self.options.flush_seconds
        )

    async def _split_flush(self, split: _Split) -> None:
        """Sync the file, then record every extent written before the sync started."""
        job = split.job
        written = split.plan.written
        if written.total <= split.flushed:
            split.flushing = False
            return
        split.flushing = True
        try:
            job.last_flush = time.monotonic()
            await self.to_thread(job.part.sync)
            split.flushed = written.total
            validator = job.validator or Validator()
            self.state.set_progress(
                job.row.id,
                written,
                total=split.plan.size,
                etag=validator.etag,
                last_modified=validator.last_modified,
            )
            self.state.commit()
        finally:
            split.flushing = False

    async def _stream(self, job: _Job, response: Response, decision: Decision) -> None:
        batch = self._batch
        end = job.offset + decision.length if decision.length is not None else None
        if end is None and job.total is not None:
            end = job.total
        started = time.monotonic()
        job.last_flush = started
        detector = StallDetector(self.options.stall, started)
        received = 0
        buffer = job.tail
        try:
            async for chunk in response.iter_any():
                buffer.append(chunk)
                received += len(chunk)
                if end is not None and job.offset + len(buffer) > end:
                    buffer.keep(end - job.offset)
                    raise RemoteLied(f"the server sent more than the {end} bytes it announced")
                if len(buffer) >= batch:
                    await self._write(job, buffer)
                    buffer = job.tail = Chunks()
                if detector.stalled(time.monotonic(), received):
                    raise _Retry(
                        f"stalled: under {self.options.stall.min_bytes_per_s:.0f} B/s "
                        f"for {self.options.stall.window_s:.0f}s"
                    )
        except _NETWORK_ERRORS as exc:
            # every byte that arrived was yielded before the error: keep them all
            await self._save(job, buffer)
            raise _Retry(f"{_describe_network_error(exc)} after {received} bytes") from None
        except BaseException:
            with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                await self._save(job, buffer)
            raise
        if end is not None and job.offset + len(buffer) < end:
            await self._save(job, buffer)
            raise _Retry(f"short body: got {job.offset} of {end} bytes")
        job.tail = buffer

    async def _write(self, job: _Job, data: Chunks) -> None:
        """Write ``data`` at ``job.offset`` in one thread hop; flush when the window is full."""
        offset, opened = job.offset, job.opened

        def write() -> None:
            if not opened:
                job.part.open(truncate=offset == 0)
            job.part.write_chunks_at(offset, data, job.hasher)

        await self.to_thread(write)
        job.opened = True
        job.offset += len(data)
        self.bytes_downloaded += len(data)
        self.emit(ev.Progress(job.row.path, len(data)))
        now = time.monotonic()
        if (
            job.offset - job.durable >= self.options.flush_bytes
            or now - job.last_flush >= self.options.flush_seconds
        ):
            await self._flush(job)

    async def _flush(self, job: _Job) -> None:
        """fdatasync, then record the durable prefix. Nothing is recorded before the sync."""
        job.last_flush = time.monotonic()
        if job.offset <= job.durable:
            return
        await self.to_thread(job.part.sync)
        job.durable = job.offset
        validator = job.validator or Validator()
        self.state.set_progress(
            job.row.id,
            Extents((Segment(0, job.durable),)),
            total=job.total,
            etag=validator.etag,
            last_modified=validator.last_modified,
        )
        # commit now: a WAL commit costs microseconds next to the fdatasync before it, and a
        # kill must not lose more than the flush window
        self.state.commit()

    async def _save(self, job: _Job, buffer: Chunks) -> None:
        """Keep bytes that did arrive: write and flush them (before a retry or on the way out)."""
        if len(buffer):
            await self._write(job, buffer)
        job.tail = Chunks()
        await self._flush(job)

    async def _complete(self, job: _Job) -> bool:
        """Verify and finalise. True when the file is in place; False after a restart."""
        tail, offset, opened = job.tail, job.offset, job.opened
        size = offset + len(tail)
        expected = job.row.size if job.row.size is not None else job.total

        # A file that arrived in one piece is made durable with others in the next group
        # commit (one syncfs for the batch instead of an fsync each); bigger files now.
        grouped = size <= self._batch

        def finish() -> Verification:
            if len(tail):
                if not opened:
                    job.part.open(truncate=offset == 0)
                job.part.write_chunks_at(offset, tail, job.hasher)
            return job.part.finish(
                size,
                expected_size=expected,
                checksum=job.checksum,
                hasher=job.hasher,
                durable=not grouped,
            )

        result = await (self.small_hop(finish) if grouped else self.to_thread(finish))
        job.opened = False
        if len(tail):
            self.bytes_downloaded += len(tail)
            self.emit(ev.Progress(job.row.path, len(tail)))
        job.offset, job.tail = size, Chunks()
        if result.ok:
            if grouped:
                self.pending_final.append((job.row.id, size, job.part))
                self.pending_bytes += size
                if self.pending_bytes >= self.options.flush_bytes:
                    self.commit_due.set()  # never hold more than a flush window unsynced
            else:
                self.finished.append((job.row.id, size, job.part.final.parent))
            self.files_done += 1
            algorithm = job.checksum.algorithm if job.checksum else None
            self.emit(ev.Verified(job.row.path, size, algorithm, job.checksum_from))
            return True
        reason = result.reason
        if result.actual is not None and job.checksum_from != "manifest":
            reason += f" (the expected value is the server's {job.checksum_from})"
        if job.restarts >= 1:
            await self.to_thread(job.part.discard)
            if job.checksum is not None and result.actual is not None:
                raise ChecksumMismatch(
                    reason + " (also after a fresh download)",
                    expected=job.checksum.describe(),
                    actual=result.actual,
                )
            raise RemoteLied(reason + " (also after a fresh download)")
        await self._restart(job, reason, changed=True)
        return False

    async def _restart(self, job: _Job, reason: str, changed: bool) -> None:
        """Discard every byte of the file and start from 0 (at most once for a changed file)."""
        if changed:
            job.restarts += 1
            if job.restarts > 1:
                raise RemoteLied(f"{reason}, again after a restart: giving up on this file")
        log.warning("%s: %s; restarting from 0", job.row.path, reason)
        self.emit(ev.Restarted(job.row.path, reason))
        if job.offset:
            self.emit(ev.Progress(job.row.path, -job.offset))
        job.offset = job.durable = 0
        job.extents = Extents()
        job.validator = None
        job.total = None
        job.hasher = None
        if job.checksum_from != "manifest":  # the server says the new file's digest again
            job.checksum = job.checksum_from = None
        job.tail = Chunks()
        job.opened = False  # the next write reopens with O_TRUNC
        self.state.reset(job.row.id, restart=changed)

    async def _renew_token(self, job: _Job, generation: int, reason: str) -> None:
        creds = self.credentials
        host = urlsplit(job.row.url).hostname or job.host
        if creds is None:
            raise AuthError(
                f"{host} needs a bearer token ({reason}): pass --token-env VAR, --token-file "
                "FILE or --token-command CMD (or set MAAP_TOKEN)"
            )
        if not creds.covers(job.row.url):
            raise NotEntitled(
                f"{host} asks for a token ({reason}) but is not an auth host; "
                f"add --auth-host {host} to send it there"
            )
        if creds.generation == generation:  # a 401 to an older token says nothing new
            job.auth_failures += 1
        if job.auth_failures > 2:
            raise NotEntitled(
                f"{host} refuses the renewed token for this file ({reason}): not entitled?"
            )
        async with self.refresh_lock:
            if creds.generation != generation:
                return  # another transfer already renewed it
            self.emit(ev.AuthPaused(host))
            log.info("%s: token refused (%s); renewing it", host, reason)
            await creds.refresh(generation, host=host)
            self.emit(ev.AuthResumed(host))

    @asynccontextmanager
    async def _open(
        self, url: str, headers: dict[str, str], send_token: bool = True
    ) -> AsyncIterator[Response]:
        """GET with redirects followed by hand, so the token is only sent where it belongs."""
        current = url
        for hop in range(_MAX_REDIRECTS + 1):
            request_headers = dict(headers)
            if self.credentials is not None and send_token:
                request_headers.update(
                    self.credentials.header_for(current, origin_url=url if hop else None)
                )
            response = await self.client.get(current, request_headers)
            location = response.headers.get("Location")
            if response.status in _REDIRECTS and location:
                response.release()
                current = urljoin(current, location)
                if urlsplit(current).scheme not in ("http", "https"):
                    raise RemoteLied(f"redirect to a non-HTTP URL from {redact_url(url)}")
                continue
            try:
                yield response
            finally:
                response.release()
            return
        raise RemoteLied(f"more than {_MAX_REDIRECTS} redirects from {redact_url(url)}")


async def run_in_thread(executor: Executor, func: Callable[..., T], *args: object) -> T:
    """``func(*args)`` in ``executor``, awaited; if the caller is cancelled, it still waits for
    the call to end (a write or rename is never left running behind the caller's back), and
    an error the call raised meanwhile is dropped in silence: the cancellation is what the
    caller gets. (Unretrieved, asyncio would print it with a traceback when the future is
    collected: seen when two files hit a full disk at once and the first error stopped the
    run.)"""
    future = asyncio.wrap_future(executor.submit(func, *args))
    try:
        return await asyncio.shield(future)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: the caller's own exception goes on
        raise


def _is_public(path: str) -> bool:
    """URLs under a ``public`` path segment (MAAP serves quicklooks there without a token) get
    the token only if they answer 401: a secret goes nowhere it is not needed."""
    return "public" in path.lower().split("/")


def _describe_network_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out waiting for the server"
    if isinstance(exc, ConnectError | ConnectionBroken):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception to re-raise from a task group: the first BulkflexError if there is one
    (a full disk, no token), else a KeyboardInterrupt, else the group itself."""
    interrupt: BaseException | None = None
    for exc in group.exceptions:
        found = first_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
        if isinstance(found, BulkflexError):
            return found
        if isinstance(found, KeyboardInterrupt) and interrupt is None:
            interrupt = found
    return interrupt or group


async def download_async(
    manifest: str | Path,
    dest: str | Path,
    options: DownloadOptions | None = None,
    *,
    on_event: ev.EventCallback | None = None,
    credentials: Credentials | None = None,
    client: HTTPClient | None = None,
    stop: anyio.Event | None = None,
    state_name: str = "state.sqlite",
    widen: ObjectReceiveStream[tuple[int, int]] | None = None,
    lock: bool = True,
) -> Summary:
    """Download every entry of ``manifest`` into ``dest``; resume whatever an earlier run left.

    Args:
        manifest: path of a JSON Lines manifest.
        dest: destination folder (created if needed); state lives in ``dest/.bulkflex/``.
        options: tuning; defaults suit a remote archive.
        on_event: called on the event loop with each :mod:`~bulkflex.transfer.events` value.
        credentials: token holder for servers that need a bearer token.
        client: an HTTP client to use instead of bulkflex's own (tests, embedding).
        stop: when set, every transfer saves its progress and the run returns early with
            ``Summary.interrupted`` True (the CLI sets it on Ctrl-C / SIGTERM).
        state_name: file name of the state database under ``dest/.bulkflex/`` (one per shard
            when several processes share a destination: no two processes write one file).
        widen: ``(per_host, connections)`` pairs that raise the caps while the run goes on
            (never lower them): a worker process gets the share of one that finished.
        lock: hold ``dest``'s lock (:func:`~bulkflex.state.destination_lock`) for the run, so
            that a second run there stops; False for a shard, whose state file has a
            lock of its own (and whose job holds ``dest``'s).

    Returns:
        The :class:`Summary`. Failed entries do not raise; they are listed in it.

    Raises:
        ManifestError: the manifest is malformed (nothing was fetched).
        DestinationError: the destination cannot be written (progress kept), or another run
            holds its lock (nothing was touched).
        AuthError: a token is needed and none could be had (progress kept).
    """
    with destination_lock(dest) if lock else nullcontext():
        options = options or DownloadOptions()
        dest_path = Path(dest)
        started = time.monotonic()
        state = StateDB(dest_path, name=state_name)
        try:
            total = state.load_manifest(manifest)
            counts = state.counts()
            own_client = client is None
            if client is None:
                # a block is handed over when full: never more than a flush window, or a kill
                # would lose more than the window
                block = min(options.read_bufsize, options.write_batch_bytes, options.flush_bytes)
                client = HTTPClient(
                    connect_timeout=options.connect_timeout_s,
                    read_timeout=options.read_timeout_s,
                    block_size=block,
                    # bytes a connection may hold for a slow disk: 4 MiB each, but no more than
                    # _RECEIVE_BUDGET for all of them (64 connections would otherwise hold 256 MiB)
                    high_water=max(block, min(4 * MiB, _RECEIVE_BUDGET // options.connections)),
                    max_idle_per_origin=options.connections,
                )
            run = _Run(dest_path, state, options, client, on_event, credentials)
            run.emit(
                ev.Started(
                    files=total,
                    total_bytes=counts.expected_bytes,
                    already_done=counts.done,
                    already_done_bytes=counts.done_bytes,
                    partial_bytes=counts.partial_bytes,
                )
            )
            try:
                if credentials is not None:
                    await credentials.start()
                await _pool(run, stop, widen)
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        await run.commit()
                    finally:
                        if own_client:
                            await client.close()
                        run.executor.shutdown(wait=True)
            remaining = state.counts(failures_limit=0)
            summary = Summary(
                files_total=total,
                files_done=run.files_done,
                files_skipped=run.files_skipped,
                files_failed=run.files_failed,
                files_pending=remaining.pending,
                bytes_downloaded=run.bytes_downloaded,
                seconds=time.monotonic() - started,
                failures=tuple(run.failures),
                interrupted=run.interrupted,
            )
            run.emit(ev.Finished.of(summary))
            return summary
        finally:
            state.close()


async def _pool(
    run: _Run, stop: anyio.Event | None, widen: ObjectReceiveStream[tuple[int, int]] | None
) -> None:
    async def wait_for_stop(scope: anyio.CancelScope, event: anyio.Event) -> None:
        await event.wait()
        run.interrupted = True
        scope.cancel()

    workers_done = False

    async def follow(caps: ObjectReceiveStream[tuple[int, int]], workers: TaskGroup) -> None:
        async for per_host, connections in caps:  # the caller's stream: it closes it
            # A cap that arrives as the last worker ends finds this task ready to run before
            # the cancellation below reaches it: the workers' group is closed by then.
            if workers_done:
                return
            run.widen(per_host, connections, workers)

    try:
        async with anyio.create_task_group() as outer:
            outer.start_soon(run.commit_loop)
            if stop is not None:
                outer.start_soon(wait_for_stop, outer.cancel_scope, stop)
            try:
                async with anyio.create_task_group() as tg:
                    # Twice as many workers as connections: a worker verifying and finishing a
                    # file holds no connection, and another one keeps that connection busy.
                    # Requests in flight stay capped by the host slots (HostPacer).
                    for _ in range(_WORKERS_PER_CONNECTION * run.pacer.global_limit):
                        tg.start_soon(run.work)
                    if widen is not None:
                        outer.start_soon(follow, widen, tg)
            finally:
                workers_done = True
            outer.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise first_error(group) from None
