"""HTTP/1.1 for data requests, sans-I/O: request heads out, response heads and body framing in.

The engine's data path speaks HTTP/1.1 itself (``bulkflex.transfer.http1``) so that body bytes go
from the kernel straight into large write blocks with no per-chunk Python objects. Everything
that decides something about the bytes lives here, as pure functions and one small state machine
(the chunked decoder), in the manner of h11: no sockets, no event loop, every edge a unit test.

Scope: what a GET for a file needs. Responses are framed by Content-Length, by chunked transfer
coding, or by the connection closing (RFC 9112 section 6.3). Heads are bounded
(:data:`MAX_HEAD_BYTES`); obsolete line folding, a bad status line, a malformed or conflicting
Content-Length, and an unknown transfer coding are :class:`ProtocolError`, never guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from urllib.parse import quote, urlsplit

__all__ = [
    "MAX_HEAD_BYTES",
    "BodyKind",
    "ChunkedDecoder",
    "Framing",
    "Headers",
    "Origin",
    "ProtocolError",
    "ResponseHead",
    "body_framing",
    "find_head_end",
    "parse_head",
    "request_head",
    "split_url",
]

#: the largest response head accepted (status line and headers); nginx's default is 8 KiB a line
MAX_HEAD_BYTES = 64 * 1024
_MAX_CHUNK_LINE = 4096

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\r\n]*))?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_IN_HEADER = re.compile(r"[\r\n\x00]")
_BAD_IN_VALUE = re.compile(rb"[\r\n\x00]")
#: characters left as they are in a request target; everything else is percent-encoded
#: (an existing %XX escape is kept, so an already-encoded URL goes out unchanged)
_TARGET_SAFE = "/%:@!$&'()*+,;=-._~?"


class ProtocolError(ValueError):
    """The peer broke HTTP/1.1 framing; the connection cannot be trusted for another byte."""


class Headers(Mapping[str, str]):
    """Response headers, looked up case-insensitively; repeated fields are joined with ", "
    (RFC 9110 section 5.3), which is what every header the engine reads expects."""

    __slots__ = ("_fields", "_items")

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items = items or []
        fields: dict[str, str] = {}
        for name, value in self._items:
            key = name.lower()
            fields[key] = f"{fields[key]}, {value}" if key in fields else value
        self._fields = fields

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return self._fields.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def items_raw(self) -> list[tuple[str, str]]:
        """The fields as received, in order, names as the server spelled them."""
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    reason: str
    headers: Headers
    #: HTTP/1.1 without ``Connection: close``, or HTTP/1.0 with ``Connection: keep-alive``
    keep_alive: bool


class BodyKind(Enum):
    NONE = "none"  # 1xx, 204, 304, or a HEAD request
    LENGTH = "length"  # Content-Length bytes
    CHUNKED = "chunked"  # Transfer-Encoding: chunked
    UNTIL_CLOSE = "until-close"  # the body ends when the server closes the connection


@dataclass(frozen=True, slots=True)
class Framing:
    kind: BodyKind
    length: int | None = None

    @property
    def reusable(self) -> bool:
        """Whether the connection can carry another request once this body is read."""
        return self.kind is not BodyKind.UNTIL_CLOSE


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a URL's request goes: one connection pool per origin."""

    scheme: str  # "http" or "https"
    host: str  # as the socket and TLS want it (IDNA-encoded, no brackets)
    port: int

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def split_url(url: str) -> tuple[Origin, str]:
    """The origin of ``url`` and its request target (path and query, percent-encoded).

    Raises ValueError for a URL that is not http(s) or has no host.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {scheme or 'no scheme'}")
    host = parts.hostname
    if not host:
        raise ValueError("URL without a host")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in URL: {exc}") from None
    if port == 0:
        raise ValueError("port 0 in URL")
    port = port or (443 if scheme == "https" else 80)
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        host = host.encode("idna").decode("ascii")
    target = quote(parts.path or "/", safe=_TARGET_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_TARGET_SAFE)
    return Origin(scheme, host, port), target


def request_head(target: str, origin: Origin, headers: Mapping[str, str]) -> bytes:
    """The bytes of a ``GET`` request head. A header name or value with CR, LF or NUL is
    refused (ValueError): a token read from a file must not be able to inject a header."""
    lines = [f"GET {target} HTTP/1.1", f"Host: {origin.host_header}"]
    for name, value in headers.items():
        if _FORBIDDEN_IN_HEADER.search(name) or _FORBIDDEN_IN_HEADER.search(value):
            raise ValueError(f"header {name.split(chr(10))[0][:40]!r} contains a line break")
        if name.lower() == "host":
            continue
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


def find_head_end(data: bytes | bytearray, start: int = 0, end: int | None = None) -> int:
    """Index just past the blank line ending a head in ``data[:end]``, or -1. ``start`` is
    where the previous search stopped (the search backs up 3 bytes, so a split CRLFCRLF is
    found); ``end`` bounds a reused buffer without copying it."""
    index = data.find(b"\r\n\r\n", max(0, start - 3), len(data) if end is None else end)
    return -1 if index < 0 else index + 4


def parse_head(data: bytes) -> ResponseHead:
    """Parse a response head (status line and header fields, with the final CRLF CRLF)."""
    lines = data.split(b"\r\n")
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    minor, status, reason = match.group(1), int(match.group(2)), match.group(3) or b""
    items: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            raise ProtocolError("obsolete header line folding")
        name, sep, value = line.partition(b":")
        if not sep or _TOKEN.fullmatch(name) is None:
            raise ProtocolError(f"malformed header line: {line[:80]!r}")
        value = value.strip(b" \t")
        if _BAD_IN_VALUE.search(value):
            raise ProtocolError(f"CR, LF or NUL in the value of header {name[:40]!r}")
        items.append((name.decode("ascii"), value.decode("latin-1")))
    headers = Headers(items)
    tokens = {t.strip().lower() for t in (headers.get("Connection") or "").split(",")}
    # "close" wins in any version (RFC 9112 section 9.3)
    keep_alive = "close" not in tokens and (minor == b"1" or "keep-alive" in tokens)
    return ResponseHead(status, reason.decode("latin-1"), headers, keep_alive)


def body_framing(head: ResponseHead, *, head_request: bool = False) -> Framing:
    """How the body of ``head`` ends (RFC 9112 section 6.3)."""
    status = head.status
    if head_request or 100 <= status < 200 or status in (204, 304):
        return Framing(BodyKind.NONE, 0)
    coding = head.headers.get("Transfer-Encoding")
    if coding is not None:
        codings = [c.strip().lower() for c in coding.split(",") if c.strip()]
        if codings != ["chunked"]:
            raise ProtocolError(f"unsupported Transfer-Encoding: {coding}")
        # a Content-Length next to chunked is ignored (and such a response is suspect, but
        # the chunked framing is the one a correct peer follows)
        return Framing(BodyKind.CHUNKED)
    length = head.headers.get("Content-Length")
    if length is None:
        return Framing(BodyKind.UNTIL_CLOSE)
    values = {v.strip(" \t") for v in length.split(",")}
    if len(values) != 1:
        raise ProtocolError(f"conflicting Content-Length: {length}")
    value = values.pop()
    if not value.isdigit() or not value.isascii():
        raise ProtocolError(f"malformed Content-Length: {length!r}")
    return Framing(BodyKind.LENGTH, int(value))


class ChunkedDecoder:
    """Decodes a chunked body fed in arbitrary pieces; returns the data as views of the input
    (no copy). Chunk extensions and trailer fields are read and dropped."""

    __slots__ = ("_line", "_remaining", "_state", "done")

    def __init__(self) -> None:
        self._state = "size"  # size -> data -> data-crlf -> size ... -> trailer -> done
        self._remaining = 0
        self._line = bytearray()
        self.done = False

    def feed(self, data: memoryview, out: list[memoryview] | None = None) -> list[memoryview]:
        """Consume ``data``; the body bytes in it, appended to ``out`` when given (so that the
        pieces before a :class:`ProtocolError` are not lost). Bytes after the end of the body
        are a ProtocolError (the engine never pipelines)."""
        out = [] if out is None else out
        pos, end = 0, len(data)
        while pos < end:
            if self.done:
                raise ProtocolError("bytes after the end of a chunked body")
            if self._state == "data":
                take = min(self._remaining, end - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = "data-crlf"
                continue
            # a line: a chunk size, the CRLF after data, or a trailer field
            window = min(end, pos + _MAX_CHUNK_LINE + 1 - len(self._line))
            newline = bytes(data[pos:window]).find(b"\n")
            if newline < 0:
                self._line += data[pos:window]
                pos = window
            else:
                self._line += data[pos : pos + newline + 1]
                pos += newline + 1
                self._line_done()
            if len(self._line) > _MAX_CHUNK_LINE:
                raise ProtocolError("chunk header line too long")
        return out

    def _line_done(self) -> None:
        line = bytes(self._line)
        self._line.clear()
        if not line.endswith(b"\r\n"):
            raise ProtocolError("chunk line not ended by CRLF")
        line = line[:-2]
        if self._state == "data-crlf":
            if line:
                raise ProtocolError("chunk data longer than its declared size")
            self._state = "size"
        elif self._state == "size":
            size = line.split(b";", 1)[0].strip()
            if not size or not all(c in b"0123456789abcdefABCDEF" for c in size):
                raise ProtocolError(f"malformed chunk size: {line[:40]!r}")
            self._remaining = int(size, 16)
            self._state = "data" if self._remaining else "trailer"
        elif not line:  # "trailer": the blank line ends the body
            self.done = True
