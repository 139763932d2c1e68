"""The embedded server's flat file set (``DemoConfig.flat_files``), used by ``bulkflex bench``:
N files of one size, no token, ranges, validators, and the rate cap leaves the bytes intact."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import requests

from bulkflex.demo import DemoConfig, DemoServer
from bulkflex.demo.app import flat_spec

SIZE = 200_000


def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServer]:
    config = DemoConfig(flat_files=3, flat_size=SIZE, flat_rate=64 * 1024 * 1024)
    with DemoServer(config) as running:
        yield running


def test_every_file_is_served_without_a_token_and_matches_its_checksum(
    server: DemoServer,
) -> None:
    bodies = set()
    for index in range(3):
        spec = flat_spec(index, SIZE)
        assert spec.path == f"/flat/00000{index}.bin"
        response = http().get(server.url + spec.path, timeout=30)
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(SIZE)
        assert response.headers["Accept-Ranges"] == "bytes"
        assert response.content == server.content.read(spec)
        digest = hashlib.sha256(response.content).hexdigest()
        assert server.content.checksum(spec) == "1220" + digest
        bodies.add(digest)
    assert len(bodies) == 3  # distinct files


def test_ranges_if_range_and_head(server: DemoServer) -> None:
    spec = flat_spec(1, SIZE)
    url = server.url + spec.path
    whole = server.content.read(spec)
    part = http().get(url, headers={"Range": "bytes=1000-70999"}, timeout=30)
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 1000-70999/{SIZE}"
    assert part.content == whole[1000:71000]
    etag = part.headers["ETag"]
    same = http().get(url, headers={"Range": "bytes=-10", "If-Range": etag}, timeout=30)
    assert (same.status_code, same.content) == (206, whole[-10:])
    stale = http().get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'}, timeout=30)
    assert (stale.status_code, len(stale.content)) == (200, SIZE)
    beyond = http().get(url, headers={"Range": f"bytes={SIZE}-"}, timeout=30)
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{SIZE}"
    head = http().head(url, timeout=30)
    assert (head.status_code, head.headers["Content-Length"], head.content) == (200, str(SIZE), b"")


def test_more_than_a_million_files_keep_their_names() -> None:
    assert flat_spec(1_234_567, 1).path == "/flat/1234567.bin"
    with DemoServer(DemoConfig(flat_files=1_000_001, flat_size=5)) as big:
        assert http().get(big.url + "/flat/1000000.bin", timeout=30).content == big.content.read(
            flat_spec(1_000_000, 5)
        )
        assert http().get(big.url + "/flat/01000000.bin", timeout=30).status_code == 404


@pytest.mark.parametrize("name", ["000003.bin", "3.bin", "0000001.bin", "000001.txt", "abcdef.bin"])
def test_other_names_are_404(server: DemoServer, name: str) -> None:
    assert http().get(f"{server.url}/flat/{name}", timeout=30).status_code == 404


def test_no_flat_route_unless_configured() -> None:
    with DemoServer(DemoConfig()) as plain:
        assert http().get(plain.url + "/flat/000000.bin", timeout=30).status_code == 404
