"""Peak memory of ``bulkflex plan`` against the embedded catalog: it must stay flat with size.

Starts ``bulkflex serve-demo`` (its own process, so its memory is not counted) with N items per
collection and tiny files, then plans 1k, 10k and 100k items of ``FLEXL2Products10`` in separate
``bulkflex plan`` processes, and prints each one's peak RSS (from ``wait4``), time, lines and
manifest size as a table. Loopback only; the server is stopped at the end.

    .venv/bin/python benchmarks/bench_plan.py [--items 100000] [--page-size 1000]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_server(items: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkflex", "serve-demo", "--port", "0", "--items", str(items),
         "--data-size", "1K,4K", "--no-auth"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("bulkflex serve-demo: catalog "):
        proc.kill()
        raise SystemExit(
            f"serve-demo did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        )
    return proc, line.split()[-1]


def plan_once(catalog: str, items: int, page_size: int, out: Path) -> tuple[float, float, int, int]:
    """(seconds, peak RSS MiB, manifest lines, manifest bytes) of one plan process."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkflex", "plan", catalog, "-c", "FLEXL2Products10",
         "--max-items", str(items), "--page-size", str(page_size), "--no-progress",
         "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=_env(),
    )  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        error = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"plan failed with exit {proc.returncode}: {error}")
    if proc.stderr:
        proc.stderr.close()
    with open(out, "rb") as handle:
        lines = sum(1 for _ in handle)
    return seconds, usage.ru_maxrss / 1024, lines, out.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="largest plan (100000)")
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args()
    sizes = sorted({min(1000, args.items), min(10_000, args.items), args.items})
    print(f"starting serve-demo with {args.items} items per collection ...", flush=True)
    server, catalog = start_server(args.items)
    try:
        rows = []
        with tempfile.TemporaryDirectory() as folder:
            for size in sizes:
                seconds, rss, lines, nbytes = plan_once(
                    catalog, size, args.page_size, Path(folder) / f"plan-{size}.jsonl"
                )
                rows.append((size, lines, nbytes, seconds, rss))
                print(f"  planned {size} items", flush=True)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate(timeout=30)
    print()
    print(
        f"{'items':>8} {'lines':>8} {'manifest':>10} {'seconds':>8} {'items/s':>8} {'peak RSS':>9}"
    )
    for size, lines, nbytes, seconds, rss in rows:
        print(
            f"{size:>8} {lines:>8} {nbytes / 2**20:>8.1f}MB {seconds:>8.1f} "
            f"{size / seconds:>8.0f} {rss:>7.1f}MB"
        )
    growth = rows[-1][4] - rows[0][4]
    print(f"\npeak RSS grows by {growth:.1f} MB from {rows[0][0]} to {rows[-1][0]} items")


if __name__ == "__main__":
    main()
