"""``bulkflex get [CATALOG] -c COLLECTION ... -d DEST``: plan and download in one go.

The plan goes to ``DEST/.bulkflex/manifest.jsonl`` (or ``--manifest FILE``), then the download
runs exactly as ``bulkflex download MANIFEST -d DEST`` would; running the same ``get`` again
re-plans and finishes whatever is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bulkflex.auth import token_options_from_args
from bulkflex.cli.download import (
    add_download_arguments,
    credentials_for,
    execute,
    options_from_args,
    want_uvloop,
)
from bulkflex.cli.plan import (
    add_plan_arguments,
    plan_request_from_args,
    print_plan_summary,
    run_plan,
)
from bulkflex.core.paths import STATE_DIR
from bulkflex.state import ensure_not_busy


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "get",
        help="plan and download in one go",
        description="Search a STAC catalog, write the manifest, and download it into DEST "
        "(resumable: run the same command again after any interruption).",
    )
    add_plan_arguments(parser)
    parser.add_argument("-d", "--dest", type=Path, required=True, help="destination folder")
    parser.add_argument(
        "--manifest",
        type=Path,
        metavar="FILE",
        help=f"where to write the manifest (default DEST/{STATE_DIR}/manifest.jsonl)",
    )
    add_download_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    request = plan_request_from_args(args)
    options = options_from_args(args)
    manifest = args.manifest or args.dest / STATE_DIR / "manifest.jsonl"
    ensure_not_busy(args.dest)  # before the planning, and before its manifest replaces theirs
    stats = run_plan(request, manifest, progress=not args.no_progress)
    print_plan_summary(stats, manifest, stream=sys.stdout)
    if stats.assets == 0:
        print("bulkflex: nothing to download")
        return 0
    return execute(
        manifest,
        args.dest,
        options,
        progress=not args.no_progress,
        log_json=args.log_json,
        credentials=credentials_for(token_options_from_args(args), manifest),
        use_uvloop=want_uvloop(args.uvloop),
        processes=args.processes,
    )
