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
- A keep-alive connection goes back to the pool as soon as the last byte of a body is in, not
  when its reader is done with it: the next request can leave on it while the reader still
  writes the previous body to disk (:meth:`Response.on_received` tells the caller the moment).
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
from collections.abc import AsyncIterator, Callable, Mapping
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


class _Body:
    """One response's body as its reader sees it: the pieces received and not read yet, and
    how the body ended.

    The connection fills it while the body comes in. Once the last byte is in, a keep-alive
    connection lets go of it and goes back to the pool, so the next request can leave on it at
    once, while this reader still has pieces to read (and to write to disk). A reader is woken
    once per block, at the end of the body, on an error, or once per ``tick`` on a slow link.
    """

    __slots__ = (
        "complete",
        "conn",
        "error",
        "on_received",
        "ready",
        "ready_bytes",
        "timer",
        "waiter",
    )

    def __init__(self, conn: _Connection) -> None:
        #: the connection still receiving this body; None once it let go of it
        self.conn: _Connection | None = conn
        self.ready: deque[memoryview] = deque()
        self.ready_bytes = 0
        #: every byte the reader gets is in ``ready`` (or was read): the body's real end, or
        #: the reader's limit
        self.complete = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        #: called once, when the connection lets go of the body (see Response.on_received)
        self.on_received: Callable[[], None] | None = None

    def push(self, piece: memoryview) -> None:
        self.ready.append(piece)
        self.ready_bytes += len(piece)

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> memoryview | None:
        """The next piece of body, or None at its end. Every piece that arrived comes before
        an error is raised."""
        while True:
            if self.ready:
                piece = self.ready.popleft()
                self.ready_bytes -= len(piece)
                if self.conn is not None:
                    self.conn.drained(self.ready_bytes)
                return piece
            if self.error is not None:
                raise self.error
            if self.complete:
                return None
            conn = self.conn
            assert conn is not None, "a body still coming in has its connection"
            loop = conn.loop
            self.waiter = loop.create_future()
            self.timer = loop.call_later(conn.tick_delay(), conn.tick, self)
            try:
                await self.waiter
            finally:
                self.waiter = None
                if self.timer is not None:
                    self.timer.cancel()
                    self.timer = None


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection; carries one request at a time."""

    def __init__(self, client: HTTPClient, origin: Origin) -> None:
        self._client = client
        self.origin = origin
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        # the head being received
        self._head = bytearray(_HEAD_BUFFER)
        self._head_view = memoryview(self._head)
        self._head_len = 0
        self._head_future: asyncio.Future[tuple[ResponseHead, _Body]] | None = None
        self._discarding = False  # the head overflowed: bytes are dropped until the close
        self._in_head = False
        self._received_any = False
        # the body being received
        self._body: _Body | None = None
        self._keep_alive = False  # the head allows another request after this body
        self._framing: Framing | None = None
        self._remaining = 0  # LENGTH: bytes still to come
        self._decoder: ChunkedDecoder | None = None
        self._block: memoryview | None = None
        self._filled = 0  # bytes of the current block received
        self._handed = 0  # bytes of the current block given to the reader (or decoded)
        self._paused = False
        self._complete = False  # every byte of the body (or up to the limit) is in
        self._feeding = False  # body bytes that came with the head are being taken
        self._body_received = 0
        self._limit: int | None = None  # the reader wants no body byte at or past this index
        self._last_data = 0.0

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
        framing, body = self._framing, self._body
        if framing is None or body is None or self._complete:
            self._fail(ProtocolError("the server sent bytes after the response"))
            return
        self._last_data = self.loop.time()
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
        if self._complete:
            if not self._feeding:
                self._end_of_body()
            return
        if body.ready_bytes >= self._client.high_water and not self._paused:
            assert self.transport is not None
            self.transport.pause_reading()
            self._paused = True
        if body.ready:
            body.wake()

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
        body = self._body
        if body is None or self._framing is None or self._complete:
            return
        if self._framing.kind is BodyKind.UNTIL_CLOSE and exc is None:
            self._complete = True
            self._retire_block()
            self._end_of_body()
            return
        detail = f": {exc}" if exc else ""
        self._body_failed(ConnectionBroken(f"the connection broke mid-body{detail}"))

    # -- head --------------------------------------------------------------------------------

    def _grow_head(self) -> None:
        if len(self._head) >= MAX_HEAD_BYTES:
            # not from inside get_buffer: aborting the transport there crashes uvloop (it goes
            # on to read into the buffer of a closed handle)
            error = ProtocolError(f"response head larger than {MAX_HEAD_BYTES} bytes")
            self.loop.call_soon(self._fail, error)
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
        body = self._start_body(framing, head.keep_alive)
        # the head goes to the reader first: an error in the body bytes that came with it is
        # raised from iter_any after the good bytes, like any other body error
        if future is not None and not future.done():
            future.set_result((head, body))
        if leftover:
            self._feed_leftover(self._head_view[end : self._head_len])
        elif self._complete:
            self._end_of_body()  # no body at all
        self._head_len = 0

    def _shift_head(self, end: int) -> None:
        rest = self._head_len - end
        self._head[:rest] = self._head[end : self._head_len]
        self._head_len = rest

    def _feed_leftover(self, data: memoryview) -> None:
        """Body bytes that came in with the head: copy them into the first block. The body
        ends (and the connection may be reused) only once they are all accounted for."""
        pos = 0
        self._feeding = True
        try:
            while pos < len(data) and not self._complete and not self.closed:
                view = self.get_buffer(len(data) - pos)
                take = min(len(view), len(data) - pos)
                view[:take] = data[pos : pos + take]
                pos += take
                self.buffer_updated(take)
        finally:
            self._feeding = False
        if self.closed:
            return
        if pos < len(data):
            self._fail(ProtocolError("the server sent more than the response body"))
        elif self._complete:
            self._end_of_body()

    # -- body --------------------------------------------------------------------------------

    def _start_body(self, framing: Framing, keep_alive: bool) -> _Body:
        self._body = body = _Body(self)
        self._keep_alive = keep_alive
        self._framing = framing
        self._complete = framing.kind is BodyKind.NONE or (
            framing.kind is BodyKind.LENGTH and framing.length == 0
        )
        self._remaining = framing.length or 0
        self._body_received = 0
        self._limit = None
        self._decoder = ChunkedDecoder() if framing.kind is BodyKind.CHUNKED else None
        self._block = None
        self._filled = self._handed = 0
        self._last_data = self.loop.time()
        return body

    def _end_of_body(self) -> None:
        """Every byte of the body is in: the reader learns it, and a keep-alive connection lets
        go of the body and goes back to the pool now, not when the reader is done with it."""
        body = self._body
        if body is None:
            return
        body.complete = True
        framing = self._framing
        if self._keep_alive and framing is not None and framing.reusable and not self.closed:
            self._body = None
            body.conn = None
            if self._paused:
                self._paused = False
                assert self.transport is not None
                self.transport.resume_reading()  # idle: see the server close it
            self._client._put_back(self)
            callback, body.on_received = body.on_received, None
            if callback is not None:
                callback()  # before the reader's wake-up: the next request leaves first
        body.wake()

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
        self._complete = True
        self._retire_block()
        if self.transport is not None and not self._paused:
            self.transport.pause_reading()
            self._paused = True
        body = self._body
        if body is not None:
            body.complete = True
            body.wake()

    def _new_block(self) -> None:
        client = self._client
        size = client.block_size
        if self._framing is not None and self._framing.kind is BodyKind.LENGTH:
            size = max(min(size, self._remaining), 1)
        self._block = memoryview(client.blocks.take(size))[:size]
        self._filled = self._handed = 0

    def _decode(self) -> None:
        """Chunked: decode the new bytes of the block; the data pieces become ready."""
        assert self._block is not None and self._decoder is not None and self._body is not None
        pieces: list[memoryview] = []
        try:
            self._decoder.feed(self._block[self._handed : self._filled], pieces)
        except ProtocolError as exc:
            self._fail(exc)
        self._handed = self._filled
        for piece in pieces:  # before an error too: every good byte reaches the reader
            self._body.push(piece)
        if self._decoder.done:
            self._complete = True

    def _retire_block(self) -> None:
        """Make the received, not yet handed part of the current block ready for the reader."""
        if self._block is None:
            return
        if self._framing is not None and self._framing.kind is not BodyKind.CHUNKED:
            if self._filled > self._handed and self._body is not None:
                self._body.push(self._block[self._handed : self._filled])
            self._handed = self._filled
        if self._filled == len(self._block) or self._complete:
            self._block = None

    def _body_failed(self, error: BaseException) -> None:
        """The body ends in ``error`` (the first one counts), after every byte that arrived.
        Chunked pieces are handed out as they are decoded, and the block must stay: a decode
        error lands here from inside buffer_updated, which goes on with it."""
        body = self._body
        if body is None or body.complete:
            return
        if body.error is None:
            if self._framing is not None and self._framing.kind is not BodyKind.CHUNKED:
                self._retire_block()
            body.error = error
        body.wake()

    def _fail(self, error: BaseException) -> None:
        self._body_failed(error)
        if self._head_future is not None and not self._head_future.done():
            self._head_future.set_exception(error)
        self.abort()

    # -- what the body's reader uses ---------------------------------------------------------

    def drained(self, ready_bytes: int) -> None:
        """The reader took a piece: read from the socket again once below the high water."""
        if self._paused and not self._complete and ready_bytes < self._client.high_water:
            self._paused = False
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def tick_delay(self) -> float:
        return min(self._client.tick, self._client.read_timeout)

    def tick(self, body: _Body) -> None:
        """Timer while the reader of ``body`` waits: hand out a partial block, or detect
        silence."""
        if body is not self._body or body.waiter is None or body.waiter.done():
            return
        idle = self.loop.time() - self._last_data
        if idle >= self._client.read_timeout:
            self._body_failed(ReadTimeout(f"no data for {self._client.read_timeout:g}s"))
            return
        if self._unhanded():
            self._retire_block()
            body.wake()
            return
        if body.complete:  # a wake-up was missed: never wait out the timeout for nothing
            body.wake()
            return
        delay = min(self._client.tick, self._client.read_timeout - idle)
        body.timer = self.loop.call_later(delay, self.tick, body)

    def _unhanded(self) -> bool:
        framing = self._framing
        return (
            self._block is not None
            and self._filled > self._handed
            and framing is not None
            and framing.kind is not BodyKind.CHUNKED
        )

    # -- what the client uses ----------------------------------------------------------------

    async def send(self, data: bytes) -> tuple[ResponseHead, _Body]:
        assert self.transport is not None
        self._in_head = True
        self._framing = None
        self._body = None
        self._complete = False
        self._received_any = False
        self._head_len = 0
        self._head_future = self.loop.create_future()
        self.transport.write(data)
        if self.closed:  # closed between pool and now
            raise _Stale("connection closed") if self.reused else ConnectionBroken("closed")
        return await self._await_head()

    async def _await_head(self) -> tuple[ResponseHead, _Body]:
        future = self._head_future
        assert future is not None
        timeout = self._client.read_timeout
        # a plain loop timer: this runs once per request, and a cancel scope costs far more
        timer = self.loop.call_later(timeout, self._head_timed_out, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _head_timed_out(self, future: asyncio.Future[tuple[ResponseHead, _Body]]) -> None:
        if not future.done():
            timeout = self._client.read_timeout
            future.set_exception(ReadTimeout(f"no response head within {timeout:g}s"))
            self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Response:
    """A response whose head is in; the body is read with :meth:`iter_any`."""

    def __init__(self, head: ResponseHead, body: _Body, url: str) -> None:
        self._body: _Body | None = body
        self.url = url
        self.status = head.status
        self.reason = head.reason
        self.headers: Headers = head.headers

    async def iter_any(self) -> AsyncIterator[memoryview]:
        """The body, block by block, as it arrives. Every byte received is yielded before an
        error (:class:`ConnectionBroken`, :class:`ReadTimeout`, ``ProtocolError`` as a
        ConnectionBroken) is raised."""
        body = self._body
        if body is None:
            return
        while True:
            try:
                piece = await body.read()
            except ProtocolError as exc:
                raise ConnectionBroken(f"malformed response: {exc}") from None
            if piece is None:
                return
            yield piece

    def on_received(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, as soon as the last byte of the body is in and the connection
        is free for another request (before the reader has read those bytes); at once if that
        is already so. Never called for a body that ends otherwise (an error, a cut, a
        connection the server closes): the caller's own clean-up covers those."""
        body = self._body
        if body is None:
            return
        if body.complete and body.conn is None and body.error is None:
            callback()
        else:
            body.on_received = callback

    def limit(self, nbytes: int) -> None:
        """End the body for this reader after its first ``nbytes`` (see ``_Connection.limit``)."""
        if self._body is not None and self._body.conn is not None:
            self._body.conn.limit(nbytes)

    @property
    def complete(self) -> bool:
        """The whole body has been read (or all of it up to :meth:`limit`)."""
        body = self._body
        return body is None or (body.complete and not body.ready and body.error is None)

    def release(self) -> None:
        """Done with the response. A body that came in whole left its connection in the pool
        already; a connection still receiving this body is closed."""
        body, self._body = self._body, None
        if body is not None:
            body.on_received = None
            conn, body.conn = body.conn, None
            if conn is not None:
                conn.abort()

    def close(self) -> None:
        """Done with the response, the rest of its body unwanted: the same as :meth:`release`
        (a connection still receiving the body is closed), named for what the caller means."""
        self.release()


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
                head, body = await self._send(conn, data)
                return Response(head, body, url)
            except _Stale:
                pass  # closed by the server while idle: once more on a fresh connection
        conn = await self._connect(origin)
        head, body = await self._send(conn, data)
        return Response(head, body, url)

    @staticmethod
    async def _send(conn: _Connection, data: bytes) -> tuple[ResponseHead, _Body]:
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
