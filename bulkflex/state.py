"""The state database: ``DEST/.bulkflex/state.sqlite`` (SQLite, WAL), one row per manifest path.

It records what partial bytes on disk are worth, so that a rerun after any interruption resumes
instead of starting over, and never keeps bytes whose validator changed.

Ordering rule (aria2's): a byte range is written to ``durable`` only after its bytes were
``fdatasync``-ed; a row becomes ``done`` only after the file was verified, fsync-ed, renamed into
place and its folder fsync-ed. A crash therefore loses at most the window between two flushes.
``synchronous=NORMAL`` is enough for that: a process crash loses no committed WAL frame, and a
power cut can only lose recent commits, which under-claims progress but never over-claims it.

Loading a manifest is one transaction: a malformed line or a duplicate path rolls everything
back, so a bad manifest changes nothing. Memory stays flat: lines are streamed, and duplicates
are found by the UNIQUE index on ``path`` rather than a Python set.

No secret is ever stored: tokens travel in headers, never in URLs bulkflex writes here.

The rest of ``DEST/.bulkflex/`` is kept here too: the destination's lock (``lock``: one download
at a time, see :func:`destination_lock`; shards lock their own files with the same
:class:`ExclusiveLock`), and the rule that a rejected manifest leaves a new destination as it
was (:func:`no_trace_if_rejected`).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bulkflex.core.paths import STATE_DIR
from bulkflex.core.ranges import Extents
from bulkflex.errors import (
    BulkflexError,
    DestinationError,
    ManifestError,
    StateError,
    UsageError,
    disk_error,
)
from bulkflex.manifest import read_manifest

__all__ = [
    "EntryRow",
    "ExclusiveLock",
    "StateDB",
    "StatusCounts",
    "destination_lock",
    "ensure_not_busy",
    "no_trace_if_rejected",
    "running_download",
    "state_path",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    id            INTEGER PRIMARY KEY,
    path          TEXT NOT NULL UNIQUE,  -- safe relative path under DEST
    url           TEXT NOT NULL,         -- as in the manifest
    size          INTEGER,               -- expected size from the manifest, or NULL
    checksum      TEXT,                  -- file:checksum multihash from the manifest, or NULL
    run           INTEGER NOT NULL,      -- last run whose manifest listed this path
    line          INTEGER NOT NULL,      -- its line number in that manifest
    status        TEXT NOT NULL DEFAULT 'pending',  -- pending | done | failed
    total         INTEGER,               -- size the server announced for the bytes in .part
    etag          TEXT,                  -- strong ETag the .part bytes belong to
    last_modified TEXT,                  -- Last-Modified the .part bytes belong to
    durable       TEXT NOT NULL DEFAULT '',  -- fdatasync-ed byte ranges of .part ("a-b,c-d")
    attempts      INTEGER NOT NULL DEFAULT 0, -- attempts in the current run
    restarts      INTEGER NOT NULL DEFAULT 0, -- restarts from 0 in the current run
    error_kind    TEXT,                  -- last failure class (see errors.TransferError.kind)
    error         TEXT,                  -- last failure, one line, no secrets
    updated       REAL                   -- Unix time of the last change
);
CREATE INDEX IF NOT EXISTS entries_run_status ON entries (run, status);
"""

_UPSERT = """
INSERT INTO entries (path, url, size, checksum, run, line, updated)
VALUES (?, ?, ?, ?, ?, ?, ?)  -- path, url, size, checksum, run, line, now
ON CONFLICT (path) DO UPDATE SET
    -- a changed url, size or checksum makes the bytes on disk worthless
    status = CASE
        WHEN entries.url IS NOT excluded.url OR entries.size IS NOT excluded.size
             OR entries.checksum IS NOT excluded.checksum THEN 'pending'
        WHEN entries.status = 'failed' THEN 'pending'
        ELSE entries.status END,
    durable = CASE
        WHEN entries.url IS NOT excluded.url OR entries.size IS NOT excluded.size
             OR entries.checksum IS NOT excluded.checksum THEN ''
        ELSE entries.durable END,
    url = excluded.url, size = excluded.size, checksum = excluded.checksum,
    run = excluded.run, line = excluded.line,
    attempts = 0, restarts = 0, updated = excluded.updated
WHERE entries.run < excluded.run
"""


