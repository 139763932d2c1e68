"""run_in_thread, the engine's hop to its disk threads: a cancelled caller still waits for the
call, and an error the call raises meanwhile is neither lost into the caller nor printed by
asyncio as "Future exception was never retrieved" (seen with two files on a full disk)."""

from __future__ import annotations

import asyncio
import gc
import threading
from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest

from bulkflex.transfer.engine import run_in_thread

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_cancelled_caller_waits_for_the_call_and_its_error_is_not_reported() -> None:
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
    release = threading.Event()
    ended = threading.Event()

    def write() -> None:
        release.wait(10)
        ended.set()
        raise OSError(28, "No space left on device")

    outcome: list[str] = []
    with ThreadPoolExecutor(1) as executor:
        scope = anyio.CancelScope()

        async def caller() -> None:
            with scope:
                await run_in_thread(executor, write)
            outcome.append("cancelled" if scope.cancelled_caught else "returned")

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            await asyncio.sleep(0.05)
            assert not ended.is_set() and outcome == []  # still waiting for the call
            release.set()
        assert ended.is_set()
    assert outcome == ["cancelled"]  # the cancellation, not the call's error
    gc.collect()
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert reported == []


async def test_an_error_of_the_call_reaches_the_caller() -> None:
    def fail() -> None:
        raise OSError(28, "No space left on device")

    with ThreadPoolExecutor(1) as executor, pytest.raises(OSError, match="No space left"):
        await run_in_thread(executor, fail)
