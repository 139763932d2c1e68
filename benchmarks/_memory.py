# Guest memory that stays put between runs, so that no tool pays for the hypervisor.
#
# On a VM whose balloon driver reports free pages to the host (Linux free page reporting, as
# on this project's firecracker machines), memory the guest freed is handed back to the host a
# moment later, and the next time the guest uses it, each page faults on the host first. Every
# tool writes its output to the page cache, and the output of the previous run is deleted just
# before, so a tool's CPU seconds and speed depended on whether a report happened before or
# during its run: the same bulkflex command measured 338 and 701 MiB/s in two consecutive runs.
#
# Measured with a plain loop of 1 MiB pwrites, 2 GiB into a preallocated file right after the
# previous 2 GiB were deleted (sys seconds, 6 to 8 runs each):
# - as the machine comes: 0.43 to 2.9; the slow runs are those during which about 760 MiB
#   were reported;
# - min_free_ms held at 5 minutes only: 0.40 to 4.2; reports still happened (408 MiB in 2 of
#   8 runs): the module also reports once more than max_waiting_mib (1024 here) waits;
# - both held: 0.38 to 0.53, and 0.40 to 0.84 with 4 s of idling before each write.
#
# held_free_pages() therefore holds both while the benchmark runs, and touches memory for the
# largest workload once up front, so that runs find their pages already backed.
#
# What the hold cannot do: min_free_ms only delays a report (this module takes less than
# 600 000), so a page that stays free for 5 minutes is still reported. The cache resets of the
# many-file sets (benchmarks/_caches.py) free the other sets' cached files, and a set run later
# gets pages back that were reported meanwhile. Measured with a report forced by hand
# (min_free_ms 1000 for 6 s) right after the previous output was deleted, bulkflex on
# 4 x 512 MiB: 5.02 and 5.46 s, its disk threads at 5.1 to 6.0 s of sys time (the page-cache
# copy of pwrite), against 2.42 to 2.68 s and 0.8 to 1.1 s in the runs around them. Any tool
# meets it: in one report the sizes-only bulkflex row had a run of 2.87 s against 1.87 s, and
# "rclone, then sha256" one of 5.13 CPU seconds against 4.26. Touching 5 to 6 GiB again before
# a run made it 2.57 to 2.84 s, but each touch took 6 to 14 s (3 GiB did not help), so it is
# not done per run; the median of 3 and the shuffled order of tools spread what is left. The
# settings are put back when the benchmark ends, Ctrl-C and errors included (a SIGKILL of the
# harness leaves them: write the values the report's notes give back to the parameters).
# Without the module (bare metal, other hypervisors) or without root this does nothing, and
# the report says which.

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Iterator
from pathlib import Path

__all__ = ["held_free_pages"]

_PARAMS = Path("/sys/module/page_reporting/parameters")
#: parameter -> value while held: free pages wait 5 minutes (this module takes less than
#: 600 000 here), and up to 64 GiB of them may wait
_HOLD = {"min_free_ms": "300000", "max_waiting_mib": "65536"}
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
    before: dict[str, str] = {}
    for name in _HOLD:
        with contextlib.suppress(OSError):
            before[name] = (_PARAMS / name).read_text().strip()
    if "min_free_ms" not in before:
        yield  # no free page reporting here: nothing to steady
        return
    held: dict[str, str] = {}
    try:
        for name, value in _HOLD.items():
            if name in before:
                (_PARAMS / name).write_text(value)
                held[name] = before[name]
    except OSError as exc:
        _put_back(held)
        notes.append(
            f"free page reporting is on ({_describe(before)}) and could not be held off "
            f"({exc.strerror or exc}): CPU seconds and speeds of runs that write to the page "
            "cache vary with the host's page faults (see benchmarks/_memory.py)"
        )
        yield
        return
    notes.append(
        f"free page reporting held off during the runs ({_describe(before)} -> "
        f"{_describe({k: _HOLD[k] for k in held})}, put back after) and "
        f"{warm_bytes / 2**30:.1f} GiB of memory touched first, so that runs find their pages "
        "backed; a page left free for longer than min_free_ms is still reported and faults on "
        "the host when a later run uses it (benchmarks/_memory.py)"
    )
    try:
        _touch(warm_bytes)
        yield
    finally:
        _put_back(held)


def _put_back(values: dict[str, str]) -> None:
    for name, value in values.items():
        with contextlib.suppress(OSError):
            (_PARAMS / name).write_text(value)


def _describe(values: dict[str, str]) -> str:
    return ", ".join(f"{name} {value}" for name, value in values.items())
