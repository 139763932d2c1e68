"""HostPacer: the per-host and global caps, a Retry-After pause, and caps raised mid-run."""

from __future__ import annotations

import anyio
import pytest

from bulkflex.transfer.hosts import HostPacer

pytestmark = pytest.mark.anyio


class Requests:
    """Tasks that hold a slot until released, counting how many hold one at once."""

    def __init__(self, pacer: HostPacer) -> None:
        self.pacer = pacer
        self.active: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.peak_total = 0
        self.release = anyio.Event()

    @property
    def total(self) -> int:
        return sum(self.active.values())

    async def one(self, host: str) -> None:
        async with self.pacer.slot(host):
            self.active[host] = self.active.get(host, 0) + 1
            self.peak[host] = max(self.peak.get(host, 0), self.active[host])
            self.peak_total = max(self.peak_total, self.total)
            await self.release.wait()
            self.active[host] -= 1


async def test_caps_hold_per_host_and_in_all() -> None:
    requests = Requests(HostPacer(per_host=2, global_limit=3))
    async with anyio.create_task_group() as tg:
        for host in ("a", "a", "a", "b", "b", "b"):
            tg.start_soon(requests.one, host)
        await anyio.wait_all_tasks_blocked()
        # a: two slots; b: one (the third global slot), its second waits for a global one
        assert requests.active == {"a": 2, "b": 1}
        requests.release.set()
    assert max(requests.peak.values()) == 2
    assert requests.peak_total == 3


async def test_widen_starts_waiting_requests_at_once_and_the_new_caps_hold() -> None:
    pacer = HostPacer(per_host=1, global_limit=2)
    requests = Requests(pacer)
    async with anyio.create_task_group() as tg:
        for host in ["a"] * 6 + ["b"] * 6:
            tg.start_soon(requests.one, host)
        await anyio.wait_all_tasks_blocked()
        assert requests.active == {"a": 1, "b": 1}

        pacer.widen(per_host=3, global_limit=5)
        await anyio.wait_all_tasks_blocked()
        # two more slots for each host, three more in all: a takes three, b two
        assert requests.active == {"a": 3, "b": 2}

        pacer.widen(per_host=2, global_limit=2)  # lower: ignored, never below what runs
        assert (pacer.per_host, pacer.global_limit) == (3, 5)
        requests.release.set()
    assert max(requests.peak.values()) == 3
    assert requests.peak_total == 5


async def test_a_host_first_seen_after_widen_gets_the_wider_cap() -> None:
    pacer = HostPacer(per_host=1, global_limit=8)
    pacer.widen(per_host=4, global_limit=8)
    requests = Requests(pacer)
    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(requests.one, "new")
        await anyio.wait_all_tasks_blocked()
        assert requests.active == {"new": 4}
        requests.release.set()


async def test_a_released_slot_goes_to_a_waiting_request_at_once_and_only_once() -> None:
    """The engine gives a slot back when a body is all in, before its request's block ends:
    the next request starts then, and the end of the block gives nothing back a second time."""
    pacer = HostPacer(per_host=1, global_limit=5)
    holding: list[str] = []
    done = anyio.Event()

    async def first() -> None:
        async with pacer.slot("a") as slot:
            holding.append("first")
            slot.release()
            slot.release()  # a second call does nothing
            await done.wait()  # still in its block, the slot already given back

    async def other(name: str) -> None:
        async with pacer.slot("a"):
            holding.append(name)
            await done.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(other, "second")
        tg.start_soon(other, "third")
        await anyio.wait_all_tasks_blocked()
        assert holding == ["first", "second"]  # one slot: the third waits for it
        done.set()
    assert holding == ["first", "second", "third"]
