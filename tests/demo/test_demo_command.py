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
