# Splitting one manifest into K shard manifests, by a stable hash of each entry's path.
#
# Rules kept here:
# - The shard of a path depends only on the path and K (blake2b, never Python's salted hash()),
#   so a rerun, on any machine, puts every path in the same shard and finds its state there.
# - K is chosen once per destination and recorded in DEST/.bulkflex/shards/plan.json; later runs
#   reuse it even when the cluster has grown or shrunk, unless the caller forces another K.
# - Shard manifests are written atomically (ManifestWriter); a malformed or duplicate line
#   raises ManifestError with the *original* manifest's line number before anything starts.
# - Memory stays flat in the manifest's size but for one 64-bit digest per path (duplicates).
"""Stable sharding of a manifest for a cluster run: shard_index, choose_shards, split_manifest."""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bulkflex.core.paths import STATE_DIR
from bulkflex.errors import ManifestError, disk_error
from bulkflex.manifest import (
    ManifestWriter,
    read_manifest,
    read_manifest_lines,
    unreadable_manifest,
)

__all__ = [
    "SHARDS_DIR",
    "ShardInfo",
    "ShardPlan",
    "choose_shards",
    "read_plan",
    "shard_index",
    "shard_manifest_path",
    "shard_state_name",
    "split_manifest",
]

#: Folder of the shard manifests and the plan, under ``DEST/.bulkflex/``.
SHARDS_DIR = "shards"
_PLAN = "plan.json"
_PLAN_VERSION = 1
#: Shards per concurrently running task: enough to balance stragglers, few enough that the
#: per-shard start-up (open SQLite, load the shard manifest, new HTTP session) stays negligible.
SHARDS_PER_SLOT = 4
#: Below this many entries a shard costs more to start than it saves.
MIN_ENTRIES_PER_SHARD = 25


def shard_index(path: str, shards: int) -> int:
    """The shard (``0 <= i < shards``) of a manifest path; the same on every run and machine."""
    if shards < 1:
        raise ValueError("shards must be at least 1")
    digest = hashlib.blake2b(path.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def shard_state_name(index: int) -> str:
    """File name of shard ``index``'s state database under ``DEST/.bulkflex/``."""
    return f"shard-{index}.sqlite"


def shard_lock_name(index: int) -> str:
    """File name of shard ``index``'s lock under ``DEST/.bulkflex/`` (held while it runs)."""
    return f"shard-{index}.lock"


def shard_manifest_path(dest: str | os.PathLike[str], index: int) -> Path:
    return Path(dest) / STATE_DIR / SHARDS_DIR / f"shard-{index}.jsonl"


def choose_shards(entries: int, slots: int, *, per_slot: int = SHARDS_PER_SLOT) -> int:
    """K for a new destination: ``per_slot`` per running task, fewer for small manifests.

    ``choose_shards(0, n)`` is 1; the result is never above ``entries``.
    """
    by_size = max(1, entries // MIN_ENTRIES_PER_SHARD)
    return max(1, min(max(1, per_slot) * max(1, slots), by_size))


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One shard of a split: its manifest, entry count and expected bytes (None if unknown)."""

    index: int
    manifest: Path
    entries: int
    expected_bytes: int | None


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """The result of :func:`split_manifest`."""

    shards: tuple[ShardInfo, ...]

    @property
    def entries(self) -> int:
        return sum(s.entries for s in self.shards)

    @property
    def expected_bytes(self) -> int | None:
        sizes = [s.expected_bytes for s in self.shards]
        return None if any(b is None for b in sizes) else sum(b or 0 for b in sizes)


def read_plan(dest: str | os.PathLike[str]) -> int | None:
    """K recorded for ``dest`` by an earlier cluster run, or None (none, or unreadable)."""
    path = Path(dest) / STATE_DIR / SHARDS_DIR / _PLAN
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        shards = int(data["shards"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return shards if shards >= 1 else None


def _write_plan(dest: Path, shards: int) -> None:
    folder = dest / STATE_DIR / SHARDS_DIR
    tmp = folder / f".{_PLAN}.tmp"
    tmp.write_text(json.dumps({"version": _PLAN_VERSION, "shards": shards}) + "\n", "utf-8")
    os.replace(tmp, folder / _PLAN)


def count_entries(manifest: str | os.PathLike[str]) -> int:
    """Non-blank, non-comment lines of a manifest (a quick count; nothing is validated)."""
    try:
        with open(manifest, encoding="utf-8", errors="replace") as handle:
            return sum(1 for line in handle if line.strip() and not line.lstrip().startswith("#"))
    except OSError as exc:
        raise unreadable_manifest(os.fspath(manifest), exc) from exc


def split_manifest(
    manifest: str | os.PathLike[str], dest: str | os.PathLike[str], shards: int
) -> ShardPlan:
    """Write ``DEST/.bulkflex/shards/shard-<i>.jsonl`` for ``i < shards`` and record K.

    Every shard file is rewritten, empty ones included, so a shard never keeps entries of an
    older manifest. Entries keep their manifest order within a shard.

    Raises:
        ManifestError: a malformed line or a duplicate path (line numbers of ``manifest``);
            no shard file is replaced then.
        UsageError: the manifest cannot be read.
        DestinationError: the shard manifests or the plan cannot be written.
    """
    if shards < 1:
        raise ValueError("shards must be at least 1")
    source = os.fspath(manifest)
    dest_path = Path(dest)
    counts = [0] * shards
    sizes: list[int | None] = [0] * shards
    seen: set[int] = set()
    try:
        with ExitStack() as stack:
            writers = [
                stack.enter_context(ManifestWriter(shard_manifest_path(dest_path, i)))
                for i in range(shards)
            ]
            for line, text, entry in read_manifest_lines(source):
                digest = hashlib.blake2b(entry.path.encode("utf-8"), digest_size=8).digest()
                key = int.from_bytes(digest, "big")
                if key in seen:
                    first = _first_line_of(source, entry.path, line)
                    if first is not None:
                        raise ManifestError(
                            source, line, f"duplicate path {entry.path!r} (first on line {first})"
                        )
                seen.add(key)
                index = key % shards
                writers[index].write_line(text)  # as the user wrote it: checked above
                counts[index] += 1
                size = sizes[index]
                sizes[index] = None if size is None or entry.size is None else size + entry.size
        _write_plan(dest_path, shards)
    except OSError as exc:  # read_manifest reports the manifest's own errors: these are ours
        raise disk_error(exc, exc.filename or dest_path / STATE_DIR / SHARDS_DIR) from exc
    return ShardPlan(
        tuple(
            ShardInfo(i, shard_manifest_path(dest_path, i), counts[i], sizes[i])
            for i in range(shards)
        )
    )


def _first_line_of(source: str, path: str, before: int) -> int | None:
    """Line of the first entry with ``path`` before line ``before`` (None: a digest collision)."""
    for line, entry in read_manifest(source):
        if line >= before:
            return None
        if entry.path == path:
            return line
    return None
