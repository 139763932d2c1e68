"""``bulkflex collections [CATALOG]``: collection search as a table (or ``--json``).

The searches of ESA's MAAP portal pages: ``--q Flex``, ``--filter "title='FLEX L2 Products'"``,
``--filter "platform='FLEX'"``, ``--filter "organisationName='ESA MAAP'"``, ``--bbox``,
``--datetime``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bulkflex.cli.plan import allow_negative_values
from bulkflex.stac import DEFAULT_CATALOG, CatalogOptions, collection_query, collections_async
from bulkflex.stac.planner import run_sync


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "collections",
        help="search a catalog's collections (table or JSON)",
        description="List the collections of a STAC catalog (default: ESA MAAP) that match free "
        "text, a CQL2-text filter on title/platform/organisationName, a bbox and a datetime.",
    )
    allow_negative_values(parser)
    parser.add_argument(
        "catalog", nargs="?", default=DEFAULT_CATALOG, help=f"STAC API root ({DEFAULT_CATALOG})"
    )
    parser.add_argument("--q", metavar="TEXT", help="free text (title, description, keywords)")
    parser.add_argument(
        "--filter", metavar="CQL2", help="CQL2 text, e.g. \"platform='FLEX'\" or \"title='...'\""
    )
    parser.add_argument("--bbox", nargs="+", metavar="W,S,E,N", help="spatial extent overlap")
    parser.add_argument("--datetime", metavar="START/END", help="temporal extent overlap")
    parser.add_argument("--max", type=int, metavar="N", help="show at most N collections")
    parser.add_argument("--json", action="store_true", help="the collections as a JSON array")
    parser.set_defaults(func=run)


def _extent(collection: dict[str, Any]) -> str:
    try:
        interval = collection["extent"]["temporal"]["interval"][0]
    except (KeyError, IndexError, TypeError):
        return ""
    start = (interval[0] or "..")[:10]
    end = (interval[1] or "..")[:10] if len(interval) > 1 else ".."
    return f"{start}/{end}"


def _platform(collection: dict[str, Any]) -> str:
    summaries = collection.get("summaries")
    values = summaries.get("platform") if isinstance(summaries, dict) else None
    if isinstance(values, list):
        return ",".join(str(v) for v in values)
    return str(values or "")


def run(args: argparse.Namespace) -> int:
    query = collection_query(
        q=args.q,
        filter=args.filter,
        bbox=",".join(args.bbox) if args.bbox else None,
        datetime=args.datetime,
    )
    found, matched, notes = run_sync(
        lambda: collections_async(
            args.catalog, query, options=CatalogOptions(), max_collections=args.max
        )
    )
    for note in notes:
        print(f"bulkflex: warning: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    rows = [
        (str(c.get("id", "")), str(c.get("title", "")), _platform(c), _extent(c)) for c in found
    ]
    header = ("ID", "TITLE", "PLATFORM", "EXTENT")
    widths = [max([len(header[i])] + [len(r[i]) for r in rows]) for i in range(4)]
    widths[1] = min(widths[1], 48)
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0]), row[1][: widths[1]].ljust(widths[1])]
        cells += [row[2].ljust(widths[2]), row[3]]
        print("  ".join(cells).rstrip())
    total = f" of {matched}" if matched is not None and matched != len(found) else ""
    print(f"{len(found)}{total} collections", file=sys.stderr)
    return 0
