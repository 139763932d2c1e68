"""Byte ranges: which parts of a file are durable, and which are still to fetch.

Ranges are half-open ``[start, end)`` internally; only the ``Range`` header is inclusive
(:func:`range_header`). :class:`Extents` is an immutable, sorted, coalesced set of ranges, cheap to
store as text in the state database (``"0-1048576,2097152-4194304"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["Extents", "Segment", "range_header"]


@dataclass(frozen=True, slots=True, order=True)
class Segment:
    """A half-open byte range ``[start, end)``."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < self.start:
            raise ValueError(f"invalid segment [{self.start}, {self.end})")

    @property
    def length(self) -> int:
        return self.end - self.start


def range_header(start: int, end: int | None) -> str:
    """The ``Range`` header value for ``[start, end)``; ``end`` None means to the end of file."""
    return f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"


@dataclass(frozen=True, slots=True)
class Extents:
    """A sorted tuple of disjoint, non-adjacent segments."""

    segments: tuple[Segment, ...] = ()

    @classmethod
    def of(cls, ranges: Iterable[tuple[int, int] | Segment]) -> Extents:
        result = cls()
        for item in ranges:
            seg = item if isinstance(item, Segment) else Segment(*item)
            result = result.add(seg)
        return result

    def add(self, seg: Segment) -> Extents:
        """The union of this set and ``seg``."""
        if seg.length == 0:
            return self
        merged: list[Segment] = []
        start, end = seg.start, seg.end
        placed = False
        for cur in self.segments:
            if cur.end < start:
                merged.append(cur)
            elif end < cur.start:
                if not placed:
                    merged.append(Segment(start, end))
                    placed = True
                merged.append(cur)
            else:  # overlapping or adjacent: absorb
                start, end = min(start, cur.start), max(end, cur.end)
        if not placed:
            merged.append(Segment(start, end))
        return Extents(tuple(sorted(merged)))

    @property
    def total(self) -> int:
        return sum(s.length for s in self.segments)

    def prefix(self) -> int:
        """Length of the contiguous durable run from byte 0."""
        if self.segments and self.segments[0].start == 0:
            return self.segments[0].end
        return 0

    def gaps(self, size: int) -> Iterator[Segment]:
        """The missing segments of ``[0, size)``, in order."""
        pos = 0
        for seg in self.segments:
            if seg.start >= size:
                break
            if seg.start > pos:
                yield Segment(pos, seg.start)
            pos = max(pos, seg.end)
        if pos < size:
            yield Segment(pos, size)

    def covers(self, size: int) -> bool:
        return next(self.gaps(size), None) is None

    def to_text(self) -> str:
        return ",".join(f"{s.start}-{s.end}" for s in self.segments)

    @classmethod
    def from_text(cls, text: str | None) -> Extents:
        """Parse :meth:`to_text` output. Raises ValueError on anything else."""
        if not text:
            return cls()
        pairs = []
        for part in text.split(","):
            start, _, end = part.partition("-")
            pairs.append((int(start), int(end)))
        return cls.of(pairs)
