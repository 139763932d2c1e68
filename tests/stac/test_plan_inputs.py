"""Bad input is refused before any request, in one line, with exit 2; catalog trouble is one
line too (exit 2, or 1 when the catalog cannot be reached). Plus the planner's own rules:
retries, paging loops, numberMatched, de-duplication, asset selection and paths."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import bulkflex
from bulkflex.core.retry import RetryPolicy
from bulkflex.demo import DemoServer
from bulkflex.errors import CatalogError, CatalogUnreachable, FilterError, UsageError
from bulkflex.manifest import ManifestEntry, read_manifest
from bulkflex.stac import CatalogOptions, make_plan_request, plan_async
from bulkflex.stac.assets import AssetSelector, Skipped, entries_for_item

L1 = "FLEXL1CommissioningProducts10"
FAST = CatalogOptions(retry=RetryPolicy(max_attempts=3, base_s=0.01, cap_s=0.02))


def closed_port_url() -> str:
    """A loopback URL nothing listens on: any request to it fails at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/catalogue/"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return subprocess.run(
        [sys.executable, "-m", "bulkflex", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--filter", "productType = = 'x'"],
            "bulkflex: error: --filter: does not parse at line 1 column 15: expected",
        ),
        (["--filter", '{"op": "="}'], "bulkflex: error: --filter: "),
        (["--filter", "{not json"], "bulkflex: error: --filter: CQL2-JSON is not valid JSON"),
        (["--bbox=1,2,3"], "bulkflex: error: --bbox: expected 4 numbers W,S,E,N (or 6 with "),
        (["--bbox=0,60,10,50"], "bulkflex: error: --bbox: south 60 is above north 50"),
        (["--bbox", "a,b,c,d"], "bulkflex: error: --bbox: 'a,b,c,d' is not a list of numbers"),
        (["--bbox=-200,0,0,10"], "bulkflex: error: --bbox: longitude -200 is outside -180..180"),
        (
            ["--datetime", "yesterday"],
            "bulkflex: error: --datetime: 'yesterday' is not an RFC 3339",
        ),
        (
            ["--datetime", "2023-07-01T10:00:00"],
            "bulkflex: error: --datetime: '2023-07-01T10:00:00' is not an RFC 3339",
        ),
        (["--datetime", "2023-13-01"], "bulkflex: error: --datetime: '2023-13-01' is not a valid"),
        (["--datetime", "../.."], "bulkflex: error: --datetime: an interval needs at least one"),
        (
            ["--datetime", "2023-08-01/2023-07-01"],
            "bulkflex: error: --datetime: start 2023-08-01T00:00:00Z is after end",
        ),
        (["--max-items", "0"], "bulkflex plan: error: argument --max-items: must be at least 1"),
        (["--path-template", "{nope}"], "bulkflex: error: --path-template: unknown placeholder"),
    ],
    ids=[
        "cql2-text",
        "cql2-json-shape",
        "cql2-json-syntax",
        "bbox-count",
        "bbox-south-north",
        "bbox-words",
        "bbox-range",
        "datetime-word",
        "datetime-no-zone",
        "datetime-month",
        "datetime-open-both",
        "datetime-reversed",
        "max-items",
        "path-template",
    ],
)
def test_bad_input_is_refused_before_any_request(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    # the catalog is a closed port: a request would fail with exit 1, not this exit 2
    result = cli("plan", closed_port_url(), "-c", L1, *flags, "-o", str(tmp_path / "m.jsonl"))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert lines[-1].startswith(message), lines
    if message.startswith("bulkflex: error:"):
        assert len(lines) == 1
    assert not (tmp_path / "m.jsonl").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            {"type": "FeatureCollection", "features": []},
            "is a FeatureCollection, not a geometry",
        ),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1]]]}, "ring is not closed"),
        ({"type": "Circle", "coordinates": [0, 0]}, "has GeoJSON type 'Circle'"),
        ("{oops", "is not valid JSON"),
    ],
    ids=["feature-collection", "open-ring", "unknown-type", "not-json"],
)
def test_intersects_must_be_a_geometry(tmp_path: Path, content: Any, message: str) -> None:
    path = tmp_path / "area.geojson"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    result = cli("plan", closed_port_url(), "-c", L1, "--intersects", str(path), "-o", "m.jsonl")
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"bulkflex: error: --intersects: {path}")
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_intersects_file_missing(tmp_path: Path) -> None:
    result = cli("plan", closed_port_url(), "--intersects", str(tmp_path / "no.geojson"), "-o", "m")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"bulkflex: error: --intersects: cannot read '{tmp_path / 'no.geojson'}': "
        "No such file or directory"
    )


