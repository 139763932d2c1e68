"""bulkflex.core.http1: the sans-I/O HTTP/1.1 framing of the engine's data path.

Chunked decoding is checked as a property (any body, any chunking, any piece sizes of the input
reassemble to the body); head parsing, body framing, URL splitting and request heads are
table-tested against RFC 9110 / RFC 9112, including the inputs a hostile peer or a token file
could send. Defects found while writing them are fixed and pinned here.
"""

from __future__ import annotations

from itertools import pairwise
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkflex.core.http1 import (
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

CRLF = b"\r\n"

# ---------------------------------------------------------------------------------------------
# helpers


def feed_pieces(decoder: ChunkedDecoder, data: bytes, cuts: list[int]) -> bytes:
    """Feed ``data`` split at ``cuts`` (each piece its own buffer); the decoded body.

    Asserts on the way that every returned piece is a view into the buffer just fed and that
    ``done`` turns true exactly when the last byte has been fed.
    """
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    body = bytearray()
    fed = 0
    for start, end in pairwise(bounds):
        buffer = bytearray(data[start:end])
        for piece in decoder.feed(memoryview(buffer)):
            assert isinstance(piece, memoryview)
            assert piece.obj is buffer  # a view of the input, not a copy
            body += piece
        fed = end
        assert decoder.done is (fed == len(data)), (fed, len(data))
    return bytes(body)


def every(step: int, size: int) -> list[int]:
    return list(range(step, size, step))


def decode(data: bytes, cuts: list[int] | None = None) -> bytes:
    decoder = ChunkedDecoder()
    body = bytearray()
    bounds = [0, *sorted({c for c in (cuts or []) if 0 < c < len(data)}), len(data)]
    for start, end in pairwise(bounds):
        body += b"".join(decoder.feed(memoryview(data[start:end])))
    assert decoder.done
    return bytes(body)


def encode_chunked(
    chunks: list[bytes],
    *,
    size_text: list[bytes] | None = None,
    extensions: list[bytes] | None = None,
    last: bytes = b"0",
    trailers: list[bytes] | None = None,
) -> bytes:
    out = bytearray()
    for index, chunk in enumerate(chunks):
        size = size_text[index] if size_text else b"%x" % len(chunk)
        ext = extensions[index] if extensions else b""
        out += size + ext + CRLF + chunk + CRLF
    out += last + CRLF
    for field in trailers or []:
        out += field + CRLF
    out += CRLF
    return bytes(out)


EXTENSIONS = [b"", b";a=b", b";a", b';name="v;x"', b" ;a=b", b";a=b;c=d", b";A=B"]
TRAILERS = [b"Expires: never", b"X-Checksum: 12:ab", b"x-empty:", b"Digest: sha-256=abc=="]


@st.composite
def chunked_messages(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(body, its chunked encoding) with random chunk sizes, hex spelling, extensions and
    trailer fields."""
    body = draw(st.binary(max_size=1500))
    cuts: list[int] = []
    if len(body) > 1:
        cuts = draw(st.lists(st.integers(1, len(body) - 1), max_size=12))
    bounds = [0, *sorted(set(cuts)), len(body)] if body else [0]
    chunks = [body[a:b] for a, b in pairwise(bounds)]
    sizes = []
    for chunk in chunks:
        text = b"%x" % len(chunk)
        if draw(st.booleans()):
            text = text.upper()
        sizes.append(b"0" * draw(st.integers(0, 2)) + text)
    extensions = [draw(st.sampled_from(EXTENSIONS)) for _ in chunks]
    last = b"0" * draw(st.integers(1, 3)) + draw(st.sampled_from(EXTENSIONS))
    trailers = draw(st.lists(st.sampled_from(TRAILERS), max_size=3))
    encoded = encode_chunked(
        chunks, size_text=sizes, extensions=extensions, last=last, trailers=trailers
    )
    return body, encoded


@st.composite
def piece_cuts(draw: st.DrawFn, size: int) -> list[int]:
    """Where to split an input of ``size`` bytes: all at once, a fixed small step (down to one
    byte at a time) or random places."""
    mode = draw(st.sampled_from(["all", "step", "random"]))
    if mode == "all" or size < 2:
        return []
    if mode == "step":
        return every(draw(st.integers(1, 7)), size)
    return draw(st.lists(st.integers(1, size - 1), max_size=24))


def head(status_line: bytes, *fields: bytes) -> ResponseHead:
    return parse_head(status_line + CRLF + b"".join(f + CRLF for f in fields) + CRLF)


def response(status: int, *fields: bytes) -> ResponseHead:
    return head(b"HTTP/1.1 %d X" % status, *fields)


def with_field(name: str, value: str, status: int = 200) -> ResponseHead:
    """A head built directly (no byte decoding), for values parse_head could not produce."""
    return ResponseHead(status, "OK", Headers([(name, value)]), True)


# ---------------------------------------------------------------------------------------------
# ChunkedDecoder


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_chunked_reassembles_any_body_in_any_pieces(data: st.DataObject) -> None:
    body, encoded = data.draw(chunked_messages())
    cuts = data.draw(piece_cuts(len(encoded)))
    assert feed_pieces(ChunkedDecoder(), encoded, cuts) == body


@settings(max_examples=60, deadline=None)
@given(chunked_messages(), st.binary(min_size=1, max_size=16), st.data())
def test_chunked_bytes_after_the_end_are_a_protocol_error(
    message: tuple[bytes, bytes], garbage: bytes, data: st.DataObject
) -> None:
    _, encoded = message
    stream = encoded + garbage
    cuts = data.draw(piece_cuts(len(stream)))
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(stream)}), len(stream)]
    decoder = ChunkedDecoder()
    for start, end in pairwise(bounds):
        if end <= len(encoded):
            decoder.feed(memoryview(stream[start:end]))  # all before the end is fine
            continue
        with pytest.raises(ProtocolError):
            decoder.feed(memoryview(stream[start:end]))
        return
    pytest.fail("no piece reached the garbage")


def test_chunked_done_only_after_the_final_crlf_of_the_trailer_section() -> None:
    encoded = encode_chunked([b"hello", b" world"], trailers=[b"Expires: never", b"X: y"])
    decoder = ChunkedDecoder()
    body = bytearray()
    for index in range(len(encoded)):
        body += b"".join(decoder.feed(memoryview(encoded[index : index + 1])))
        assert decoder.done is (index == len(encoded) - 1), index
    assert body == b"hello world"
    with pytest.raises(ProtocolError):
        decoder.feed(memoryview(b"x"))


@pytest.mark.parametrize(
    "prefix",
    [b"0\r\n", b"0\r\n\r", b"0\r\nX: y\r\n", b"0\r\nX: y\r\n\r", b"5\r\nhello\r\n", b"5\r\nhel"],
)
def test_chunked_not_done_before_the_end(prefix: bytes) -> None:
    decoder = ChunkedDecoder()
    decoder.feed(memoryview(prefix))
    assert not decoder.done


def test_chunked_empty_body_and_empty_feed() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(memoryview(b"")) == []
    assert not decoder.done
    assert decoder.feed(memoryview(b"0\r\n\r\n")) == []
    assert decoder.done
    assert decoder.feed(memoryview(b"")) == []  # nothing fed after the end is not an error


def test_chunked_upper_and_lower_hex_and_extensions() -> None:
    data = b"A;ext=1\r\n0123456789\r\nb;x\r\nabcdefghijk\r\n0;last=yes\r\nT: v\r\n\r\n"
    assert decode(data) == b"0123456789abcdefghijk"
    assert decode(data, every(1, len(data))) == b"0123456789abcdefghijk"


def test_chunked_pieces_are_views_into_the_input_buffer() -> None:
    buffer = bytearray(b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    view = memoryview(buffer)
    pieces = ChunkedDecoder().feed(view)
    assert [bytes(p) for p in pieces] == [b"abc", b"defg"]
    assert all(p.obj is buffer for p in pieces)
    buffer[3:6] = b"XYZ"  # same length: the views see the change, so they are not copies
    assert bytes(pieces[0]) == b"XYZ"


@pytest.mark.parametrize(
    "data",
    [
        b"g\r\nxxxxxxxxxxxxxxxx\r\n0\r\n\r\n",  # not hex
        b"\r\n",  # empty size
        b";a=b\r\n",  # extension without a size
        b"-1\r\n",
        b"+5\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"1_0\r\n",  # int(_, 16) would accept the underscore
        b"5 5\r\n",
        "٥\r\n".encode(),  # a non-ASCII digit
        b"5\nhello\r\n0\r\n\r\n",  # size line ended by a bare LF
        b"5\r\nhello\r\n0\n\r\n",  # last-chunk line ended by a bare LF
        b"5\r\nhello\r\n0\r\n\n",  # the final blank line is a bare LF
        b"5\r\nhello\r\n0\r\nX: y\n\r\n",  # a trailer line ended by a bare LF
    ],
)
def test_chunked_malformed_lines_are_protocol_errors(data: bytes) -> None:
    for cuts in ([], every(1, len(data))):
        with pytest.raises(ProtocolError):
            decode(data, cuts)


@pytest.mark.parametrize(
    "data",
    [
        b"5\r\nhello0\r\n\r\n",  # the CRLF after the data is missing
        b"5\r\nhello\n0\r\n\r\n",  # a bare LF after the data
        b"3\r\nhello\r\n0\r\n\r\n",  # more data than declared
        b"5\r\nhelloX\r\n0\r\n\r\n",
        b"5\r\nhello \r\n0\r\n\r\n",
    ],
)
def test_chunked_data_not_followed_by_crlf_is_a_protocol_error(data: bytes) -> None:
    for cuts in ([], every(1, len(data)), every(3, len(data))):
        with pytest.raises(ProtocolError):
            decode(data, cuts)


def test_chunked_size_line_limit_boundary() -> None:
    """A chunk line of 4095 bytes (4097 with its CRLF) is accepted; one byte more is not,
    whether it arrives at once or a byte at a time (other splits: the test below)."""
    fits = b"5;" + b"a" * 4093  # 4095 bytes
    ok = fits + b"\r\nhello\r\n0\r\n\r\n"
    bad = fits + b"a\r\nhello\r\n0\r\n\r\n"
    for byte_by_byte in (False, True):
        assert decode(ok, every(1, len(ok)) if byte_by_byte else []) == b"hello"
        with pytest.raises(ProtocolError, match="too long"):
            decode(bad, every(1, len(bad)) if byte_by_byte else [])


@pytest.mark.parametrize(
    "line", [b"1" + b"0" * 10_000, b"5;" + b"a" * 10_000, b"0\r\nX-Trailer: " + b"v" * 10_000]
)
def test_chunked_overly_long_lines_are_protocol_errors(line: bytes) -> None:
    for step in (1, 7, 4096):
        decoder = ChunkedDecoder()
        with pytest.raises(ProtocolError, match="too long"):
            for start in range(0, len(line), step):
                decoder.feed(memoryview(line[start : start + step]))
    with pytest.raises(ProtocolError, match="too long"):
        ChunkedDecoder().feed(memoryview(line))


def test_chunked_line_limit_does_not_depend_on_how_the_bytes_arrive() -> None:
    data = b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n"
    with pytest.raises(ProtocolError):
        decode(data)  # at once: refused
    with pytest.raises(ProtocolError):
        decode(data, [4000])  # the same bytes in two pieces: accepted today


# ---------------------------------------------------------------------------------------------
# parse_head


def test_parse_head_status_reason_and_case_insensitive_headers() -> None:
    parsed = head(
        b"HTTP/1.1 206 Partial Content",
        b"Content-Length: 10",
        b"content-range: bytes 0-9/100",
        b'ETag:"abc"',
        b"X-Padded:  \t value with  spaces \t ",
        b"X-Empty:",
    )
    assert (parsed.status, parsed.reason, parsed.keep_alive) == (206, "Partial Content", True)
    headers = parsed.headers
    assert headers["CONTENT-LENGTH"] == headers["content-length"] == "10"
    assert headers.get("Content-Range") == "bytes 0-9/100"
    assert headers["etag"] == '"abc"'
    assert headers["x-padded"] == "value with  spaces"
    assert headers["X-Empty"] == ""
    assert "ETAG" in headers and "missing" not in headers
    assert not headers.__contains__(42)  # not a str: absent, no error
    assert headers.get("missing") is None and headers.get("missing", "d") == "d"
    with pytest.raises(KeyError):
        headers["missing"]
    assert len(headers) == 5
    assert [name for name, _ in headers.items_raw()] == [
        "Content-Length",
        "content-range",
        "ETag",
        "X-Padded",
        "X-Empty",
    ]


@pytest.mark.parametrize(
    ("status_line", "status", "reason"),
    [
        (b"HTTP/1.1 200 OK", 200, "OK"),
        (b"HTTP/1.0 404 Not Found Here", 404, "Not Found Here"),
        (b"HTTP/1.1 204", 204, ""),
        (b"HTTP/1.1 204 ", 204, ""),
        (b"HTTP/1.1 500 caf\xe9", 500, "café"),  # obs-text reason, read as Latin-1
        (b"HTTP/1.1 599 x: y", 599, "x: y"),
    ],
)
def test_parse_head_status_lines(status_line: bytes, status: int, reason: str) -> None:
    parsed = head(status_line)
    assert (parsed.status, parsed.reason) == (status, reason)


def test_parse_head_repeated_fields_are_joined() -> None:
    parsed = head(b"HTTP/1.1 200 OK", b"Vary: a", b"X-One: 1", b"vary: b", b"VARY: c, d")
    assert parsed.headers["Vary"] == "a, b, c, d"
    assert len(parsed.headers) == 2
    assert len(parsed.headers.items_raw()) == 4


def test_parse_head_value_bytes_are_latin1() -> None:
    assert head(b"HTTP/1.1 200 OK", b"X: caf\xe9").headers["x"] == "café"


@pytest.mark.parametrize(
    ("version", "fields", "keep_alive"),
    [
        (b"1.1", [], True),
        (b"1.1", [b"Connection: keep-alive"], True),
        (b"1.1", [b"Connection: upgrade"], True),
        (b"1.1", [b"Connection: close"], False),
        (b"1.1", [b"Connection: Close"], False),
        (b"1.1", [b"connection:CLOSE"], False),
        (b"1.1", [b"Connection: keep-alive, close"], False),
        (b"1.1", [b"Connection: close,keep-alive"], False),
        (b"1.1", [b"Connection: keep-alive", b"Connection: close"], False),
        (b"1.1", [b"Connection: closed"], True),  # a token, not a substring
        (b"1.0", [], False),
        (b"1.0", [b"Connection: keep-alive"], True),
        (b"1.0", [b"Connection: Keep-Alive"], True),
        (b"1.0", [b"Connection: upgrade, keep-alive"], True),
        (b"1.0", [b"Connection: close"], False),
        (b"1.0", [b"Connection: keep-alives"], False),
        pytest.param(
            b"1.0",
            [b"Connection: keep-alive, close"],
            False,
            id="1.0-keep-alive-and-close",
        ),
    ],
)
def test_parse_head_keep_alive(version: bytes, fields: list[bytes], keep_alive: bool) -> None:
    assert head(b"HTTP/" + version + b" 200 OK", *fields).keep_alive is keep_alive


@pytest.mark.parametrize(
    "status_line",
    [
        b"HTTP/2 200 OK",
        b"HTTP/2.0 200 OK",
        b"HTTP/1.2 200 OK",
        b"HTTP/1 200 OK",
        b"http/1.1 200 OK",  # the protocol name is case-sensitive
        b"ICY 200 OK",
        b"HTTP/1.1 OK",  # missing code
        b"HTTP/1.1",
        b"HTTP/1.1 ",
        b"HTTP/1.1 2000 OK",  # four digits
        b"HTTP/1.1 20 OK",
        b"HTTP/1.1 2x0 OK",
        b"HTTP/1.1  200 OK",
        b"HTTP/1.1 200\tOK",
        b" HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK\n",  # a bare LF is not a line end
        b"",
    ],
)
def test_parse_head_bad_status_lines(status_line: bytes) -> None:
    with pytest.raises(ProtocolError):
        head(status_line, b"Content-Length: 0")


@pytest.mark.parametrize(
    "field",
    [
        b" folded",  # obs-fold
        b"\tfolded",
        b"NoColonHere",
        b"Name : value",  # a space before the colon: the name is not a token
        b"Name\t: value",
        b": no name",
        b"Na(me: value",
        b"Na me: value",
        b"N\xe4me: value",
        b"Name\x00: value",
    ],
)
def test_parse_head_malformed_header_lines(field: bytes) -> None:
    with pytest.raises(ProtocolError):
        head(b"HTTP/1.1 200 OK", b"Content-Length: 0", field, b"X: y")


def test_protocol_error_is_a_value_error() -> None:
    assert issubclass(ProtocolError, ValueError)


@pytest.mark.parametrize("value", [b"a\rb", b"a\nb", b"a\x00b"])
def test_parse_head_field_value_with_cr_lf_or_nul(value: bytes) -> None:
    try:
        parsed = head(b"HTTP/1.1 200 OK", b"X-Thing: " + value)
    except ProtocolError:
        return
    assert parsed.headers["X-Thing"] == "a b"


# ---------------------------------------------------------------------------------------------
# find_head_end

HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\n"


def test_find_head_end_basic() -> None:
    assert find_head_end(HEAD + b"hello") == len(HEAD)
    assert find_head_end(bytearray(HEAD)) == len(HEAD)
    assert find_head_end(HEAD[:-1]) == -1
    assert find_head_end(b"") == -1
    assert find_head_end(b"A\r\n\r\nB\r\n\r\n") == 5  # the first blank line ends the head
    assert find_head_end(b"HTTP/1.1 200 OK\n\n") == -1  # only CRLF CRLF ends a head


def test_find_head_end_across_two_reads() -> None:
    """The head arrives in two reads split at every possible place: the second search, told
    where the first stopped, finds the end even when CRLF CRLF straddles the split."""
    data = HEAD + b"hello"
    for split in range(len(data) + 1):
        first = find_head_end(data[:split])
        if first != -1:
            assert first == len(HEAD) and split >= len(HEAD)
            continue
        assert split < len(HEAD)
        assert find_head_end(data, split) == len(HEAD), split
        assert find_head_end(bytearray(data), split) == len(HEAD), split


def test_find_head_end_ignores_bytes_past_end() -> None:
    """A reused head buffer still holds an earlier response past ``end``: never found there."""
    buffer = bytearray(b"HTTP/1.1 200 OK\r\nA: b" + HEAD)
    partial = len(b"HTTP/1.1 200 OK\r\nA: b")
    assert find_head_end(buffer, 0, partial) == -1
    assert find_head_end(buffer, 0, partial + 4) == -1
    assert find_head_end(buffer, 0) != -1
    assert find_head_end(buffer, partial, len(buffer)) == buffer.find(b"\r\n\r\n") + 4


def test_find_head_end_over_many_reads() -> None:
    data = HEAD + b"hello"
    for step in range(1, 8):
        buffer = bytearray()
        searched = 0
        found = -1
        for start in range(0, len(data), step):
            buffer += data[start : start + step]
            found = find_head_end(buffer, searched)
            if found != -1:
                break
            searched = len(buffer)
        assert found == len(HEAD), step


# ---------------------------------------------------------------------------------------------
# body_framing


@pytest.mark.parametrize("status", [100, 101, 103, 199, 204, 304])
def test_framing_no_body_statuses(status: int) -> None:
    framing = body_framing(response(status, b"Content-Length: 10", b"Transfer-Encoding: gzip"))
    assert framing == Framing(BodyKind.NONE, 0)
    assert framing.reusable


@pytest.mark.parametrize(
    "fields",
    [
        [b"Content-Length: 10"],
        [b"Transfer-Encoding: chunked"],
        [b"Transfer-Encoding: gzip"],  # no body, so the coding does not matter
        [],
    ],
)
def test_framing_head_request_has_no_body(fields: list[bytes]) -> None:
    assert body_framing(response(200, *fields), head_request=True) == Framing(BodyKind.NONE, 0)


@pytest.mark.parametrize(
    "fields",
    [
        [b"Transfer-Encoding: chunked"],
        [b"Transfer-Encoding: Chunked"],
        [b"transfer-encoding:  chunked "],
        [b"Transfer-Encoding: chunked", b"Content-Length: 10"],  # chunked wins
        [b"Content-Length: 10", b"Transfer-Encoding: chunked"],
        [b"Content-Length: nonsense", b"Transfer-Encoding: chunked"],
    ],
)
def test_framing_chunked(fields: list[bytes]) -> None:
    framing = body_framing(response(200, *fields))
    assert framing == Framing(BodyKind.CHUNKED)
    assert framing.length is None and framing.reusable


@pytest.mark.parametrize(
    "fields",
    [
        [b"Transfer-Encoding: gzip"],
        [b"Transfer-Encoding: gzip, chunked"],
        [b"Transfer-Encoding: chunked, gzip"],
        [b"Transfer-Encoding: identity"],
        [b"Transfer-Encoding: chunked, chunked"],
        [b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked"],  # joined: gzip, chunked
        [b"Transfer-Encoding:"],
        [b"Transfer-Encoding: deflate", b"Content-Length: 5"],
    ],
)
def test_framing_other_transfer_codings_are_refused(fields: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        body_framing(response(200, *fields))


@pytest.mark.parametrize(
    ("fields", "length"),
    [
        ([b"Content-Length: 0"], 0),
        ([b"Content-Length: 5"], 5),
        ([b"Content-Length:  12345 "], 12345),
        ([b"Content-Length: 007"], 7),
        ([b"Content-Length: 99999999999999999999"], 99999999999999999999),
        ([b"Content-Length: 5, 5"], 5),
        ([b"Content-Length: 5,5,5"], 5),
        ([b"Content-Length: 5", b"content-length: 5"], 5),
    ],
)
def test_framing_content_length(fields: list[bytes], length: int) -> None:
    framing = body_framing(response(200, *fields))
    assert framing == Framing(BodyKind.LENGTH, length)
    assert framing.reusable


@pytest.mark.parametrize(
    "value",
    [
        b"5, 6",
        b"5,",
        b"",
        b"abc",
        b"-5",
        b"-0",
        b"+5",
        b"0x10",
        b"5.0",
        b"1e3",
        b"5 5",
        b"\xb2",  # Latin-1 superscript two: str.isdigit() says yes
    ],
)
def test_framing_bad_content_length(value: bytes) -> None:
    with pytest.raises(ProtocolError):
        body_framing(response(200, b"Content-Length: " + value))


@pytest.mark.parametrize("value", [b"5\xa0", b"\xa05", b"5\x85", b"\x0c5", b"5\x0b", b"5\x1c"])
def test_framing_content_length_with_non_http_whitespace(value: bytes) -> None:
    with pytest.raises(ProtocolError):
        body_framing(response(200, b"Content-Length: " + value))


def test_framing_conflicting_repeated_content_length() -> None:
    with pytest.raises(ProtocolError, match="conflicting"):
        body_framing(response(200, b"Content-Length: 5", b"Content-Length: 6"))


@pytest.mark.parametrize("value", ["٥", "５", "²", "1٥", "৫"])
def test_framing_unicode_digits_are_refused(value: str) -> None:
    with pytest.raises(ProtocolError):
        body_framing(with_field("Content-Length", value))


def test_framing_until_close() -> None:
    framing = body_framing(response(200, b"Content-Type: text/plain"))
    assert framing == Framing(BodyKind.UNTIL_CLOSE)
    assert framing.length is None
    assert not framing.reusable
    assert body_framing(head(b"HTTP/1.0 200 OK")).kind is BodyKind.UNTIL_CLOSE


@pytest.mark.parametrize(
    ("kind", "reusable"),
    [
        (BodyKind.NONE, True),
        (BodyKind.LENGTH, True),
        (BodyKind.CHUNKED, True),
        (BodyKind.UNTIL_CLOSE, False),
    ],
)
def test_framing_reusable(kind: BodyKind, reusable: bool) -> None:
    assert Framing(kind, 0).reusable is reusable


def test_framing_error_status_still_has_a_body() -> None:
    assert body_framing(response(404, b"Content-Length: 9")) == Framing(BodyKind.LENGTH, 9)
    assert body_framing(response(503)) == Framing(BodyKind.UNTIL_CLOSE)


# ---------------------------------------------------------------------------------------------
# split_url


@pytest.mark.parametrize(
    ("url", "origin", "host_header", "target"),
    [
        ("http://example.com/a.nc", Origin("http", "example.com", 80), "example.com", "/a.nc"),
        ("https://example.com/a", Origin("https", "example.com", 443), "example.com", "/a"),
        ("http://example.com:8080/a", Origin("http", "example.com", 8080), "example.com:8080",
         "/a"),
        ("https://h:8443/", Origin("https", "h", 8443), "h:8443", "/"),
        ("http://h:80/", Origin("http", "h", 80), "h", "/"),
        ("https://h:443/", Origin("https", "h", 443), "h", "/"),
        ("http://h:443/", Origin("http", "h", 443), "h:443", "/"),
        ("https://h:80/", Origin("https", "h", 80), "h:80", "/"),
        ("HTTPS://Example.COM/Path/A.nc", Origin("https", "example.com", 443), "example.com",
         "/Path/A.nc"),
        ("http://[::1]:8080/x", Origin("http", "::1", 8080), "[::1]:8080", "/x"),
        ("https://[2001:db8::1]/x", Origin("https", "2001:db8::1", 443), "[2001:db8::1]", "/x"),
        ("http://[::1]/", Origin("http", "::1", 80), "[::1]", "/"),
        ("http://127.0.0.1:9/x", Origin("http", "127.0.0.1", 9), "127.0.0.1:9", "/x"),
        ("https://bücher.example/x", Origin("https", "xn--bcher-kva.example", 443),
         "xn--bcher-kva.example", "/x"),
        ("http://user:secret@h/x", Origin("http", "h", 80), "h", "/x"),
        ("http://h", Origin("http", "h", 80), "h", "/"),
        ("http://h?x=1", Origin("http", "h", 80), "h", "/?x=1"),
    ],
)  # fmt: skip
def test_split_url_origin(url: str, origin: Origin, host_header: str, target: str) -> None:
    got_origin, got_target = split_url(url)
    assert got_origin == origin
    assert got_origin.host_header == host_header
    assert got_target == target


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://h/a b/c.nc", "/a%20b/c.nc"),
        ("http://h/üñï/ファイル.nc", "/%C3%BC%C3%B1%C3%AF/%E3%83%95%E3%82%A1%E3%82%A4%E3%83%AB.nc"),
        ("http://h/a%2Fb", "/a%2Fb"),  # an existing escape is kept, not re-encoded
        ("http://h/a%20b", "/a%20b"),
        ("http://h/a%2fb%C3%BC", "/a%2fb%C3%BC"),
        ("http://h/a;b=c,d(e)!$&'*+@:~-._", "/a;b=c,d(e)!$&'*+@:~-._"),
        ('http://h/a"b<c>d{e}f|g\\h^i`j[k]', "/a%22b%3Cc%3Ed%7Be%7Df%7Cg%5Ch%5Ei%60j%5Bk%5D"),
        ("http://h/p?x=1&y=a%2Fb", "/p?x=1&y=a%2Fb"),
        ("http://h/p?q=a b&r=ü", "/p?q=a%20b&r=%C3%BC"),
        ("http://h/p?a?b=/c", "/p?a?b=/c"),
        ("http://h/p#fragment", "/p"),
        ("http://h/p?x=1#frag", "/p?x=1"),
        ("http://h/a\x00b\x7f", "/a%00b%7F"),
    ],
)
def test_split_url_target_encoding(url: str, target: str) -> None:
    assert split_url(url)[1] == target


@settings(max_examples=150, deadline=None)
@given(
    st.text(st.characters(codec="utf-8", exclude_characters="%#?\t\r\n")),
    st.text(st.characters(codec="utf-8", exclude_characters="%#\t\r\n")),
)
def test_split_url_target_is_printable_ascii_and_decodes_back(path: str, query: str) -> None:
    url = "https://example.com/" + path + ("?" + query if query else "")
    origin, target = split_url(url)
    assert origin == Origin("https", "example.com", 443)
    assert target.startswith("/")
    assert all(33 <= ord(c) < 127 for c in target), target
    got_path, _, got_query = target.partition("?")
    assert unquote(got_path) == "/" + path
    assert unquote(got_query) == query


@pytest.mark.parametrize(
    "url",
    [
        "ftp://h/x",
        "file:///etc/passwd",
        "mailto:a@example.com",
        "h/x",
        "//h/x",
        "",
        "http:///x",
        "http://:80/x",
        "https://user@/x",
        "http://h:abc/",
        "http://h:99999/",
        "http://h:-1/",
    ],
)
def test_split_url_refuses(url: str) -> None:
    with pytest.raises(ValueError):
        split_url(url)


@pytest.mark.parametrize("url", ["http://h:0/x", "https://h:0/x"])
def test_split_url_port_zero_is_not_the_default_port(url: str) -> None:
    try:
        origin, _ = split_url(url)
    except ValueError:
        return
    assert origin.port == 0


# ---------------------------------------------------------------------------------------------
# request_head


def test_request_head_exact_bytes() -> None:
    origin = Origin("http", "example.com", 80)
    headers = {"Accept": "*/*", "Range": "bytes=0-9", "Authorization": "Bearer t"}
    assert request_head("/a.nc?x=1", origin, headers) == (
        b"GET /a.nc?x=1 HTTP/1.1\r\n"
        b"Host: example.com\r\n"
        b"Accept: */*\r\n"
        b"Range: bytes=0-9\r\n"
        b"Authorization: Bearer t\r\n"
        b"\r\n"
    )


def test_request_head_without_headers_and_with_port() -> None:
    assert request_head("/", Origin("https", "h", 443), {}) == b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    assert request_head("/", Origin("https", "::1", 8443), {}) == (
        b"GET / HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n"
    )


@pytest.mark.parametrize("name", ["Host", "host", "HOST"])
def test_request_head_host_entry_is_not_duplicated(name: str) -> None:
    out = request_head("/x", Origin("http", "h", 8080), {"A": "1", name: "other", "B": "2"})
    assert out == b"GET /x HTTP/1.1\r\nHost: h:8080\r\nA: 1\r\nB: 2\r\n\r\n"
    assert out.lower().count(b"host:") == 1


SECRET = "s3cr3t-T0KEN-value"


@pytest.mark.parametrize("bad", ["\r", "\n", "\x00", "\r\n", "\r\nX-Injected: 1"])
@pytest.mark.parametrize("where", ["value-end", "value-start", "value-middle"])
def test_request_head_refuses_line_breaks_in_values_without_leaking_them(
    bad: str, where: str
) -> None:
    value = {
        "value-end": f"Bearer {SECRET}{bad}",
        "value-start": f"{bad}Bearer {SECRET}",
        "value-middle": f"Bearer {SECRET[:6]}{bad}{SECRET[6:]}",
    }[where]
    with pytest.raises(ValueError) as caught:
        request_head("/", Origin("http", "h", 80), {"Accept": "*/*", "Authorization": value})
    text = str(caught.value) + repr(caught.value.args)
    assert SECRET[:6] not in text and SECRET[6:] not in text


@pytest.mark.parametrize("name", ["X-A\r\nX-B", "X-A\n", "X\x00A", "\rX"])
def test_request_head_refuses_line_breaks_in_names(name: str) -> None:
    with pytest.raises(ValueError) as caught:
        request_head("/", Origin("http", "h", 80), {name: SECRET})
    assert SECRET not in str(caught.value)


def test_request_head_value_outside_latin1_is_a_value_error_without_the_value() -> None:
    with pytest.raises(ValueError) as caught:
        request_head("/", Origin("http", "h", 80), {"Authorization": f"Bearer {SECRET}€"})
    assert SECRET not in str(caught.value)


TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.text(TOKEN_CHARS, min_size=1, max_size=20).filter(lambda n: n.lower() != "host"),
        st.text(
            st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
            max_size=40,
        ).map(str.strip),
        max_size=8,
    )
)
def test_request_head_lines_are_the_headers_in_order(headers: dict[str, str]) -> None:
    out = request_head("/p?q=1", Origin("https", "example.com", 443), headers)
    assert find_head_end(out) == len(out)  # exactly one blank line, at the end
    lines = out[: -len(CRLF * 2)].decode("latin-1").split("\r\n")
    assert lines[0] == "GET /p?q=1 HTTP/1.1"
    assert lines[1] == "Host: example.com"
    assert lines[2:] == [f"{name}: {value}" for name, value in headers.items()]
