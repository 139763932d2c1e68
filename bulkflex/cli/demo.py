"""``bulkflex demo``: the whole job on an embedded MAAP-like catalog, in a few seconds.

Starts the embedded catalog on 127.0.0.1, finds the FLEX collections, searches one the way
ESA's FLEX notebook does (bbox + datetime + CQL2 filter), plans the manifest, gets a token from
the demo token endpoint, downloads with progress (the server drops one connection and answers
one 429 on purpose, so recovery shows), checks every file again on disk, then runs the download a
second time to show that a rerun fetches nothing. Stops the server at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bulkflex.auth import TokenOptions, credentials_from_options, install_secret_filter
from bulkflex.cli._args import human_bytes
from bulkflex.cli.download import execute
from bulkflex.cli.plan import print_plan_summary, run_plan
from bulkflex.cli.serve_demo import add_server_arguments, config_from_args
from bulkflex.core.checksum import parse_multihash
from bulkflex.errors import BulkflexError
from bulkflex.manifest import read_manifest
from bulkflex.stac import collections, make_plan_request
from bulkflex.transfer import DownloadOptions

if TYPE_CHECKING:  # the demo server (aiohttp.web) loads only when a demo runs
    from bulkflex.demo import DemoServer, Faults

KiB = 1024
MiB = 1024 * KiB
#: Tried first so that running ``bulkflex demo`` twice gives the same URLs (and resumes).
PREFERRED_PORT = 8427
COLLECTION = "FLEXL1CommissioningProducts10"
BBOX = "-10,35,30,60"
DATETIME = "2023-07-01/2023-07-10"
FILTER = "productType='L1C_FLXSYN' and instrument='FLORIS'"
_REFRESH_VAR = "BULKFLEX_DEMO_REFRESH_TOKEN"
_SECRET_VAR = "BULKFLEX_DEMO_CLIENT_SECRET"


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "demo",
        help="search, plan and download from an embedded MAAP-like catalog (start here)",
        description="Start the embedded catalog on 127.0.0.1, search a FLEX collection like the "
        "FLEX notebook, plan, download with a demo token, verify, and show that a rerun "
        "fetches nothing.",
    )
    parser.add_argument(
        "-d",
        "--dest",
        type=Path,
        default=Path("demo-out"),
        help="destination folder (default ./demo-out)",
    )
    add_server_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--no-faults", action="store_true", help="a well-behaved server (no drop, no 429)"
    )
    parser.set_defaults(func=run)


def _start_server(args: argparse.Namespace, faults: Faults) -> DemoServer:
    from bulkflex.demo import DemoServer

    data_size = args.data_size or (256 * KiB, 8 * MiB)
    ports = [args.port] if args.port is not None else [PREFERRED_PORT, 0]
    failure: OSError | None = None
    for port in ports:
        args.port = port
        server = DemoServer(config_from_args(args, data_size=data_size), faults)
        try:
            return server.start()
        except OSError as exc:
            failure = exc
    raise BulkflexError(f"cannot start the embedded catalog on 127.0.0.1: {failure}")


def _password_grant(server: DemoServer) -> dict[str, Any]:
    config = server.config
    form = urllib.parse.urlencode(
        {
            "grant_type": "password",
            "client_id": config.client_id,
            "client_secret": config.client_secret,
            "username": config.username,
            "password": config.password,
            "scope": "openid offline_access",
        }
    ).encode()
    request = urllib.request.Request(server.token_url, data=form, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        body: dict[str, Any] = json.load(response)
    return body


def _verify(manifest: Path, dest: Path) -> tuple[int, int, int, int, list[str]]:
    """Check every file again: (files, bytes, checksums verified, sizes verified, problems)."""
    files = total = by_checksum = by_size = 0
    problems: list[str] = []
    for _, entry in read_manifest(manifest):
        path = dest / entry.path
        if not path.is_file():
            problems.append(f"{entry.path}: missing")
            continue
        data_size = path.stat().st_size
        if entry.size is not None and data_size != entry.size:
            problems.append(f"{entry.path}: {data_size} bytes, expected {entry.size}")
            continue
        if entry.checksum is not None:
            expected = parse_multihash(entry.checksum)
            hasher = expected.new_hasher()
            with open(path, "rb") as handle:
                while block := handle.read(1024 * 1024):
                    hasher.update(block)
            if not expected.matches(hasher.digest()):
                problems.append(f"{entry.path}: checksum mismatch")
                continue
            by_checksum += 1
        elif entry.size is not None:
            by_size += 1
        files += 1
        total += data_size
    return files, total, by_checksum, by_size, problems


def _revoke_token_midway(server: DemoServer, at_bytes: int, finished: threading.Event) -> None:
    """Expire every access token once the server has served ``at_bytes`` (bounded wait)."""
    deadline = time.monotonic() + 120
    while not finished.is_set() and time.monotonic() < deadline:
        if server.stats.bytes_served >= at_bytes:
            server.expire_tokens()
            return
        finished.wait(0.02)


def run(args: argparse.Namespace) -> int:
    from bulkflex.demo import Faults

    dest: Path = args.dest
    faults = (
        Faults()
        if args.no_faults
        else Faults(drop_after_bytes=192 * KiB, drop_files=1, throttle_429=1, retry_after_s=1)
    )
    server = _start_server(args, faults)
    try:
        return _run(args, server, dest)
    finally:
        server.stop()


def _run(args: argparse.Namespace, server: DemoServer, dest: Path) -> int:
    catalog = server.catalog_url
    stats = server.stats
    print(f"bulkflex demo: embedded MAAP-like catalog at {catalog}")
    print("  (synthetic FLEX and BIOMASS products, served on 127.0.0.1 only)\n")

    print("1. find the FLEX collections   (pystac-client: client.collection_search(filter=...))")
    print(f"   $ bulkflex collections {catalog} --filter \"platform='FLEX'\"")
    for collection in collections(catalog, filter="platform='FLEX'"):
        print(f"   {collection['id']:<32} {collection.get('title', '')}")
    print()

    manifest = dest / "manifest.jsonl"
    print("2. search and plan, as the FLEX notebook searches (bbox + datetime + CQL2 filter)")
    print(
        f"   $ bulkflex plan {catalog} -c {COLLECTION} --bbox={BBOX} --datetime {DATETIME} \\\n"
        f'       --filter "{FILTER}" -o {manifest}'
    )
    request = make_plan_request(
        catalog, collections=COLLECTION, bbox=BBOX, datetime=DATETIME, filter=FILTER
    )
    plan_stats = run_plan(request, manifest, progress=False)
    print("   ", end="")
    print_plan_summary(plan_stats, manifest, stream=sys.stdout)
    print()

    print("3. get a token from the demo token endpoint (Keycloak-like, like MAAP's IAM)")
    grant = _password_grant(server)
    print(
        f"   access token valid {grant.get('expires_in')} s; bulkflex renews it with the "
        "refresh token when the server says it expired"
    )
    environ = {
        _REFRESH_VAR: str(grant.get("refresh_token", "")),
        _SECRET_VAR: server.config.client_secret,
    }
    credentials = credentials_from_options(
        TokenOptions(
            oidc_token_url=server.token_url,
            oidc_client_id=server.config.client_id,
            oidc_refresh_token_env=_REFRESH_VAR,
            oidc_client_secret_env=_SECRET_VAR,
            prompt=False,
        ),
        ["127.0.0.1"],
        interactive=False,
        environ=environ,
    )
    install_secret_filter(credentials.secret_filter)
    print()

    print("4. download (the server cuts one connection, answers one 429, and revokes the token")
    print("   part way through, as a 10-hour MAAP token expires during a long job)")
    print(f"   $ bulkflex download {manifest} -d {dest}")
    options = replace(DownloadOptions(), connections=8, per_host=8)
    served_before, started = stats.bytes_served, time.monotonic()
    unauthorized_before, tokens_before = stats.unauthorized, stats.tokens_issued
    finished = threading.Event()
    revoker = threading.Thread(
        target=_revoke_token_midway,
        args=(server, served_before + plan_stats.bytes * 2 // 5, finished),
        daemon=True,
    )
    revoker.start()
    try:
        status = execute(
            manifest, dest, options, progress=not args.no_progress, log_json=None,
            credentials=credentials,
        )  # fmt: skip
    finally:
        finished.set()
        revoker.join(timeout=5)
    seconds = max(time.monotonic() - started, 1e-6)
    served = stats.bytes_served - served_before
    files, total, by_checksum, by_size, problems = _verify(manifest, dest)
    print()
    print("5. summary")
    if served == 0:
        print(
            f"   nothing was fetched: {dest}/ already holds every file from an earlier run "
            f"(delete {dest}/ to watch the whole download)"
        )
    else:
        print(
            f"   {human_bytes(served)} over the wire in {seconds:.1f} s "
            f"({human_bytes(served / seconds)}/s)"
        )
    unchecked = files - by_checksum - by_size
    print(
        f"   files: {files} of {plan_stats.assets} in {dest}/, {human_bytes(total)}, checked "
        f"again on disk: {by_checksum} by sha2-256 checksum, {by_size} by size, {unchecked} "
        "without size or checksum in the catalog (on-the-fly zips, quicklooks)"
    )
    if stats.throttled or stats.dropped:
        print(
            f"   recovered from: {stats.throttled} x 429 with Retry-After, {stats.dropped} cut "
            f"connection(s), resumed with {stats.range_requests} Range request(s)"
        )
    refused = stats.unauthorized - unauthorized_before
    renewed = max(0, stats.tokens_issued - tokens_before - 1)  # the first is the start-up fetch
    if refused:
        print(
            f"   token revoked mid-download: {refused} request(s) refused with 401; bulkflex "
            f"paused new requests, renewed the token {renewed} time(s) through the token "
            "endpoint (refresh_token grant) and resumed every transfer from its durable bytes"
        )
    print(f"   requests to public quicklook URLs that carried the token: {stats.public_with_token}")
    for problem in problems:
        print(f"   PROBLEM {problem}", file=sys.stderr)
    print()

    print("6. what a rerun does: the same command again")
    served_before, requests_before = stats.bytes_served, stats.data_requests
    rerun = execute(manifest, dest, options, progress=False, log_json=None, credentials=credentials)
    print(
        f"   rerun fetched {human_bytes(stats.bytes_served - served_before)} with "
        f"{stats.data_requests - requests_before} data requests: everything was already "
        "complete and verified"
    )
    print()
    print("next: `bulkflex serve-demo` keeps this catalog running to try plan/get/download;")
    print("      the same commands work against https://catalog.maap.eo.esa.int/catalogue/")
    if problems:
        return 1
    return status or rerun
