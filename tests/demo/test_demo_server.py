"""The embedded catalog behaves like ESA MAAP where the research records how MAAP behaves, and
its asset server like a careful static server (ranges, validators, tokens, faults)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

from bulkflex.demo import DemoConfig, DemoServer, Faults

L1 = "FLEXL1CommissioningProducts10"


def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServer]:
    with DemoServer(DemoConfig(data_size=(200_000, 300_000), token_lifetime_s=600)) as running:
        yield running


def first_item(server: DemoServer, **params: str) -> dict[str, Any]:
    query = {"collections": L1, "limit": "1", **params}
    page = http().get(server.catalog_url + "search", params=query, timeout=30).json()
    item: dict[str, Any] = page["features"][0]
    return item


def auth(server: DemoServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.issue_token()}"}


def test_root_without_trailing_slash_is_503(server: DemoServer) -> None:
    response = http().get(server.url + "/catalogue", timeout=30)
    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith("text/html")
    landing = http().get(server.catalog_url, timeout=30).json()
    assert landing["id"] == "fedeo"
    searches = [link for link in landing["links"] if link["rel"] == "search"]
    assert [(s["type"], s.get("method")) for s in searches][1:] == [
        ("application/geo+json", "GET"),
        ("application/geo+json", "POST"),
    ]


def test_filter_accepts_both_spellings(server: DemoServer) -> None:
    counts = []
    for text in ("productType='L1B_OBS___'", "\"product:type\"='L1B_OBS___'"):
        page = http().get(
            server.catalog_url + "search",
            params={"collections": L1, "filter": text, "limit": "1"},
            timeout=30,
        )
        counts.append(page.json()["numberMatched"])
    assert counts == [800, 800]


def test_datetime_overlap_semantics(server: DemoServer) -> None:
    item = first_item(server)
    start = item["properties"]["start_datetime"]  # 3-minute product
    inside = start.replace(":00.000Z", ":30.000Z")
    page = (
        http()
        .get(
            server.catalog_url + "search",
            params={"collections": L1, "datetime": f"{inside}/{inside}"},
            timeout=30,
        )
        .json()
    )
    assert item["id"] in [f["id"] for f in page["features"]]


def test_search_paging_links_are_get_hrefs_even_after_post(server: DemoServer) -> None:
    body = {"collections": [L1], "limit": 3, "filter": {"op": "=", "args": [
        {"property": "productType"}, "L1C_FLXSYN"]}, "filter-lang": "cql2-json"}  # fmt: skip
    first = http().post(server.catalog_url + "search", json=body, timeout=30).json()
    assert first["numberMatched"] == 800 and first["numberReturned"] == 3
    (link,) = [link for link in first["links"] if link["rel"] == "next"]
    assert "method" not in link and "startRecord=4" in link["href"]
    second = http().get(link["href"], timeout=30).json()
    assert [f["properties"]["product:type"] for f in second["features"]] == ["L1C_FLXSYN"] * 3
    assert not {f["id"] for f in first["features"]} & {f["id"] for f in second["features"]}


def test_collections_page_with_start_record(server: DemoServer) -> None:
    first = http().get(server.catalog_url + "collections", timeout=30).json()
    assert first["numberMatched"] == 13 and first["numberReturned"] == 10
    (following,) = [link["href"] for link in first["links"] if link["rel"] == "next"]
    second = http().get(following, timeout=30).json()
    assert second["numberReturned"] == 3
    assert [link["rel"] for link in second["links"]].count("previous") == 1


def test_unknown_collection_is_404(server: DemoServer) -> None:
    response = http().get(server.catalog_url + "collections/NOPE", timeout=30)
    assert response.status_code == 404
    assert response.json()["code"] == "NotFound"


def test_enclosure_ranges_etag_and_416(server: DemoServer) -> None:
    asset = first_item(server)["assets"]["enclosure_hre1_nc"]
    session = http()
    whole = session.get(asset["href"], headers=auth(server), timeout=30)
    assert whole.status_code == 200
    assert len(whole.content) == asset["file:size"]
    assert "1220" + hashlib.sha256(whole.content).hexdigest() == asset["file:checksum"]
    etag = whole.headers["ETag"]
    assert etag.startswith('"') and whole.headers["Accept-Ranges"] == "bytes"
    part = session.get(
        asset["href"], headers={**auth(server), "Range": "bytes=1000-1999", "If-Range": etag},
        timeout=30,
    )  # fmt: skip
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{asset['file:size']}"
    assert part.content == whole.content[1000:2000]
    stale = session.get(
        asset["href"], headers={**auth(server), "Range": "bytes=1000-", "If-Range": '"old"'},
        timeout=30,
    )  # fmt: skip
    assert stale.status_code == 200 and stale.content == whole.content
    beyond = session.get(
        asset["href"], headers={**auth(server), "Range": f"bytes={asset['file:size']}-"},
        timeout=30,
    )  # fmt: skip
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{asset['file:size']}"
    server.content.change(asset["href"].split(server.url, 1)[1])
    changed = session.get(asset["href"], headers=auth(server), timeout=30)
    assert changed.headers["ETag"] != etag and changed.content != whole.content


def test_product_zip_is_built_on_the_fly(server: DemoServer) -> None:
    item = first_item(server, datetime="2023-07-02T00:00:00Z/..")
    session = http()
    response = session.get(
        item["assets"]["product"]["href"], headers={**auth(server), "Range": "bytes=10-"},
        timeout=30,
    )  # fmt: skip
    assert response.status_code == 200  # Range ignored
    assert "Content-Length" not in response.headers
    assert response.headers.get("Transfer-Encoding") == "chunked"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    enclosures = {k: a for k, a in item["assets"].items() if k.startswith("enclosure_")}
    assert sorted(archive.namelist()) == sorted(a["file:local_path"] for a in enclosures.values())
    for asset in enclosures.values():
        data = archive.read(asset["file:local_path"])
        assert "1220" + hashlib.sha256(data).hexdigest() == asset["file:checksum"]


def test_data_needs_a_valid_token_but_public_does_not(server: DemoServer) -> None:
    item = first_item(server)
    data_url = item["assets"]["enclosure_header_xml"]["href"]
    session = http()
    missing = session.get(data_url, timeout=30)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert (
        session.get(data_url, headers={"Authorization": "Bearer x.y.z"}, timeout=30).status_code
        == 401
    )
    assert session.get(item["assets"]["thumbnail"]["href"], timeout=30).status_code == 200


def test_token_endpoint_grants_and_expiry(server: DemoServer) -> None:
    session = http()
    config = server.config
    grant = session.post(
        server.token_url,
        data={"grant_type": "password", "username": config.username, "password": config.password,
              "client_id": config.client_id},
        timeout=30,
    ).json()  # fmt: skip
    assert grant["token_type"] == "Bearer" and grant["expires_in"] == 600
    data_url = first_item(server)["assets"]["enclosure_header_xml"]["href"]
    bearer = {"Authorization": f"Bearer {grant['access_token']}"}
    assert session.get(data_url, headers=bearer, timeout=30).status_code == 200
    server.expire_tokens()
    assert session.get(data_url, headers=bearer, timeout=30).status_code == 401
    renewed = session.post(
        server.token_url,
        data={"grant_type": "refresh_token", "refresh_token": grant["refresh_token"],
              "client_id": config.client_id},
        timeout=30,
    ).json()  # fmt: skip
    bearer = {"Authorization": f"Bearer {renewed['access_token']}"}
    assert session.get(data_url, headers=bearer, timeout=30).status_code == 200
    bad = session.post(
        server.token_url, data={"grant_type": "refresh_token", "refresh_token": "nope"}, timeout=30
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"
    wrong = session.post(
        server.token_url,
        data={"grant_type": "password", "username": "demo", "password": "wrong"},
        timeout=30,
    )
    assert wrong.status_code == 401


def test_faults_429_then_a_dropped_connection() -> None:
    faults = Faults(drop_after_bytes=1000, drop_files=1, throttle_429=1, retry_after_s=3)
    with DemoServer(DemoConfig(data_size=(5000, 6000)), faults) as server:
        asset = first_item(server)["assets"]["enclosure_hre1_nc"]
        session = http()
        throttled = session.get(asset["href"], headers=auth(server), timeout=30)
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "3"
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            session.get(asset["href"], headers=auth(server), timeout=30)
        again = session.get(asset["href"], headers=auth(server), timeout=30)
        assert again.status_code == 200 and len(again.content) == asset["file:size"]
        assert (server.stats.throttled, server.stats.dropped) == (1, 1)


@pytest.mark.anyio
async def test_runs_on_the_callers_event_loop() -> None:
    async with (
        DemoServer(DemoConfig(data_size=(100, 200))) as server,
        aiohttp.ClientSession(trust_env=False) as session,
        session.get(server.catalog_url + "conformance") as response,
    ):
        body = json.loads(await response.text())
    assert "https://api.stacspec.org/v1.0.0/item-search" in body["conformsTo"]


def test_serve_demo_until_interrupted(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkflex", "serve-demo", "--port", "0", "--items", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("bulkflex serve-demo: catalog http://127.0.0.1:")
        url = first.split()[-1]
        matched = http().get(url + "search", params={"collections": L1}, timeout=30).json()
        assert matched["numberMatched"] == 20
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert "bulkflex serve-demo: stopped" in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