DEFAULT_STATE_NAME = "state.sqlite"


def state_path(dest: str | os.PathLike[str], name: str = DEFAULT_STATE_NAME) -> Path:
    """``DEST/.bulkflex/<name>``; shards of a distributed run use names of their own."""
    return Path(dest) / STATE_DIR / name


class ExclusiveLock:
    """An exclusive ``flock`` on ``path`` (made if needed) for a ``with`` block.

    The kernel drops a flock with the last descriptor of its holder, so a killed run never
    leaves a stale lock, and worker processes forked while it is held keep it until they end.
    The holder writes its pid and host name into the file; whoever finds the lock taken gets
    ``busy(holder)`` raised ("pid 1234", "pid 1234 on HOST" for another machine sharing the
    folder, or "" when unknown), after polling for ``timeout_s`` seconds. Where the
    file system has no flock (some network mounts), the block runs unlocked, with a warning.
    """

    def __init__(
        self, path: Path, busy: Callable[[str], BulkflexError], *, timeout_s: float = 0.0
    ) -> None:
        self.path = path
        self.busy = busy
        self.timeout_s = timeout_s
        self._fd: int | None = None

    def __enter__(self) -> ExclusiveLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise disk_error(exc, exc.filename or self.path) from exc
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder(fd)
                    os.close(fd)
                    raise self.busy(holder) from None
                time.sleep(0.2)
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    os.close(fd)
                    raise disk_error(exc, self.path) from exc
                log.warning(
                    "cannot lock %s (%s): make sure no other bulkflex run writes there",
                    self.path,
                    exc.strerror,
                )
                break
        with suppress(OSError):  # only for the message of a run that finds it taken
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            with suppress(OSError):
                os.ftruncate(self._fd, 0)  # a pid is only ever read while its run holds the lock
            os.close(self._fd)  # closing drops the flock (forked workers may still hold it)
            self._fd = None


def _holder(fd: int) -> str:
    """``"pid N"``, or ``"pid N on HOST"`` for a run on another machine sharing the folder."""
    try:
        pid, _, host = os.pread(fd, 300, 0).decode("utf-8").strip().partition(" ")
    except (OSError, UnicodeDecodeError):
        return ""
    if not pid.isdigit():
        return ""
    return f"pid {pid} on {host}" if host and host != socket.gethostname() else f"pid {pid}"


_LOCK_NAME = "lock"


def destination_lock(dest: str | os.PathLike[str]) -> ExclusiveLock:
    """The lock of a run of ``dest`` on this machine: ``DEST/.bulkflex/lock``.

    A second run on the same destination would write the same ``.part`` files and state rows
    as the first: it stops instead, within a second (the wait covers a ``status`` probe, never
    a run), exit 4, naming the run that holds the lock.
    """

    def busy(holder: str) -> DestinationError:
        by = f" ({holder})" if holder else ""
        return DestinationError(
            f"{os.fspath(dest)} is in use by another bulkflex download{by}: let it finish, "
            "or stop it and run the same command again"
        )

    return ExclusiveLock(state_path(dest, _LOCK_NAME), busy, timeout_s=1.0)


