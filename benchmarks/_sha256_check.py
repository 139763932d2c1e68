# The checksum pass a user of a downloader that does not verify would run after it:
#
#     python benchmarks/_sha256_check.py SUMS DEST
#
# SUMS has one "<sha256 hex>  <relative path>" line a file (sha256sum's format); every file
# under DEST is hashed and compared. Exit 0 when all match; else exit 1 with one line naming the
# first file that is missing or differs.
#
# It is meant to be a strong peer, not a strawman: hashlib (OpenSSL, with the CPU's SHA
# instructions where it has them: about 4 times coreutils' sha256sum here) in one thread a
# core, since hashlib lets go of the GIL while it hashes. The "+ sha256" rows of the benchmark
# run it after curl or rclone (benchmarks/_peers.py), on the clock.

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def sha256_hex(path: Path) -> str:
    """The sha256 of the file at ``path``, in hex (also the harness's check, ``_workloads.py``)."""
    with open(path, "rb", buffering=0) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def hash_cpu_s(paths: Iterable[Path]) -> float:
    """CPU seconds that sha256 alone takes over the files at ``paths``: each file is read into
    memory off the clock, then hashed in one call, timed by this thread's CPU clock. The least
    any tool that verifies every byte by sha256 adds to a download of them (the harness's
    ceiling for such a tool, ``_report.py``)."""
    spent = 0.0
    for path in paths:
        data = path.read_bytes()
        start = time.thread_time()
        hashlib.sha256(data)
        spent += time.thread_time() - start
    return spent


def _digest(path: Path) -> str | None:
    try:
        return sha256_hex(path)
    except FileNotFoundError:
        return None


def check(sums: Path, dest: Path) -> str | None:
    """The first problem found, as one line, or None when every file matches."""
    expected: list[tuple[str, str]] = []
    with open(sums) as f:
        for line in f:
            digest, _, rel = line.rstrip("\n").partition("  ")
            expected.append((rel, digest))
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        actual = pool.map(_digest, (dest / rel for rel, _ in expected))
        for (rel, digest), got in zip(expected, actual, strict=True):
            if got is None:
                return f"{rel}: missing"
            if got != digest:
                return f"{rel}: sha256 {got}, expected {digest}"
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: _sha256_check.py SUMS DEST", file=sys.stderr)
        return 2
    problem = check(Path(argv[0]), Path(argv[1]))
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
