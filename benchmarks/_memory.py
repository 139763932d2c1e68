# Guest memory that stays put between runs, so that no tool pays for the hypervisor.
#
# On a VM whose balloon driver reports free pages to the host (Linux free page reporting, as
# on this project's firecracker machines), memory the guest freed is handed back to the host a
# moment later, and the next time the guest uses it, each page faults on the host first. Writing
# 2 GiB to the page cache measured here: 0.4 s of sys time when the pages had been freed a moment
# before, 2 to 3.5 s when they had been free for 5 s or more. Every tool writes its output to
# the page cache, and the output of the previous run is deleted just before, so a tool's CPU
# seconds and speed depended on how soon after the previous run it happened to start: the same
# bulkflex command measured 338 and 701 MiB/s in two consecutive runs.
#
# held_free_pages() removes that: while the benchmark runs, freed pages must stay free for 5
# minutes before they are reported (the module's min_free_ms; 0 on this machine), and memory for
# the largest workload is touched once up front, so every run finds its pages already backed.
# The setting is put back when the benchmark ends, Ctrl-C and errors included (a SIGKILL of
# the harness leaves it: write 0 to the parameter to undo). Without the module (bare
# metal, other hypervisors) or without root this does nothing, and the report says which.

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Iterator
from pathlib import Path

__all__ = ["held_free_pages"]

_PARAM = Path("/sys/module/page_reporting/parameters/min_free_ms")
_HOLD_MS = 300_000  # the largest this module takes here is below 600 000
_PAGE = 4096


def _touch(nbytes: int) -> None:
    """Fault in ``nbytes`` of anonymous memory, one write a page, then give it back."""
    if nbytes <= 0:
        return
    with mmap.mmap(-1, nbytes) as area:
        view = memoryview(area)
        try:
            for offset in range(0, nbytes, _PAGE):
                view[offset] = 1
        finally:
            view.release()


@contextlib.contextmanager
def held_free_pages(warm_bytes: int, notes: list[str]) -> Iterator[None]:
    """Hold free-page reporting off (and back ``warm_bytes`` of memory) for the block."""
    try:
        before = _PARAM.read_text().strip()
    except OSError:
        yield  # no free page reporting here: nothing to steady
        return
    try:
        _PARAM.write_text(str(_HOLD_MS))
    except OSError as exc:
        notes.append(
            f"free page reporting is on (min_free_ms {before}) and could not be held off "
            f"({exc.strerror or exc}): CPU seconds and speeds of runs that write to the page "
            "cache vary with the host's page faults (see benchmarks/_memory.py)"
        )
        yield
        return
    notes.append(
        f"free page reporting held off during the runs (min_free_ms {before} -> {_HOLD_MS}, "
        f"put back after) and {warm_bytes / 2**30:.1f} GiB of memory touched first, so that no "
        "run pays the host's page faults for memory an earlier run freed (benchmarks/_memory.py)"
    )
    try:
        _touch(warm_bytes)
        yield
    finally:
        with contextlib.suppress(OSError):
            _PARAM.write_text(before)
