# Guest memory that stays put between runs, so that no tool pays for the hypervisor.
#
# On a VM whose balloon driver reports free pages to the host (Linux free page reporting, as
# on this project's firecracker machines), memory the guest freed is handed back to the host a
# moment later, and the next time the guest uses it, each page faults on the host first. Every
# tool writes its output to the page cache, and the output of the previous run is deleted just
# before, so a tool's CPU seconds and speed depended on whether a report happened before or
# during its run: the same bulkflex command measured 338 and 701 MiB/s in two consecutive runs.
#
# held_free_pages() switches reporting off while the benchmark runs and puts it back after:
# - page_reporting_order is set to the number of page orders (11 here: orders 0 to 10). Only
#   free blocks of at least that order are reported, and there are none. Measured on
#   4 x 512 MiB: a report forced right after the previous output was deleted (min_free_ms
#   1000 for 8 s) handed 1984 and 1320 MiB to the host at order 9, and the next bulkflex run
#   took 4.56 and 5.22 s (5.3 and 6.2 s of sys time, the page-cache copy of pwrite faulting
#   on the host), against 2.49 to 2.83 s around them; at order 11 the same forced report
#   handed back 0 MiB and the next run took 2.56 and 2.84 s (1.8 and 1.9 s of sys time).
# - Where the kernel refuses that order (upstream caps it at the largest order), reporting is
#   only held back: min_free_ms at 5 minutes and max_waiting_mib at 64 GiB. That delays a
#   report but does not prevent it (the module takes less than 600 000 ms), so a page left
#   free for longer is still reported and a later run pays for it; the report says which of
#   the two was done.
# Pages reported before the benchmark started still fault on the host when first used: with
# reporting off, all free memory but 1 GiB is touched once up front (21 GiB here, in about a
# minute when the host had it all back), and stays backed for the whole benchmark; with the
# hold only, memory for the largest workload is (more would be reported again). The settings
# are put back when the benchmark ends, Ctrl-C and errors included. The values found are
# written to a record file (benchmarks/.data/page_reporting.json) before anything is changed,
# and removed once they are back: a harness killed with SIGKILL leaves the record, and the
# next benchmark writes those values back before it starts (its report says so), so the
# machine's own settings are never lost. Without the module (bare metal, other hypervisors)
# or without root this does nothing, and the report says which.

from __future__ import annotations

import contextlib
import json
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["held_free_pages"]

_PARAMS = Path("/sys/module/page_reporting/parameters")
#: parameter -> value while held: free pages wait 5 minutes (this module takes less than
#: 600 000 here), and up to 64 GiB of them may wait
_HOLD = {"min_free_ms": "300000", "max_waiting_mib": "65536"}
#: reports only free blocks of at least this order
_ORDER = "page_reporting_order"
_PAGE = 4096
#: free memory left untouched when all of it is backed up front
_SPARE = 2**30
#: the parameters' values before the benchmark changed them, while they are changed
RECORD = Path(__file__).resolve().parent / ".data" / "page_reporting.json"


