"""``bulkflex bench``: a quick look at bulkflex next to the installed peers on this machine.

Serves a synthetic file set from the embedded server on 127.0.0.1, runs bulkflex and each peer
(curl, aria2c, wget, a requests loop) as child processes, checks every file by sha256 and prints
a Markdown table. Exit 0 when every run verified, 1 otherwise (or when no tool could run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bulkflex.bench import (
    TOOLS,
    WORKLOADS,
    BenchOptions,
    Tool,
    ToolRun,
    plan_bench,
    render,
    run_bench,
)
from bulkflex.cli._args import human_bytes, positive_float, positive_int, size

_KEYS = tuple(tool.key for tool in TOOLS)


def _tool_list(text: str) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    if not keys:
        raise argparse.ArgumentTypeError("expected at least one tool")
    for key in keys:
        if key not in _KEYS:
            raise argparse.ArgumentTypeError(
                f"unknown tool {key!r} (choose from {', '.join(_KEYS)})"
            )
    return keys


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "bench",
        help="quick speed comparison with curl, aria2c, wget and requests on this machine",
        description="Serve synthetic files from the embedded server on 127.0.0.1 and download "
        "them with bulkflex and each installed peer (curl --parallel 16, aria2c -x16 -s16 -k1M "
        "-j16, wget, a plain requests loop), every file checked by sha256; prints a Markdown "
        "table of MiB/s, CPU s/GiB, peak RSS and bulkflex's ratio. A quick look: the embedded "
        "server is Python and may be the bottleneck; benchmarks/run.py with nginx is the real "
        "comparison.",
    )
    sets = ", ".join(f"{k} ({n} x {human_bytes(s)})" for k, (n, s) in WORKLOADS.items())
    parser.add_argument(
        "--workload",
        choices=list(WORKLOADS),
        help=f"file set: {sets} (default small)",
    )
    parser.add_argument(
        "--files", type=positive_int, metavar="N", help="number of files (overrides --workload)"
    )
    parser.add_argument(
        "--size", type=size, metavar="SIZE", help="size of each file, e.g. 1M (overrides)"
    )
    parser.add_argument(
        "--tools",
        type=_tool_list,
        default=_KEYS,
        metavar="A,B",
        help=f"tools to compare (default: all of {','.join(_KEYS)}; missing ones are reported)",
    )
    parser.add_argument(
        "--repeat", type=positive_int, default=1, metavar="N", help="runs per tool (median)"
    )
    parser.add_argument(
        "--wan",
        action="store_true",
        help="WAN-like server: each response capped at 25 MiB/s and delayed by 20 ms",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep the manifest, logs and downloaded files under DIR",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=600.0,
        metavar="S",
        help="seconds per run before it is killed (default %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    workload = args.workload or "small"
    count, each = WORKLOADS[workload]
    if args.workload is None and (args.files, args.size) != (None, None):
        workload = "custom"  # --files/--size alone: the report does not name a workload
    options = BenchOptions(
        workload=workload,
        files=args.files if args.files is not None else count,
        size=args.size if args.size is not None else each,
        tools=args.tools,
        repeat=args.repeat,
        wan=args.wan,
        keep=args.keep,
        timeout=args.timeout,
    )
    plan = plan_bench(options)
    for label, why in plan.missing:
        print(f"bulkflex bench: skipping {label}: {why}", file=sys.stderr)
    bar: tqdm[Any] | None = None
    if not args.no_progress and plan.tools:
        bar = tqdm(
            total=plan.total_runs,
            unit="run",
            desc="bench",
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def started(tool: Tool, rep: int) -> None:
        if bar is not None:
            bar.set_postfix_str(tool.label)

    def finished(tool: Tool, rep: int, result: ToolRun) -> None:
        if bar is not None:
            bar.update(1)

    try:
        report = run_bench(plan, on_start=started, on_done=finished)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
            bar = None
        print(
            "bulkflex bench: interrupted; the running tool and the server are stopped",
            file=sys.stderr,
        )
        return 130
    finally:
        if bar is not None:
            bar.close()
    print(render(report), end="")
    return 0 if report.ok else 1
