"""bulkflex.transfer.http1: the engine's HTTP/1.1 client, against real servers on 127.0.0.1.

Well-formed HTTP comes from aiohttp.web servers (Content-Length, chunked, TLS with a trustme CA);
misbehaviour a real server will not produce on demand (a short body, a stall, an idle keep-alive
connection closed under the client, malformed heads) comes from plain asyncio servers that write
hand-made bytes. Connections are counted at the server (peer ports, accepts), so keep-alive
reuse is observed from the outside. Every server is stopped by the test that starts it, and every
wait is bounded (``DEADLINE``); no assertion is about timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest
import trustme
from aiohttp import web

from bulkflex.transfer.http1 import (
    ConnectError,
    ConnectionBroken,
    HTTPClient,
    ReadTimeout,
    Response,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        # the CLI runs on uvloop when it is installed: its transports differ from asyncio's
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


KiB = 1024
MiB = 1024 * KiB
BLOCK = 64 * KiB
#: the longest any test waits for anything (a hang becomes a failure, not a stuck suite)
DEADLINE = 10.0
#: a tick no test outlives: blocks are handed to the reader only when full or at the body's end
NO_TICK = 60.0


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# ---------------------------------------------------------------------------------------------
# servers


class RawConn:
    """One accepted connection of a :class:`RawServer`."""

    def __init__(
        self, server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.index = len(server.requests)
        server.requests.append([])

    async def read_request(self) -> bytes | None:
        """The next request head (with its blank line), or None when the client closed."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        self.server.requests[self.index].append(head)
        return head

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_client_closes(self) -> None:
        """Hold the connection open, reading nothing of note, until the client drops it."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(64 * KiB):
                pass
        self.server.closed_by_client += 1


Handler = Callable[[RawConn], Awaitable[None]]


class RawServer:
    """``asyncio.start_server`` on 127.0.0.1, a free port, running ``handler`` per connection.

    Records what the client did: ``accepted`` connections, the request heads received on each
    (``requests[i]``), and how many connections the client closed (``closed_by_client``, counted
    by :meth:`RawConn.until_client_closes`). Leaving the ``async with`` stops the listener and
    cancels and closes every connection still open.
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.requests: list[list[bytes]] = []
        self.closed_by_client = 0
        self.port = 0

    @property
    def accepted(self) -> int:
        return len(self.requests)

    def url(self, path: str = "/file") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        try:
            await self._handler(RawConn(self, reader, writer))
        except ConnectionError:
            pass  # the client went away mid-write: what several tests do on purpose
        except asyncio.CancelledError:
            pass  # stopped by __aexit__ (asyncio's server callback logs a cancelled handler)
        finally:
            self._tasks.discard(task)
            writer.close()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        with anyio.fail_after(DEADLINE):
            while self._tasks:
                await asyncio.sleep(0.01)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def app_server(
    routes: list[web.RouteDef], ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, list[int]]]:
    """An aiohttp.web server with ``routes``; yields its base URL and the client port of every
    request it handled (one port per client connection)."""
    peers: list[int] = []

    @web.middleware
    async def note_peer(request: web.Request, handler: Any) -> web.StreamResponse:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername")[1])
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application(middlewares=[note_peer])
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        scheme = "https" if ssl_context is not None else "http"
        yield f"{scheme}://127.0.0.1:{port}", peers
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def http_client(**options: Any) -> AsyncIterator[HTTPClient]:
    client = HTTPClient(**options)
    try:
        yield client
    finally:
        await client.close()


async def read_body(response: Response) -> tuple[bytes, list[int]]:
    """The whole body and the size of each block it came in."""
    data = bytearray()
    sizes: list[int] = []
    async for block in response.iter_any():
        assert isinstance(block, memoryview)
        sizes.append(len(block))
        data += block
    return bytes(data), sizes


async def read_until_error(response: Response, into: bytearray) -> None:
    """Read the body into ``into`` until iter_any raises (the caller expects it to)."""
    async for block in response.iter_any():
        into += block


