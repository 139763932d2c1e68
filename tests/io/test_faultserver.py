"""Self-tests of the fault-injection server (tests/faultserver.py) with a plain aiohttp client.

If these fail, the end-to-end download tests prove nothing: each fault is checked here for the
exact bytes, headers and counters it produces.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import threading
import time
import urllib.request

import aiohttp
import pytest
from faultserver import FaultServer, KiB, Rule, file_content, rule_from_query, sha256_multihash
from multidict import CIMultiDict

pytestmark = pytest.mark.anyio

TIMEOUT = aiohttp.ClientTimeout(total=10, sock_read=5)


async def fetch(
    server: FaultServer, name: str, headers: dict[str, str] | None = None, query: str = ""
) -> tuple[int, CIMultiDict[str], bytes]:
    async with (
        aiohttp.ClientSession(auto_decompress=False, timeout=TIMEOUT) as session,
        session.get(server.url(name, query), headers=headers or {}) as response,
    ):
        body = await response.read()
        return response.status, CIMultiDict(response.headers), body


async def test_serves_deterministic_bytes_with_validators() -> None:
    async with FaultServer() as server:
        server.add_file("a.bin", 300 * KiB)
        status, headers, body = await fetch(server, "a.bin")
    assert status == 200
    assert body == file_content("a.bin", 300 * KiB) == server.content("a.bin")
    assert headers["Content-Length"] == str(300 * KiB)
    assert headers["ETag"] == server.etag("a.bin") and headers["ETag"].startswith('"')
    assert headers["Last-Modified"] == server.last_modified("a.bin")
    assert headers["Accept-Ranges"] == "bytes"
    assert "Content-Encoding" not in headers
    assert file_content("a.bin", 10) != file_content("b.bin", 10)
    assert file_content("a.bin", 10, 1) != file_content("a.bin", 10, 2)
    assert sha256_multihash(b"").startswith("1220e3b0c442")


async def test_range_requests_get_exact_206_and_416() -> None:
    async with FaultServer() as server:
        server.add_file("a.bin", 1000)
        data = server.content("a.bin")
        status, headers, body = await fetch(server, "a.bin", {"Range": "bytes=100-199"})
        assert (status, headers["Content-Range"], body) == (
            206,
            "bytes 100-199/1000",
            data[100:200],
        )
        status, headers, body = await fetch(server, "a.bin", {"Range": "bytes=900-"})
        assert (status, headers["Content-Range"], body) == (206, "bytes 900-999/1000", data[900:])
        status, headers, body = await fetch(server, "a.bin", {"Range": "bytes=-10"})
        assert (status, body) == (206, data[-10:])
        status, headers, body = await fetch(server, "a.bin", {"Range": "bytes=990-5000"})
        assert (status, headers["Content-Range"]) == (206, "bytes 990-999/1000")
        status, headers, _ = await fetch(server, "a.bin", {"Range": "bytes=1000-"})
        assert (status, headers["Content-Range"]) == (416, "bytes */1000")
        status, _, body = await fetch(server, "a.bin", {"Range": "bytes=0-1,5-6"})
        assert (status, body) == (200, data)
        assert [r.range for r in server.stats("a.bin").requests][:2] == [
            "bytes=100-199",
            "bytes=900-",
        ]


async def test_if_range_honoured_only_for_current_strong_validator() -> None:
    async with FaultServer() as server:
        server.add_file("a.bin", 1000)
        data = server.content("a.bin")
        etag, modified = server.etag("a.bin"), server.last_modified("a.bin")
        for validator, expected in [
            (etag, 206),
            (modified, 206),
            ('"stale"', 200),
            ("W/" + etag, 200),
            ("Mon, 01 Jan 2001 00:00:00 GMT", 200),
        ]:
            status, _, body = await fetch(
                server, "a.bin", {"Range": "bytes=500-", "If-Range": validator}
            )
            assert status == expected, validator
            assert body == (data[500:] if status == 206 else data)
        assert server.stats("a.bin").requests[0].if_range == etag


async def test_change_after_serves_a_new_version_with_new_validators() -> None:
    async with FaultServer() as server:
        server.add_file("a.bin", 1000, change_after=1, new_size=1200)
        old_etag = server.etag("a.bin", 1)
        status, headers, body = await fetch(server, "a.bin")
        assert (status, body, headers["ETag"]) == (200, file_content("a.bin", 1000), old_etag)
        status, headers, body = await fetch(
            server, "a.bin", {"Range": "bytes=500-", "If-Range": old_etag}
        )
        assert status == 200
        assert body == file_content("a.bin", 1200, 2) == server.content("a.bin")
        assert headers["ETag"] == server.etag("a.bin", 2) != old_etag
        assert headers["Last-Modified"] != server.last_modified("a.bin", 1)
        server.set_version("a.bin", 3)
        _, _, body = await fetch(server, "a.bin")
        assert body == file_content("a.bin", 1000, 3)
        assert [r.version for r in server.stats("a.bin").requests] == [1, 2, 3]


async def test_status_rules_count_requests_and_send_retry_after() -> None:
    async with FaultServer() as server:
        server.add_file("a.bin", 100, Rule(status=429, retry_after=2, times=2))
        server.add_file("b.bin", 100, Rule(status=503, retry_after=30, retry_after_date=True))
        server.add_file("gone.bin", 100, Rule(status=410, times=None))
        first = await fetch(server, "a.bin")
        second = await fetch(server, "a.bin")
        third = await fetch(server, "a.bin")
        assert [first[0], second[0], third[0]] == [429, 429, 200]
        assert first[1]["Retry-After"] == "2"
        assert third[2] == server.content("a.bin")
        status, headers, _ = await fetch(server, "b.bin")
        assert status == 503
        when = email.utils.parsedate_to_datetime(headers["Retry-After"]).timestamp()
        assert 25 < when - time.time() <= 31
        assert (await fetch(server, "gone.bin"))[0] == 410
        assert (await fetch(server, "gone.bin"))[0] == 410
        assert (await fetch(server, "missing.bin"))[0] == 404
        assert len(server.stats("?").requests) == 1
        stats = server.stats("a.bin")
        assert [r.status for r in stats.requests] == [429, 429, 200]
        assert stats.bytes_sent == 100


async def test_rules_with_skip_apply_to_later_requests_only() -> None:
    async with FaultServer() as server:
        server.add_file("a.bin", 100, Rule(status=500, skip=1, times=1))
        statuses = [(await fetch(server, "a.bin"))[0] for _ in range(3)]
    assert statuses == [200, 500, 200]


async def test_ignore_range_and_wrong_content_range() -> None:
    async with FaultServer() as server:
        server.add_file("a.bin", 10 * KiB, Rule(ignore_range=True))
        server.add_file("b.bin", 10 * KiB, Rule(wrong_content_range="start"))
        server.add_file("c.bin", 10 * KiB, Rule(wrong_content_range="total"))
        status, headers, body = await fetch(server, "a.bin", {"Range": "bytes=5000-"})
        assert (status, body) == (200, server.content("a.bin"))
        assert "Content-Range" not in headers
        status, headers, body = await fetch(server, "b.bin", {"Range": "bytes=6000-"})
        assert status == 206
        assert headers["Content-Range"] == f"bytes {6000 - 4096}-{10 * KiB - 1}/{10 * KiB}"
        assert body == server.content("b.bin")[6000 - 4096 :]
        status, headers, body = await fetch(server, "c.bin", {"Range": "bytes=6000-"})
        assert (status, headers["Content-Range"]) == (206, f"bytes 6000-10239/{10 * KiB + 1}")
        assert body == server.content("c.bin")[6000:]


async def test_corrupt_byte_and_gzip() -> None:
    async with FaultServer() as server:
        server.add_file("a.bin", 5000, Rule(corrupt_at=4000, times=None))
        server.add_file("z.bin", 5000, Rule(gzip=True))
        data = server.content("a.bin")
        _, _, body = await fetch(server, "a.bin")
        assert body[:4000] == data[:4000] and body[4001:] == data[4001:]
        assert body[4000] == data[4000] ^ 0xFF
        _, _, body = await fetch(server, "a.bin", {"Range": "bytes=0-99"})
        assert body == data[:100]  # the corrupt byte is outside this range
        status, headers, body = await fetch(
            server, "z.bin", {"Accept-Encoding": "identity", "Range": "bytes=10-"}
        )
        assert (status, headers["Content-Encoding"]) == (200, "gzip")
        assert gzip.decompress(body) == server.content("z.bin")
        assert server.stats("z.bin").requests[0].accept_encoding == "identity"


async def test_short_body_closes_after_n_bytes() -> None:
    async with FaultServer(chunk_size=1000) as server:
        server.add_file("a.bin", 10_000, Rule(short_after=2500))
        async with (
            aiohttp.ClientSession(auto_decompress=False, timeout=TIMEOUT) as session,
            session.get(server.url("a.bin")) as response,
        ):
            assert response.headers["Content-Length"] == "10000"
            received = bytearray()
            with pytest.raises(aiohttp.ClientPayloadError):
                async for chunk in response.content.iter_any():
                    received += chunk
        assert bytes(received) == server.content("a.bin")[:2500]
        record = server.stats("a.bin").requests[0]
        assert (record.bytes_sent, record.ended) == (2500, "short")


async def test_reset_after_n_bytes_delivers_them_then_resets() -> None:
    async with FaultServer() as server:
        server.add_file("a.bin", 1000 * KiB, Rule(reset_after=300 * KiB, times=2))
        for _ in range(2):
            async with (
                aiohttp.ClientSession(auto_decompress=False, timeout=TIMEOUT) as session,
                session.get(server.url("a.bin")) as response,
            ):
                received = bytearray()
                with pytest.raises(aiohttp.ClientError):
                    async for chunk in response.content.iter_any():
                        received += chunk
            assert bytes(received) == server.content("a.bin")[: len(received)]
            assert len(received) <= 300 * KiB
        status, _, body = await fetch(server, "a.bin")
        assert (status, body) == (200, server.content("a.bin"))
        stats = server.stats("a.bin")
        assert [r.ended for r in stats.requests] == ["reset", "reset", "complete"]
        assert stats.bytes_sent == 1000 * KiB + 2 * 300 * KiB


async def test_stall_keeps_the_connection_silent_until_the_client_leaves() -> None:
    async with FaultServer() as server:
        server.add_file("a.bin", 100 * KiB, Rule(stall_after=10 * KiB))
        timeout = aiohttp.ClientTimeout(total=10, sock_read=0.3)
        async with (
            aiohttp.ClientSession(auto_decompress=False, timeout=timeout) as session,
            session.get(server.url("a.bin")) as response,
        ):
            received = bytearray()
            with pytest.raises(asyncio.TimeoutError):
                async for chunk in response.content.iter_any():
                    received += chunk
        assert len(received) == 10 * KiB
        for _ in range(100):  # the handler notices the client left within ~50 ms
            if server.stats("a.bin").active == 0:
                break
            await asyncio.sleep(0.02)
        stats = server.stats("a.bin")
        assert (stats.active, stats.requests[0].ended) == (0, "stall")


async def test_counts_concurrent_requests_per_file() -> None:
    async with FaultServer(chunk_size=4 * KiB, chunk_delay=0.01) as server:
        server.add_file("a.bin", 40 * KiB)
        server.add_file("b.bin", 40 * KiB)
        results = await asyncio.gather(
            *(fetch(server, name) for name in ["a.bin", "a.bin", "a.bin", "b.bin"])
        )
        assert [r[2] for r in results[:3]] == [server.content("a.bin")] * 3
        assert server.stats("a.bin").max_concurrent == 3
        assert server.stats("b.bin").max_concurrent == 1
        assert server.max_concurrent == 4
        assert server.total_bytes_sent == 160 * KiB
        assert server.total_requests == 4


async def test_query_parameters_add_a_rule_for_that_request() -> None:
    assert rule_from_query({"status": "503", "retry_after": "1.5", "token": "x"}) == Rule(
        times=None, status=503, retry_after=1.5
    )
    assert rule_from_query({"token": "x"}) is None
    async with FaultServer() as server:
        server.add_file("a.bin", 100)
        status, headers, _ = await fetch(server, "a.bin", query="status=503&retry_after=1")
        assert (status, headers["Retry-After"]) == (503, "1")
        status, _, body = await fetch(server, "a.bin", {"Range": "bytes=10-"}, "ignore_range=1")
        assert (status, body) == (200, server.content("a.bin"))


def test_thread_mode_serves_and_stops_with_a_stalled_client_attached() -> None:
    server = FaultServer()
    server.add_file("a.bin", 64 * KiB, Rule(stall_after=KiB))
    server.add_file("b.bin", 5000)
    with server:
        with urllib.request.urlopen(server.url("b.bin"), timeout=10) as response:
            assert response.read() == server.content("b.bin")
        stalled = urllib.request.urlopen(server.url("a.bin"), timeout=10)
        assert stalled.read(KiB) == server.content("a.bin")[:KiB]
        started = time.monotonic()
    assert time.monotonic() - started < 5
    stalled.close()
    assert server.stats("a.bin").requests[0].ended == "stall"
    assert not any(t.name == "faultserver" for t in threading.enumerate())
    with pytest.raises(RuntimeError):
        _ = server.port
