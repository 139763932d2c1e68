"""Helpers of the cluster tests: manifests of small deterministic files, byte checks."""

from __future__ import annotations

import json
from pathlib import Path

from faultserver import FaultServer, sha256_multihash

#: worker processes of the test cluster
WORKERS = 3


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
