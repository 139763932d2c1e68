"""Per-host pacing: a connection cap per host, a global cap, and Retry-After pauses.

Every request (whole file or one range) holds one slot of its host and one global slot while it
is on the network: until the last byte of its body is in (:meth:`Slot.release`, which the engine
calls from the connection's callback, so that the next request leaves without waiting for the
reader), or until it ends otherwise. Slots are taken host first, then global, always in that
order, so they cannot deadlock. They are asyncio semaphores: taken once per request, and
anyio's CapacityLimiter costs several times more per acquire (the engine runs on asyncio anyway).
A 429 or 503 with Retry-After pauses *new* requests to that host until the time given; requests
already streaming go on. The caps can be raised during a run (:meth:`HostPacer.widen`), never
lowered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

__all__ = ["HostPacer", "Slot"]


@dataclass(slots=True)
class _Host:
    limiter: asyncio.Semaphore
    #: monotonic time before which no new request starts
    paused_until: float = 0.0


class Slot:
    """A request's hold on its host's cap and the global cap; :meth:`release` gives both back,
    once (later calls do nothing)."""

    __slots__ = ("_global", "_host")

    def __init__(self, host: asyncio.Semaphore, global_: asyncio.Semaphore) -> None:
        self._host: asyncio.Semaphore | None = host
        self._global = global_

    def release(self) -> None:
        host, self._host = self._host, None
        if host is not None:
            self._global.release()
            host.release()


class HostPacer:
    def __init__(self, *, per_host: int, global_limit: int) -> None:
        if per_host < 1 or global_limit < 1:
            raise ValueError("connection limits must be at least 1")
        self.per_host = per_host
        self.global_limit = global_limit
        self._global = asyncio.Semaphore(global_limit)
        self._hosts: dict[str, _Host] = {}

    def _host(self, host: str) -> _Host:
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts[host] = _Host(asyncio.Semaphore(self.per_host))
        return state

    def widen(self, *, per_host: int, global_limit: int) -> None:
        """Raise the caps now, while requests hold slots (a value below the current cap is
        ignored: a cap is never lowered under requests that hold it). Waiting requests start
        at once on the new slots."""
        for _ in range(per_host - self.per_host):
            for state in self._hosts.values():
                state.limiter.release()  # one more slot (a plain Semaphore grows on release)
        for _ in range(global_limit - self.global_limit):
            self._global.release()
        self.per_host = max(self.per_host, per_host)
        self.global_limit = max(self.global_limit, global_limit)

    def pause(self, host: str, seconds: float) -> None:
        """No new request to ``host`` for ``seconds`` (extends, never shortens, a pause)."""
        state = self._host(host)
        state.paused_until = max(state.paused_until, time.monotonic() + seconds)

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[Slot]:
        """Hold a slot of ``host`` and a global one until the block ends, or until the
        :class:`Slot` it yields is released, whichever comes first."""
        state = self._host(host)
        await _wait_unpaused(state)
        await state.limiter.acquire()
        try:
            await self._global.acquire()
        except BaseException:
            state.limiter.release()
            raise
        slot = Slot(state.limiter, self._global)
        try:
            await _wait_unpaused(state)  # a pause may have started while we queued
            yield slot
        finally:
            slot.release()


async def _wait_unpaused(state: _Host) -> None:
    # A deadline that other tasks may push back while we sleep: re-check after each sleep.
    while (wait := state.paused_until - time.monotonic()) > 0:  # noqa: ASYNC110
        await anyio.sleep(wait)
