"""``benchmarks/_memory.py``: free page reporting is switched off (or held back) inside
``held_free_pages`` and every parameter it changed is put back after, errors included. Runs
only where the VM's ``page_reporting`` module is there and writable (root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PARAMS = Path("/sys/module/page_reporting/parameters")
NAMES = ("min_free_ms", "max_waiting_mib", "page_reporting_order")

pytestmark = [
    pytest.mark.skipif(
        not os.access(PARAMS / "min_free_ms", os.W_OK), reason="no writable page_reporting module"
    ),
    pytest.mark.usefixtures("harness_on_path"),
]


def _values() -> dict[str, str]:
    return {name: (PARAMS / name).read_text().strip() for name in NAMES}


def _kernel_takes_order(order: int) -> bool:
    """Whether this kernel accepts ``page_reporting_order`` = ``order`` (the value is put back)."""
    path = PARAMS / "page_reporting_order"
    old = path.read_text().strip()
    try:
        path.write_text(str(order))
    except OSError:
        return False
    path.write_text(old)
    return True


def test_reporting_is_off_inside_and_as_it_was_after() -> None:
    from _memory import _page_orders, held_free_pages

    orders = _page_orders()
    assert orders is not None and orders > 1
    takes = _kernel_takes_order(orders)
    before = _values()
    notes: list[str] = []
    with held_free_pages(0, notes, back_all=False):
        inside = _values()
    assert _values() == before
    assert (inside["min_free_ms"], inside["max_waiting_mib"]) == ("300000", "65536")
    if takes:  # no free block is of that order: nothing is reported
        assert inside["page_reporting_order"] == str(orders)
        assert notes[0].startswith("free page reporting switched off during the runs (")
    else:  # an upstream kernel refuses it: reports are only held back
        assert inside["page_reporting_order"] == before["page_reporting_order"]
        assert notes[0].startswith("free page reporting held off during the runs (")
    assert f"page_reporting_order {before['page_reporting_order']}" in notes[0]


def test_settings_are_put_back_when_the_block_raises() -> None:
    from _memory import held_free_pages

    before = _values()
    with pytest.raises(RuntimeError, match="a run failed"), held_free_pages(0, [], back_all=False):
        assert _values() != before
        raise RuntimeError("a run failed")
    assert _values() == before
