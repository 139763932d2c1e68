"""PartFile starts the disk write of a file left for the group commit at once (Linux
``sync_file_range``), on real files. Which files start it is observed by recording the calls
around the real function; the bytes on disk are checked every time."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from bulkflex.transfer import files
from bulkflex.transfer.files import Chunks, FolderGuard, PartFile

KiB = 1024

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="sync_file_range is Linux's"
)


def open_part(root: Path, name: str = "f.bin") -> PartFile:
    part = PartFile(root, name, FolderGuard(root))
    part.open(truncate=True)
    return part


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The (offset, length) of every writeback started; each call still goes to the kernel."""
    real = files._SYNC_FILE_RANGE
    assert real is not None
    calls: list[tuple[int, int]] = []

    def record(fd: int, offset: int, length: int, flags: int) -> int:
        assert flags == files._SYNC_FILE_RANGE_WRITE
        calls.append((offset, length))
        result = real(fd, offset, length, flags)
        assert result == 0  # the binding passes 64-bit offsets and lengths right
        return result

    monkeypatch.setattr(files, "_SYNC_FILE_RANGE", record)
    return calls


def finish(part: PartFile, size: int, *, durable: bool) -> None:
    result = part.finish(size, expected_size=size, checksum=None, hasher=None, durable=durable)
    assert result.ok, result.reason


@linux_only
def test_a_file_finished_for_the_group_commit_starts_its_writeback_from_256_kib(
    tmp_path: Path, started: list[tuple[int, int]]
) -> None:
    """Only files the group commit will sync later start their write at once, and only from
    256 KiB up; a file synced on finishing, and every single write, leave it to the sync."""
    rng = random.Random(1)
    files_written: dict[str, bytes] = {}
    for name, size, durable in [
        ("small.bin", 255 * KiB, False),
        ("grouped.bin", 256 * KiB, False),
        ("synced.bin", 512 * KiB, True),
    ]:
        data = files_written[name] = rng.randbytes(size)
        part = open_part(tmp_path, name)
        chunks = Chunks()
        chunks.append(memoryview(data[: size // 2]))
        chunks.append(memoryview(data[size // 2 :]))
        part.write_chunks_at(0, chunks, None)
        finish(part, size, durable=durable)
    assert started == [(0, 256 * KiB)]
    assert (tmp_path / "grouped.bin.part").read_bytes() == files_written["grouped.bin"]
    assert (tmp_path / "small.bin.part").read_bytes() == files_written["small.bin"]
    assert (tmp_path / "synced.bin").read_bytes() == files_written["synced.bin"]


@linux_only
def test_the_binding_passes_offsets_past_4_gib(tmp_path: Path) -> None:
    """A sparse file written at 5 GiB: the real call accepts the 64-bit range (with a wrong
    argument type, ctypes would refuse or truncate it)."""
    assert files._SYNC_FILE_RANGE is not None
    far = 5 * 1024**3
    part = open_part(tmp_path)
    part.write_at(far, b"x" * KiB, None)
    assert part._fd is not None
    assert files._SYNC_FILE_RANGE(part._fd, far, KiB, files._SYNC_FILE_RANGE_WRITE) == 0
    part.close()


@linux_only
def test_a_failed_writeback_start_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Advisory: the flush that makes the bytes durable reports real errors."""
    monkeypatch.setattr(files, "_SYNC_FILE_RANGE", lambda *args: -1)
    data = random.Random(2).randbytes(512 * KiB)
    part = open_part(tmp_path)
    part.write_at(0, data, None)
    finish(part, len(data), durable=False)
    assert Path(part.part).read_bytes() == data


def test_binding_is_loaded_where_the_call_exists() -> None:
    assert (files._SYNC_FILE_RANGE is not None) == sys.platform.startswith("linux")
