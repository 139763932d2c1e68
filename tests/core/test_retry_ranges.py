"""Retry policy and byte-range sets: pure values, property-tested."""

from __future__ import annotations

import itertools
import random

from hypothesis import given
from hypothesis import strategies as st

from bulkflex.core.ranges import Extents, Segment, range_header
from bulkflex.core.retry import RetryPolicy, StallDetector, StallRule, parse_retry_after


@given(st.integers(min_value=1, max_value=9), st.integers(min_value=0, max_value=2**32))
def test_backoff_stays_within_floor_and_cap(attempt: int, seed: int) -> None:
    policy = RetryPolicy(max_attempts=10, base_s=1.0, cap_s=60.0)
    delay = policy.delay(attempt, retry_after_s=None, rng=random.Random(seed))
    assert delay is not None
    assert 0.5 <= delay <= min(60.0, 2 ** (attempt - 1))


def test_budget_runs_out() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.delay(3, retry_after_s=None, rng=random.Random(0)) is None


def test_retry_after_wins_but_is_capped() -> None:
    policy = RetryPolicy(retry_after_cap_s=300)
    rng = random.Random(0)
    assert policy.delay(1, retry_after_s=12, rng=rng) == 12
    assert policy.delay(1, retry_after_s=86_400, rng=rng) == 300


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after("120", now=0) == 120
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after("-5", now=0) is None
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now=100) == 0


def test_stall_detector_flags_a_drip_but_not_a_steady_stream() -> None:
    rule = StallRule(min_bytes_per_s=1000, window_s=10, warmup_s=5)
    drip = StallDetector(rule, started=0)
    steady = StallDetector(rule, started=0)
    flagged = [drip.stalled(t, t * 10) for t in range(0, 40)]
    assert any(flagged) and not any(flagged[:15])
    assert not any(steady.stalled(t, t * 5000) for t in range(0, 40))


segments = st.lists(
    st.tuples(st.integers(0, 1000), st.integers(0, 200)).map(lambda p: (p[0], p[0] + p[1])),
    max_size=20,
)


@given(segments, st.integers(0, 1300))
def test_gaps_and_extents_cover_the_file_exactly_once(
    pairs: list[tuple[int, int]], size: int
) -> None:
    extents = Extents.of(pairs)
    covered = [False] * size
    for seg in extents.segments:
        for i in range(seg.start, min(seg.end, size)):
            covered[i] = True
    gap_bytes = [False] * size
    for gap in extents.gaps(size):
        for i in range(gap.start, gap.end):
            assert not covered[i] and not gap_bytes[i]
            gap_bytes[i] = True
    assert all(c or g for c, g in zip(covered, gap_bytes, strict=True))
    assert Extents.from_text(extents.to_text()) == extents


@given(segments)
def test_extents_are_sorted_disjoint_and_not_adjacent(pairs: list[tuple[int, int]]) -> None:
    segs = Extents.of(pairs).segments
    for a, b in itertools.pairwise(segs):
        assert a.end < b.start


def test_prefix_and_range_header() -> None:
    assert Extents.of([(0, 10), (20, 30)]).prefix() == 10
    assert Extents.of([(5, 10)]).prefix() == 0
    assert range_header(10, None) == "bytes=10-"
    assert range_header(10, 20) == "bytes=10-19"
    assert Segment(3, 9).length == 6
