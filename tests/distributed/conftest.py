"""Fixtures for cluster tests: one real LocalCluster of 3 worker processes (processes, not
threads) shared by the cluster tests and always closed, and a loopback file server in a
background thread."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

distributed = pytest.importorskip("distributed")

from dask_helpers import WORKERS  # noqa: E402
from faultserver import FaultServer  # noqa: E402


@pytest.fixture(scope="session")
def client() -> Iterator[distributed.Client]:
    """A LocalCluster of worker processes (not threads), one thread each; always closed."""
    cluster = distributed.LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    try:
        with distributed.Client(cluster) as dask_client:
            dask_client.wait_for_workers(WORKERS, timeout=60)
            yield dask_client
    finally:
        cluster.close()


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running
