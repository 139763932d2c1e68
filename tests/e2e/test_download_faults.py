"""End to end through the real CLI against a misbehaving server: every fault ends in the exact
bytes of the source (or a clear failure), and the server's counters show what was re-fetched.

Retries back off for at least half a second, so each test keeps its fault count small.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from clirun import assert_files, download_args, entry, files_under, run_cli, write_manifest
from faultserver import FaultServer, KiB, MiB, Rule, sha256_multihash

#: The flush window the tests ask for; a retry may re-fetch at most this much per connection.
WINDOW = 64 * KiB
FLUSH = ("--flush-bytes", str(WINDOW), "--flush-seconds", "30")


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


def range_start(header: str | None) -> int:
    """The first byte asked for by a ``Range: bytes=N-`` header (0 without one)."""
    if header is None:
        return 0
    assert header.startswith("bytes=") and header.endswith("-"), header
    return int(header[len("bytes=") : -1])


def test_resets_resume_from_durable_offset(server: FaultServer, tmp_path: Path) -> None:
    size, cut, resets = 2 * MiB, 400 * KiB, 2
    server.add_file("a.bin", size, Rule(reset_after=cut, times=resets))
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin")])
    result = run_cli(*download_args(manifest, tmp_path / "d", *FLUSH))
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin")})
    stats = server.stats("a.bin")
    assert [r.ended for r in stats.gets] == ["reset"] * resets + ["complete"]
    starts = [range_start(r.range) for r in stats.gets]
    assert starts[0] == 0 and starts[1] > 0 and starts[2] > starts[1], starts
    assert all(r.if_range == server.etag("a.bin") for r in stats.gets[1:])
    assert stats.bytes_sent <= size + resets * WINDOW, [
        (r.range, r.status, r.bytes_sent, r.ended) for r in stats.requests
    ]


def test_short_body_is_resumed_not_accepted(server: FaultServer, tmp_path: Path) -> None:
    server.add_file("a.bin", 1 * MiB, Rule(short_after=300 * KiB))
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin", size=False)])
    result = run_cli(*download_args(manifest, tmp_path / "d", *FLUSH))
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin")})
    stats = server.stats("a.bin")
    assert [r.ended for r in stats.gets] == ["short", "complete"]
    assert range_start(stats.gets[1].range) > 0
    assert stats.bytes_sent <= 1 * MiB + WINDOW


def test_short_body_without_checksum_or_size_never_passes_as_complete(
    server: FaultServer, tmp_path: Path
) -> None:
    """Only Content-Length says the body is short: the file must still come out whole."""
    server.add_file("a.bin", 700 * KiB, Rule(short_after=100 * KiB, times=2))
    manifest = write_manifest(
        tmp_path / "m.jsonl", [entry(server, "a.bin", size=False, checksum=False)]
    )
    result = run_cli(*download_args(manifest, tmp_path / "d", *FLUSH))
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin")})


def test_server_ignoring_range_on_resume_is_never_written_at_an_offset(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file(
        "a.bin", 1 * MiB, Rule(reset_after=300 * KiB), Rule(ignore_range=True, times=None)
    )
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin")])
    result = run_cli(*download_args(manifest, tmp_path / "d", *FLUSH))
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin")})
    gets = server.stats("a.bin").gets
    assert gets[1].range is not None and gets[1].status == 200
    assert gets[-1].ended == "complete"


def test_server_ignoring_range_without_checksum_still_gives_exact_bytes(
    server: FaultServer, tmp_path: Path
) -> None:
    """No checksum to catch a misplaced body: only the engine's response check protects."""
    server.add_file(
        "a.bin", 1 * MiB, Rule(reset_after=300 * KiB), Rule(ignore_range=True, times=None)
    )
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin", checksum=False)])
    result = run_cli(*download_args(manifest, tmp_path / "d", *FLUSH))
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin")})


@pytest.mark.parametrize("how", ["start", "total"])
def test_wrong_content_range_is_rejected(
    server: FaultServer, tmp_path: Path, how: Literal["start", "total"]
) -> None:
    server.add_file(
        "a.bin",
        1 * MiB,
        Rule(reset_after=300 * KiB),
        Rule(wrong_content_range=how, skip=1, times=1),
    )
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin", checksum=False)])
    result = run_cli(*download_args(manifest, tmp_path / "d", *FLUSH))
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin")})
    gets = server.stats("a.bin").gets
    assert len(gets) >= 3 and gets[1].status == 206, [(r.status, r.range) for r in gets]