def _proc_field(path: str, label: str) -> list[str] | None:
    """The words after ``label`` on the first line of ``path`` that starts with it."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(label):
                    return line[len(label) :].split()
    except OSError:
        pass
    return None


def _free_bytes() -> int:
    """MemFree of /proc/meminfo in bytes (0 when unknown)."""
    words = _proc_field("/proc/meminfo", "MemFree:")  # "23276540 kB"
    return int(words[0]) * 1024 if words and words[0].isdigit() else 0


def _page_orders() -> int | None:
    """How many page orders the kernel has (orders 0 to N-1), from /proc/pagetypeinfo."""
    words = _proc_field("/proc/pagetypeinfo", "Free pages count per migrate type at order")
    return len(words) if words else None


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


def _left_by_a_killed_run(record: Path, notes: list[str]) -> None:
    """Write back the values a harness killed inside the block recorded, and forget them."""
    try:
        left = json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        notes.append(f"{_shown(record)} is unreadable ({exc}); its values were not put back")
        return
    values = {name: str(value) for name, value in left.items() if name in (*_HOLD, _ORDER)}
    if not _put_back(values, record):
        notes.append(
            f"the values {_shown(record)} holds could not be put back: {_describe(values)}"
        )
        return
    notes.append(
        "free page reporting was left changed by a benchmark that did not end "
        f"({_shown(record)}): put back to {_describe(values)} first"
    )


def _write_record(record: Path, values: dict[str, str]) -> None:
    record.parent.mkdir(parents=True, exist_ok=True)
    temporary = record.with_name(f".{record.name}.tmp")
    temporary.write_text(json.dumps(values) + "\n", encoding="utf-8")
    os.replace(temporary, record)


@contextlib.contextmanager
def held_free_pages(
    warm_bytes: int, notes: list[str], *, back_all: bool = True, record: Path = RECORD
) -> Iterator[None]:
    """Switch free-page reporting off, or hold it back, for the block, and back ``warm_bytes``
    of memory first: all free memory but ``_SPARE`` when reporting is off and ``back_all``.
    The values found stay in ``record`` while they are changed (see the top of the module)."""
    if not (_PARAMS / "min_free_ms").exists():
        yield  # no free page reporting here: nothing to steady
        return
    _left_by_a_killed_run(record, notes)
    before: dict[str, str] = {}
    for name in (*_HOLD, _ORDER):
        with contextlib.suppress(OSError):
            before[name] = (_PARAMS / name).read_text().strip()
    try:
        _write_record(record, before)
    except OSError as exc:
        notes.append(
            f"cannot write {_shown(record)} ({exc.strerror or exc}): a benchmark killed with "
            "SIGKILL would leave free page reporting changed; the values to put back: "
            f"{_describe(before)}"
        )
    changed: dict[str, str] = {}  # parameter -> value to put back
    try:
        for name, value in _HOLD.items():
            if name in before:
                (_PARAMS / name).write_text(value)
                changed[name] = before[name]
    except OSError as exc:
        _put_back(changed, record)
        notes.append(
            f"free page reporting is on ({_describe(before)}) and could not be held off "
            f"({exc.strerror or exc}): CPU seconds and speeds of runs that write to the page "
            "cache vary with the host's page faults (see benchmarks/_memory.py)"
        )
        yield
        return
    orders = _page_orders()
    if orders is not None and _ORDER in before:
        try:
            (_PARAMS / _ORDER).write_text(str(orders))
            changed[_ORDER] = before[_ORDER]
        except OSError:
            pass  # upstream kernels cap it at the largest order: holding back is all we have
    now = {name: (_PARAMS / name).read_text().strip() for name in changed}
    if _ORDER in changed and back_all:
        # nothing is handed back from now on: back all free memory once, and every run finds
        # its pages backed, whichever pages it gets
        warm_bytes = max(warm_bytes, _free_bytes() - _SPARE)
    warmed = f"{warm_bytes / 2**30:.1f} GiB of memory touched first"
    if _ORDER in changed:
        notes.append(
            f"free page reporting switched off during the runs ({_describe(before)} -> "
            f"{_describe(now)}, put back after: no free block is of order {orders} or more) "
            f"and {warmed}, so that every run finds its pages backed (benchmarks/_memory.py)"
        )
    else:
        notes.append(
            f"free page reporting held off during the runs ({_describe(before)} -> "
            f"{_describe(now)}, put back after) and {warmed}, so that runs find their pages "
            "backed; a page left free for longer than min_free_ms is still reported and "
            "faults on the host when a later run uses it (benchmarks/_memory.py)"
        )
    try:
        _touch(warm_bytes)
        yield
    finally:
        _put_back(changed, record)


def _put_back(values: dict[str, str], record: Path) -> bool:
    """Write ``values`` to the parameters; once all are, ``record`` is no longer needed."""
    done = True
    for name, value in values.items():
        try:
            (_PARAMS / name).write_text(value)
        except OSError:
            done = False
    if done:
        record.unlink(missing_ok=True)
    return done


def _shown(record: Path) -> str:
    """The record's path as a report may print it: relative to the repository when in it."""
    repository = RECORD.parents[2]
    return (
        record.relative_to(repository).as_posix()
        if record.is_relative_to(repository)
        else str(record)
    )


def _describe(values: dict[str, str]) -> str:
    return ", ".join(f"{name} {value}" for name, value in values.items())
