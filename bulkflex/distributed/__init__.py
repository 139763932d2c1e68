"""Scale out: one manifest over a Dask cluster, with the same guarantees as on one machine.

The manifest is split into shards by a stable hash of each path (:func:`shard_index`); every
shard is one Dask task running the ordinary engine on a worker, with its own state file
``DEST/.bulkflex/shard-<i>.sqlite``. See :func:`download_on_cluster` for the guarantees and
:func:`combined_counts` for the one status of a destination.

Needs the ``dask`` extra (``distributed``); importing this package without it raises
ImportError, so the rest of bulkflex never imports it eagerly.
"""

from __future__ import annotations

from bulkflex.distributed._client import (
    ClusterError,
    ClusterUnreachable,
    connect,
    download_on_cluster,
    split_evenly,
)
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
from bulkflex.distributed._status import combined_counts, shard_state_files

__all__ = [
    "ClusterError",
    "ClusterUnreachable",
    "ShardInfo",
    "ShardPlan",
    "choose_shards",
    "combined_counts",
    "connect",
    "download_on_cluster",
    "read_plan",
    "shard_index",
    "shard_manifest_path",
    "shard_state_files",
    "shard_state_name",
    "split_evenly",
    "split_manifest",
]
