"""Fixtures for cluster tests: one real LocalCluster of 3 worker processes for the module, a
loopback file server in a background thread, and manifests of small deterministic files."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

from faultserver import FaultServer, sha256_multihash  # noqa: E402

WORKERS = 3


@pytest.fixture(scope="module")
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


def file_size(i: int) -> int:
    """4 to 16 KiB, varied."""
    return 4096 + (i * 977) % 12289


def make_manifest(
    server: FaultServer, folder: Path, count: int, *, prefix: str = "f", **file_options: object
) -> tuple[Path, dict[str, bytes]]:
    """Serve ``count`` files and write their manifest; returns it and {path: expected bytes}."""
    lines = []
    expected: dict[str, bytes] = {}
    for i in range(count):
        name = f"{prefix}{i:05d}.bin"
        server.add_file(name, file_size(i), **file_options)  # type: ignore[arg-type]
        data = server.content(name)
        path = f"d{i % 7}/{name}"
        expected[path] = data
        lines.append(
            json.dumps(
                {
                    "url": server.url(name),
                    "path": path,
                    "size": len(data),
                    "checksum": sha256_multihash(data),
                }
            )
        )
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest, expected


def assert_bytes_equal(dest: Path, expected: dict[str, bytes]) -> None:
    wrong = [p for p, data in expected.items() if (dest / p).read_bytes() != data]
    assert not wrong, f"{len(wrong)} files differ, e.g. {wrong[:3]}"
    leftovers = [p for p in dest.rglob("*.part")]
    assert not leftovers, leftovers[:3]
