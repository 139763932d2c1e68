"""The package's public surface is explicit and small; the one-call download works."""

from __future__ import annotations

import hashlib
import json
import re
import types
from pathlib import Path

import pytest

import bulkflex


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name in dir(bulkflex)
        if not name.startswith("_")
        and not isinstance(getattr(bulkflex, name), types.ModuleType)  # imported submodules
        and name not in {"TYPE_CHECKING", "Any"}
    } | {"download", "plan"}
    assert sorted(bulkflex.__all__) == sorted(public | {"__version__"})
    for name in bulkflex.__all__:
        assert getattr(bulkflex, name) is not None


def test_download_from_python_fetches_and_verifies(tmp_path: Path) -> None:
    from faultserver import FaultServer

    with FaultServer() as server:
        server.add_file("a.bin", 300_000)
        data = server.content("a.bin")
        manifest = tmp_path / "m.jsonl"
        manifest.write_text(
            json.dumps(
                {
                    "url": server.url("a.bin"),
                    "path": "x/a.bin",
                    "size": len(data),
                    "checksum": "1220" + hashlib.sha256(data).hexdigest(),
                }
            )
            + "\n"
        )
        summary = bulkflex.download(manifest, tmp_path / "d", connections=2)
        assert summary.ok and summary.files_done == 1
        assert (tmp_path / "d" / "x" / "a.bin").read_bytes() == data
        again = bulkflex.download(manifest, tmp_path / "d")
        assert again.files_done == 0 and again.files_skipped == 1
        assert len(server.stats("a.bin").gets) == 1


def test_download_from_python_in_worker_processes(tmp_path: Path) -> None:
    from faultserver import FaultServer

    with FaultServer() as server:
        lines, expected = [], {}
        for i in range(60):  # a shard needs 25 entries or more: 2 shards
            server.add_file(f"f{i}.bin", 3000 + i)
            data = server.content(f"f{i}.bin")
            expected[f"d{i % 3}/f{i}.bin"] = data
            record = {
                "url": server.url(f"f{i}.bin"),
                "path": f"d{i % 3}/f{i}.bin",
                "size": len(data),
                "checksum": "1220" + hashlib.sha256(data).hexdigest(),
            }
            lines.append(json.dumps(record) + "\n")
        manifest = tmp_path / "m.jsonl"
        manifest.write_text("".join(lines))
        dest = tmp_path / "d"
        summary = bulkflex.download(manifest, dest, processes=2, connections=4)
        assert summary.ok and summary.files_done == 60
        for path, data in expected.items():
            assert (dest / path).read_bytes() == data
        state = dest / ".bulkflex"
        assert sorted(p.name for p in state.glob("shard-*.sqlite")) == [
            "shard-0.sqlite",
            "shard-1.sqlite",
        ]
        assert not (state / "state.sqlite").exists()
        # the layout sticks: a call without processes resumes in the shards, fetching nothing
        again = bulkflex.download(manifest, dest)
        assert again.files_done == 0 and again.files_skipped == 60
        assert not (state / "state.sqlite").exists()
        assert all(len(server.stats(f"f{i}.bin").gets) == 1 for i in range(60))


def test_download_from_python_of_a_bad_manifest_raises_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"url": "http://127.0.0.1:9/a", "path": "a"}\n{"url": 1}\n')
    for processes in (1, 2):
        with pytest.raises(bulkflex.ManifestError, match=f"^{re.escape(str(manifest))}:2: "):
            bulkflex.download(manifest, tmp_path / "d", processes=processes)
        assert not (tmp_path / "d").exists()
