"""``bulkflex demo`` end to end in a subprocess: the README's first command."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from bulkflex.manifest import read_manifest


def test_demo_downloads_verifies_and_reruns_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    result = subprocess.run(
        [sys.executable, "-m", "bulkflex", "demo", "--port", "0", "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "bulkflex: planned 8 items (catalog matched 8), 32 assets," in out
    assert "recovered from: 1 x 429 with Retry-After, 1 cut connection(s)" in out
    assert "rerun fetched 0 B with 0 data requests" in out
    dest = tmp_path / "demo-out"
    entries = [entry for _, entry in read_manifest(dest / "manifest.jsonl")]
    assert len(entries) == 32
    checked = 0
    for entry in entries:
        data = (dest / entry.path).read_bytes()
        if entry.size is not None:
            assert len(data) == entry.size
        if entry.checksum is not None:
            assert entry.checksum == "1220" + hashlib.sha256(data).hexdigest()
            checked += 1
    assert checked == 16
    assert f"checked again on disk: {checked} by sha2-256 checksum" in out


def test_get_plans_and_downloads_in_one_go(tmp_path: Path) -> None:
    from bulkflex.demo import DemoConfig, DemoServer

    with DemoServer(DemoConfig(data_size=(10_000, 50_000))) as server:
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env["DEMO_TOKEN"] = server.issue_token()
        dest = tmp_path / "out"
        args = [
            sys.executable, "-m", "bulkflex", "get", server.catalog_url,
            "-c", "BiomassLevel1b", "--datetime", "2025-06-01T00:00:00Z/2025-06-01T02:00:00Z",
            "--asset", "enclosure_*", "-d", str(dest), "--token-env", "DEMO_TOKEN",
            "--no-progress",
        ]  # fmt: skip
        first = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert first.stdout.startswith("bulkflex: planned 5 items (catalog matched 5), 15 assets")
        entries = [e for _, e in read_manifest(dest / ".bulkflex" / "manifest.jsonl")]
        assert len(entries) == 15
        for entry in entries:
            assert (dest / entry.path).stat().st_size == entry.size
        served = server.stats.bytes_served
        again = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
        assert again.returncode == 0, again.stderr
        assert server.stats.bytes_served == served
