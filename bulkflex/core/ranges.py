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


# -- segmented downloads ---------------------------------------------------------------------
#
# One file, several connections. Each connection owns a Claim: it fetches [pos, end) and writes
# as it goes. An idle connection asks the plan for work: it takes the largest run nobody owns;
# when every byte is owned, it takes the back half of the claim with the most time left, if that
# half is big enough (work stealing, as aria2 does). The victim just stops earlier: a claim's
# `end` may shrink while its request, asked up to the old end, is still streaming. A request's
# end is therefore always the start of the next claimed or written run.

_ALIGN = 64 * 1024


@dataclass(slots=True, eq=False)
class Claim:
    """A connection's run of the file: it writes ``[pos, end)``; ``[start, pos)`` is written.

    ``end`` shrinks when another connection steals the tail. ``rate`` (bytes/s, measured by the
    engine) lets the plan find a straggler.
    """

    start: int
    end: int
    pos: int
    rate: float = 0.0

    @property
    def remaining(self) -> int:
        return max(0, self.end - self.pos)

    def eta(self) -> float:
        """Seconds left at the current rate (infinite when nothing was measured yet)."""
        if self.remaining == 0:
            return 0.0
        return self.remaining / self.rate if self.rate > 0 else float("inf")


class SegmentPlan:
    """Which bytes of one file are written, owned by a connection, or free. Pure bookkeeping.

    Args:
        size: the file's size.
        written: bytes already on disk (e.g. durable extents from an earlier run).
        min_piece: no claim smaller than this is created by splitting another one.
        max_claim: a connection takes at most this much of a free run at once (its "share"),
            so that bytes are handed out before anyone has to cut another request short.
        straggler_ratio: a claim whose rate is below this fraction of the median rate of the
            others has its tail taken even when it is smaller than two pieces (no "stuck at
            99 %"), as long as at least ``min_steal`` bytes remain.
    """

    def __init__(
        self,
        size: int,
        written: Extents,
        *,
        min_piece: int,
        straggler_ratio: float = 0.25,
        min_steal: int = 1024 * 1024,
        max_claim: int | None = None,
    ) -> None:
        self.size = size
        self.written = written
        self.min_piece = max(1, min_piece)
        self.straggler_ratio = straggler_ratio
        self.min_steal = min_steal
        self.max_claim = max_claim
        self.claims: list[Claim] = []

    def done(self) -> bool:
        return self.written.covers(self.size)

    def _owned(self) -> Extents:
        owned = self.written
        for claim in self.claims:
            if claim.remaining:
                owned = owned.add(Segment(claim.pos, claim.end))
        return owned

    def claim(self) -> Claim | None:
        """Work for an idle connection, or None when there is nothing worth taking."""
        free = max(self._owned().gaps(self.size), key=lambda s: s.length, default=None)
        if free is not None:
            end = free.end
            if self.max_claim is not None:
                end = min(end, free.start + self.max_claim)
            new = Claim(free.start, end, free.start)
            self.claims.append(new)
            return new
        victim = self._victim()
        if victim is None:
            return None
        mid = victim.pos + victim.remaining // 2
        aligned = mid - mid % _ALIGN
        if aligned > victim.pos:
            mid = aligned
        new = Claim(mid, victim.end, mid)
        victim.end = mid
        self.claims.append(new)
        return new

    def _victim(self) -> Claim | None:
        active = [c for c in self.claims if c.remaining]
        if not active:
            return None
        slowest = max(active, key=lambda c: (c.eta(), c.remaining))
        if slowest.remaining >= 2 * self.min_piece:
            return slowest
        rates = sorted(c.rate for c in active if c is not slowest and c.rate > 0)
        # a claim not measured yet (rate 0) has just started: it is not a straggler
        if rates and slowest.rate > 0 and slowest.remaining >= 2 * self.min_steal:
            median = rates[len(rates) // 2]
            if slowest.rate < self.straggler_ratio * median:
                return slowest
        return None

    def advance(self, claim: Claim, nbytes: int) -> None:
        """``nbytes`` more bytes of ``claim`` are on disk.

        They may run past ``end`` when the tail was stolen while the write was under way: the
        bytes are the same either way (one validator), so the overlap is simply written twice.
        """
        if nbytes <= 0:
            return
        self.written = self.written.add(Segment(claim.pos, claim.pos + nbytes))
        claim.pos += nbytes

    def release(self, claim: Claim) -> None:
        """The connection is done with ``claim``; its unwritten rest becomes free again."""
        self.claims = [c for c in self.claims if c is not claim]
