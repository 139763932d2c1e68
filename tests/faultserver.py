"""A fault-injection file server for bulkflex's tests, modelled on curl's ``mod_curltest``.

A real aiohttp server on 127.0.0.1 (a free port) serves deterministic files at ``/files/<name>``.
By default it is a well-behaved static server: single ``Range`` requests get a 206 with an exact
``Content-Range``; ``If-Range`` is honoured (strong ETag comparison, or an exact Last-Modified
date), unsatisfiable ranges get a 416 with ``Content-Range: bytes */size``; every response carries
a strong ``ETag`` and a ``Last-Modified``; bodies are identity-encoded whatever the client asks.

Faults are :class:`Rule` values attached to a file. A rule applies to the file's requests number
``skip`` to ``skip + times - 1`` (0-based, counted per file, HEAD included), or to all of them when
``times`` is None. Every applicable rule contributes; for a field set by several rules the first
rule added wins. Query parameters (``?status=503&retry_after=1``, see :func:`rule_from_query`) add
a rule for that one request.

The server counts, per file: requests (with their headers, status and bytes sent), bytes sent,
and the most requests in flight at once. It also counts the most requests in flight *whose client
is still connected* (``max_connected``): a client that drops a response (a segmented download
stopping a range early) is no longer counted once the server has seen the connection close, even
though the handler has not yet tried its next write. All counters are guarded by a lock so a test
thread can read them while the server thread writes them.

Two ways to run it:

- ``with FaultServer() as server:`` starts it on its own event loop in a background thread, for
  tests that drive the real CLI in a subprocess. Leaving the block closes every connection
  (stalled ones included), stops the loop and joins the thread.
- ``async with FaultServer() as server:`` runs it on the caller's event loop, for in-process tests.

Content of version ``v`` of file ``name`` is ``random.Random(f"{name}/{v}").randbytes(size)``:
stable across runs and Python versions, different for every name and version.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import fcntl
import gzip
import hashlib
import random
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from aiohttp import web

from bulkflex.demo import ServerThread, start_app
from bulkflex.demo.app import parse_range

__all__ = [
    "FaultServer",
    "FileStats",
    "RequestRecord",
    "Rule",
    "file_content",
    "rule_from_query",
    "sha256_multihash",
]

KiB = 1024
MiB = 1024 * KiB

#: Last-Modified of version 1 of every file; version v is (v - 1) hours later.
_BASE_MTIME = 1_704_067_200.0  # 2024-01-01T00:00:00Z


def file_content(name: str, size: int, version: int = 1) -> bytes:
    """The bytes the server serves for ``name`` at ``version`` (deterministic)."""
    return random.Random(f"{name}/{version}").randbytes(size)


def sha256_multihash(data: bytes) -> str:
    """The STAC ``file:checksum`` (multihash, sha2-256) of ``data``."""
    return "1220" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Rule:
    """One injected fault (or several at once). Byte counts are counted within one response body.

    Attributes:
        times: how many of the file's requests the rule applies to; None: all of them.
        skip: the rule starts at the file's request number ``skip`` (0-based).
        status: answer this status with a short text body instead of the file (404, 410, 429,
            500, 503, ...); a 416 carries ``Content-Range: bytes */<size>``.
        retry_after: with ``status``, send ``Retry-After`` of this many seconds.
        retry_after_date: send ``retry_after`` as an HTTP-date that far ahead instead of seconds.
        reset_after: send this many body bytes, wait (bounded) until the peer has acknowledged
            them, then reset the connection (TCP RST).
        stall_after: send this many body bytes, then send nothing more while keeping the
            connection open, until the client closes it or the server stops.
        short_after: send this many body bytes, then close the connection cleanly although
            ``Content-Length`` announced the whole body.
        ignore_range: answer 200 with the whole file even to a Range request.
        wrong_content_range: on a 206, ``"start"`` serves a body that starts 4 KiB before the
            requested offset (or at 0), labelled honestly, so it is not what was asked for;
            ``"total"`` announces a complete length one byte larger than the file.
        corrupt_at: flip every bit of the file byte at this offset if the response covers it.
        gzip: answer 200 ``Content-Encoding: gzip`` with the whole file compressed, whatever
            ``Accept-Encoding`` said and ignoring Range.
        chunk_delay: pause this long after each body chunk of this response, instead of the
            file's own delay (throttles one request: a straggler among several connections).
        range_from: the rule applies only to requests whose ``Range`` header asks for bytes
            from this offset on (``bytes=<range_from>-...``), on top of ``skip``/``times``.
    """

    times: int | None = 1
    skip: int = 0
    status: int | None = None
    retry_after: float | None = None
    retry_after_date: bool = False
    reset_after: int | None = None
    stall_after: int | None = None
    short_after: int | None = None
    ignore_range: bool = False
    wrong_content_range: Literal["start", "total"] | None = None
    corrupt_at: int | None = None
    gzip: bool = False
    chunk_delay: float | None = None
    range_from: int | None = None

    def applies(self, index: int, range_header: str | None = None) -> bool:
        """True if the rule covers the file's request number ``index`` (0-based) carrying
        ``range_header`` (only checked when the rule has ``range_from``)."""
        if index < self.skip:
            return False
        if self.range_from is not None and _range_start(range_header) != self.range_from:
            return False
        return self.times is None or index < self.skip + self.times


def _range_start(header: str | None) -> int | None:
    """The first offset of a ``bytes=N-...`` header; None without one or for another form."""
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    first = spec.partition("-")[0].strip()
    if unit.strip().lower() != "bytes" or not first.isdigit():
        return None
    return int(first)


_FAULT_FIELDS = tuple(f.name for f in fields(Rule) if f.name not in ("times", "skip", "range_from"))


def _merge(rules: Iterable[Rule]) -> Rule:
    """One rule whose fields are the first non-default value among ``rules``."""
    merged = Rule(times=None)
    defaults = Rule()
    for rule in rules:
        changes = {
            name: getattr(rule, name)
            for name in _FAULT_FIELDS
            if getattr(rule, name) != getattr(defaults, name)
            and getattr(merged, name) == getattr(defaults, name)
        }
        merged = replace(merged, **changes)
    return merged


def rule_from_query(query: Mapping[str, str]) -> Rule | None:
    """A rule from URL query parameters, applying to that request only; None if there is none.

    Keys: ``status``, ``retry_after`` (seconds), ``retry_after_date=1``, ``reset_after``,
    ``stall_after``, ``short_after``, ``ignore_range=1``, ``wrong_content_range=start|total``,
    ``corrupt_at``, ``gzip=1``, ``chunk_delay`` (seconds). Unknown keys are ignored (a query may
    carry a fake token).
    """
    values: dict[str, Any] = {}
    for key in ("status", "reset_after", "stall_after", "short_after", "corrupt_at"):
        if key in query:
            values[key] = int(query[key])
    for key in ("retry_after", "chunk_delay"):
        if key in query:
            values[key] = float(query[key])
    for key in ("retry_after_date", "ignore_range", "gzip"):
        if query.get(key) == "1":
            values[key] = True
    if query.get("wrong_content_range") in ("start", "total"):
        values["wrong_content_range"] = query["wrong_content_range"]
    return Rule(times=None, **values) if values else None


@dataclass
class RequestRecord:
    """One request as the server saw it. ``bytes_sent`` grows while the body is being sent."""

    method: str
    path_qs: str
    headers: dict[str, str]
    arrived: float  # time.monotonic() when the request arrived
    version: int  # version of the file it was answered from
    status: int = 0  # 0 until the status is decided
    bytes_sent: int = 0
    ended: str = "open"  # "complete", "reset", "stall", "short", "client-gone", "open"

    @property
    def range(self) -> str | None:
        return self.headers.get("Range")

    @property
    def if_range(self) -> str | None:
        return self.headers.get("If-Range")

    @property
    def accept_encoding(self) -> str | None:
        return self.headers.get("Accept-Encoding")


@dataclass
class FileStats:
    """Counters of one file (a snapshot when returned by :meth:`FaultServer.stats`)."""

    requests: list[RequestRecord] = field(default_factory=list)
    bytes_sent: int = 0
    active: int = 0
    max_concurrent: int = 0
    #: requests in flight whose client is still connected (see the module docstring)
    connected: int = 0
    max_connected: int = 0

    @property
    def gets(self) -> list[RequestRecord]:
        """The GET requests (the ones that can carry data)."""
        return [r for r in self.requests if r.method == "GET"]


@dataclass
class _File:
    name: str
    size: int
    version: int
    etag: bool
    last_modified: bool
    chunk_size: int
    chunk_delay: float
    change_after: int | None
    rules: list[Rule]
    #: (the whole file, this response's body) -> headers to add to a 200 or 206
    headers: Callable[[bytes, bytes], Mapping[str, str]] | None = None
    sizes: dict[int, int] = field(default_factory=dict)  # size of each version but the first
    stats: FileStats = field(default_factory=FileStats)

    def size_of(self, version: int) -> int:
        return self.sizes.get(version, self.size)


class FaultServer:
    """The fault-injection server. See the module docstring.

    Args:
        chunk_size: default body chunk size of added files.
        chunk_delay: default pause after each chunk, in seconds (throttles a file).
    """

    def __init__(self, *, chunk_size: int = 64 * KiB, chunk_delay: float = 0.0) -> None:
        self.chunk_size = chunk_size
        self.chunk_delay = chunk_delay
        self._files: dict[str, _File] = {}
        self._unknown: FileStats = FileStats()
        self._lock = threading.Lock()
        self._content: dict[tuple[str, int, int], bytes] = {}
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._thread = ServerThread(
            self._start, self._stop, name="faultserver", what="fault server", timeout=15.0
        )
        self._closing: asyncio.Event | None = None
        self._total_bytes = 0
        self._active = 0
        self._max_active = 0
        #: requests being answered whose connection was open when last looked at (server loop)
        self._live: dict[int, tuple[web.Request, FileStats]] = {}
        self._connected = 0
        self._max_connected = 0

    # -- files and rules ------------------------------------------------------------------

    def add_file(
        self,
        name: str,
        size: int,
        *rules: Rule,
        etag: bool = True,
        last_modified: bool = True,
        chunk_size: int | None = None,
        chunk_delay: float | None = None,
        change_after: int | None = None,
        new_size: int | None = None,
        headers: Callable[[bytes, bytes], Mapping[str, str]] | None = None,
    ) -> str:
        """Serve ``size`` deterministic bytes at ``/files/<name>``; return its URL path.

        Args:
            rules: faults for this file (see :class:`Rule`).
            etag / last_modified: whether responses carry that validator.
            chunk_size / chunk_delay: throttle this file (defaults: the server's).
            change_after: from the file's request number ``change_after`` (0-based) on, serve
                version 2: new bytes (``new_size`` of them, default the same size), new ETag and
                Last-Modified.
            headers: called with the file's bytes (of the version served) and the body of a
                200 or 206 about to be sent; what it returns is added to that response
                (a server's digest headers, right or wrong).
        """
        if "/" in name or not name:
            raise ValueError("file names are one URL path segment")
        with self._lock:
            entry = _File(
                name=name,
                size=size,
                version=1,
                etag=etag,
                last_modified=last_modified,
                chunk_size=chunk_size or self.chunk_size,
                chunk_delay=self.chunk_delay if chunk_delay is None else chunk_delay,
                change_after=change_after,
                rules=list(rules),
                headers=headers,
            )
            if new_size is not None:
                entry.sizes[2] = new_size
            self._files[name] = entry
        return f"/files/{name}"

    def add_rule(self, name: str, rule: Rule) -> None:
        """Append a rule to a file. Its ``skip`` counts from the file's first request ever."""
        with self._lock:
            self._files[name].rules.append(rule)

    def clear_rules(self, name: str) -> None:
        with self._lock:
            self._files[name].rules.clear()

    def set_version(self, name: str, version: int, size: int | None = None) -> None:
        """Serve ``version`` of the file from now on (optionally with a different size)."""
        with self._lock:
            entry = self._files[name]
            entry.version = version
            if size is not None:
                entry.sizes[version] = size
            entry.change_after = None

    def set_throttle(self, name: str, *, chunk_size: int, chunk_delay: float) -> None:
        with self._lock:
            entry = self._files[name]
            entry.chunk_size = chunk_size
            entry.chunk_delay = chunk_delay

    def content(self, name: str, version: int | None = None) -> bytes:
        """The bytes of ``name`` at ``version`` (default: the version being served now)."""
        with self._lock:
            entry = self._files[name]
            version = entry.version if version is None else version
            size = entry.size_of(version)
        return self._bytes(name, size, version)

    def etag(self, name: str, version: int | None = None) -> str:
        """The strong ETag the server sends for ``name`` at ``version``."""
        data = self.content(name, version)
        return '"' + hashlib.sha256(data).hexdigest()[:20] + '"'

    def last_modified(self, name: str, version: int | None = None) -> str:
        with self._lock:
            version = self._files[name].version if version is None else version
        return email.utils.formatdate(_BASE_MTIME + 3600 * (version - 1), usegmt=True)

    def _bytes(self, name: str, size: int, version: int) -> bytes:
        key = (name, size, version)
        data = self._content.get(key)
        if data is None:
            data = self._content.setdefault(key, file_content(name, size, version))
        return data

    # -- counters -------------------------------------------------------------------------

    def stats(self, name: str) -> FileStats:
        """A snapshot of the counters of ``name`` (``"?"``: requests for unknown names)."""
        with self._lock:
            live = self._unknown if name == "?" else self._files[name].stats
            return FileStats(
                requests=[replace(r, headers=dict(r.headers)) for r in live.requests],
                bytes_sent=live.bytes_sent,
                active=live.active,
                max_concurrent=live.max_concurrent,
                connected=live.connected,
                max_connected=live.max_connected,
            )

    def bytes_sent(self, name: str) -> int:
        with self._lock:
            return self._files[name].stats.bytes_sent

    @property
    def total_bytes_sent(self) -> int:
        """Body bytes sent for all files since the server started."""
        with self._lock:
            return self._total_bytes

    @property
    def total_requests(self) -> int:
        """Requests of every kind, unknown names included."""
        with self._lock:
            known = sum(len(f.stats.requests) for f in self._files.values())
            return known + len(self._unknown.requests)

    @property
    def max_concurrent(self) -> int:
        """Most requests in flight at once, over all files."""
        with self._lock:
            return self._max_active

    def reset_peak(self) -> None:
        """Start :attr:`max_concurrent` and :attr:`max_connected` again from the requests in
        flight now (to look at one phase of a job)."""
        with self._lock:
            self._max_active = self._active
            self._max_connected = self._connected

    @property
    def max_connected(self) -> int:
        """Most requests in flight at once whose client was still connected, over all files.

        Unlike :attr:`max_concurrent`, a request whose client closed the connection stops
        counting as soon as the server has seen the close, not when its handler next writes.
        """
        with self._lock:
            return self._max_connected

    # -- addresses ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the server is not running")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str, query: str = "") -> str:
        """Absolute URL of ``name``; ``query`` (without ``?``) adds per-request rules."""
        return f"{self.base_url}/files/{name}" + (f"?{query}" if query else "")

    # -- lifecycle ------------------------------------------------------------------------

    async def _start(self) -> None:
        self._closing = asyncio.Event()
        app = web.Application()
        app.router.add_route("GET", "/files/{name}", self._handle)
        app.router.add_route("HEAD", "/files/{name}", self._handle)
        self._runner, self._port = await start_app(app, "127.0.0.1", shutdown_timeout=1.0)

    async def _stop(self) -> None:
        if self._closing is not None:
            self._closing.set()  # releases stalled and throttled handlers
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._port = 0

    async def __aenter__(self) -> FaultServer:
        await self._start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stop()

    def start(self) -> FaultServer:
        """Start on a private event loop in a daemon thread; returns once it listens."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread started by :meth:`start`: closes every connection, joins the thread."""
        self._thread.stop()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- serving --------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        headers = {k: v for k, v in request.headers.items()}
        query_rule = rule_from_query(request.query)
        with self._lock:
            entry = self._files.get(name)
            stats = self._unknown if entry is None else entry.stats
            index = len(stats.requests)
            if (
                entry is not None
                and entry.change_after is not None
                and index >= entry.change_after
                and entry.version == 1
            ):
                entry.version = 2
            version = entry.version if entry is not None else 0
            record = RequestRecord(
                method=request.method,
                path_qs=request.path_qs,
                headers=headers,
                arrived=time.monotonic(),
                version=version,
            )
            stats.requests.append(record)
            stats.active += 1
            stats.max_concurrent = max(stats.max_concurrent, stats.active)
            self._active += 1
            self._max_active = max(self._max_active, self._active)
            self._drop_disconnected()
            self._live[id(record)] = (request, stats)
            stats.connected += 1
            stats.max_connected = max(stats.max_connected, stats.connected)
            self._connected += 1
            self._max_connected = max(self._max_connected, self._connected)
            range_header = request.headers.get("Range")
            rules = (
                [] if entry is None else [r for r in entry.rules if r.applies(index, range_header)]
            )
            if query_rule is not None:
                rules.append(query_rule)
            rule = _merge(rules)
        try:
            if entry is None:
                record.status = 404
                return web.Response(status=404, text="no such file\n")
            return await self._respond(request, entry, version, rule, record)
        finally:
            with self._lock:
                stats.active -= 1
                self._active -= 1
                if self._live.pop(id(record), None) is not None:
                    stats.connected -= 1
                    self._connected -= 1
                if record.ended == "open":
                    record.ended = "complete"

    def _drop_disconnected(self) -> None:
        """Stop counting requests whose client has gone (their connection is closed).

        Called with the lock held, on the server loop, before a new request is counted: the
        loop handles a connection's close before a request that the client sent after it.
        """
        for key, (request, stats) in list(self._live.items()):
            transport = request.transport
            if transport is None or transport.is_closing():
                del self._live[key]
                stats.connected -= 1
                self._connected -= 1

    async def _respond(
        self, request: web.Request, entry: _File, version: int, rule: Rule, record: RequestRecord
    ) -> web.StreamResponse:
        size = entry.size_of(version)
        data = self._bytes(entry.name, size, version)
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
        last_modified = email.utils.formatdate(_BASE_MTIME + 3600 * (version - 1), usegmt=True)
        if entry.etag:
            headers["ETag"] = etag
        if entry.last_modified:
            headers["Last-Modified"] = last_modified

        if rule.status is not None:
            if rule.retry_after is not None:
                if rule.retry_after_date:
                    when = time.time() + rule.retry_after
                    headers["Retry-After"] = email.utils.formatdate(when, usegmt=True)
                else:
                    headers["Retry-After"] = f"{rule.retry_after:g}"
            if rule.status == 416:
                headers["Content-Range"] = f"bytes */{size}"
            headers["Content-Type"] = "text/plain"
            record.status = rule.status
            return web.Response(
                status=rule.status, headers=headers, body=f"injected {rule.status}\n".encode()
            )

        status, start, end = 200, 0, size
        range_header = request.headers.get("Range")
        if range_header is not None and not rule.ignore_range and not rule.gzip:
            if_range = request.headers.get("If-Range")
            honour = if_range is None or _if_range_matches(
                if_range,
                etag if entry.etag else None,
                last_modified if entry.last_modified else None,
            )
            parsed = parse_range(range_header, size) if honour else None
            if parsed == "unsatisfiable":
                headers["Content-Range"] = f"bytes */{size}"
                record.status = 416
                return web.Response(status=416, headers=headers)
            if parsed is not None:
                status, (start, end) = 206, parsed

        label_total = size
        if status == 206 and rule.wrong_content_range == "start":
            start = max(0, start - 4 * KiB)
        elif status == 206 and rule.wrong_content_range == "total":
            label_total = size + 1
        body = data[start:end]
        if rule.corrupt_at is not None and start <= rule.corrupt_at < end:
            mutable = bytearray(body)
            mutable[rule.corrupt_at - start] ^= 0xFF
            body = bytes(mutable)
        if rule.gzip:
            body = gzip.compress(body, compresslevel=1, mtime=0)
            headers["Content-Encoding"] = "gzip"
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{label_total}"
        if entry.headers is not None:
            headers.update(entry.headers(data, body))

        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(body)
        record.status = status
        await response.prepare(request)
        if request.method == "HEAD":
            return response

        cut, how = len(body), "complete"
        for limit, kind in (
            (rule.reset_after, "reset"),
            (rule.stall_after, "stall"),
            (rule.short_after, "short"),
        ):
            if limit is not None and limit < cut:
                cut, how = limit, kind
        position = 0
        if cut == 0 and how == "complete":
            record.ended = "complete"
        assert self._closing is not None
        while position < cut:
            if self._closing.is_set():  # shutting down: do not finish a throttled body
                record.ended = "server-stopped"
                if request.transport is not None:
                    request.transport.abort()
                return response
            chunk = body[position : min(cut, position + entry.chunk_size)]
            # Count before writing: once written, the client may see the bytes (and a test may
            # read the counters) before this coroutine runs again.
            with self._lock:
                record.bytes_sent += len(chunk)
                entry.stats.bytes_sent += len(chunk)
                self._total_bytes += len(chunk)
                if how == "complete" and position + len(chunk) >= cut:
                    record.ended = "complete"
            try:
                await response.write(chunk)
            except ConnectionError:
                with self._lock:
                    record.bytes_sent -= len(chunk)
                    entry.stats.bytes_sent -= len(chunk)
                    self._total_bytes -= len(chunk)
                    record.ended = "client-gone"
                return response
            position += len(chunk)
            delay = entry.chunk_delay if rule.chunk_delay is None else rule.chunk_delay
            if delay and position < cut:
                await asyncio.sleep(delay)
        if how == "complete":
            return response
        record.ended = how
        if how == "stall":
            await self._stall(request)
        elif how == "reset":
            await self._reset(request)
        else:
            transport = request.transport
            if transport is not None:
                await _drain(transport, timeout=2.0)
                transport.close()
        return response

    async def _stall(self, request: web.Request) -> None:
        """Keep the connection open and silent until the client leaves or the server stops."""
        assert self._closing is not None
        while not self._closing.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=0.05)

    async def _reset(self, request: web.Request) -> None:
        transport = request.transport
        if transport is None:
            return
        await _drain(transport, timeout=2.0)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


async def _drain(transport: asyncio.BaseTransport, *, timeout: float) -> None:
    """Wait (bounded) until the transport's buffer is empty and the peer acknowledged every byte.

    So a reset after N bytes really delivers N bytes first (an RST discards unsent data).
    """
    deadline = time.monotonic() + timeout
    sock = transport.get_extra_info("socket")
    while time.monotonic() < deadline:
        buffered = 0
        if isinstance(transport, asyncio.WriteTransport):
            buffered = transport.get_write_buffer_size()
        if not buffered and sock is not None:
            try:
                raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
                buffered = struct.unpack("i", raw)[0]
            except OSError:
                buffered = 0
        if not buffered:
            return
        await asyncio.sleep(0.005)


def _if_range_matches(if_range: str, etag: str | None, last_modified: str | None) -> bool:
    """RFC 9110 If-Range: a strong ETag equal to the current one, or the exact Last-Modified."""
    value = if_range.strip()
    if value.startswith('"') or value.startswith("W/"):
        return etag is not None and value == etag  # weak tags never match (strong comparison)
    return last_modified is not None and value == last_modified
