# What runs on a Dask worker: one shard = one task = one engine run (see ``_shard``), with the
# job's messages carried by Dask: progress and token requests on the worker's event topics,
# the token in a Dask Variable, the stop signal in a Dask Event.
#
# Rules kept here:
# - Progress reaches the client through the worker's event topic (thread-safe, never blocks).
# - The task stops early, with every transfer's progress saved, when the job's stop Event is
#   set (client Ctrl-C) or Dask cancelled the task (the client went away).
"""The Dask shard task: :func:`run_shard` (runs on a worker, returns the engine's Summary)."""

from __future__ import annotations

from typing import Any

import distributed

from bulkflex.distributed._auth import TokenState
from bulkflex.distributed._shard import ShardFailure, ShardLink, ShardTask, run_shard_locked
from bulkflex.transfer import Summary

__all__ = ["run_shard"]


def run_shard(task: ShardTask) -> Summary | ShardFailure:
    """Download one shard on this worker (a Dask task; blocking)."""
    worker = distributed.get_worker()
    client = distributed.get_client()
    stop_event = distributed.Event(task.names.stop, client=client)
    variable = distributed.Variable(task.names.token, client=client)
    key = worker.get_current_task()

    def read_token() -> TokenState:
        value = variable.get(timeout=30)
        return value if isinstance(value, dict) else {}

    link = ShardLink(
        send_progress=lambda message: worker.log_event(task.names.progress_topic, message),
        read_token=read_token,
        ask_refresh=lambda generation, host: worker.log_event(
            task.names.auth_topic, {"generation": generation, "host": host}
        ),
        should_stop=lambda: stop_event.is_set() or _cancelled(worker, key),
    )
    return run_shard_locked(task, link)


def _cancelled(worker: distributed.Worker, key: Any) -> bool:
    """True when Dask cancelled this task (its client released it); best effort."""
    try:
        state = worker.state.tasks.get(key)
    except AttributeError:  # a Worker without the state machine API
        return False
    return state is not None and state.state == "cancelled"
