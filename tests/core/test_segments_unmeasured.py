"""Work stealing and claims that have not received a byte yet.

A claim's ``rate`` is 0 until its response starts to arrive. Such a claim is not slow, it is
unmeasured: the straggler rule (steal below two pieces when a claim runs at under a quarter of
the others' median rate) must not fire on it, or every file is cut into pieces smaller than
``min_piece`` in its first milliseconds, one extra request each.
"""

from __future__ import annotations

from bulkflex.core.ranges import Extents, SegmentPlan

MiB = 1024 * 1024


def test_a_claim_not_yet_measured_is_not_a_straggler() -> None:
    plan = SegmentPlan(8 * MiB, Extents(), min_piece=4 * MiB, min_steal=1 * MiB)
    first = plan.claim()
    second = plan.claim()
    assert first is not None and second is not None
    assert (first.end, second.start) == (4 * MiB, 4 * MiB)
    first.rate = 50 * MiB  # the first response streams; the second has not answered yet
    plan.advance(first, 64 * 1024)
    assert plan.claim() is None  # 4 MiB each: nothing to split, nobody measured as slow


def test_a_measured_straggler_still_loses_its_tail() -> None:
    plan = SegmentPlan(8 * MiB, Extents(), min_piece=4 * MiB, min_steal=1 * MiB)
    first, second = plan.claim(), plan.claim()
    assert first is not None and second is not None
    first.rate, second.rate = 50 * MiB, 1 * MiB
    plan.advance(second, 64 * 1024)
    stolen = plan.claim()
    assert stolen is not None and stolen.end == 8 * MiB and second.end == stolen.start
