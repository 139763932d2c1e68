"""Self-tests of the fault server's tools for segmented downloads: a rule that throttles or
breaks only the request for one range (``range_from``, ``chunk_delay``), and the count of
requests in flight whose client is still connected (``max_connected``).
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from faultserver import FaultServer, KiB, Rule, rule_from_query

pytestmark = pytest.mark.anyio

TIMEOUT = aiohttp.ClientTimeout(total=10, sock_read=5)


async def ranged(session: aiohttp.ClientSession, server: FaultServer, spec: str) -> bytes:
    async with session.get(server.url("a.bin"), headers={"Range": f"bytes={spec}"}) as response:
        assert response.status == 206
        return await response.read()


async def test_range_from_limits_a_rule_to_one_range() -> None:
    async with FaultServer() as server:
        server.add_file("a.bin", 64 * KiB, Rule(times=None, range_from=1000, corrupt_at=1000))
        data = server.content("a.bin")
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            assert await ranged(session, server, "0-1999") == data[:2000]  # covers 1000: clean
            other = await ranged(session, server, "1000-1999")
            assert other[0] == data[1000] ^ 0xFF and other[1:] == data[1001:2000]
            assert await ranged(session, server, "1000-") != data[1000:]
            async with session.get(server.url("a.bin")) as response:  # no Range: no rule
                assert await response.read() == data


async def test_rule_chunk_delay_throttles_only_its_request() -> None:
    async with FaultServer(chunk_size=4 * KiB) as server:
        server.add_file("a.bin", 64 * KiB, Rule(times=None, range_from=0, chunk_delay=0.02))
        data = server.content("a.bin")
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            slow = asyncio.create_task(ranged(session, server, "0-32767"))
            fast = await ranged(session, server, "32768-65535")
            assert fast == data[32 * KiB :]
            assert not slow.done()  # 8 chunks x 20 ms: still streaming
            assert await slow == data[: 32 * KiB]
    assert rule_from_query({"chunk_delay": "0.5"}) == Rule(times=None, chunk_delay=0.5)


async def test_max_connected_forgets_a_client_that_dropped_its_response() -> None:
    async with FaultServer(chunk_size=4 * KiB, chunk_delay=1.0) as server:
        server.add_file("a.bin", 64 * KiB)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            response = await session.get(server.url("a.bin"))
            await response.content.readany()
            response.close()  # drop the connection mid-body; the handler is asleep for 1 s
            for _ in range(50):  # let the server loop see the close
                await asyncio.sleep(0.005)
            async with session.get(server.url("a.bin"), headers={"Range": "bytes=0-0"}) as again:
                assert len(await again.read()) == 1
        stats = server.stats("a.bin")
        assert stats.max_concurrent == 2  # the old handler had not noticed yet
        assert stats.max_connected == 1 and server.max_connected == 1
        assert stats.connected == 0