@pytest.mark.parametrize("validator", ["etag", "last-modified"])
def test_file_changed_between_runs_ends_as_the_new_file(
    server: FaultServer, tmp_path: Path, validator: str
) -> None:
    with_etag = validator == "etag"
    server.add_file("a.bin", 1 * MiB, Rule(reset_after=400 * KiB, times=None), etag=with_etag)
    manifest = write_manifest(
        tmp_path / "m.jsonl", [entry(server, "a.bin", size=False, checksum=False)]
    )
    dest = tmp_path / "d"
    first = run_cli(*download_args(manifest, dest, *FLUSH, "--retries", "1"))
    assert first.returncode == 1, first.describe()
    assert "a.bin" not in files_under(dest)
    old_validator = server.etag("a.bin", 1) if with_etag else server.last_modified("a.bin", 1)
    served_before = len(server.stats("a.bin").gets)

    server.clear_rules("a.bin")
    server.set_version("a.bin", 2, size=900 * KiB)
    second = run_cli(*download_args(manifest, dest, *FLUSH))
    assert second.returncode == 0, second.describe()
    assert_files(dest, {"a.bin": server.content("a.bin", 2)})
    resumed = server.stats("a.bin").gets[served_before]
    assert range_start(resumed.range) > 0, resumed.range
    assert resumed.if_range == old_validator
    assert resumed.status == 200  # the changed file came back whole


def test_file_changed_mid_run_restarts_from_zero(server: FaultServer, tmp_path: Path) -> None:
    server.add_file("a.bin", 1 * MiB, Rule(reset_after=500 * KiB), change_after=1)
    manifest = write_manifest(
        tmp_path / "m.jsonl", [entry(server, "a.bin", size=False, checksum=False)]
    )
    result = run_cli(*download_args(manifest, tmp_path / "d", *FLUSH))
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin", 2)})
    gets = server.stats("a.bin").gets
    assert gets[1].if_range == server.etag("a.bin", 1)