@contextlib.contextmanager
def loop_errors() -> Iterator[list[str]]:
    """Collect what the event loop reports from callbacks (an exception in a protocol method,
    say) instead of failing the test from anyio's runner, so a test can assert on it."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    errors: list[str] = []

    def collect(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        errors.append(f"{context.get('message')}: {context.get('exception')!r}")

    loop.set_exception_handler(collect)
    try:
        yield errors
    finally:
        loop.set_exception_handler(previous)


def full_blocks(size: int, block: int = BLOCK) -> list[int]:
    """How a Content-Length body of ``size`` is cut into blocks when no tick intervenes."""
    return [block] * (size // block) + ([size % block] if size % block else [])


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def response_bytes(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


# ---------------------------------------------------------------------------------------------
# 1. Content-Length bodies


SIZES = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * MiB + 7]


async def test_content_length_bodies_come_in_whole_blocks_on_one_connection() -> None:
    body = payload(max(SIZES))

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body[: int(request.match_info["n"])])

    async with (
        app_server([web.get("/bytes/{n}", serve)]) as (base, peers),
        http_client(block_size=BLOCK, tick=NO_TICK) as client,
    ):
        for size in SIZES:
            with anyio.fail_after(DEADLINE):
                response = await client.get(f"{base}/bytes/{size}", {})
                assert (response.status, response.reason) == (200, "OK")
                assert response.headers["content-length"] == str(size)
                data, sizes = await read_body(response)
            assert data == body[:size]
            assert sizes == full_blocks(size)  # never larger than block_size, no empty block
            assert response.complete
            response.release()
    assert len(peers) == len(SIZES)
    assert len(set(peers)) == 1  # every request went over the first connection


@pytest.mark.parametrize(
    ("size", "blocks"),
    [(4 * BLOCK, [BLOCK] * 4), (BLOCK // 4 + 1, [BLOCK // 2])],
    ids=["whole-blocks", "small-body"],
)
async def test_pieces_a_reader_still_holds_are_never_overwritten_by_later_bodies(
    size: int, blocks: list[int]
) -> None:
    # Blocks are pooled: a block must not be written again while any view of it is alive,
    # whole blocks and the smaller blocks of short bodies alike
    bodies = [payload(size, seed) for seed in range(6)]

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=bodies[int(request.match_info["i"])])

    async with (
        app_server([web.get("/b/{i}", serve)]) as (base, _),
        http_client(block_size=BLOCK, tick=NO_TICK) as client,
    ):
        held: list[list[memoryview]] = []
        for i in range(len(bodies)):
            with anyio.fail_after(DEADLINE):
                response = await client.get(f"{base}/b/{i}", {})
                held.append([piece async for piece in response.iter_any()])
            response.release()
        # every body read since, into whatever blocks were free, left the held ones alone
        for i, pieces in enumerate(held):
            assert b"".join(pieces) == bodies[i]
        assert client.blocks.sizes() == sorted(blocks * len(bodies))  # all in use: new ones


@pytest.mark.parametrize(
    ("size", "block", "most"),
    # whole blocks: at most one body's 4 blocks waiting for the reader (the connection may read
    # the whole body before the reader takes the first piece) and the one the reader holds;
    # a body shorter than a block: one block of the next power of two, not a whole block
    [(4 * BLOCK, BLOCK, 5), (BLOCK // 4 + 1, BLOCK // 2, 1)],
    ids=["whole-blocks", "small-body"],
)
async def test_blocks_a_reader_let_go_of_are_reused(size: int, block: int, most: int) -> None:
    body = payload(size)

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body)

    async with (
        app_server([web.get("/b", serve)]) as (base, _),
        http_client(block_size=BLOCK, tick=NO_TICK) as client,
    ):
        for _ in range(20):
            with anyio.fail_after(DEADLINE):
                response = await client.get(f"{base}/b", {})
                data, sizes = await read_body(response)  # a copy: the blocks are free again
            response.release()
            assert data == body and sizes == full_blocks(size)
        # 20 bodies went through a few distinct blocks of their size class
        kept = client.blocks.sizes()
        assert 1 <= len(kept) <= most and set(kept) == {block}, kept


async def test_no_body_statuses_end_at_once_and_keep_the_connection() -> None:
    async def no_content(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def not_modified(request: web.Request) -> web.Response:
        return web.Response(status=304, headers={"ETag": '"v1"'})

    async with (
        app_server([web.get("/204", no_content), web.get("/304", not_modified)]) as (base, peers),
        http_client() as client,
    ):
        for path, status in [("/204", 204), ("/304", 304), ("/204", 204)]:
            with anyio.fail_after(DEADLINE):
                response = await client.get(base + path, {})
                assert response.status == status
                assert response.complete  # before any read: there is no body
                assert await read_body(response) == (b"", [])
            response.release()
    assert len(peers) == 3 and len(set(peers)) == 1


# ---------------------------------------------------------------------------------------------
# 2. chunked bodies, bodies ended by the connection closing


async def test_chunked_body_reassembles_and_keeps_the_connection() -> None:
    pieces = [payload(n, seed=n) for n in (1, 100, BLOCK + 3, 5000, 2 * MiB, 7)]

    async def serve(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
        await response.write_eof()
        return response

    async with (
        app_server([web.get("/chunked", serve)]) as (base, peers),
        http_client(block_size=BLOCK) as client,
    ):
        for _ in range(2):
            with anyio.fail_after(DEADLINE):
                response = await client.get(base + "/chunked", {})
                assert response.headers["Transfer-Encoding"] == "chunked"
                assert "Content-Length" not in response.headers
                data, sizes = await read_body(response)
            assert data == b"".join(pieces)
            assert max(sizes) <= BLOCK
            assert response.complete
            response.release()
    assert len(peers) == 2 and len(set(peers)) == 1


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",  # keep-alive implied, but the body can only end by closing
        b"HTTP/1.0 200 OK\r\n\r\n",
    ],
)
async def test_body_until_close_is_read_whole_and_the_connection_not_reused(head: bytes) -> None:
    body = payload(BLOCK * 3 + 5)

    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(head + body[:1000])
        await conn.send(body[1000:])
        # returning closes the connection: the end of the body

    async with RawServer(handler) as server, http_client(block_size=BLOCK) as client:
        for _ in range(2):
            with anyio.fail_after(DEADLINE):
                response = await client.get(server.url(), {})
                data, sizes = await read_body(response)
            assert data == body
            assert max(sizes) <= BLOCK
            assert response.complete
            response.release()
        assert server.accepted == 2
        assert [len(r) for r in server.requests] == [1, 1]


@pytest.mark.parametrize(
    ("extra", "version", "reused"),
    [
        (b"", b"1.1", True),
        (b"Connection: close\r\n", b"1.1", False),
        (b"Connection: keep-alive, close\r\n", b"1.1", False),
        (b"", b"1.0", False),
        (b"Connection: keep-alive\r\n", b"1.0", True),
    ],
)
async def test_content_length_body_reused_only_if_the_server_keeps_it_alive(
    extra: bytes, version: bytes, reused: bool
) -> None:
    answer = b"HTTP/%s 200 OK\r\nContent-Length: 5\r\n%s\r\nhello" % (version, extra)

    async def handler(conn: RawConn) -> None:
        while await conn.read_request() is not None:  # serves until the client closes
            await conn.send(answer)

    async with RawServer(handler) as server, http_client() as client:
        for _ in range(3):
            with anyio.fail_after(DEADLINE):
                response = await client.get(server.url(), {})
                assert await read_body(response) == (b"hello", [5])
            response.release()
        assert server.accepted == (1 if reused else 3)


# ---------------------------------------------------------------------------------------------
# 3. keep-alive connections the server closed while idle


async def test_idle_connection_closed_after_the_response_is_replaced() -> None:
    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(response_bytes(b"hello"))  # keep-alive by default; then closes anyway

    async with RawServer(handler) as server, http_client() as client:
        for _ in range(3):
            with anyio.fail_after(DEADLINE):
                response = await client.get(server.url(), {})
                assert (response.status, await read_body(response)) == (200, (b"hello", [5]))
            response.release()
        assert server.accepted == 3
        assert [len(r) for r in server.requests] == [1, 1, 1]


async def test_reused_connection_closed_before_any_response_byte_is_retried_once() -> None:
    """The race every keep-alive client meets: the request goes out on an idle connection the
    server is closing. No byte came back, so the request is sent again on a new connection."""

    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(response_bytes(b"first" if conn.index == 0 else b"fresh"))
        await conn.read_request()  # the next request: dropped without an answer

    async with RawServer(handler) as server, http_client() as client:
        with anyio.fail_after(DEADLINE):
            response = await client.get(server.url(), {"X-N": "1"})
            assert await read_body(response) == (b"first", [5])
            response.release()
            response = await client.get(server.url(), {"X-N": "2"})
            assert response.status == 200
            assert await read_body(response) == (b"fresh", [5])
            response.release()
        assert server.accepted == 2
        assert [[b"X-N: 2" in head for head in heads] for heads in server.requests] == [
            [False, True],  # the first connection got request 2 and closed on it
            [True],  # sent again on a new connection
        ]


async def test_fresh_connection_closed_before_the_response_is_not_retried() -> None:
    async def handler(conn: RawConn) -> None:
        await conn.read_request()  # and close without a word

    async with RawServer(handler) as server, http_client() as client:
        with anyio.fail_after(DEADLINE), pytest.raises(ConnectionBroken) as caught:
            await client.get(server.url(), {})
        assert "closed the connection before the response" in str(caught.value)
        assert server.accepted == 1


async def test_reused_connection_closed_after_part_of_a_head_is_not_retried() -> None:
    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(response_bytes(b"hello"))
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Le")  # a byte came: sending again is unsafe

    async with RawServer(handler) as server, http_client() as client:
        with anyio.fail_after(DEADLINE):
            response = await client.get(server.url(), {})
            assert await read_body(response) == (b"hello", [5])
            response.release()
            with pytest.raises(ConnectionBroken, match="before the response"):
                await client.get(server.url(), {})
        assert server.accepted == 1


async def test_next_request_leaves_on_the_connection_while_the_reader_holds_the_body() -> None:
    """Once a body is all in, its connection goes back to the pool before the reader has read
    a byte of it: the next request reuses it, and the first body's blocks keep their bytes
    while the second body comes in."""
    first, second = payload(3 * BLOCK + 1, seed=1), payload(3 * BLOCK + 2, seed=2)

    async def handler(conn: RawConn) -> None:
        while (head := await conn.read_request()) is not None:
            await conn.send(response_bytes(first if head.startswith(b"GET /1 ") else second))

    async with RawServer(handler) as server, http_client(block_size=BLOCK) as client:
        with anyio.fail_after(DEADLINE):
            received = asyncio.Event()
            response_1 = await client.get(server.url("/1"), {})
            response_1.on_received(received.set)
            await received.wait()  # every byte of body 1 is in; none was read yet
            response_2 = await client.get(server.url("/2"), {})
            assert await read_body(response_2) == (second, [BLOCK, BLOCK, BLOCK, 2])
            assert await read_body(response_1) == (first, [BLOCK, BLOCK, BLOCK, 1])
            response_1.release()
            response_2.release()
        assert server.accepted == 1
        assert [len(heads) for heads in server.requests] == [2]


@pytest.mark.parametrize(
    ("answer", "called"),
    [
        (response_bytes(b"hello"), True),
        (response_bytes(b""), True),
        (response_bytes(b"hello", b"Connection: close\r\n"), False),  # not reusable
        (response_bytes(b"hello")[:-2], False),  # broken off mid-body
    ],
    ids=["whole", "empty", "connection-close", "broken"],
)
async def test_on_received_is_called_once_for_a_body_that_leaves_its_connection_reusable(
    answer: bytes, called: bool
) -> None:
    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(answer)  # then closes

    async with RawServer(handler) as server, http_client() as client:
        calls: list[str] = []
        with anyio.fail_after(DEADLINE):
            response = await client.get(server.url(), {})
            response.on_received(lambda: calls.append("received"))
            received = bytearray()
            with contextlib.suppress(ConnectionBroken):
                await read_until_error(response, received)
            response.release()
        assert calls == (["received"] if called else [])


# ---------------------------------------------------------------------------------------------
# 4. bodies broken off


async def test_content_length_body_broken_mid_way_yields_every_byte_then_raises() -> None:
    body = payload(BLOCK * 2 + 12_345)
    sent = BLOCK + 5_000

    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(response_bytes(body)[: -(len(body) - sent)])

    async with RawServer(handler) as server, http_client(block_size=BLOCK) as client:
        received = bytearray()
        with anyio.fail_after(DEADLINE):
            response = await client.get(server.url(), {})
            with pytest.raises(ConnectionBroken, match="broke mid-body") as caught:
                await read_until_error(response, received)
        assert isinstance(caught.value, ConnectionError)
        assert bytes(received) == body[:sent]
        assert not response.complete
        response.release()  # not reusable: dropped
        assert server.accepted == 1


async def test_chunked_body_broken_mid_way_yields_the_decoded_bytes_then_raises() -> None:
    first, second = payload(4096, seed=1), payload(5, seed=2)

    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        await conn.send(head + b"1000\r\n" + first + b"\r\n10\r\n" + second)

    async with RawServer(handler) as server, http_client(block_size=BLOCK) as client:
        received = bytearray()
        with anyio.fail_after(DEADLINE):
            response = await client.get(server.url(), {})
            with pytest.raises(ConnectionBroken, match="broke mid-body"):
                await read_until_error(response, received)
        assert bytes(received) == first + second
        assert not response.complete
        response.close()


async def test_last_chunk_arriving_alone_ends_the_body_at_once() -> None:
    # The terminal chunk carries no data: it must still wake a reader that already has every
    # byte (it waited for the read timeout, on asyncio's event loop, where it came alone)
    data = payload(4096, seed=3)
    all_read = asyncio.Event()

    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        await conn.send(head + b"1000\r\n" + data + b"\r\n")
        await all_read.wait()  # the reader has the data and waits for more
        await conn.send(b"0\r\n\r\n")

    async with (
        RawServer(handler) as server,
        http_client(block_size=BLOCK, tick=NO_TICK, read_timeout=NO_TICK) as client,
    ):
        received = bytearray()
        with anyio.fail_after(DEADLINE):  # a missed wake-up waits for the 60 s read timeout
            response = await client.get(server.url(), {})
            async for piece in response.iter_any():
                received += piece
                if len(received) == len(data):
                    all_read.set()
        assert bytes(received) == data
        assert response.complete
        response.release()


# ---------------------------------------------------------------------------------------------
# 5. read timeouts, and partial blocks on a slow link


async def test_stalled_body_yields_what_arrived_then_read_timeout() -> None:
    body = payload(100_000)
    part = 30_000

    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(response_bytes(body)[: -(len(body) - part)])
        await conn.until_client_closes()  # open, silent

    async with RawServer(handler) as server, http_client(read_timeout=0.5) as client:
        received = bytearray()
        with anyio.fail_after(DEADLINE):
            response = await client.get(server.url(), {})
            with pytest.raises(ReadTimeout, match="no data for") as caught:
                await read_until_error(response, received)
        assert isinstance(caught.value, TimeoutError)
        assert bytes(received) == body[:part]
        assert not response.complete
        response.close()
        with anyio.fail_after(DEADLINE):
            while server.closed_by_client < 1:
                await asyncio.sleep(0.01)


async def test_read_timeout_message_states_a_sub_second_timeout() -> None:
    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(response_bytes(b"0123456789")[:-5])
        await conn.until_client_closes()

    async with RawServer(handler) as server, http_client(read_timeout=0.5) as client:
        with anyio.fail_after(DEADLINE):
            response = await client.get(server.url(), {})
            with pytest.raises(ReadTimeout) as caught:
                await read_until_error(response, bytearray())
        response.close()
    assert "0.5" in str(caught.value)


@pytest.mark.parametrize("sent", [b"", b"HTTP/1.1 200 OK\r\nContent-Le"])
async def test_no_complete_head_in_time_is_a_read_timeout_from_get(sent: bytes) -> None:
    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(sent)
        await conn.until_client_closes()

    async with RawServer(handler) as server, http_client(read_timeout=0.5) as client:
        with anyio.fail_after(DEADLINE), pytest.raises(ReadTimeout, match="no response head"):
            await client.get(server.url(), {})
        with anyio.fail_after(DEADLINE):  # the connection was dropped, not left open
            while server.closed_by_client < 1:
                await asyncio.sleep(0.01)
        assert server.accepted == 1


async def test_slow_link_hands_out_partial_blocks_each_tick() -> None:
    """A part of a block is handed to the reader after ``tick`` even though the block is not
    full: the server sends the rest only once the reader has seen the first part."""
    body = payload(BLOCK * 2)
    part = 10_000
    seen_part = asyncio.Event()

    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        data = response_bytes(body)
        await conn.send(data[: len(data) - len(body) + part])
        await seen_part.wait()
        await conn.send(data[len(data) - len(body) + part :])

    async with (
        RawServer(handler) as server,
        http_client(block_size=BLOCK, tick=0.05, read_timeout=DEADLINE) as client,
    ):
        received = bytearray()
        with anyio.fail_after(DEADLINE):
            response = await client.get(server.url(), {})
            async for block in response.iter_any():
                received += block
                if len(received) == part:
                    seen_part.set()
        assert bytes(received) == body
        assert response.complete
        response.release()


# ---------------------------------------------------------------------------------------------
# 6. connect errors


async def test_connection_refused_is_a_connect_error_naming_host_and_port() -> None:
    port = closed_port()
    async with http_client() as client:
        with anyio.fail_after(DEADLINE), pytest.raises(ConnectError) as caught:
            await client.get(f"http://127.0.0.1:{port}/x", {})
    assert isinstance(caught.value, ConnectionError)
    assert f"cannot connect to 127.0.0.1:{port}" in str(caught.value)


async def test_connection_refused_message_says_refused() -> None:
    port = closed_port()
    async with http_client() as client:
        with anyio.fail_after(DEADLINE), pytest.raises(ConnectError) as caught:
            await client.get(f"http://127.0.0.1:{port}/x", {})
    assert "refused" in str(caught.value).lower()


# ---------------------------------------------------------------------------------------------
# 7. malformed heads and interim responses


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", "not an HTTP/1.x status line"),
        (b"ICY 200 OK\r\n\r\n", "not an HTTP/1.x status line"),
        (
            b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 0\r\n\r\n",
            "obsolete header line folding",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            "conflicting Content-Length",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello", "conflicting Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello", "malformed Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n", "malformed header line"),
    ],
)
async def test_malformed_head_is_connection_broken(answer: bytes, fragment: str) -> None:
    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(answer)
        await conn.until_client_closes()

    async with RawServer(handler) as server, http_client() as client:
        with anyio.fail_after(DEADLINE), pytest.raises(ConnectionBroken) as caught:
            await client.get(server.url(), {})
        assert type(caught.value) is ConnectionBroken
        assert str(caught.value).startswith("malformed response: ")
        assert fragment in str(caught.value)
        with anyio.fail_after(DEADLINE):  # the connection was dropped
            while server.closed_by_client < 1:
                await asyncio.sleep(0.01)


async def test_malformed_chunk_is_connection_broken_from_iter_any() -> None:
    got_head = asyncio.Event()

    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await got_head.wait()
        await conn.send(b"zz\r\n")
        await conn.until_client_closes()

    async with RawServer(handler) as server, http_client() as client:
        received = bytearray()
        with anyio.fail_after(DEADLINE):
            response = await client.get(server.url(), {})
            got_head.set()
            with pytest.raises(ConnectionBroken, match="malformed response: malformed chunk size"):
                await read_until_error(response, received)
        assert bytes(received) == b"hello"
        response.close()


async def test_malformed_chunk_arriving_with_the_head_still_yields_the_good_bytes() -> None:
    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"
        )
        await conn.until_client_closes()

    async with RawServer(handler) as server, http_client() as client:
        received = bytearray()
        with anyio.fail_after(DEADLINE):
            response = await client.get(server.url(), {})
            with pytest.raises(ConnectionBroken, match="malformed response: malformed chunk size"):
                await read_until_error(response, received)
        response.close()
        assert bytes(received) == b"hello"


async def test_bytes_past_the_body_with_the_head_are_connection_broken() -> None:
    """The body comes first; the extra bytes then break the response (never a reused
    connection with someone else's bytes in it)."""

    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(response_bytes(b"hello") + b"EXTRA")
        await conn.until_client_closes()

    async with RawServer(handler) as server, http_client() as client:
        with anyio.fail_after(DEADLINE):
            response = await client.get(server.url(), {})
            received = b""
            with pytest.raises(ConnectionBroken) as caught:
                async for piece in response.iter_any():
                    received += bytes(piece)
        assert received == b"hello"
        assert str(caught.value) == (
            "malformed response: the server sent more than the response body"
        )


async def answer_with_head_padding(pad: int) -> tuple[list[str], BaseException | bytes]:
    """GET from a server whose head carries a ``pad``-byte header; the loop's callback errors
    and the body (or the exception get() raised)."""

    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(response_bytes(b"hello", b"X-Pad: " + b"a" * pad + b"\r\n"))
        await conn.until_client_closes()

    async with RawServer(handler) as server, http_client() as client:
        with loop_errors() as errors, anyio.fail_after(DEADLINE):
            try:
                response = await client.get(server.url(), {})
            except ConnectionError as exc:
                return errors, exc
            body, _ = await read_body(response)
            assert response.headers["X-Pad"] == "a" * pad
            response.release()
            return errors, body


async def test_head_just_under_the_first_head_buffer_is_read() -> None:
    assert await answer_with_head_padding(15 * KiB) == ([], b"hello")


async def test_head_larger_than_the_first_head_buffer_is_read() -> None:
    assert await answer_with_head_padding(20 * KiB) == ([], b"hello")


async def test_head_over_the_limit_is_malformed() -> None:
    errors, outcome = await answer_with_head_padding(70 * KiB)
    assert errors == []
    assert isinstance(outcome, ConnectionBroken)
    assert str(outcome) == "malformed response: response head larger than 65536 bytes"


@pytest.mark.parametrize("separately", [False, True])
async def test_interim_responses_are_skipped(separately: bool) -> None:
    interim = [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nX-Interim: "yes"\r\n\r\n',
    ]
    final = response_bytes(b"hello", b"X-Final: 1\r\n")

    async def handler(conn: RawConn) -> None:
        while await conn.read_request() is not None:
            if separately:
                for piece in [*interim, final]:
                    await conn.send(piece)
                    await asyncio.sleep(0.01)  # likely separate reads; either way is valid
            else:
                await conn.send(b"".join(interim) + final)

    async with RawServer(handler) as server, http_client() as client:
        for _ in range(2):
            with anyio.fail_after(DEADLINE):
                response = await client.get(server.url(), {})
                assert (response.status, response.reason) == (200, "OK")
                assert dict(response.headers) == {"content-length": "5", "x-final": "1"}
                assert await read_body(response) == (b"hello", [5])
            response.release()
        assert server.accepted == 1


# ---------------------------------------------------------------------------------------------
# 8. Response.limit


def limit_handler(body: bytes, first: int, more: asyncio.Event) -> Handler:
    """Serves ``/big``: the head and ``first`` body bytes, then the rest once ``more`` is set;
    ``/small``: "hello". Serves until the client closes."""

    async def handler(conn: RawConn) -> None:
        while (head := await conn.read_request()) is not None:
            if not head.startswith(b"GET /big "):
                await conn.send(response_bytes(b"hello"))
                continue
            data = response_bytes(body)
            split = len(data) - len(body) + first
            await conn.send(data[:split])
            await more.wait()
            await conn.send(data[split:])

    return handler


async def cut_mid_transfer() -> list[str]:
    """A 4 MiB body: after its first 100 000 bytes are read, limit(300 000), then the server
    sends the rest. Asserts what the reader sees; returns what the event loop reported."""
    body = payload(4 * MiB)
    first, cut = 100_000, 300_000
    more = asyncio.Event()

    async with (
        RawServer(limit_handler(body, first, more)) as server,
        http_client(block_size=BLOCK, tick=0.05) as client,
    ):
        received = bytearray()
        with loop_errors() as errors, anyio.fail_after(DEADLINE):
            response = await client.get(server.url("/big"), {})
            async for block in response.iter_any():
                received += block
                if len(received) == first:  # all the server sent so far
                    response.limit(cut)
                    more.set()
            assert len(received) == cut
            assert bytes(received) == body[:cut]
            assert response.complete
            response.release()
            response = await client.get(server.url("/small"), {})
            assert await read_body(response) == (b"hello", [5])
            response.release()
        assert server.accepted == 2  # the cut connection was not reused
        assert [len(heads) for heads in server.requests] == [1, 1]
    return errors


async def test_limit_ends_the_body_exactly_there_and_drops_the_connection() -> None:
    await cut_mid_transfer()


async def test_limit_reached_while_receiving_reports_no_error() -> None:
    assert await cut_mid_transfer() == []


async def test_limit_past_the_end_changes_nothing() -> None:
    body = payload(200_000)
    more = asyncio.Event()
    more.set()
    async with (
        RawServer(limit_handler(body, 0, more)) as server,
        http_client(block_size=BLOCK) as client,
    ):
        with anyio.fail_after(DEADLINE):
            response = await client.get(server.url("/big"), {})
            response.limit(len(body) + 1)
            data, _ = await read_body(response)
            assert data == body and response.complete
            response.release()
            response = await client.get(server.url("/small"), {})
            assert await read_body(response) == (b"hello", [5])
            response.release()
        assert server.accepted == 1  # read to its real end: reusable


async def test_limit_below_what_arrived_still_yields_what_arrived_then_ends() -> None:
    """Bytes already received past the limit are yielded (the reader trims them, as the engine
    does); the body then ends there and the connection is not reused."""
    body = payload(4 * MiB)
    first, cut = 100_000, 50_000
    sent = asyncio.Event()

    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        data = response_bytes(body)
        await conn.send(data[: len(data) - len(body) + first])
        sent.set()
        await conn.until_client_closes()

    async with (
        RawServer(handler) as server,
        http_client(block_size=BLOCK, tick=NO_TICK) as client,
    ):
        with anyio.fail_after(DEADLINE):
            response = await client.get(server.url("/big"), {})
            await sent.wait()
            await asyncio.sleep(0.2)  # the first 100 000 bytes reach the client's blocks
            response.limit(cut)
            data, _ = await read_body(response)
            assert response.complete
        response.close()
    assert len(data) == first
    assert data == body[:first]


# ---------------------------------------------------------------------------------------------
# 9. back-pressure


async def test_a_reader_that_does_not_read_stops_the_server_writing() -> None:
    total = 64 * MiB
    piece = payload(BLOCK)
    high_water = 256 * KiB
    written = 0

    async def handler(conn: RawConn) -> None:
        nonlocal written
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        while written < total:
            await conn.send(piece)
            written += len(piece)

    async with (
        RawServer(handler) as server,
        http_client(block_size=BLOCK, high_water=high_water) as client,
    ):
        with anyio.fail_after(DEADLINE):
            response = await client.get(server.url(), {})
            # not reading: wait until the server's writes stop getting through
            last, steady = -1, 0
            while steady < 10:
                await asyncio.sleep(0.02)
                steady = steady + 1 if written == last else 0
                last = written
        stalled_at = written
        # what the client holds is bounded by high_water plus a block; the rest of what the
        # server wrote sits in the two kernels' socket buffers (a few MiB at most)
        assert stalled_at < total
        assert stalled_at <= high_water + BLOCK + 16 * MiB
        digest = hashlib.sha256()
        count = 0
        with anyio.fail_after(DEADLINE):
            async for block in response.iter_any():
                assert len(block) <= BLOCK
                digest.update(block)
                count += len(block)
        assert count == total
        assert digest.digest() == hashlib.sha256(piece * (total // BLOCK)).digest()
        assert response.complete
        response.release()
        assert server.accepted == 1


# ---------------------------------------------------------------------------------------------
# 10. TLS


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


async def test_tls_download_with_a_trusted_ca(tls_ca: trustme.CA) -> None:
    body = payload(MiB + 1)

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body)

    trusting = ssl.create_default_context()
    tls_ca.configure_trust(trusting)
    async with (
        app_server([web.get("/f", serve)], server_context(tls_ca)) as (base, peers),
        http_client(block_size=BLOCK, tick=NO_TICK, ssl_context=trusting) as client,
    ):
        assert base.startswith("https://127.0.0.1:")
        for _ in range(2):
            with anyio.fail_after(DEADLINE):
                response = await client.get(base + "/f", {})
                assert response.status == 200
                data, sizes = await read_body(response)
            assert data == body
            assert sizes == full_blocks(len(body))
            response.release()
    assert len(peers) == 2 and len(set(peers)) == 1


async def test_tls_untrusted_certificate_is_a_connect_error(tls_ca: trustme.CA) -> None:
    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=b"secret")

    async with (
        app_server([web.get("/f", serve)], server_context(tls_ca)) as (base, peers),
        http_client() as client,  # the default context does not trust the test CA
    ):
        with anyio.fail_after(DEADLINE), pytest.raises(ConnectError) as caught:
            await client.get(base + "/f", {})
    assert "TLS certificate of 127.0.0.1 not trusted" in str(caught.value)
    assert "certificate" in str(caught.value).split("not trusted: ")[1]
    assert peers == []


# ---------------------------------------------------------------------------------------------
# 11. request heads


async def test_request_head_bytes_host_with_port_and_encoded_target() -> None:
    async def handler(conn: RawConn) -> None:
        while await conn.read_request() is not None:
            await conn.send(response_bytes(b"ok"))

    async with RawServer(handler) as server, http_client() as client:
        url = f"http://127.0.0.1:{server.port}/a b/\u00fc.tif?x=1 2&y=%2F"
        headers = {"Host": "evil.example", "Range": "bytes=0-", "Authorization": "Bearer t"}
        with anyio.fail_after(DEADLINE):
            response = await client.get(url, headers)
            assert await read_body(response) == (b"ok", [2])
            response.release()
        assert server.requests == [
            [
                b"GET /a%20b/%C3%BC.tif?x=1%202&y=%2F HTTP/1.1\r\n"
                + f"Host: 127.0.0.1:{server.port}\r\n".encode()
                + b"Range: bytes=0-\r\nAuthorization: Bearer t\r\n\r\n"
            ]
        ]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer t\r\nX-Evil: 1"},
        {"Authorization": "Bearer t\nX-Evil: 1"},
        {"X-Evil\r\nHost": "x"},
        {"Authorization": "Bearer t\x00"},
    ],
)
async def test_line_breaks_in_request_headers_refused_before_sending(
    headers: dict[str, str],
) -> None:
    async def handler(conn: RawConn) -> None:
        while await conn.read_request() is not None:
            await conn.send(response_bytes(b"ok"))

    async with RawServer(handler) as server, http_client() as client:
        with anyio.fail_after(DEADLINE):
            with pytest.raises(ValueError, match="contains a line break"):
                await client.get(server.url("/fresh"), headers)
            response = await client.get(server.url("/good"), {})  # opens the first connection
            assert await read_body(response) == (b"ok", [2])
            response.release()
            with pytest.raises(ValueError, match="contains a line break"):
                await client.get(server.url("/pooled"), headers)  # with one idle connection
            response = await client.get(server.url("/after"), {})
            assert await read_body(response) == (b"ok", [2])
            response.release()
        assert server.accepted == 1
        assert [head.split(b" ")[1] for head in server.requests[0]] == [b"/good", b"/after"]
        assert not any(b"Evil" in head for head in server.requests[0])


