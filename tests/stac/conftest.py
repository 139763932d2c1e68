"""Two STAC APIs loaded with the same items: the embedded catalog and ``rustac serve``.

``rustac serve`` (stac-utils' Rust server, from PyPI) is an independent implementation: every
search mode of the FLEX notebook must return the same item ids from both. Its in-memory backend
has neither the filter extension nor collection search (bulkflex then filters on the client,
with a warning), and its GET ``/search`` fails with ``collections=`` (HTTP 500 "unsupported
value"), so searches against it use POST.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from stacitems import all_items

from bulkflex.demo import DemoConfig, DemoServer

#: Small files: the items carry real sha2-256 checksums, computed from the served bytes.
SMALL = DemoConfig(data_size=(512, 4096))


def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback only, never a proxy
    return session


@pytest.fixture(scope="session")
def demo_server() -> Iterator[DemoServer]:
    with DemoServer(SMALL) as server:
        yield server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rustac() -> str:
    found = shutil.which("rustac", path=os.path.dirname(sys.executable)) or shutil.which("rustac")
    if found is None:
        raise RuntimeError("rustac is not installed: pip install -e '.[test]'")
    return found


@pytest.fixture(scope="session")
def rustac_url(demo_server: DemoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``rustac serve`` on a free loopback port with the embedded catalog's collections and
    items; stopped (and waited for) at the end of the session."""
    folder: Path = tmp_path_factory.mktemp("rustac")
    hrefs: list[str] = []
    collections = http().get(demo_server.catalog_url + "collections?limit=100", timeout=30).json()
    for collection in collections["collections"]:
        path = folder / f"{collection['id']}.json"
        path.write_text(json.dumps(collection))
        hrefs.append(str(path))
    items = folder / "items.ndjson"
    with items.open("w") as handle:
        for item in all_items(demo_server):
            handle.write(json.dumps(item) + "\n")
    hrefs.append(str(items))
    port = _free_port()
    log = (folder / "rustac.log").open("w")
    proc = subprocess.Popen(
        [_rustac(), "serve", *hrefs, "--addr", f"127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        session = http()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"rustac serve exited: {(folder / 'rustac.log').read_text()}")
            try:
                if session.get(url, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("rustac serve did not answer within 60 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()