def test_checksum_mismatch_retries_once_from_zero_then_fails(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("a.bin", 300 * KiB, Rule(corrupt_at=123_456, times=None))
    server.add_file("ok.bin", 10 * KiB)
    good = server.content("a.bin")
    bad = bytearray(good)
    bad[123_456] ^= 0xFF
    manifest = write_manifest(
        tmp_path / "m.jsonl", [entry(server, "a.bin", "sub/a.bin"), entry(server, "ok.bin")]
    )
    dest = tmp_path / "d"
    result = run_cli(*download_args(manifest, dest))
    assert result.returncode == 1, result.describe()
    assert len(result.failed_lines) == 1, result.describe()
    line = result.failed_lines[0]
    assert line.startswith("FAILED sub/a.bin: checksum mismatch"), line
    expected_hex = sha256_multihash(good)[4:]
    actual_hex = sha256_multihash(bytes(bad))[4:]
    assert "expected" in line and expected_hex in line, line
    assert "got" in line and actual_hex in line, line
    assert line.index(expected_hex) < line.index(actual_hex), line
    assert files_under(dest).keys() <= {"ok.bin", "sub/a.bin.part"}
    assert not (dest / "sub" / "a.bin").exists()
    gets = server.stats("a.bin").gets
    assert [r.range for r in gets] == [None, None], "expected one retry from byte 0"


def test_checksum_mismatch_once_then_good_bytes_succeeds(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("a.bin", 300 * KiB, Rule(corrupt_at=0))
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin")])
    result = run_cli(*download_args(manifest, tmp_path / "d"))
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin")})
    assert len(server.stats("a.bin").gets) == 2


@pytest.mark.parametrize("times", [1, None], ids=["once", "always"])
def test_gzip_despite_identity_never_lands_under_the_name(
    server: FaultServer, tmp_path: Path, times: int | None
) -> None:
    """Refusing it (one clear line) or decoding it are both fine; compressed bytes are not."""
    server.add_file("a.bin", 200 * KiB, Rule(gzip=True, times=times))
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin", checksum=False)])
    dest = tmp_path / "d"
    result = run_cli(*download_args(manifest, dest, "--retries", "1"))
    assert server.stats("a.bin").gets[0].accept_encoding == "identity"
    if result.returncode == 0:
        assert_files(dest, {"a.bin": server.content("a.bin")})
        return
    assert result.returncode == 1, result.describe()
    assert not (dest / "a.bin").exists()
    assert len(result.failed_lines) == 1, result.describe()
    assert result.failed_lines[0].startswith("FAILED a.bin: "), result.describe()
    assert "gzip" in result.failed_lines[0], result.describe()
    if times == 1:  # the server behaves now: running the same command again completes
        again = run_cli(*download_args(manifest, dest))
        assert again.returncode == 0, again.describe()
        assert_files(dest, {"a.bin": server.content("a.bin")})


def test_retry_after_seconds_is_honoured(server: FaultServer, tmp_path: Path) -> None:
    server.add_file("a.bin", 50 * KiB, Rule(status=429, retry_after=2))
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin")])
    result = run_cli(*download_args(manifest, tmp_path / "d"))
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin")})
    gets = server.stats("a.bin").gets
    assert [r.status for r in gets] == [429, 200]
    gap = gets[1].arrived - gets[0].arrived
    assert gap >= 1.9, f"retried {gap:.2f} s after a 429 with Retry-After: 2"


def test_retry_after_http_date_is_honoured(server: FaultServer, tmp_path: Path) -> None:
    server.add_file("a.bin", 50 * KiB, Rule(status=503, retry_after=3, retry_after_date=True))
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin")])
    result = run_cli(*download_args(manifest, tmp_path / "d"))
    assert result.returncode == 0, result.describe()
    gets = server.stats("a.bin").gets
    assert [r.status for r in gets] == [503, 200]
    # The date has one-second resolution, so "3 s ahead" may mean just over 2 s.
    gap = gets[1].arrived - gets[0].arrived
    assert gap >= 1.8, f"retried {gap:.2f} s after a 503 with a Retry-After date 3 s ahead"


def test_server_errors_are_retried_until_the_file_arrives(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("a.bin", 100 * KiB, Rule(status=500, times=2))
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin")])
    result = run_cli(*download_args(manifest, tmp_path / "d"))
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin")})
    assert [r.status for r in server.stats("a.bin").gets] == [500, 500, 200]


def test_retry_budget_exhausted_fails_the_entry(server: FaultServer, tmp_path: Path) -> None:
    server.add_file("a.bin", 100 * KiB, Rule(status=503, times=None))
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin")])
    result = run_cli(*download_args(manifest, tmp_path / "d", "--retries", "1"))
    assert result.returncode == 1, result.describe()
    assert [line.split(":")[0] for line in result.failed_lines] == ["FAILED a.bin"]
    assert "503" in result.failed_lines[0], result.describe()
    assert len(server.stats("a.bin").gets) == 2
    assert not (tmp_path / "d" / "a.bin").exists()


def test_stalled_transfer_is_abandoned_and_resumed(server: FaultServer, tmp_path: Path) -> None:
    server.add_file("a.bin", 1 * MiB, Rule(stall_after=256 * KiB))
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin")])
    result = run_cli(*download_args(manifest, tmp_path / "d", *FLUSH, "--read-timeout", "1"))
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin")})
    stats = server.stats("a.bin")
    assert [r.ended for r in stats.gets] == ["stall", "complete"]
    assert range_start(stats.gets[1].range) > 0
    assert stats.bytes_sent <= 1 * MiB + WINDOW


def test_416_on_resume_is_checked_not_taken_as_done(server: FaultServer, tmp_path: Path) -> None:
    """A 416 to a resume of a partial file says nothing about the bytes on disk being whole."""
    server.add_file("a.bin", 1 * MiB, Rule(reset_after=400 * KiB, times=2))
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin", checksum=False)])
    dest = tmp_path / "d"
    first = run_cli(*download_args(manifest, dest, *FLUSH, "--retries", "1"))
    assert first.returncode == 1, first.describe()
    before = len(server.stats("a.bin").requests)
    server.clear_rules("a.bin")
    server.add_rule("a.bin", Rule(status=416, skip=before, times=1))
    second = run_cli(*download_args(manifest, dest, *FLUSH))
    assert second.returncode == 0, second.describe()
    assert_files(dest, {"a.bin": server.content("a.bin")})
    gets = server.stats("a.bin").gets
    assert gets[before].status == 416 and range_start(gets[before].range) > 0


def test_slow_but_steady_body_is_not_cut_by_the_read_timeout(
    server: FaultServer, tmp_path: Path
) -> None:
    """--read-timeout bounds the silence between reads, not the whole transfer."""
    server.add_file("a.bin", 192 * KiB, chunk_size=16 * KiB, chunk_delay=0.1)
    manifest = write_manifest(tmp_path / "m.jsonl", [entry(server, "a.bin")])
    result = run_cli(*download_args(manifest, tmp_path / "d", "--read-timeout", "0.6"))
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin")})
    stats = server.stats("a.bin")
    assert [r.ended for r in stats.gets] == ["complete"], [(r.range, r.ended) for r in stats.gets]
    assert stats.bytes_sent == 192 * KiB