def running_download(dest: str | os.PathLike[str]) -> str | None:
    """``"pid N"`` (``""`` when unknown) if a download holds ``dest``'s lock now, else None.

    A probe for ``bulkflex status``: a shared lock held for an instant, which a download
    starting at that very moment waits out (:func:`destination_lock` polls for a second).
    """
    try:
        fd = os.open(state_path(dest, _LOCK_NAME), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # never locked there (or not readable): nothing known to run
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    except OSError:
        return None
    finally:
        os.close(fd)  # drops the probe's own lock, if it got it
    return None


def ensure_not_busy(dest: str | os.PathLike[str]) -> None:
    """Raise :func:`destination_lock`'s error now if another run holds ``dest``; create nothing.

    For commands with long work before the download (``get`` plans first, which can take
    minutes): they learn at once that the destination is taken, not after the planning.
    """
    if state_path(dest, _LOCK_NAME).exists():
        with destination_lock(dest):
            pass


@contextmanager
def no_trace_if_rejected(dest: str | os.PathLike[str]) -> Iterator[None]:
    """A destination bulkflex never used keeps nothing of a run whose manifest is rejected.

    The state folder is made (and the destination with it) before the manifest is read, since
    the manifest streams straight into the database or the shard files. When a line then turns
    out malformed (:class:`ManifestError`), what this run made is removed again: the state
    folder if there was none, and the destination and its parents if they did not exist (each
    only while empty). A destination that had state is not touched: loading is one
    transaction, and shard files are replaced only once the whole manifest read well.
    """
    dest_path = Path(dest)
    state_dir = dest_path / STATE_DIR
    had_state = os.path.lexists(state_dir)
    missing = []  # folders this run may create, innermost first
    for folder in (dest_path, *dest_path.parents):
        if os.path.lexists(folder):
            break
        missing.append(folder)
    try:
        yield
    except ManifestError:
        if not had_state:
            shutil.rmtree(state_dir, ignore_errors=True)
        for folder in missing:
            with suppress(OSError):  # not empty: something else was put there meanwhile
                folder.rmdir()
        raise


@dataclass(frozen=True, slots=True)
class EntryRow:
    """One entry as the engine needs it."""

    id: int
    path: str
    url: str
    size: int | None
    checksum: str | None
    status: str
    total: int | None
    etag: str | None
    last_modified: str | None
    durable: Extents
    attempts: int
    restarts: int
    line: int


@dataclass(frozen=True, slots=True)
class StatusCounts:
    run: int
    done: int
    pending: int
    failed: int
    done_bytes: int
    partial_bytes: int
    expected_bytes: int | None
    failures: tuple[tuple[str, str, str], ...]  # (path, kind, error)


def _row(r: sqlite3.Row) -> EntryRow:
    return EntryRow(
        id=r["id"],
        path=r["path"],
        url=r["url"],
        size=r["size"],
        checksum=r["checksum"],
        status=r["status"],
        total=r["total"],
        etag=r["etag"],
        last_modified=r["last_modified"],
        durable=Extents.from_text(r["durable"]),
        attempts=r["attempts"],
        restarts=r["restarts"],
        line=r["line"],
    )


class StateDB:
    """The state of one destination. Not thread-safe: use it from one thread (the event loop).

    Writes are buffered in one open transaction; :meth:`commit` ends it. The engine commits on a
    short timer (group commit), so thousands of small files cost a handful of commits.
    """

    def __init__(
        self,
        dest: str | os.PathLike[str],
        *,
        create: bool = True,
        name: str = DEFAULT_STATE_NAME,
    ) -> None:
        self.path = state_path(dest, name)
        if not create and not self.path.exists():
            raise StateError(
                f"no bulkflex state in {os.fspath(dest)} (nothing downloaded there yet)"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except OSError as exc:
            raise DestinationError(
                f"cannot create {self.path.parent}: {exc.strerror or exc}"
            ) from exc
        except sqlite3.Error as exc:
            raise StateError(f"cannot open {self.path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            # a small WAL (checkpoint every ~1 MiB) that is reused, not truncated: once it has
            # grown, commits overwrite its pages and need no new disk space, so progress can
            # still be recorded when the data has filled the disk
            self._db.execute("PRAGMA wal_autocheckpoint=256")
            self._db.executescript(_SCHEMA)
            version = self._meta("schema_version")
            if version is None:
                self._set_meta("schema_version", str(SCHEMA_VERSION))
            elif int(version) != SCHEMA_VERSION:
                raise StateError(
                    f"{self.path} has schema version {version}; "
                    f"this bulkflex reads version {SCHEMA_VERSION}"
                )
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{self.path} is not a usable state database: {exc}") from exc

    # -- plumbing ---------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _begin(self) -> None:
        # in_transaction, not a flag of ours: SQLite rolls back by itself on some errors
        # (SQLITE_FULL), and a COMMIT then would fail with "no transaction is active"
        if not self._db.in_transaction:
            self._db.execute("BEGIN")

    def _write(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self._begin()
        try:
            return self._db.execute(sql, params)
        except sqlite3.OperationalError as exc:
            raise _map_sqlite_error(exc, self.path) from exc

    def commit(self) -> None:
        """Make every buffered change durable (against a process crash)."""
        if self._db.in_transaction:
            try:
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                raise _map_sqlite_error(exc, self.path) from exc

    def rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self._db.close()

    # -- loading ----------------------------------------------------------------------------

    @property
    def run(self) -> int:
        """The number of the current (last loaded) run; 0 before any."""
        value = self._meta("run")
        return int(value) if value is not None else 0

    def load_manifest(self, manifest: str | os.PathLike[str]) -> int:
        """Load ``manifest`` as a new run; returns the number of entries in it.

        Idempotent for an unchanged manifest: done entries stay done, partial bytes stay valid.
        Entries whose url, size or checksum changed lose their progress. Failed entries get a
        fresh retry budget.

        Raises:
            ManifestError: a malformed line or a duplicate path; the database is unchanged.
        """
        self.commit()
        source = os.fspath(manifest)
        fingerprint = _fingerprint(source)
        if fingerprint is not None and fingerprint == self._meta("manifest") and self.run > 0:
            return self._reload_unchanged()
        run = self.run + 1
        now = time.time()
        self._begin()
        try:
            self._set_meta("run", str(run))
            self._set_meta("manifest", fingerprint or "")
            count = self._upsert_entries(source, run, now)
            self.commit()
        except BaseException:
            self.rollback()
            raise
        return count

    def _upsert_entries(self, source: str, run: int, now: float) -> int:
        """Upsert every entry of ``source`` into ``run``; returns how many there are.

        One ``executemany`` over the streamed entries rather than an ``execute`` a row: a
        2000-line load took 33.7 ms of CPU against 37 (median of 30; parsing is most of it).
        An upsert changes no row only for a path listed twice in this run, so fewer changes
        than entries means a duplicate: then the same is done again row by row, to name its
        line.
        """
        count = 0

        def rows() -> Iterator[tuple[str, str, int | None, str | None, int, int, float]]:
            nonlocal count
            for line, entry in read_manifest(source):
                count += 1
                yield entry.path, entry.url, entry.size, entry.checksum, run, line, now

        self._db.execute("SAVEPOINT load")
        changed = self._db.executemany(_UPSERT, rows()).rowcount
        if changed == count or count == 0:  # no rows: the DB-API allows rowcount -1
            self._db.execute("RELEASE load")
            return count
        self._db.execute("ROLLBACK TO load")
        for row in rows():
            if self._db.execute(_UPSERT, row).rowcount == 0:
                path, line = row[0], row[5]
                first = self._db.execute(
                    "SELECT line FROM entries WHERE path = ?", (path,)
                ).fetchone()
                raise ManifestError(
                    source, line, f"duplicate path {path!r} (first on line {first['line']})"
                )
        raise UsageError(f"{source} changed while it was being read; run the command again")

    def _reload_unchanged(self) -> int:
        """The manifest has the same bytes as the one the current run loaded: keep its
        entries and give failed ones a fresh budget, without parsing a million lines again."""
        self._write(
            "UPDATE entries SET status = 'pending', attempts = 0, restarts = 0 "
            "WHERE run = ? AND status = 'failed'",
            (self.run,),
        )
        self._write("UPDATE entries SET attempts = 0, restarts = 0 WHERE run = ?", (self.run,))
        self.commit()
        row = self._db.execute("SELECT COUNT(*) FROM entries WHERE run = ?", (self.run,)).fetchone()
        return int(row[0])

    # -- queries ----------------------------------------------------------------------------

    def iter_run(self, *, batch: int = 1000, include_done: bool = True) -> Iterator[EntryRow]:
        """Entries of the current run in manifest order, fetched in pages (flat memory)."""
        run = self.run
        last_id = 0
        status_filter = "" if include_done else "AND status != 'done'"
        while True:
            rows = self._db.execute(
                f"SELECT * FROM entries WHERE run = ? AND id > ? {status_filter} "
                "ORDER BY id LIMIT ?",
                (run, last_id, batch),
            ).fetchall()
            if not rows:
                return
            for r in rows:
                yield _row(r)
            last_id = rows[-1]["id"]

    def get(self, entry_id: int) -> EntryRow:
        r = self._db.execute("SELECT * FROM entries WHERE id = ?", (entry_id,)).fetchone()
        if r is None:
            raise StateError(f"entry {entry_id} vanished from the state database")
        return _row(r)

    def counts(self, *, failures_limit: int = 1000) -> StatusCounts:
        run = self.run
        rows = self._db.execute(
            "SELECT status, COUNT(*) AS n, COALESCE(SUM(COALESCE(size, total)), 0) AS bytes, "
            "SUM(size IS NULL AND total IS NULL) AS unknown "
            "FROM entries WHERE run = ? GROUP BY status",
            (run,),
        ).fetchall()
        by_status = {r["status"]: r for r in rows}
        expected = sum(r["bytes"] for r in rows)
        unknown = sum(r["unknown"] or 0 for r in rows)
        partial = 0
        for (text,) in self._db.execute(
            "SELECT durable FROM entries WHERE run = ? AND status != 'done' AND durable != ''",
            (run,),
        ):
            partial += Extents.from_text(text).total
        failures = tuple(
            (r["path"], r["error_kind"] or "", r["error"] or "")
            for r in self._db.execute(
                "SELECT path, error_kind, error FROM entries WHERE run = ? AND status = 'failed' "
                "ORDER BY id LIMIT ?",
                (run, failures_limit),
            )
        )
        done = by_status.get("done")
        return StatusCounts(
            run=run,
            done=done["n"] if done else 0,
            pending=by_status["pending"]["n"] if "pending" in by_status else 0,
            failed=by_status["failed"]["n"] if "failed" in by_status else 0,
            done_bytes=done["bytes"] if done else 0,
            partial_bytes=partial,
            expected_bytes=None if unknown else expected,
            failures=failures,
        )

    # -- updates (buffered; see commit) -----------------------------------------------------

    def set_progress(
        self,
        entry_id: int,
        durable: Extents,
        *,
        total: int | None,
        etag: str | None,
        last_modified: str | None,
    ) -> None:
        """Record bytes that are already fdatasync-ed, and the version they belong to."""
        self._write(
            "UPDATE entries SET durable = ?, total = ?, etag = ?, last_modified = ?, updated = ? "
            "WHERE id = ?",
            (durable.to_text(), total, etag, last_modified, time.time(), entry_id),
        )

    def reset(self, entry_id: int, *, restart: bool) -> None:
        """Forget the partial bytes of an entry (they are worthless)."""
        self._write(
            "UPDATE entries SET durable = '', total = NULL, etag = NULL, last_modified = NULL, "
            "status = 'pending', restarts = restarts + ?, updated = ? WHERE id = ?",
            (1 if restart else 0, time.time(), entry_id),
        )

    def add_attempt(self, entry_id: int, error: str) -> None:
        self._write(
            "UPDATE entries SET attempts = attempts + 1, error = ?, updated = ? WHERE id = ?",
            (error, time.time(), entry_id),
        )

    def mark_done(self, entry_id: int, size: int) -> None:
        self._write(
            "UPDATE entries SET status = 'done', durable = ?, total = ?, error = NULL, "
            "error_kind = NULL, updated = ? WHERE id = ?",
            (f"0-{size}" if size else "", size, time.time(), entry_id),
        )

    def mark_failed(self, entry_id: int, kind: str, error: str) -> None:
        self._write(
            "UPDATE entries SET status = 'failed', error_kind = ?, error = ?, updated = ? "
            "WHERE id = ?",
            (kind, error, time.time(), entry_id),
        )


def _map_sqlite_error(exc: sqlite3.OperationalError, path: Path) -> Exception:
    text = str(exc)
    if "full" in text or "disk I/O" in text or "readonly" in text:
        return DestinationError(f"cannot write the state database {path}: {text}")
    return StateError(f"state database {path}: {text}")


def _fingerprint(manifest: str) -> str | None:
    """Size and sha256 of a manifest file's bytes: equal means the same entries. Hashing runs
    at over 1 GB/s, parsing at some 30k lines/s, so an unchanged million-line manifest reloads
    in well under a second. None for what is not a regular file (a pipe is read every time)."""
    if not os.path.isfile(manifest):
        return None
    digest = hashlib.sha256()
    size = 0
    try:
        with open(manifest, "rb") as handle:
            while block := handle.read(4 * 1024 * 1024):
                digest.update(block)
                size += len(block)
    except OSError:
        return None
    return f"{size}:{digest.hexdigest()}"
