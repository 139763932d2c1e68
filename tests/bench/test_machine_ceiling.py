"""The machine's busy CPU seconds over a run (``bulkflex/bench/measure.py``), the set's sha256
cost (``benchmarks/_sha256_check.py``), and the report's ceiling for a tool that hashes every
byte (``benchmarks/_report.py``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from bulkflex.bench.measure import cpu_ticks, machine_busy_s, run_measured

#: one clock tick of /proc/stat, the resolution of a machine busy reading
TICK_S = 1 / os.sysconf("SC_CLK_TCK")

# A /proc/stat as Linux 6 prints it (shortened: per-core lines and counters after them)
STAT = """cpu  1000 20 300 5000 40 6 7 8 90 10
cpu0 500 10 150 2500 20 3 3 4 45 5
intr 12345
"""


def test_cpu_ticks_counts_irq_softirq_and_steal_as_busy_and_iowait_as_idle() -> None:
    assert cpu_ticks(STAT) == (1000 + 20 + 300 + 6 + 7 + 8, 5000 + 40)


def test_cpu_ticks_of_an_old_kernel_without_steal() -> None:
    assert cpu_ticks("cpu  1 2 3 4 5 6 7\n") == (1 + 2 + 3 + 6 + 7, 4 + 5)


def test_cpu_ticks_refuses_other_text() -> None:
    with pytest.raises(ValueError, match="not the text of /proc/stat"):
        cpu_ticks("intr 12345\n")


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux's /proc/stat")
def test_a_run_counts_at_least_its_own_cpu_as_machine_busy(tmp_path: Path) -> None:
    # a child that burns 0.3 s of CPU: the machine was busy at least that long during the run
    # (give or take a tick at each end), and never more than every core for the whole run
    spin = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    before = machine_busy_s()
    result = run_measured(
        [sys.executable, "-c", spin], log_path=tmp_path / "spin.log", timeout=60, time_exe=None
    )
    assert before is not None and result.exit_code == 0
    assert result.machine_busy is not None
    assert result.cpu >= 0.3
    assert result.machine_busy >= result.cpu - 2 * TICK_S
    assert result.machine_busy <= result.wall * (os.cpu_count() or 1) + 2 * TICK_S


@pytest.mark.usefixtures("harness_on_path")
def test_hash_cpu_reads_every_file(tmp_path: Path) -> None:
    from _sha256_check import hash_cpu_s

    (tmp_path / "a").write_bytes(os.urandom(1 << 20))
    assert hash_cpu_s([tmp_path / "a"]) > 0
    with pytest.raises(FileNotFoundError):
        hash_cpu_s([tmp_path / "a", tmp_path / "missing"])


def _row(tool: str, wall: float, busy: float | None, hash_cpu: float | None = 0.5) -> Any:
    from _report import MiB, Row, ToolRun

    run = ToolRun(
        wall=wall,
        cpu=0.5,
        maxrss_kib=1024,
        exit_code=0,
        timed_out=False,
        problems=0,
        requests=10,
        served_bytes=100 * MiB,
        machine_busy=busy,
    )
    return Row("small", "unthrottled", tool, tool, 10, 100 * MiB, [run], 2, hash_cpu)


def _ceiling_lines(rows: list[Any]) -> list[str]:
    from _report import render

    return [line for line in render(rows, [], [], []).splitlines() if line.startswith("Ceiling")]


@pytest.mark.usefixtures("harness_on_path")
def test_ceiling_of_a_peer_that_keeps_both_cores_busy() -> None:
    # curl: 1 s, both cores busy; sha256 takes 0.5 CPU s more: at least 1.25 s, so 0.8x at best
    rows = [_row("bulkflex", 1 / 0.6, 2.5), _row("curl", 1.0, 2.0)]
    assert _ceiling_lines(rows) == [
        "Ceiling for any tool that also checks every byte by sha256, against curl: its median "
        "run kept the machine busy 2.00 CPU s of 2.00 (100%); sha256 over the set takes 0.50 "
        "CPU s (measured in this run); that work added and nothing else, spread perfectly over "
        "2 cores, takes at least 1.25 s: at most **0.80×** the peer's speed. bulkflex: 0.60×, "
        "75% of that ceiling."
    ]


@pytest.mark.usefixtures("harness_on_path")
def test_a_peer_that_leaves_cores_idle_has_room_for_the_hashing() -> None:
    rows = [_row("bulkflex", 2.0, 1.0), _row("rclone", 1.0, 1.2)]
    (line,) = _ceiling_lines(rows)
    assert "(60%)" in line and "at least 1.00 s: at most **1.00×**" in line
    assert line.endswith("bulkflex: 0.50×, 50% of that ceiling.")


@pytest.mark.usefixtures("harness_on_path")
def test_machine_busy_column_and_no_ceiling_without_readings() -> None:
    from _report import render

    rows = [_row("bulkflex", 2.0, None), _row("curl", 1.0, None)]
    text = render(rows, [], [], [])
    assert _ceiling_lines(rows) == []
    assert "| tool | MiB/s | CPU s/GiB | machine busy |" in text
    rows = [_row("bulkflex", 2.0, 3.0, hash_cpu=None), _row("curl", 1.0, 1.5, hash_cpu=None)]
    assert _ceiling_lines(rows) == []  # no sha256 cost measured
    assert "| curl | 100.0 | 5.12 | 75% |" in render(rows, [], [], [])
