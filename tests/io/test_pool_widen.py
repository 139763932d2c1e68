"""The engine's worker pool (``_pool``) and caps widened while it runs: a shard in a worker
process or on Dask gets a wider share of the connections when another shard finishes.

A wider cap that reached the pool in the loop step right after its last worker had ended found
the workers' task group closed: ``run.widen`` started a worker there, anyio refused ("This task
group is not active"), and the whole shard crashed at its very end (2 runs in 80 of 2000 files
over 2 worker processes, exit 1). The real engine reaches that step by chance. A stand-in for
the run (the three things ``_pool`` drives: workers, the commit loop, ``widen``) sends the cap
from a callback chained 0 to 7 loop steps after its one worker ends, which puts it in each of
the steps around the end of the workers' group, the same way on every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from types import SimpleNamespace

import anyio
import pytest
from anyio.abc import TaskGroup

from bulkflex.transfer.engine import _pool

STEPS = range(8)


class StandInRun:
    """What ``_pool`` drives. Its first worker ends at once, sending a wider cap ``steps``
    loop steps later; ``widen`` starts a worker as ``_Run.widen`` does."""

    def __init__(self, caps: anyio.abc.ObjectSendStream[tuple[int, int]], steps: int) -> None:
        self.pacer = SimpleNamespace(global_limit=1)
        self.interrupted = False
        self.widened: list[tuple[int, int]] = []
        self.workers_started = 0
        self._caps = caps
        self._steps = steps

    async def commit_loop(self) -> None:
        await anyio.sleep_forever()

    async def work(self) -> None:
        self.workers_started += 1
        if self.workers_started > 1:
            return  # the workers widen starts, and the pool's second one, find nothing to do
        loop = asyncio.get_running_loop()

        def later(steps: int) -> None:
            if steps:
                loop.call_soon(later, steps - 1)
            else:  # as the shard's watcher does: after the run, nobody reads any more
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._caps.send_nowait((4, 4))

        later(self._steps)

    def widen(self, per_host: int, connections: int, workers: TaskGroup) -> None:
        self.widened.append((per_host, connections))
        workers.start_soon(self.work)


async def run_pool(steps: int) -> StandInRun:
    send, receive = anyio.create_memory_object_stream[tuple[int, int]](math.inf)
    async with send, receive:
        run = StandInRun(send, steps)
        await _pool(run, None, receive)  # type: ignore[arg-type]
    return run


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_cap_widened_as_the_last_worker_ends_never_crashes_the_pool() -> None:
    runs = {}
    for steps in STEPS:
        # before the fix, one of these raised an ExceptionGroup of RuntimeError
        with anyio.fail_after(5):
            runs[steps] = await run_pool(steps)
    # the early caps reach the pool while its workers run, and widen it
    assert runs[0].widened == [(4, 4)]
    assert runs[0].workers_started == 3
    # a cap that comes after the last worker is dropped (nothing is left to widen for), as
    # is one sent after the pool returned
    late = [steps for steps, run in runs.items() if not run.widened]
    assert late, "no cap came after the workers: the test no longer reaches the race"
    assert all(runs[steps].workers_started == 2 for steps in late)
