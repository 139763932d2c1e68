"""parse_range: the single-range parser shared by the demo server and the fault server."""

from __future__ import annotations

import pytest

from bulkflex.demo.app import parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-99", 1000, (0, 100)),
        ("bytes=900-", 1000, (900, 1000)),
        ("bytes=900-5000", 1000, (900, 1000)),
        ("bytes=-10", 1000, (990, 1000)),
        ("bytes=-5000", 1000, (0, 1000)),
        ("BYTES = 5-9", 1000, (5, 10)),
        ("bytes=1000-", 1000, "unsatisfiable"),
        ("bytes=-0", 1000, "unsatisfiable"),
        ("bytes=-5", 0, "unsatisfiable"),
        ("bytes=0-", 0, "unsatisfiable"),
        ("bytes=5-4", 1000, None),
        ("bytes=0-1,5-9", 1000, None),
        ("items=0-9", 1000, None),
        ("bytes=x-9", 1000, None),
        ("bytes=9", 1000, None),
    ],
)
def test_parse_range(header: str, size: int, expected: object) -> None:
    assert parse_range(header, size) == expected
