# The same kernel caches at the start of every run: clean page cache dropped, then the source
# files and the tool's own code read back in.
#
# Why. Creating a file on ext4 here (Linux 6.18, virtio disk) costs more the more of the file
# system's inode-table blocks sit in the block device's cache: the inode allocator looks up
# each candidate inode's block there (`find_get_block_common` and `recently_deleted` under
# `openat`, seen with perf). Every run creates thousands of files and the next run starts
# right after they were deleted, so that cache grows run after run, and so did every tool's
# time on many small files. curl on 20,000 x 16 KiB, measured back to back:
# - with no drop: 2.8, 4.5, 6.3, 7.1 s (sys 2.3 to 6.3 s);
# - right after `echo 1 > /proc/sys/vm/drop_caches`: 1.03 s (sys 0.51), then 3.0 s on the run
#   after it;
# - dropping only dentries and inodes (`echo 2`), or waiting 12 s after the delete: no change.
# bulkflex on the same set took 7.8, 8.1, 9.1, 9.9 s back to back (sys 3.1 to 9.9 s), and 5.4
# to 5.9 s after a drop. A tool's number depended on how many files the runs before it had
# created, which is what the rotation of tools spread but could not remove.
#
# Only for sets of many files (benchmarks/run.py RESET_MIN_FILES): on 4 x 512 MiB, where a
# run creates 4 files, the effect is nil, and a drop made some bulkflex runs slow instead: the
# first run after a drop took 4.2 and 5.2 s against 2.6 to 2.8 s, its disk threads spending
# 4.9 s of sys time instead of 1 (more of it in the page-cache copy of pwrite: fresh pages, it
# seems, that the host had to back); a benchmark that reset caches before every run had 2
# such runs of 3. The large files ran steadily without it (2.61 to 3.05 s).
#
# So, as root, before every measured run of a many-file set: sync, drop the clean page cache
# (this includes the block device's cache), read the file set back in (the server then serves
# it from memory, as it did before), and start the tool once on a one-file set (its binary,
# libraries or Python modules come back in; the one file it writes is deleted again). Without
# root this does nothing, and the report says so.

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["CacheReset", "cache_reset", "run_quietly"]

_DROP = Path("/proc/sys/vm/drop_caches")
_BLOCK = 4 * 1024 * 1024


def _drop() -> None:
    """Write back dirty pages, then drop the clean page cache (the block device's included)."""
    os.sync()
    _DROP.write_text("1\n")


class CacheReset:
    """Puts the kernel's caches in the same state before each run (see the module's notes)."""

    def __init__(self) -> None:
        self._buffer = bytearray(_BLOCK)

    def __call__(self, source: Iterable[Path], warm_up: Callable[[], None]) -> None:
        _drop()
        self.read_in(source)
        warm_up()
        os.sync()

    def read_in(self, files: Iterable[Path]) -> None:
        """Read ``files`` through the page cache (fast when they are in it already). Before the
        runs of a set that is not reset: a drop for another set may have evicted it."""
        view = memoryview(self._buffer)
        for path in files:
            with open(path, "rb", buffering=0) as f:
                while f.readinto(view):
                    pass


def cache_reset(notes: list[str], min_files: int) -> CacheReset | None:
    """A :class:`CacheReset` if this process may drop caches, else None (with a note why)."""
    try:
        _drop()
    except OSError as exc:
        notes.append(
            f"kernel caches NOT reset between runs ({_DROP}: {exc.strerror or exc}): on many "
            "small files a tool's speed then depends on the runs before it (benchmarks/_caches.py)"
        )
        return None
    notes.append(
        f"before each run of a set of {min_files}+ files: clean page cache dropped "
        "(echo 1 > /proc/sys/vm/drop_caches), the file set read back in, and the tool started "
        "once on a one-file set, so that every run finds the same caches (benchmarks/_caches.py)"
    )
    return CacheReset()


def run_quietly(cmd: list[str], *, cwd: Path, env: dict[str, str], dest: Path) -> None:
    """Run a warm-up command (its outcome does not matter), then delete what it wrote."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
            check=False,
        )
    shutil.rmtree(dest, ignore_errors=True)
