"""Scale out: one manifest over a Dask cluster, or over worker processes of this machine, with
the same guarantees as on one machine.

The manifest is split into shards by a stable hash of each path (:func:`shard_index`); every
shard is one Dask task running the ordinary engine on a worker, with its own state file
``DEST/.bulkflex/shard-<i>.sqlite``. See :func:`download_on_cluster` for the guarantees and
:func:`combined_counts` for the one status of a destination.

:func:`download_in_processes` runs the same sharded job on worker processes of this machine
(no Dask needed): for jobs where one event loop, one core, is the limit.

The cluster functions need the ``dask`` extra (``distributed``) and import it on first use;
the sharding and status helpers do not, so ``bulkflex status`` works without Dask installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bulkflex.distributed._shards import (
    ShardInfo,
    ShardPlan,
    choose_shards,
    read_plan,
    shard_index,
    shard_manifest_path,
    shard_state_name,
    split_manifest,
)
from bulkflex.distributed._status import (
    combined_counts,
    layout,
    shard_state_files,
    use_processes,
)

if TYPE_CHECKING:
    from bulkflex.distributed._client import ClusterUnreachable, connect, download_on_cluster
    from bulkflex.distributed._job import ClusterError, split_evenly
    from bulkflex.distributed._processes import download_in_processes

#: Loaded on first use: the Dask client needs the dask extra, and the job machinery (worker
#: pool, job loop, engine) is not wanted by ``bulkflex status`` or a one-process download.
_LAZY = {
    "ClusterUnreachable": "_client",
    "connect": "_client",
    "download_on_cluster": "_client",
    "ClusterError": "_job",
    "split_evenly": "_job",
    "download_in_processes": "_processes",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ClusterError",
    "ClusterUnreachable",
    "ShardInfo",
    "ShardPlan",
    "choose_shards",
    "combined_counts",
    "connect",
    "download_in_processes",
    "download_on_cluster",
    "layout",
    "read_plan",
    "shard_index",
    "shard_manifest_path",
    "shard_state_files",
    "shard_state_name",
    "split_evenly",
    "split_manifest",
    "use_processes",
]
