"""``bulkflex serve-demo [--port N]``: keep the embedded MAAP-like catalog running (Ctrl-C stops).

Prints the catalog URL, the token endpoint, a ready access token and commands to try.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

from bulkflex.cli._args import human_bytes, positive_float, size

if TYPE_CHECKING:  # the demo server (aiohttp.web) loads only when a demo runs
    from bulkflex.demo import DemoConfig


def _size_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition(",")
    if not high:
        raise argparse.ArgumentTypeError("expected MIN,MAX, e.g. 64K,4M")
    bounds = (size(low), size(high))
    if bounds[0] < 1 or bounds[0] > bounds[1]:
        raise argparse.ArgumentTypeError("MIN must be at least 1 byte and at most MAX")
    return bounds


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that shape the embedded catalog (``serve-demo`` and ``demo``)."""
    group = parser.add_argument_group("embedded catalog")
    group.add_argument(
        "--port", type=int, default=None, metavar="N", help="port on 127.0.0.1 (default: free)"
    )
    group.add_argument(
        "--data-size",
        type=_size_range,
        metavar="MIN,MAX",
        help="sizes of data files, spread log-uniformly (default 64K,4M; the demo uses 256K,8M)",
    )
    group.add_argument(
        "--token-lifetime",
        type=positive_float,
        metavar="S",
        help="lifetime of access tokens in seconds (default 600)",
    )


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "serve-demo",
        help="run the embedded MAAP-like catalog and asset server until Ctrl-C",
        description="Serve synthetic FLEX and BIOMASS collections on 127.0.0.1 the way ESA "
        "MAAP does: STAC API, on-the-fly product zips, range-readable enclosures with "
        "checksums, bearer tokens from a Keycloak-like token endpoint.",
    )
    add_server_arguments(parser)
    parser.add_argument(
        "--items",
        type=int,
        metavar="N",
        help="items per collection (default 1600/1200/1000/600)",
    )
    parser.add_argument("--no-auth", action="store_true", help="serve /data/ without a token")
    faults = parser.add_argument_group("misbehaviour")
    faults.add_argument(
        "--drop-after",
        type=size,
        metavar="SIZE",
        help="cut the connection of the first --drop-files data files after SIZE bytes, once",
    )
    faults.add_argument("--drop-files", type=int, default=1, metavar="N", help="(default 1)")
    faults.add_argument(
        "--throttle", type=int, default=0, metavar="N", help="answer N data requests with 429"
    )
    faults.add_argument(
        "--catalog-503", type=int, default=0, metavar="N", help="answer N searches with 503"
    )
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace, **overrides: Any) -> DemoConfig:
    from bulkflex.demo import DemoConfig

    values: dict[str, Any] = {"port": args.port or 0}
    if args.data_size is not None:
        values["data_size"] = args.data_size
    if args.token_lifetime is not None:
        values["token_lifetime_s"] = args.token_lifetime
    values.update(overrides)
    return DemoConfig(**values)


def run(args: argparse.Namespace) -> int:
    from bulkflex.demo import DemoServer, Faults

    config = config_from_args(args, items_per_collection=args.items, require_token=not args.no_auth)
    faults = Faults(
        drop_after_bytes=args.drop_after,
        drop_files=args.drop_files if args.drop_after is not None else 0,
        throttle_429=args.throttle,
        catalog_503=args.catalog_503,
    )

    async def serve() -> None:
        async with DemoServer(config, faults) as server:
            low, high = config.data_size
            print(f"bulkflex serve-demo: catalog {server.catalog_url}")
            print(f"  token endpoint {server.token_url}")
            print(
                f"  (password grant: username {config.username}, password {config.password}, "
                f"client_id {config.client_id}; tokens live {config.token_lifetime_s:g} s)"
            )
            print(f"  data files {human_bytes(low)} to {human_bytes(high)}")
            if config.require_token:
                print(f"  a demo token: export MAAP_TOKEN={server.issue_token()}")
            print("try:")
            print(f"  bulkflex collections {server.catalog_url} --filter \"platform='FLEX'\"")
            print(
                f"  bulkflex plan {server.catalog_url} -c FLEXL1CommissioningProducts10 "
                "--bbox=-10,35,30,60 --datetime 2023-07-01/2023-07-10 "
                "--filter \"productType='L1C_FLXSYN' and instrument='FLORIS'\" -o flex.jsonl"
            )
            print("  bulkflex download flex.jsonl -d flex-out")
            print("Ctrl-C stops the server.", flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        print("bulkflex serve-demo: stopped", file=sys.stderr)
    return 0
