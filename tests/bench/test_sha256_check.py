"""``benchmarks/_sha256_check.py``, the checksum pass of the benchmark's "then sha256" rows: it
passes only when every listed file has its sha256, and names the first one that does not."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

CHECKER = Path(__file__).resolve().parents[2] / "benchmarks" / "_sha256_check.py"


def run_check(sums: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECKER), str(sums), str(dest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """Three files under ``dest`` (one in a sub-folder, one empty) and their sums file."""
    dest = tmp_path / "dest"
    (dest / "d000").mkdir(parents=True)
    files = {"a.bin": b"a" * 300_000, "d000/b.bin": bytes(range(256)) * 100, "empty.bin": b""}
    lines = []
    for rel, data in files.items():
        (dest / rel).write_bytes(data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {rel}\n")
    sums = tmp_path / "sums.txt"
    sums.write_text("".join(lines))
    return sums, dest


def test_every_file_matches(tree: tuple[Path, Path]) -> None:
    sums, dest = tree
    result = run_check(sums, dest)
    assert (result.returncode, result.stderr) == (0, "")


def test_one_changed_byte_fails_and_names_the_file(tree: tuple[Path, Path]) -> None:
    sums, dest = tree
    data = bytearray((dest / "d000/b.bin").read_bytes())
    data[-1] ^= 1
    (dest / "d000/b.bin").write_bytes(data)
    result = run_check(sums, dest)
    assert result.returncode == 1
    actual = hashlib.sha256(data).hexdigest()
    assert result.stderr.startswith(f"d000/b.bin: sha256 {actual}, expected ")
    assert len(result.stderr.splitlines()) == 1


def test_a_missing_file_fails(tree: tuple[Path, Path]) -> None:
    sums, dest = tree
    (dest / "a.bin").unlink()
    result = run_check(sums, dest)
    assert (result.returncode, result.stderr) == (1, "a.bin: missing\n")
