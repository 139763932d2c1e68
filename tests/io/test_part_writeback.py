"""PartFile starts the disk write of large writes at once (Linux ``sync_file_range``), on real
files. Which writes start it is observed by recording the calls around the real function; the
bytes on disk are checked every time."""

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


def open_part(root: Path) -> PartFile:
    part = PartFile(root, "f.bin", FolderGuard(root))
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


@linux_only
def test_writes_of_256_kib_or_more_start_their_writeback_smaller_ones_do_not(
    tmp_path: Path, started: list[tuple[int, int]]
) -> None:
    rng = random.Random(1)
    small = rng.randbytes(16 * KiB)
    large = rng.randbytes(256 * KiB)
    pieces = [rng.randbytes(100 * KiB) for _ in range(3)]
    far = 5 * 1024**3  # past 4 GiB: a sparse file, offsets that need 64 bits
    part = open_part(tmp_path)
    part.write_at(0, small, None)
    part.write_at(len(small), large, None)
    chunks = Chunks()
    for piece in pieces:
        chunks.append(memoryview(piece))
    part.write_chunks_at(far, chunks, None)
    part.close()

    assert started == [(len(small), len(large)), (far, 300 * KiB)]
    with open(part.part, "rb") as handle:
        assert handle.read(len(small) + len(large)) == small + large
        handle.seek(far)
        assert handle.read() == b"".join(pieces)


@linux_only
def test_a_failed_writeback_start_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Advisory: the flush that makes the bytes durable reports real errors."""
    monkeypatch.setattr(files, "_SYNC_FILE_RANGE", lambda *args: -1)
    data = random.Random(2).randbytes(512 * KiB)
    part = open_part(tmp_path)
    part.write_at(0, data, None)
    part.sync()
    part.close()
    assert Path(part.part).read_bytes() == data


def test_binding_is_loaded_where_the_call_exists() -> None:
    assert (files._SYNC_FILE_RANGE is not None) == sys.platform.startswith("linux")
