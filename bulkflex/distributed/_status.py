# One view of a destination written by a single machine (state.sqlite), by a cluster
# (shard-<i>.sqlite, one per shard), or by both at different times.
#
# Rules kept here:
# - Shards of one plan never share a path (stable hash), so their counts add up.
# - state.sqlite and the shard files may both list every path (a job moved between one machine
#   and a cluster); adding them would count files twice. The mode that wrote last wins: the
#   files of the other mode describe an older attempt of the same job.
# - Shards of the plan that never started (a job stopped early) have no state file yet: their
#   entries count as pending, read from their shard manifest.
# - Read-only: nothing here changes a state file's content.
"""Combined status of a destination: :func:`combined_counts` over state.sqlite and the shards."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from bulkflex.core.paths import STATE_DIR
from bulkflex.distributed._shards import (
    count_entries,
    read_plan,
    shard_manifest_path,
    shard_state_name,
)
from bulkflex.manifest import read_manifest
from bulkflex.state import DEFAULT_STATE_NAME, StateDB, StatusCounts

__all__ = ["combined_counts", "layout", "shard_state_files", "use_processes"]

_FAILURES_LIMIT = 1000


def shard_state_files(dest: str | os.PathLike[str]) -> list[Path]:
    """The shard state files of the destination's current plan that exist, in shard order.

    Without a plan (older layout, or the plan was removed) every ``shard-<i>.sqlite`` counts.
    """
    folder = Path(dest) / STATE_DIR
    shards = read_plan(dest)
    if shards is not None:
        candidates = [folder / shard_state_name(i) for i in range(shards)]
        return [p for p in candidates if p.exists()]
    found = []
    for path in folder.glob("shard-*.sqlite"):
        number = path.name[len("shard-") : -len(".sqlite")]
        if number.isdigit():
            found.append((int(number), path))
    return [p for _, p in sorted(found)]


def _last_activity(path: Path) -> float:
    """Unix time of the latest change recorded in a state file (0.0 when unreadable)."""
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0.0
    try:
        row = db.execute("SELECT MAX(updated) FROM entries").fetchone()
        return float(row[0]) if row and row[0] is not None else 0.0
    except sqlite3.Error:
        return 0.0
    finally:
        db.close()


def _not_started(dest: Path, started: set[str]) -> list[StatusCounts]:
    """Counts for shards of the plan that never ran (no state file): all pending."""
    shards = read_plan(dest)
    parts = []
    for index in range(shards or 0):
        manifest = shard_manifest_path(dest, index)
        if shard_state_name(index) in started or not manifest.exists():
            continue
        entries = 0
        expected: int | None = 0
        for _, entry in read_manifest(manifest):
            entries += 1
            expected = None if expected is None or entry.size is None else expected + entry.size
        parts.append(StatusCounts(0, 0, entries, 0, 0, 0, expected, ()))
    return parts


def _counts(dest: Path, name: str) -> StatusCounts:
    state = StateDB(dest, create=False, name=name)
    try:
        return state.counts(failures_limit=_FAILURES_LIMIT)
    finally:
        state.close()


def layout(dest: str | os.PathLike[str]) -> str | None:
    """How ``dest`` was last downloaded: ``"single"`` (state.sqlite), ``"sharded"`` (a shard
    plan: a cluster or worker processes), or None (no bulkflex state yet).

    The mode that wrote last wins, as in :func:`combined_counts`; a plan whose shards never
    started counts as sharded unless a single state file exists.
    """
    dest_path = Path(dest)
    single = (dest_path / STATE_DIR / DEFAULT_STATE_NAME).exists()
    shards = shard_state_files(dest_path)
    if not shards:
        if read_plan(dest_path) is not None and not single:
            return "sharded"
        return "single" if single else None
    if single:
        newest_shard = max(_last_activity(p) for p in shards)
        if _last_activity(dest_path / STATE_DIR / DEFAULT_STATE_NAME) > newest_shard:
            return "single"
    return "sharded"


#: A new destination gets worker processes by default from this many manifest entries: below
#: it, per-file work is not what limits a job, and each worker costs a start.
AUTO_MIN_ENTRIES = 1000
#: ... at most this many (one per core up to it): past a few, the links and the disk limit.
AUTO_MAX_PROCESSES = 4


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def use_processes(
    dest: str | os.PathLike[str],
    processes: int | None,
    manifest: str | os.PathLike[str] | None = None,
) -> tuple[int, str | None]:
    """Worker processes for a run (0: none, the one-process engine), and a note for the user
    when a request is not followed.

    ``processes`` None means automatic: a new destination gets one worker per core (at most
    :data:`AUTO_MAX_PROCESSES`) when ``manifest`` has :data:`AUTO_MIN_ENTRIES` entries or more
    and there are two cores or more. A destination keeps the layout of its first run: sharded
    (by a cluster or by worker processes), it resumes sharded with any ``processes``; single,
    it resumes single (its partial files are recorded in state.sqlite, which shards would not
    see).

    Raises:
        UsageError: the manifest cannot be read (automatic choice for a new destination).
    """
    mode = layout(dest)
    auto = min(_cores(), AUTO_MAX_PROCESSES)
    if mode == "single":
        note = None
        if processes is not None and processes > 1:
            note = (
                f"{os.fspath(dest)} was started in one process; it resumes in one "
                "(--processes applies to a new destination)"
            )
        return 0, note
    if mode == "sharded":
        return (processes or auto), None
    if processes is not None:
        return (processes if processes > 1 else 0), None
    if auto > 1 and manifest is not None and count_entries(manifest) >= AUTO_MIN_ENTRIES:
        return auto, None
    return 0, None


def combined_counts(dest: str | os.PathLike[str]) -> StatusCounts:
    """Done / pending / failed over every state file of ``dest`` (see the module comment).

    ``run`` is the highest run number of the files counted; ``expected_bytes`` is None when any
    file has entries of unknown size; at most 1000 failures are listed.

    Raises:
        StateError: there is no bulkflex state in ``dest`` at all, or a file is unusable.
    """
    dest_path = Path(dest)
    shards = shard_state_files(dest_path)
    if not shards or layout(dest_path) == "single":
        return _counts(dest_path, DEFAULT_STATE_NAME)  # raises StateError when absent
    parts = [_counts(dest_path, p.name) for p in shards]
    parts += _not_started(dest_path, {p.name for p in shards})
    expected: int | None = 0
    for part in parts:
        expected = (
            None
            if expected is None or part.expected_bytes is None
            else (expected + part.expected_bytes)
        )
    failures = tuple(f for part in parts for f in part.failures)[:_FAILURES_LIMIT]
    return StatusCounts(
        run=max(part.run for part in parts),
        done=sum(part.done for part in parts),
        pending=sum(part.pending for part in parts),
        failed=sum(part.failed for part in parts),
        done_bytes=sum(part.done_bytes for part in parts),
        partial_bytes=sum(part.partial_bytes for part in parts),
        expected_bytes=expected,
        failures=failures,
    )
