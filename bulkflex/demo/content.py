"""Deterministic file contents for the embedded asset server.

A file's bytes are a pure function of its URL path and a *generation* (bumped by
:meth:`ContentStore.change` to simulate a product re-published at the same URL). They are cut,
block by block, from a fixed 1 MiB pseudo-random pool at offsets derived from the path, so any
byte range is produced without generating what comes before it, and nothing is stored.

The ``product`` zip of an item is built on the fly from the item's files (stored, fixed
timestamps, data descriptors), streamed as it is produced: its length is not known in advance,
exactly like MAAP's zipper.
"""

from __future__ import annotations

import hashlib
import io
import random
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["BLOCK", "ContentStore", "FileSpec", "size_for"]

BLOCK = 64 * 1024
_POOL_SIZE = 1024 * 1024
_POOL = random.Random(20230710).randbytes(_POOL_SIZE + BLOCK)
_ZIP_TIME = (2025, 3, 7, 14, 22, 20)


@dataclass(frozen=True, slots=True)
class FileSpec:
    """A served file: URL path (``/data/...``), size (None for on-the-fly zips)."""

    path: str
    size: int | None
    zipped: bool = False


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def size_for(path: str, low: int, high: int) -> int:
    """A size in ``[low, high]`` chosen from the path, log-uniformly (many small, some big)."""
    if high <= low:
        return low
    fraction = (_hash64("size:" + path) % 1_000_003) / 1_000_003
    return int(low * (high / low) ** fraction) if low > 0 else int(high * fraction)


class _Sink(io.RawIOBase):
    """A write-only, non-seekable stream that hands out what was written since the last drain."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class ContentStore:
    """Bytes, ETags and checksums of served files. Thread-safe (tests read it from another
    thread); checksums are cached (LRU) because items are rendered again and again."""

    def __init__(self, *, checksum_cache: int = 50_000) -> None:
        self._generations: dict[str, int] = {}
        self._lock = threading.Lock()
        self._checksums: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._cache_size = checksum_cache

    def generation(self, path: str) -> int:
        with self._lock:
            return self._generations.get(path, 0)

    def change(self, path: str) -> None:
        """Publish new bytes at ``path`` (same size): the ETag and the checksum change."""
        with self._lock:
            self._generations[path] = self._generations.get(path, 0) + 1
            for key in [k for k in self._checksums if k[0] == path]:
                del self._checksums[key]

    def etag(self, spec: FileSpec) -> str:
        """A strong ETag of the file's current bytes."""
        generation = self.generation(spec.path)
        return f'"{_hash64(f"etag:{generation}:{spec.path}:{spec.size}"):016x}"'

    def iter_bytes(
        self, spec: FileSpec, start: int = 0, end: int | None = None
    ) -> Iterator[memoryview]:
        """Yield the bytes ``[start, end)`` of a static file in chunks of at most 64 KiB."""
        assert spec.size is not None, "zips are produced by iter_zip"
        stop = spec.size if end is None else min(end, spec.size)
        generation = self.generation(spec.path)
        seed = _hash64(f"{generation}:{spec.path}")
        position = start
        while position < stop:
            block = position // BLOCK
            offset = (seed ^ (block * 0x9E3779B97F4A7C15)) % _POOL_SIZE
            inner = position - block * BLOCK
            take = min(BLOCK - inner, stop - position)
            yield memoryview(_POOL)[offset + inner : offset + inner + take]
            position += take

    def read(self, spec: FileSpec, start: int = 0, end: int | None = None) -> bytes:
        return b"".join(self.iter_bytes(spec, start, end))

    def checksum(self, spec: FileSpec) -> str:
        """The sha2-256 multihash (``1220`` + hex digest) of the file's current bytes."""
        key = (spec.path, self.generation(spec.path))
        with self._lock:
            cached = self._checksums.get(key)
            if cached is not None:
                self._checksums.move_to_end(key)
                return cached
        hasher = hashlib.sha256()
        for chunk in self.iter_bytes(spec):
            hasher.update(chunk)
        value = "1220" + hasher.hexdigest()
        with self._lock:
            self._checksums[key] = value
            while len(self._checksums) > self._cache_size:
                self._checksums.popitem(last=False)
        return value

    def iter_zip(self, members: Sequence[tuple[str, FileSpec]]) -> Iterator[bytes]:
        """Stream a zip of ``(name inside the zip, file)`` members as it is written.

        Stored (no compression: the members are incompressible anyway), fixed timestamps, so the
        same members give the same bytes; the central directory comes last.
        """
        sink = _Sink()
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, spec in members:
                info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_STORED
                with archive.open(info, "w", force_zip64=False) as member:
                    for chunk in self.iter_bytes(spec):
                        member.write(chunk)
                        if sink.tell() and len(sink._parts) >= 8:
                            yield sink.drain()
                yield sink.drain()
        tail = sink.drain()
        if tail:
            yield tail
