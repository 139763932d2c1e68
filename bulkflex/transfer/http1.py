"""The engine's HTTP/1.1 client for data requests: keep-alive pools, bodies straight into blocks.

Why not aiohttp here: on a fast link a file's bytes cross Python many times per MiB in a
general-purpose client (a ``bytes`` object per socket read, a parser callback, a stream buffer,
a reader wake-up). Here the kernel writes a body into a preallocated block
(``asyncio.BufferedProtocol``), and the reader is woken once per block (``block_size``, 1 MiB by
default), when the body ends, or once per ``tick`` on a slow link; the block goes to the disk
thread as it is. The head parsing, body framing and chunked decoding are the pure functions of
:mod:`bulkflex.core.http1`. aiohttp still serves the planner and the token endpoints.

What a reader sees:
- :meth:`HTTPClient.get` sends one GET (no redirects followed: the engine follows them by hand,
  to keep the token on its host) and returns once the response head is in.
- :meth:`Response.iter_any` yields the body as ``memoryview`` blocks. Every byte that arrived is
  yielded before an error is raised, so a retry resumes after the last good byte.
- Errors are :class:`ConnectError`, :class:`ConnectionBroken` (both ``ConnectionError``), and
  :class:`ReadTimeout` (a ``TimeoutError``): no byte for ``read_timeout`` seconds.
- A request that fails on a reused keep-alive connection before any response byte (the server
  closed it while idle) is sent once more on a new connection, as every HTTP client does.

Back-pressure: a connection stops reading from its socket while ``high_water`` bytes wait for the
reader, so a slow disk never lets memory grow.

Blocks are reused (:class:`_BlockPool`): a block goes back into service once nothing refers to
it any more, that is once the reader has dropped every piece of it (after the disk thread wrote
them). Fresh blocks on every response made the allocator hand memory back to the kernel and
take it again all the time: page faults and zeroing, and on a VM that reports free pages to its
host, a host fault for every page (seen here as seconds of sys time per GiB).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import cast

import anyio

from bulkflex.core.http1 import (
    MAX_HEAD_BYTES,
    BodyKind,
    ChunkedDecoder,
    Framing,
    Headers,
    Origin,
    ProtocolError,
    ResponseHead,
    body_framing,
    find_head_end,
    parse_head,
    request_head,
    split_url,
)

__all__ = [
    "CertificateNotTrusted",
    "ConnectError",
    "ConnectionBroken",
    "HTTPClient",
    "ReadTimeout",
    "Response",
]

_HEAD_BUFFER = 16 * 1024
_MIN_VIEW = 16 * 1024


class ConnectError(ConnectionError):
    """The connection (TCP or TLS) could not be set up."""


class CertificateNotTrusted(ConnectError):
    """The server's TLS certificate did not verify (not a transient error)."""


class ConnectionBroken(ConnectionError):
    """The connection closed or failed before the response was complete."""


class ReadTimeout(TimeoutError):
    """No byte arrived for the read timeout."""


class _Stale(ConnectionError):
    """A reused connection failed before any byte of the response: send again on a new one."""


