"""Segment planning: claims cover the file exactly once, stealing halves the biggest job."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from bulkflex.core.ranges import Extents, SegmentPlan

MiB = 1024 * 1024


def test_idle_connections_split_the_remaining_work_in_halves() -> None:
    plan = SegmentPlan(64 * MiB, Extents(), min_piece=4 * MiB)
    first = plan.claim()
    assert first is not None and (first.start, first.end) == (0, 64 * MiB)
    second = plan.claim()
    assert second is not None and (second.start, second.end) == (32 * MiB, 64 * MiB)
    assert first.end == 32 * MiB  # the first connection now stops where the second begins
    third = plan.claim()
    assert third is not None and (third.start, third.end) == (16 * MiB, 32 * MiB)


def test_small_remainders_are_not_split() -> None:
    plan = SegmentPlan(6 * MiB, Extents(), min_piece=4 * MiB)
    assert plan.claim() is not None
    assert plan.claim() is None


def test_resume_takes_the_gaps_left_by_an_earlier_run() -> None:
    plan = SegmentPlan(100, Extents.of([(0, 10), (50, 70)]), min_piece=1000)
    first = plan.claim()
    assert first is not None and (first.start, first.end) == (10, 50)
    second = plan.claim()
    assert second is not None and (second.start, second.end) == (70, 100)
    assert plan.claim() is None


def test_a_straggler_loses_its_tail_even_below_two_pieces() -> None:
    plan = SegmentPlan(20 * MiB, Extents(), min_piece=16 * MiB, min_steal=1 * MiB)
    slow = plan.claim()
    assert slow is not None
    slow.end = 10 * MiB  # pretend a fast claim owns the rest
    fast = plan.claim()
    assert fast is not None
    plan.advance(fast, fast.remaining)
    other = plan.claim()  # nothing free, slow has 10 MiB < 2 pieces, no rates known
    assert other is None
    slow.rate, fast.rate = 1_000.0, 100_000_000.0
    plan.claims.append(fast)  # a finished fast claim still informs the median
    fast.end = fast.pos + 1
    fast.rate = 100_000_000.0
    thief = plan.claim()
    assert thief is not None and thief.start > slow.pos and slow.end == thief.start


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=5_000_000),
    st.integers(min_value=1, max_value=8),
    st.integers(min_value=0, max_value=2**32),
)
def test_random_schedules_write_every_byte_exactly_once(
    size: int, connections: int, seed: int
) -> None:
    rng = random.Random(seed)
    plan = SegmentPlan(size, Extents(), min_piece=64 * 1024)
    hits = bytearray(size)
    active = []
    for _ in range(connections):
        claim = plan.claim()
        if claim:
            active.append(claim)
    steps = 0
    while active and steps < 100_000:
        steps += 1
        claim = rng.choice(active)
        n = min(claim.remaining, rng.randint(1, 300_000))
        for i in range(claim.pos, claim.pos + n):
            hits[i] += 1
        plan.advance(claim, n)
        claim.rate = rng.uniform(1, 1000)
        if claim.remaining == 0:
            plan.release(claim)
            active.remove(claim)
            new = plan.claim()
            if new:
                active.append(new)
    assert plan.done()
    assert set(hits) == {1}


def test_prefix_hasher_hashes_in_passing_and_catches_up_the_rest(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Bytes written at the frontier are hashed as they pass; the rest is read back once."""
    import hashlib

    from bulkflex.transfer.files import FolderGuard, PartFile, PrefixHasher

    data = bytes(range(256)) * 4096  # 1 MiB
    part = PartFile(tmp_path, "f.bin", FolderGuard(tmp_path))
    part.open(truncate=True)
    hasher = PrefixHasher(hashlib.sha256())
    part.write_at(0, data[:300_000], hasher)
    assert hasher.pos == 300_000  # hashed in passing, no read-back
    part.write_at(600_000, data[600_000:], hasher)  # out of order: not hashed yet
    assert hasher.pos == 300_000
    part.write_at(300_000, data[300_000:600_000], hasher)
    assert hasher.pos == 600_000
    part.close()
    hasher.catch_up(part.part, len(data))
    assert hasher.digest() == hashlib.sha256(data).digest()


def test_free_runs_are_handed_out_in_shares_before_anything_is_stolen() -> None:
    plan = SegmentPlan(64 * MiB, Extents(), min_piece=4 * MiB, max_claim=16 * MiB)
    claims = [plan.claim() for _ in range(4)]
    assert [(c.start, c.end) for c in claims if c] == [
        (0, 16 * MiB),
        (16 * MiB, 32 * MiB),
        (32 * MiB, 48 * MiB),
        (48 * MiB, 64 * MiB),
    ]
    assert all(c.end - c.start == 16 * MiB for c in claims if c)  # nobody was cut short
    fifth = plan.claim()  # now the only way to help is to steal half of someone's share
    assert fifth is not None and fifth.end == 16 * MiB and claims[0] is not None
    assert claims[0].end == fifth.start