# ---------------------------------------------------------------------------------------------
# 12. close


async def test_close_aborts_busy_and_idle_connections_and_refuses_new_requests() -> None:
    body = payload(MiB)
    part = 1000

    async def handler(conn: RawConn) -> None:
        while (head := await conn.read_request()) is not None:
            if head.startswith(b"GET /hold "):
                await conn.send(response_bytes(body)[: -(len(body) - part)])
                break
            await conn.send(response_bytes(b"hello"))
        await conn.until_client_closes()

    client = HTTPClient(block_size=BLOCK, tick=NO_TICK)
    try:
        async with RawServer(handler) as server:
            with anyio.fail_after(DEADLINE):
                busy = await client.get(server.url("/hold"), {})
                idle = await client.get(server.url("/small"), {})  # a second connection
                assert await read_body(idle) == (b"hello", [5])
                idle.release()
                assert server.accepted == 2
                await client.close()
                while server.closed_by_client < 2:  # both connections closed by the client
                    await asyncio.sleep(0.01)
                received = bytearray()
                with pytest.raises(ConnectionBroken, match="broke mid-body"):
                    await read_until_error(busy, received)
            assert bytes(received) == body[:part]  # what arrived is still handed out
            assert not busy.complete
            busy.release()
            with pytest.raises(RuntimeError, match="HTTPClient is closed"):
                await client.get(server.url("/small"), {})
            assert server.accepted == 2
    finally:
        await client.close()


async def test_close_during_a_get_on_a_reused_connection_opens_nothing_new() -> None:
    asked_again = asyncio.Event()

    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(response_bytes(b"hello"))
        await conn.read_request()
        asked_again.set()
        if conn.index > 0:
            await conn.send(response_bytes(b"after close"))
        await conn.until_client_closes()

    async def second_get(client: HTTPClient, url: str) -> Response | BaseException:
        try:
            return await client.get(url, {})
        except (ConnectionError, RuntimeError) as exc:
            return exc

    client = HTTPClient()
    outcome: Response | BaseException | None = None
    try:
        async with RawServer(handler) as server:
            with anyio.fail_after(DEADLINE):
                response = await client.get(server.url(), {})
                assert await read_body(response) == (b"hello", [5])
                response.release()
                task = asyncio.create_task(second_get(client, server.url()))
                await asked_again.wait()
                await client.close()
                outcome = await task
            accepted = server.accepted
            if isinstance(outcome, Response):
                outcome.close()
    finally:
        await client.close()
    assert not isinstance(outcome, Response), "got a response after close()"
    assert accepted == 1