class _BlockPool:
    """Receive blocks, each reused once nothing refers to it any more.

    A block is free when its only references are the pool's own: every ``memoryview`` of it
    (the connection's, the pieces a reader holds, their slices) keeps it referenced through
    their shared buffer. So a block is never written while any view of it is alive, whatever
    the reader does with its pieces, and the reader needs no release call.

    Blocks come in powers of two from ``_SMALLEST`` up to ``block_size``: a body shorter than a
    block gets a block of its own size class (a 256 KiB file, a 256 KiB block), so a small
    file pins no more than twice its size while the disk thread writes it, and thousands of
    small files go through a few blocks instead of a fresh, zero-filled buffer each (py-spy put
    7% of the event loop's samples on that allocation on 2000 x 256 KiB; the wall clock moved
    within its noise). Up to ``max_bytes`` of blocks are kept; past that, blocks are allocated
    and dropped. The check reads CPython reference counts: on another interpreter the pool
    keeps nothing.
    """

    #: references to a free block while :meth:`take` looks at it: the deque's, the loop
    #: variable's, and getrefcount's argument
    _FREE_REFS = 3
    #: smaller bodies get a fresh buffer (cheap at that size)
    _SMALLEST = 16 * 1024

    def __init__(self, block_size: int, max_bytes: int) -> None:
        self.block_size = block_size
        self.max_bytes = max_bytes if sys.implementation.name == "cpython" else 0
        self._classes: dict[int, deque[bytearray]] = {}
        self._kept = 0

    def take(self, size: int) -> bytearray:
        """A block of at least ``size`` bytes (at most ``block_size``) that nobody refers to:
        a pooled one of its size class, else a new one (pooled if there is room)."""
        size = min(max(size, 1), self.block_size)
        if size < self._SMALLEST:
            return bytearray(size)
        wanted = min(1 << (size - 1).bit_length(), self.block_size)
        blocks = self._classes.setdefault(wanted, deque())
        for _ in range(len(blocks)):
            block = blocks[0]
            blocks.rotate(-1)  # the oldest first: the likeliest to be free
            if sys.getrefcount(block) <= self._FREE_REFS:
                return block
        block = bytearray(wanted)
        if self._kept + wanted <= self.max_bytes:
            blocks.append(block)
            self._kept += wanted
        return block

    def sizes(self) -> list[int]:
        """The size of every block kept, for tests and debugging."""
        return sorted(size for size, blocks in self._classes.items() for _ in blocks)

    def __len__(self) -> int:
        return sum(len(blocks) for blocks in self._classes.values())


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection; carries one request at a time."""

    def __init__(self, client: HTTPClient, origin: Origin) -> None:
        self._client = client
        self.origin = origin
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        # the head being received
        self._head = bytearray(_HEAD_BUFFER)
        self._head_view = memoryview(self._head)
        self._head_len = 0
        self._head_future: asyncio.Future[ResponseHead] | None = None
        self._discarding = False  # the head overflowed: bytes are dropped until the close
        self._in_head = False
        # the body being received
        self._framing: Framing | None = None
        self._remaining = 0  # LENGTH: bytes still to come
        self._decoder: ChunkedDecoder | None = None
        self._block: memoryview | None = None
        self._filled = 0  # bytes of the current block received
        self._handed = 0  # bytes of the current block given to the reader (or decoded)
        self._ready: deque[memoryview] = deque()
        self._ready_bytes = 0
        self._paused = False
        self._complete = False
        self._body_received = 0
        self._limit: int | None = None  # the reader wants no body byte at or past this index
        self._cut = False  # the body ended at the limit, not at its real end
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._wake_partial = False
        self._received_any = False
        self._last_data = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio protocol callbacks ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._in_head:
            if self._head_len == len(self._head):
                self._grow_head()
            return self._head_view[self._head_len :]
        if self._framing is None or self._complete:
            # bytes nobody asked for (a server speaking out of turn): take them to fail
            return memoryview(bytearray(_MIN_VIEW))
        if self._block is None or self._filled == len(self._block):
            self._new_block()
        assert self._block is not None
        view = self._block[self._filled :]
        if self._framing.kind is BodyKind.LENGTH and len(view) > self._remaining:
            view = view[: self._remaining]  # never read past the body into the next response
        if self._limit is not None and len(view) > self._limit - self._body_received:
            view = view[: max(self._limit - self._body_received, 1)]
        return view

    def buffer_updated(self, nbytes: int) -> None:
        self._received_any = True
        if self._in_head:
            if self._discarding:
                self._head_len = 0
                return
            self._head_len += nbytes
            self._head_received(nbytes)
            return
        framing = self._framing
        if framing is None or self._complete:
            self._fail(ProtocolError("the server sent bytes after the response"))
            return
        self._last_data = self._loop.time()
        self._filled += nbytes
        self._body_received += nbytes
        if framing.kind is BodyKind.LENGTH:
            self._remaining -= nbytes
            if self._remaining == 0:
                self._complete = True
            elif self._limit is not None and self._body_received >= self._limit:
                self._cut_here()
                return
        elif framing.kind is BodyKind.CHUNKED:
            self._decode()
        assert self._block is not None
        if self._filled == len(self._block) or self._complete:
            self._retire_block()
        if self._ready_bytes >= self._client.high_water and not self._paused:
            assert self.transport is not None
            self.transport.pause_reading()
            self._paused = True
        # the end of a chunked body can come alone (the last chunk, no data): wake the reader
        # for that too, or it waits for the read timeout
        if (self._ready or self._complete) and self._waiter is not None:
            self._wake()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._client._forget(self)
        if self._in_head:
            error: BaseException = (
                _Stale("reused connection closed before the response")
                if self.reused and not self._received_any
                else ConnectionBroken("the server closed the connection before the response")
            )
            if self._head_future is not None and not self._head_future.done():
                self._head_future.set_exception(error)
            return
        if self._framing is None or self._complete:
            return
        if self._framing.kind is BodyKind.UNTIL_CLOSE and exc is None:
            self._complete = True
            if self._block is not None:
                self._retire_block()
        elif self._error is None:
            detail = f": {exc}" if exc else ""
            self._error = ConnectionBroken(f"the connection broke mid-body{detail}")
            if self._block is not None and self._framing.kind is not BodyKind.CHUNKED:
                self._retire_block()
        self._wake()

    # -- head --------------------------------------------------------------------------------

    def _grow_head(self) -> None:
        if len(self._head) >= MAX_HEAD_BYTES:
            # not from inside get_buffer: aborting the transport there crashes uvloop (it goes
            # on to read into the buffer of a closed handle)
            error = ProtocolError(f"response head larger than {MAX_HEAD_BYTES} bytes")
            self._loop.call_soon(self._fail, error)
            self._discarding = True  # take (and drop) bytes until the abort lands
            self._head_len = 0
            return
        # a bigger buffer (a bytearray with a live memoryview cannot be resized)
        bigger = bytearray(2 * len(self._head))
        bigger[: self._head_len] = self._head_view[: self._head_len]
        self._head, self._head_view = bigger, memoryview(bigger)

    def _head_received(self, nbytes: int) -> None:
        end = find_head_end(self._head, self._head_len - nbytes, self._head_len)
        if end < 0:
            return
        future = self._head_future
        try:
            head = parse_head(bytes(self._head[:end]))
            if 100 <= head.status < 200:  # an interim response: skip it
                self._shift_head(end)
                if self._head_len:
                    self._head_received(self._head_len)
                return
            framing = body_framing(head)
        except ProtocolError as exc:
            self._fail(exc)
            return
        leftover = self._head_len - end
        self._in_head = False
        self._start_body(framing)
        # the head goes to the reader first: an error in the body bytes that came with it is
        # raised from iter_any after the good bytes, like any other body error
        if future is not None and not future.done():
            future.set_result(head)
        if leftover:
            self._feed_leftover(self._head_view[end : self._head_len])
        self._head_len = 0

    def _shift_head(self, end: int) -> None:
        rest = self._head_len - end
        self._head[:rest] = self._head[end : self._head_len]
        self._head_len = rest

    def _feed_leftover(self, data: memoryview) -> None:
        """Body bytes that came in with the head: copy them into the first block."""
        pos = 0
        while pos < len(data) and not self._complete:
            view = self.get_buffer(len(data) - pos)
            take = min(len(view), len(data) - pos)
            view[:take] = data[pos : pos + take]
            pos += take
            self.buffer_updated(take)
        if pos < len(data) and self._error is None:
            self._fail(ProtocolError("the server sent more than the response body"))

    # -- body --------------------------------------------------------------------------------

    def _start_body(self, framing: Framing) -> None:
        self._framing = framing
        self._complete = framing.kind is BodyKind.NONE or (
            framing.kind is BodyKind.LENGTH and framing.length == 0
        )
        self._remaining = framing.length or 0
        self._body_received = 0
        self._limit = None
        self._cut = False
        self._decoder = ChunkedDecoder() if framing.kind is BodyKind.CHUNKED else None
        self._block = None
        self._filled = self._handed = 0
        self._last_data = self._loop.time()

    def limit(self, nbytes: int) -> None:
        """Read no body byte past the first ``nbytes``: the body ends there for the reader, and
        the connection is dropped after it (the server is still sending). Bytes past ``nbytes``
        that were already received are still yielded (the reader trims them). Only for a body
        with a Content-Length, the only kind a ranged request is accepted with."""
        framing = self._framing
        if framing is None or framing.kind is not BodyKind.LENGTH or self._complete:
            return
        self._limit = nbytes
        if self._body_received >= nbytes:
            self._cut_here()

    def _cut_here(self) -> None:
        self._complete = self._cut = True
        self._retire_block()
        if self.transport is not None and not self._paused:
            self.transport.pause_reading()
            self._paused = True
        self._wake()

    def _new_block(self) -> None:
        client = self._client
        size = client.block_size
        if self._framing is not None and self._framing.kind is BodyKind.LENGTH:
            size = max(min(size, self._remaining), 1)
        self._block = memoryview(client.blocks.take(size))[:size]
        self._filled = self._handed = 0

    def _decode(self) -> None:
        """Chunked: decode the new bytes of the block; the data pieces become ready."""
        assert self._block is not None and self._decoder is not None
        pieces: list[memoryview] = []
        try:
            self._decoder.feed(self._block[self._handed : self._filled], pieces)
        except ProtocolError as exc:
            self._fail(exc)
        self._handed = self._filled
        for piece in pieces:  # before an error too: every good byte reaches the reader
            self._ready.append(piece)
            self._ready_bytes += len(piece)
        if self._decoder.done:
            self._complete = True

    def _retire_block(self) -> None:
        """Make the received, not yet handed part of the current block ready for the reader."""
        if self._block is None:
            return
        if self._framing is not None and self._framing.kind is not BodyKind.CHUNKED:
            if self._filled > self._handed:
                piece = self._block[self._handed : self._filled]
                self._ready.append(piece)
                self._ready_bytes += len(piece)
            self._handed = self._filled
        if self._filled == len(self._block) or self._complete:
            self._block = None

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        if self._head_future is not None and not self._head_future.done():
            self._head_future.set_exception(error)
        self._wake()
        self.abort()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _tick(self) -> None:
        """Timer while the reader waits: hand out a partial block, or detect silence."""
        if self._waiter is None or self._waiter.done():
            return
        idle = self._loop.time() - self._last_data
        if idle >= self._client.read_timeout:
            self._error = ReadTimeout(f"no data for {self._client.read_timeout:g}s")
            self._wake()
            return
        if self._unhanded():
            self._wake_partial = True
            self._wake()
            return
        delay = min(self._client.tick, self._client.read_timeout - idle)
        self._timer = self._loop.call_later(delay, self._tick)

    # -- what the Response uses --------------------------------------------------------------

    async def send(self, data: bytes) -> ResponseHead:
        assert self.transport is not None
        self._in_head = True
        self._framing = None
        self._complete = False
        self._error = None
        self._received_any = False
        self._head_len = 0
        self._head_future = self._loop.create_future()
        self.transport.write(data)
        if self.closed:  # closed between pool and now
            raise _Stale("connection closed") if self.reused else ConnectionBroken("closed")
        return await self._await_head()

    async def _await_head(self) -> ResponseHead:
        future = self._head_future
        assert future is not None
        timeout = self._client.read_timeout
        # a plain loop timer: this runs once per request, and a cancel scope costs far more
        timer = self._loop.call_later(timeout, self._head_timed_out, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _head_timed_out(self, future: asyncio.Future[ResponseHead]) -> None:
        if not future.done():
            timeout = self._client.read_timeout
            future.set_exception(ReadTimeout(f"no response head within {timeout:g}s"))
            self.abort()

    async def read(self) -> memoryview | None:
        """The next piece of body, or None at its end."""
        while True:
            if self._ready:
                piece = self._ready.popleft()
                self._ready_bytes -= len(piece)
                if self._paused and not self._cut and self._ready_bytes < self._client.high_water:
                    self._paused = False
                    if self.transport is not None and not self.closed:
                        self.transport.resume_reading()
                return piece
            if self._error is not None or self._complete or self._wake_partial:
                self._wake_partial = False
                if self._unhanded():
                    self._retire_block()  # bytes that did arrive come before any error
                    continue
                if self._error is not None:
                    raise self._error
                if self._complete:
                    return None
            self._waiter = self._loop.create_future()
            self._timer = self._loop.call_later(
                min(self._client.tick, self._client.read_timeout), self._tick
            )
            try:
                await self._waiter
            finally:
                self._waiter = None
                if self._timer is not None:
                    self._timer.cancel()

    def _unhanded(self) -> bool:
        framing = self._framing
        return (
            self._block is not None
            and self._filled > self._handed
            and framing is not None
            and framing.kind is not BodyKind.CHUNKED
        )

    @property
    def complete(self) -> bool:
        return self._complete and not self._ready and self._error is None

    @property
    def reusable(self) -> bool:
        """The body was read to its end, its framing allows another request, and it is open."""
        framing = self._framing
        return (
            self.complete
            and not self._cut
            and not self.closed
            and framing is not None
            and framing.reusable
        )

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Response:
    """A response whose head is in; the body is read with :meth:`iter_any`."""

    def __init__(self, client: HTTPClient, conn: _Connection, head: ResponseHead, url: str) -> None:
        self._client = client
        self._conn: _Connection | None = conn
        self.url = url
        self.status = head.status
        self.reason = head.reason
        self.headers: Headers = head.headers
        self._keep_alive = head.keep_alive

    async def iter_any(self) -> AsyncIterator[memoryview]:
        """The body, block by block, as it arrives. Every byte received is yielded before an
        error (:class:`ConnectionBroken`, :class:`ReadTimeout`, ``ProtocolError`` as a
        ConnectionBroken) is raised."""
        conn = self._conn
        if conn is None:
            return
        while True:
            try:
                piece = await conn.read()
            except ProtocolError as exc:
                raise ConnectionBroken(f"malformed response: {exc}") from None
            if piece is None:
                return
            yield piece

    def limit(self, nbytes: int) -> None:
        """End the body for this reader after its first ``nbytes`` (see ``_Connection.limit``)."""
        if self._conn is not None:
            self._conn.limit(nbytes)

    @property
    def complete(self) -> bool:
        """The whole body has been read (or all of it up to :meth:`limit`)."""
        return self._conn is None or self._conn.complete

    def release(self) -> None:
        """Give the connection back to the pool if the body was read to its end, else close it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._keep_alive and conn.reusable:
            self._client._put_back(conn)
        else:
            conn.abort()

    def close(self) -> None:
        """Drop the connection (the rest of the body is not wanted)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()


class HTTPClient:
    """Keep-alive connection pools per origin. Concurrency limits are the caller's (the engine's
    ``HostPacer``); idle connections are kept up to ``max_idle_per_origin``."""

    def __init__(
        self,
        *,
        connect_timeout: float = 30.0,
        read_timeout: float = 60.0,
        block_size: int = 1024 * 1024,
        high_water: int = 4 * 1024 * 1024,
        max_idle_per_origin: int = 64,
        tick: float = 1.0,
        ssl_context: ssl.SSLContext | None = None,
        pool_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.block_size = max(block_size, 4096)
        self.high_water = max(high_water, self.block_size)
        #: receive blocks kept for reuse: up to ``pool_bytes`` of them
        self.blocks = _BlockPool(self.block_size, pool_bytes)
        self.tick = tick
        #: idle connections kept per origin (the engine raises it with its connection cap)
        self.max_idle_per_origin = max_idle_per_origin
        self._ssl_context = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._closed = False

    async def get(self, url: str, headers: Mapping[str, str]) -> Response:
        """Send ``GET url`` and return the response once its head is in."""
        if self._closed:
            raise RuntimeError("HTTPClient is closed")
        origin, target = split_url(url)
        data = request_head(target, origin, headers)
        conn = self._take_idle(origin)
        if conn is not None:
            try:
                return Response(self, conn, await self._send(conn, data), url)
            except _Stale:
                pass  # closed by the server while idle: once more on a fresh connection
        conn = await self._connect(origin)
        return Response(self, conn, await self._send(conn, data), url)

    @staticmethod
    async def _send(conn: _Connection, data: bytes) -> ResponseHead:
        try:
            return await conn.send(data)
        except ProtocolError as exc:
            conn.abort()
            raise ConnectionBroken(f"malformed response: {exc}") from None
        except BaseException:
            conn.abort()
            raise

    async def close(self) -> None:
        self._closed = True
        for conn in list(self._open):
            conn.abort()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports' close callbacks run

    # -- pool --------------------------------------------------------------------------------

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    def _put_back(self, conn: _Connection) -> None:
        if self._closed:
            conn.abort()
            return
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= self.max_idle_per_origin:
            conn.abort()
            return
        idle.append(conn)

    def _forget(self, conn: _Connection) -> None:
        self._open.discard(conn)
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)

    async def _connect(self, origin: Origin) -> _Connection:
        if self._closed:
            raise RuntimeError("HTTPClient is closed")
        loop = asyncio.get_running_loop()
        context = self._tls() if origin.scheme == "https" else None
        try:
            with anyio.fail_after(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, origin),
                    origin.host,
                    origin.port,
                    ssl=context,
                    server_hostname=origin.host if context is not None else None,
                )
        except TimeoutError:
            raise ConnectError(
                f"cannot connect to {origin.host}:{origin.port}: "
                f"no answer within {self.connect_timeout:g}s"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise CertificateNotTrusted(
                f"TLS certificate of {origin.host} not trusted: {exc.verify_message}"
            ) from None
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or type(exc).__name__)
            raise ConnectError(f"cannot connect to {origin.host}:{origin.port}: {reason}") from None
        self._open.add(conn)
        return conn

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context
