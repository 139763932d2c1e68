"""``bulkflex status DEST``: what is done, pending and failed, from the state database."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bulkflex.cli._args import human_bytes
from bulkflex.distributed import combined_counts
from bulkflex.state import running_download


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "status",
        help="show done / pending / failed entries of a destination",
        description="Show the state of a download destination: counts, bytes, the last "
        "error of each failed entry, and whether a download runs there now.",
    )
    parser.add_argument("dest", type=Path, help="destination folder of `bulkflex download`")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # state.sqlite of a one-machine run and shard-<i>.sqlite of a cluster run, added up
    counts = combined_counts(args.dest)
    running = running_download(args.dest)
    if args.json:
        print(
            json.dumps(
                {
                    "done": counts.done,
                    "pending": counts.pending,
                    "failed": counts.failed,
                    "done_bytes": counts.done_bytes,
                    "partial_bytes": counts.partial_bytes,
                    "expected_bytes": counts.expected_bytes,
                    "failures": [{"path": p, "kind": k, "error": e} for p, k, e in counts.failures],
                    # "pid N" ("" when unknown) while a download runs there, else null
                    "running": running,
                },
                indent=2,
            )
        )
        return 0
    total = counts.done + counts.pending + counts.failed
    expected = human_bytes(counts.expected_bytes) if counts.expected_bytes is not None else "?"
    print(f"{args.dest}: {total} entries (run {counts.run})")
    if running is not None:
        print(f"  a download runs there now{f' ({running})' if running else ''}")
    print(f"  done     {counts.done:>8}  {human_bytes(counts.done_bytes)} of {expected}")
    print(f"  pending  {counts.pending:>8}  {human_bytes(counts.partial_bytes)} partial on disk")
    print(f"  failed   {counts.failed:>8}")
    for path, kind, error in counts.failures:
        print(f"FAILED {path}: [{kind}] {error}")
    return 0
