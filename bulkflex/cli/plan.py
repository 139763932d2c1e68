"""``bulkflex plan [CATALOG] -c COLLECTION ... -o MANIFEST``: a STAC search into a manifest.

The search flags are shared with ``bulkflex get`` (:func:`add_plan_arguments`,
:func:`plan_request_from_args`, :func:`run_plan`).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from bulkflex.cli._args import human_bytes, positive_float, positive_int
from bulkflex.core.retry import RetryPolicy
from bulkflex.manifest import ManifestEntry, ManifestWriter
from bulkflex.stac import (
    DEFAULT_CATALOG,
    CatalogOptions,
    PlanRequest,
    PlanStats,
    make_plan_request,
    plan_async,
)
from bulkflex.stac.planner import run_sync

__all__ = [
    "add_plan_arguments",
    "allow_negative_values",
    "plan_request_from_args",
    "print_plan_summary",
    "run_plan",
]

# "-10,35,30,60" is a value, not an option: argparse only knows "-10" and "-1.5" as numbers.
_NEGATIVE_VALUE = re.compile(r"^-\d[\d.,\s]*$|^-\.\d[\d.,\s]*$")


def allow_negative_values(parser: argparse.ArgumentParser) -> None:
    """Let ``--bbox -10,35,30,60`` through (argparse would take the value for an option)."""
    parser._negative_number_matcher = _NEGATIVE_VALUE


def _comma_list(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for value in values or ():
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """The search, selection and catalog flags (``plan`` and ``get``)."""
    allow_negative_values(parser)
    parser.add_argument(
        "catalog",
        nargs="?",
        default=DEFAULT_CATALOG,
        help=f"STAC API root (default {DEFAULT_CATALOG})",
    )
    search = parser.add_argument_group("search (as in pystac-client's Client.search)")
    search.add_argument(
        "-c",
        "--collection",
        dest="collections",
        action="append",
        metavar="ID",
        help="collection id (repeatable, or comma-separated)",
    )
    search.add_argument(
        "--bbox", nargs="+", metavar="W,S,E,N", help="bounding box, e.g. -10,35,30,60"
    )
    search.add_argument(
        "--intersects", metavar="GEOJSON", help="a GeoJSON geometry: a file path or inline JSON"
    )
    search.add_argument(
        "--datetime",
        metavar="START/END",
        help="RFC 3339 instant or interval; '..' for an open end (2023-07-01/2023-07-31, "
        "2023-07-01T00:00:00Z/..)",
    )
    search.add_argument("--ids", nargs="+", metavar="ID", help="item ids")
    search.add_argument(
        "--filter",
        metavar="CQL2",
        help="CQL2 filter, text (productType='L1C_FLXSYN' and instrument='FLORIS') or JSON",
    )
    search.add_argument(
        "--filter-lang",
        choices=("cql2-text", "cql2-json"),
        help="how to read --filter (default: JSON if it starts with '{', else text)",
    )
    search.add_argument("--max-items", type=positive_int, metavar="N", help="stop after N items")
    search.add_argument(
        "--method",
        choices=("GET", "POST"),
        type=str.upper,
        help="search request method (default GET; POST with --intersects)",
    )
    select = parser.add_argument_group("asset selection and paths")
    select.add_argument(
        "--asset",
        dest="assets",
        action="append",
        metavar="GLOB",
        help="asset keys to take, e.g. product or 'enclosure_*' (repeatable; default: all)",
    )
    select.add_argument(
        "--role", dest="roles", action="append", metavar="ROLE", help="asset role (repeatable)"
    )
    select.add_argument(
        "--media-type",
        dest="media_types",
        action="append",
        metavar="TYPE",
        help="media type glob, e.g. application/x-netcdf or 'image/*' (repeatable)",
    )
    select.add_argument(
        "--path-template",
        metavar="TEMPLATE",
        help="local path of each file from {collection} {item} {asset} {file} {local_path} "
        "{year} {month} {day} (default: file:local_path, else {collection}/{item}/{file})",
    )
    catalog = parser.add_argument_group("catalog requests")
    catalog.add_argument(
        "--page-size", type=positive_int, default=200, metavar="N", help="items per page (200)"
    )
    catalog.add_argument(
        "--catalog-timeout",
        type=positive_float,
        default=120.0,
        metavar="S",
        help="timeout of one catalog request (120)",
    )
    catalog.add_argument(
        "--catalog-retries",
        type=int,
        default=5,
        metavar="N",
        help="retries of a catalog request on 429/5xx/network errors (5)",
    )


def catalog_options_from_args(args: argparse.Namespace) -> CatalogOptions:
    retries = max(0, int(args.catalog_retries))
    return CatalogOptions(
        timeout_s=args.catalog_timeout,
        retry=RetryPolicy(max_attempts=retries + 1, base_s=1.0, cap_s=32.0, retry_after_cap_s=120),
        page_size=args.page_size,
    )


def plan_request_from_args(args: argparse.Namespace) -> PlanRequest:
    """Validate the flags (UsageError/FilterError, before any request)."""
    return make_plan_request(
        args.catalog,
        collections=_comma_list(args.collections),
        bbox=",".join(args.bbox) if args.bbox else None,
        intersects=args.intersects,
        datetime=args.datetime,
        ids=_comma_list(args.ids) if args.ids else None,
        filter=args.filter,
        filter_lang=args.filter_lang,
        max_items=args.max_items,
        assets=args.assets,
        roles=args.roles,
        media_types=args.media_types,
        path_template=args.path_template,
        method=args.method,
        options=catalog_options_from_args(args),
    )


def run_plan(request: PlanRequest, output: Path | None, *, progress: bool) -> PlanStats:
    """Plan into ``output`` (atomically), or to stdout when None, with an item counter on a
    terminal."""
    bar: tqdm[Any] | None = None
    if progress and sys.stderr.isatty():
        bar = tqdm(desc="plan", unit=" items", file=sys.stderr, dynamic_ncols=True, leave=False)

    def on_page(stats: PlanStats) -> None:
        if bar is not None:
            bar.update(stats.received - bar.n)

    async def to_file(path: Path) -> PlanStats:
        with ManifestWriter(path) as writer:
            return await plan_async(request, writer.write, on_page=on_page)

    async def to_stream(stream: IO[str]) -> PlanStats:
        def write(entry: ManifestEntry) -> None:
            stream.write(entry.to_json() + "\n")

        return await plan_async(request, write, on_page=on_page)

    try:
        if output is None:
            stats: PlanStats = run_sync(lambda: to_stream(sys.stdout))
            sys.stdout.flush()
        else:
            stats = run_sync(lambda: to_file(output))
    finally:
        if bar is not None:
            bar.close()
    return stats


def print_plan_summary(stats: PlanStats, output: Path | None, *, stream: IO[str]) -> None:
    size = human_bytes(stats.bytes)
    if stats.unknown_size:
        size += f" + {stats.unknown_size} files of unknown size"
    where = f" -> {output}" if output is not None else ""
    matched = ""
    if stats.number_matched is not None:
        matched = f" (catalog matched {stats.number_matched}"
        matched += ", stopped at --max-items)" if stats.truncated else ")"
    print(
        f"bulkflex: planned {stats.items} items{matched}, {stats.assets} assets, {size}{where}",
        file=stream,
    )
    if stats.duplicates:
        print(f"bulkflex: {stats.duplicates} duplicate items skipped", file=stream)
    for warning in stats.warnings:
        print(f"bulkflex: warning: {warning.message}", file=sys.stderr)


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "plan",
        help="turn a STAC search into a manifest (nothing is downloaded)",
        description="Search a STAC catalog (default: ESA MAAP) and write one manifest line per "
        "selected asset: URL, local path, size, checksum. Pages stream into the file, so "
        "100k items fit in flat memory. Download it with `bulkflex download`.",
    )
    add_plan_arguments(parser)
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MANIFEST",
        help="manifest file to write (JSON Lines; '-' for stdout)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no item counter")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    request = plan_request_from_args(args)
    output = None if args.output == "-" else Path(args.output)
    stats = run_plan(request, output, progress=not args.no_progress)
    print_plan_summary(stats, output, stream=sys.stderr if output is None else sys.stdout)
    return 0