def test_unknown_collection_is_exit_2(demo_server: DemoServer, tmp_path: Path) -> None:
    result = cli("plan", demo_server.catalog_url, "-c", "FLEXNOPE", "-o", str(tmp_path / "m"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"bulkflex: error: unknown collection 'FLEXNOPE' at {demo_server.catalog_url} "
        "(`bulkflex collections` lists them)"
    )


def test_unreachable_catalog_is_exit_1(tmp_path: Path) -> None:
    url = closed_port_url()
    result = cli("plan", url, "-c", L1, "--catalog-retries", "1", "-o", str(tmp_path / "m"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"bulkflex: error: catalog {url} failed 2 times, last with cannot")


def test_server_side_filter_error_is_one_line(demo_server: DemoServer, tmp_path: Path) -> None:
    result = cli(
        "plan", demo_server.catalog_url, "-c", L1, "--filter", "cloudCover < 10", "-o", "m"
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"bulkflex: error: catalog refused GET {demo_server.catalog_url}search with HTTP 400: "
        "invalid filter: unknown queryable 'cloudCover'"
    )


def test_plan_cli_writes_the_manifest(demo_server: DemoServer, tmp_path: Path) -> None:
    manifest = tmp_path / "flex.jsonl"
    result = cli(
        "plan",
        demo_server.catalog_url.rstrip("/"),  # the missing slash is added (MAAP answers 503)
        "-c",
        L1,
        "--bbox",
        "-10,35,30,60",  # a negative first number is a value, not an option
        "--datetime",
        "2023-07-01/2023-07-10",
        "--filter",
        "productType='L1C_FLXSYN' and instrument='FLORIS'",
        "--asset",
        "enclosure_*",
        "-o",
        str(manifest),
    )
    assert result.returncode == 0, result.stderr
    entries = [entry for _, entry in read_manifest(manifest)]
    assert len(entries) == 16
    assert {e.asset for e in entries} == {"enclosure_nc", "enclosure_header_xml"}
    assert all(e.checksum and e.checksum.startswith("1220") and e.size for e in entries)
    total = sum(e.size or 0 for e in entries)
    assert result.stdout.startswith("bulkflex: planned 8 items (catalog matched 8), 16 assets,")
    assert f"-> {manifest}" in result.stdout
    assert total > 0


# -- a scripted catalog for the planner's rules -------------------------------------------------


def landing(base: str) -> dict[str, Any]:
    return {
        "type": "Catalog",
        "id": "scripted",
        "conformsTo": [
            "https://api.stacspec.org/v1.0.0/item-search",
            "https://api.stacspec.org/v1.0.0-rc.3/item-search#filter",
        ],
        "links": [{"rel": "search", "type": "application/geo+json", "href": f"{base}search"}],
    }


def feature(item_id: str, **assets: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": item_id,
        "collection": "C",
        "properties": {"datetime": "2023-07-01T00:00:00Z"},
        "assets": assets or {"data": {"href": f"/files/{item_id}.nc", "file:size": 10}},
        "links": [],
    }


Handler = Callable[[web.Request], Any]


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Handler], Any]]:
    """Start a one-route catalog: ``await scripted(search_handler)`` returns its root URL."""
    runners: list[web.AppRunner] = []

    async def start(search: Handler) -> str:
        app = web.Application()
        base: list[str] = []

        async def root(request: web.Request) -> web.Response:
            return web.json_response(landing(base[0]))

        async def collection(request: web.Request) -> web.Response:
            return web.json_response({"type": "Collection", "id": request.match_info["cid"]})

        app.router.add_get("/stac/", root)
        app.router.add_get("/stac/collections/{cid}", collection)
        app.router.add_get("/stac/search", search)
        app.router.add_post("/stac/search", search)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        base.append(f"http://127.0.0.1:{port}/stac/")
        return base[0]

    yield start
    for runner in runners:
        await runner.cleanup()


