# Benchmark workloads: sets of random (incompressible) files generated once into a cache folder,
# with their sha256 recorded, and the check of a tool's output against them.
#
# Layout under the cache root: <set name>/dNNN/fNNNNNN.bin, at most PER_DIR files a folder, so
# folder listings (rclone, stac-asset items) stay realistic. A set is generated only once: an
# ``index.json`` written last marks it complete; a half-written set is regenerated.

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from _sha256_check import sha256_hex

__all__ = ["WORKLOADS", "FileSet", "FileSpec", "ensure_set", "file_set_spec", "verify_tree"]

PER_DIR = 100
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True)
class FileSpec:
    rel: str  # relative path, "/"-separated, e.g. "d000/f000000.bin"
    size: int
    sha256: str


@dataclass(frozen=True)
class FileSet:
    name: str  # folder name under the cache root and the server root
    root: Path
    files: tuple[FileSpec, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


# workload -> (count, size) full and --quick; "kill" reuses the large files.
WORKLOADS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "small": ((2000, 256 * KiB), (200, 256 * KiB)),
    "large": ((4, 512 * MiB), (4, 32 * MiB)),
    "tiny": ((20_000, 16 * KiB), (2000, 16 * KiB)),
    "kill": ((4, 512 * MiB), (4, 32 * MiB)),
}


def file_set_spec(workload: str, quick: bool) -> tuple[int, int]:
    full, small = WORKLOADS[workload]
    return small if quick else full


def _set_name(count: int, size: int) -> str:
    return f"{count}x{size // KiB}KiB"


def ensure_set(cache: Path, count: int, size: int) -> FileSet:
    """Return the set of ``count`` files of ``size`` bytes, generating it if needed."""
    name = _set_name(count, size)
    cache.mkdir(parents=True, exist_ok=True)
    # Concurrent runs share the cache: one generates, the others wait and then read its index.
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_locked(cache, name, count, size)


def _ensure_locked(cache: Path, name: str, count: int, size: int) -> FileSet:
    root = cache / name
    index = root / "index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        files = tuple(FileSpec(d["rel"], d["size"], d["sha256"]) for d in data["files"])
        if len(files) == count and all(f.size == size for f in files):
            return FileSet(name, root, files)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    specs: list[FileSpec] = []
    block = 4 * MiB
    for i in range(count):
        rel = f"d{i // PER_DIR:03d}/f{i:06d}.bin"
        path = root / rel
        path.parent.mkdir(exist_ok=True)
        h = hashlib.sha256()
        with open(path, "wb") as f:
            left = size
            while left:
                chunk = os.urandom(min(block, left))
                h.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        specs.append(FileSpec(rel, size, h.hexdigest()))
    tmp = index.with_suffix(".tmp")
    tmp.write_text(json.dumps({"files": [s.__dict__ for s in specs]}))
    tmp.replace(index)
    return FileSet(name, root, tuple(specs))


def verify_tree(dest: Path, files: tuple[FileSpec, ...]) -> list[str]:
    """Check every expected file under ``dest``; return one problem line per bad file.

    Extra files (control files, state folders) are ignored; a missing file, a wrong size and a
    wrong sha256 are problems. An empty list means the output is exactly the source.
    """
    problems: list[str] = []
    for spec in files:
        path = dest / spec.rel
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            problems.append(f"{spec.rel}: missing")
            continue
        if size != spec.size:
            problems.append(f"{spec.rel}: size {size}, expected {spec.size}")
        elif sha256_hex(path) != spec.sha256:
            problems.append(f"{spec.rel}: sha256 mismatch")
    return problems
