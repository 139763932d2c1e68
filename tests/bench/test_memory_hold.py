"""``benchmarks/_memory.py``: free page reporting is switched off (or held back) inside
``held_free_pages`` and every parameter it changed is put back after, errors included. Runs
only where the VM's ``page_reporting`` module is there and writable (root)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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


def test_a_benchmark_killed_inside_is_undone_by_the_next(
    tmp_path: Path, harness_on_path: Path
) -> None:
    from _memory import held_free_pages

    record = tmp_path / "page_reporting.json"
    before = _values()
    with subprocess.Popen(
        [sys.executable, "-c", _HOLD_THEN_SLEEP, str(harness_on_path), str(record)],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "inside\n"
            assert json.loads(record.read_text()) == before
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
            left = _values()
            assert left["min_free_ms"] == "300000", left  # the kill left them changed
            notes: list[str] = []
            with held_free_pages(0, notes, back_all=False, record=record):
                assert json.loads(record.read_text()) == before  # the true values, not the left
            assert _values() == before
            assert not record.exists()
            assert notes[0] == (
                "free page reporting was left changed by a benchmark that did not end "
                f"({record}): put back to {', '.join(f'{k} {v}' for k, v in before.items())} first"
            )
        finally:
            child.kill()
            for name, value in before.items():
                (PARAMS / name).write_text(value)


_HOLD_THEN_SLEEP = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from _memory import held_free_pages
with held_free_pages(0, [], back_all=False, record=Path(sys.argv[2])):
    print("inside", flush=True)
    time.sleep(60)
"""
