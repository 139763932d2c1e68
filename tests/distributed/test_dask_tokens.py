"""Tokens on a cluster: the workers use the client's token, and a token that expires mid-run
costs one refresh for the whole cluster, however many workers are refused."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from dask_helpers import assert_bytes_equal

from bulkflex.auth import Credentials, FileSource, HostScope
from bulkflex.distributed import download_on_cluster
from bulkflex.transfer import DownloadOptions

pytest.importorskip("distributed")


class TokenServer:
    """Serves deterministic files to ``Bearer <valid>`` only; after ``rotate_after`` good
    answers the token "expires": the server writes the next one into ``token_file`` (where
    the client's FileSource will find it) and refuses the old one from then on."""

    def __init__(self, token_file: Path, rotate_after: int) -> None:
        self.token_file = token_file
        self.rotate_after = rotate_after
        self.valid = "tok-1"
        self.served = 0
        self.refused = 0
        self.bad_tokens: set[str] = set()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        token_file.write_text("tok-1\n", encoding="utf-8")

    @staticmethod
    def content(name: str) -> bytes:
        return random.Random(name).randbytes(6000)

    async def _handle(self, request: web.Request) -> web.Response:
        await asyncio.sleep(0.01)  # keep requests of all workers overlapping
        if request.headers.get("Authorization") != f"Bearer {self.valid}":
            self.refused += 1
            self.bad_tokens.add(request.headers.get("Authorization", ""))
            return web.Response(status=401, text="token expired")
        self.served += 1
        if self.served == self.rotate_after:
            self.token_file.write_text("tok-2\n", encoding="utf-8")
            self.valid = "tok-2"
        return web.Response(body=self.content(request.match_info["name"]))

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/files/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    def __enter__(self) -> TokenServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[TokenServer]:
    with TokenServer(tmp_path / "token", rotate_after=60) as running:
        yield running


def test_expired_token_is_refreshed_once_for_the_cluster(
    tmp_path: Path,
    token_server: TokenServer,
    client,  # type: ignore[no-untyped-def]
) -> None:
    expected = {f"t/{i:04d}.bin": TokenServer.content(f"{i:04d}.bin") for i in range(240)}
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "".join(
            json.dumps(
                {"url": f"http://127.0.0.1:{token_server.port}/files/{i:04d}.bin", "path": path}
            )
            + "\n"
            for i, path in enumerate(expected)
        ),
        encoding="utf-8",
    )
    credentials = Credentials(
        [FileSource(str(token_server.token_file))], HostScope.of(["127.0.0.1"])
    )
    summary = download_on_cluster(
        manifest, tmp_path / "dest", client, DownloadOptions(per_host=6), credentials=credentials
    )
    assert summary.ok, summary
    assert_bytes_equal(tmp_path / "dest", expected)
    print(f"401s: {token_server.refused}, token fetches: {credentials.fetches}")
    assert token_server.refused >= 1  # the token did expire under the running shards
    assert token_server.bad_tokens == {"Bearer tok-1"}  # never sent without or with junk
    assert credentials.fetches == 2  # the first token, then one refresh for every worker
    assert credentials.generation == 2
