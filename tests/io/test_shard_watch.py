"""A shard's watcher passes the job's wider caps to its engine: each new pair once, and never
an error when the engine has stopped reading (it is in its final commit when the job widens)."""

from __future__ import annotations

import math

import anyio
import pytest

from bulkflex.distributed._shard import ShardLink, _watch

pytestmark = pytest.mark.anyio


def link_reading(values: list[tuple[int, int] | None], stop: anyio.Event) -> ShardLink:
    """A link whose caps are ``values``, one per look; ``stop`` is set after the last look."""
    pending = list(values)

    def read_caps() -> tuple[int, int] | None:
        if not pending:
            stop.set()
            return None
        return pending.pop(0)

    return ShardLink(
        send_progress=lambda message: None,
        read_token=lambda: {},
        ask_refresh=lambda generation, host: None,
        should_stop=lambda: False,
        read_caps=read_caps,
        watch_s=0.001,
    )


async def test_each_new_pair_of_caps_reaches_the_engine_once() -> None:
    stop = anyio.Event()
    link = link_reading([None, (4, 4), (4, 4), None, (8, 16), (8, 16)], stop)
    send, receive = anyio.create_memory_object_stream[tuple[int, int]](math.inf)
    async with send, receive:
        with anyio.fail_after(10):
            await _watch(stop, link, None, send)
        received = [
            receive.receive_nowait() for _ in range(receive.statistics().current_buffer_used)
        ]
    assert received == [(4, 4), (8, 16)]


async def test_caps_sent_after_the_engine_stopped_reading_are_dropped_quietly() -> None:
    stop = anyio.Event()
    link = link_reading([(4, 4), (8, 8)], stop)
    send, receive = anyio.create_memory_object_stream[tuple[int, int]](math.inf)
    receive.close()  # the engine's workers are done
    async with send:
        with anyio.fail_after(10):
            await _watch(stop, link, None, send)  # no BrokenResourceError
    assert stop.is_set()