async def run_plan(url: str, **search: Any) -> tuple[list[ManifestEntry], Any]:
    entries: list[ManifestEntry] = []
    request = make_plan_request(url, options=FAST, **search)
    stats = await plan_async(request, entries.append)
    return entries, stats


@pytest.mark.anyio
async def test_a_repeating_next_link_is_a_loop_not_forever(scripted: Any) -> None:
    async def search(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        following = min(page + 1, 3)  # page 3 points at itself
        return web.json_response(
            {
                "type": "FeatureCollection",
                "features": [feature(f"i{page}")],
                "links": [{"rel": "next", "href": f"search?page={following}"}],
            }
        )

    url = await scripted(search)
    with pytest.raises(CatalogError, match=r"catalog paging loops: the next link repeats"):
        await run_plan(url)


@pytest.mark.anyio
async def test_html_answer_is_a_catalog_error(scripted: Any) -> None:
    async def search(request: web.Request) -> web.Response:
        return web.Response(text="<html>login</html>", content_type="text/html")

    url = await scripted(search)
    with pytest.raises(CatalogError, match=r"search answered text/html, not JSON"):
        await run_plan(url)


@pytest.mark.anyio
async def test_429_and_503_are_retried_then_succeed(scripted: Any) -> None:
    answers = [429, 503, 200]

    async def search(request: web.Request) -> web.Response:
        status = answers.pop(0)
        if status != 200:
            return web.Response(status=status, headers={"Retry-After": "0"})
        return web.json_response({"type": "FeatureCollection", "features": [feature("a")]})

    entries, _ = await run_plan(await scripted(search))
    assert [e.item for e in entries] == ["a"]
    assert answers == []


@pytest.mark.anyio
async def test_persistent_503_gives_up_as_unreachable(scripted: Any) -> None:
    calls = []

    async def search(request: web.Request) -> web.Response:
        calls.append(1)
        return web.Response(status=503)

    with pytest.raises(CatalogUnreachable, match=r"failed 3 times, last with HTTP 503"):
        await run_plan(await scripted(search))
    assert len(calls) == 3


@pytest.mark.anyio
async def test_number_matched_mismatch_warns_and_duplicates_are_planned_once(
    scripted: Any,
) -> None:
    async def search(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        body: dict[str, Any] = {
            "type": "FeatureCollection",
            "numberMatched": 5,
            "features": [feature("a"), feature("b")] if page == 1 else [feature("b")],
            "links": [{"rel": "next", "href": "search?page=2"}] if page == 1 else [],
        }
        return web.json_response(body)

    entries, stats = await run_plan(await scripted(search))
    assert [e.item for e in entries] == ["a", "b"]
    assert stats.duplicates == 1
    assert [w.kind for w in stats.warnings] == ["number-matched"]
    assert "said 5 items match but sent 3" in stats.warnings[0].message


@pytest.mark.anyio
async def test_post_next_link_with_body_and_merge(scripted: Any) -> None:
    bodies: list[dict[str, Any]] = []

    async def search(request: web.Request) -> web.Response:
        body = await request.json()
        bodies.append(body)
        links = []
        if "token" not in body:
            links = [
                {"rel": "next", "method": "POST", "href": "search", "body": {"token": "t2"},
                 "merge": True}
            ]  # fmt: skip
        return web.json_response(
            {"type": "FeatureCollection", "features": [feature(f"i{len(bodies)}")], "links": links}
        )

    entries, _ = await run_plan(
        await scripted(search), method="POST", filter="productType='X'", collections="C"
    )
    assert [e.item for e in entries] == ["i1", "i2"]
    assert bodies[1] == {**bodies[0], "token": "t2"}
    assert bodies[0]["filter"] == "productType='X'" and bodies[0]["filter-lang"] == "cql2-text"


def test_python_api_refuses_bad_filter_before_any_request() -> None:
    with pytest.raises(FilterError, match=r"^--filter: does not parse at line 1 column 1"):
        bulkflex.plan(closed_port_url(), collections=L1, filter="= 3")
    with pytest.raises(UsageError, match=r"--bbox and --intersects cannot be used together"):
        bulkflex.plan(
            closed_port_url(),
            bbox=[0, 0, 1, 1],
            intersects={"type": "Point", "coordinates": [0, 0]},
        )


def test_asset_selection_and_paths() -> None:
    item = {
        "id": "ITEM",
        "collection": "COL",
        "properties": {"datetime": "2023-07-10T09:26:25Z"},
        "links": [{"rel": "self", "href": "https://cat.example/items/ITEM"}],
        "assets": {
            "product": {"href": "https://data.example/zipper/ITEM", "type": "application/zip",
                        "roles": ["data"], "file:local_path": "ITEM.zip"},
            "enclosure_nc": {"href": "../files/a.nc", "type": "application/x-netcdf",
                             "roles": ["data"], "file:size": 5,
                             "file:checksum": "1e20" + "00" * 32,
                             "file:local_path": "../../etc/passwd"},
            "enclosure_tiff": {"href": "https://data.example/b.tiff",
                               "type": "image/tiff; application=geotiff", "roles": ["data"]},
            "thumbnail": {"href": "https://data.example/public/q.png", "type": "image/png",
                          "roles": ["thumbnail"]},
            "s3": {"href": "s3://bucket/key", "roles": ["data"]},
        },
    }  # fmt: skip

    def plan(selector: AssetSelector, template: str | None = None) -> list[Any]:
        return list(entries_for_item(item, selector, base_url="x", path_template=template))

    everything = plan(AssetSelector())
    by_asset = {e.asset: e for e in everything if isinstance(e, ManifestEntry)}
    assert by_asset["product"].path == "ITEM.zip"
    # unsafe file:local_path falls back to the default rule; relative href resolved
    assert by_asset["enclosure_nc"].path == "COL/ITEM/a.nc"
    assert by_asset["enclosure_nc"].url == "https://cat.example/files/a.nc"
    # blake3 cannot be verified here: kept aside, size-only
    assert by_asset["enclosure_nc"].checksum is None
    assert by_asset["enclosure_nc"].extra == {"file:checksum": "1e20" + "00" * 32}
    assert [s.asset for s in everything if isinstance(s, Skipped)] == ["s3"]
    assert {e.asset for e in plan(AssetSelector(keys=("enclosure_*",)))} == {
        "enclosure_nc",
        "enclosure_tiff",
    }
    assert [e.asset for e in plan(AssetSelector(roles=("thumbnail",)))] == ["thumbnail"]
    assert [e.asset for e in plan(AssetSelector(media_types=("image/tiff",)))] == ["enclosure_tiff"]
    assert [
        e.asset for e in plan(AssetSelector(keys=("enclosure_*",), media_types=("image/*",)))
    ] == ["enclosure_tiff"]
    templated = plan(AssetSelector(keys=("product",)), "{year}/{month}/{collection}/{file}")
    assert [e.path for e in templated] == ["2023/07/COL/ITEM.zip"]
