"""A manifest without checksums (as MAAP's assets have none): files are verified against the
digest their server announces (``Repr-Digest``, ``Content-Digest`` on a 200, RFC 3230
``Digest``), through the real CLI against the fault server, which sends those headers right or
wrong. A manifest's own checksum always wins.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from clirun import (
    Result,
    assert_files,
    download_args,
    entry,
    files_under,
    read_events,
    run_cli,
    write_manifest,
)
from faultserver import FaultServer, KiB, MiB, Rule

FLUSH = ("--flush-bytes", str(64 * KiB), "--flush-seconds", "30")


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


#: the sha-256 of other bytes than any served file's
WRONG = hashlib.sha256(b"another file").digest()


def repr_digest(data: bytes, body: bytes) -> Mapping[str, str]:
    return {"Repr-Digest": f"sha-256=:{b64(hashlib.sha256(data).digest())}:"}


def wrong_repr_digest(data: bytes, body: bytes) -> Mapping[str, str]:
    return {"Repr-Digest": f"sha-256=:{b64(WRONG)}:"}


def unchecked(server: FaultServer, *names: str) -> list[dict[str, Any]]:
    """Manifest records of ``names`` without a checksum, as MAAP's."""
    return [entry(server, name, checksum=False) for name in names]


def verified(log: Path) -> dict[str, dict[str, Any]]:
    return {e["path"]: e for e in read_events(log) if e["event"] == "verified"}


def run(
    server: FaultServer, tmp_path: Path, *records: dict[str, Any], extra: tuple[str, ...] = ()
) -> tuple[Result, Path]:
    """Download ``records`` into ``tmp_path/d``; the CLI's result and its ``--log-json``."""
    manifest = write_manifest(tmp_path / "m.jsonl", records)
    log = tmp_path / "events.jsonl"
    result = run_cli(*download_args(manifest, tmp_path / "d", "--log-json", log, *FLUSH, *extra))
    return result, log


def test_files_without_checksum_are_verified_against_the_servers_digest(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("repr.bin", 300 * KiB, headers=repr_digest)
    server.add_file(
        "legacy.bin",
        200 * KiB,
        headers=lambda data, body: {"Digest": f"SHA-512={b64(hashlib.sha512(data).digest())}"},
    )
    server.add_file(
        "content.bin",
        100 * KiB,
        headers=lambda data, body: {
            "Content-Digest": f"sha-256=:{b64(hashlib.sha256(body).digest())}:"
        },
    )
    server.add_file(  # md5 only: not taken, the size is all that is checked
        "md5.bin",
        50 * KiB,
        headers=lambda data, body: {"Digest": f"MD5={b64(hashlib.md5(data).digest())}"},
    )
    names = ["repr.bin", "legacy.bin", "content.bin", "md5.bin"]
    result, log = run(server, tmp_path, *unchecked(server, *names))
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {n: server.content(n) for n in names})
    events = verified(log)
    assert {n: (events[n]["checksum"], events[n]["checksum_from"]) for n in names} == {
        "repr.bin": ("sha2-256", "Repr-Digest"),
        "legacy.bin": ("sha2-512", "Digest"),
        "content.bin": ("sha2-256", "Content-Digest"),
        "md5.bin": (None, None),
    }
    # asked for, since the manifest had nothing to verify with
    assert server.stats("repr.bin").gets[0].headers.get("Want-Repr-Digest") == (
        "sha-256=10, sha-512=3"
    )


def test_a_manifest_checksum_wins_and_no_digest_is_asked_for(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("a.bin", 100 * KiB, headers=wrong_repr_digest)
    result, log = run(server, tmp_path, entry(server, "a.bin"))
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin")})
    assert verified(log)["a.bin"]["checksum_from"] == "manifest"
    assert "Want-Repr-Digest" not in server.stats("a.bin").gets[0].headers


def test_a_wrong_server_digest_fails_the_file_after_one_fresh_download(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("a.bin", 300 * KiB, headers=wrong_repr_digest)
    server.add_file("ok.bin", 10 * KiB, headers=repr_digest)
    result, _ = run(server, tmp_path, *unchecked(server, "a.bin", "ok.bin"))
    assert result.returncode == 1, result.describe()
    actual = hashlib.sha256(server.content("a.bin")).hexdigest()
    assert result.failed_lines == [
        f"FAILED a.bin: checksum mismatch: expected sha2-256:{WRONG.hex()}, got sha2-256:{actual}"
        " (the expected value is the server's Repr-Digest) (also after a fresh download)"
    ], result.describe()
    assert files_under(tmp_path / "d").keys() <= {"ok.bin", "a.bin.part"}
    assert [r.range for r in server.stats("a.bin").gets] == [None, None]


def test_a_digest_first_seen_on_a_resumed_206_hashes_the_bytes_already_on_disk(
    server: FaultServer, tmp_path: Path
) -> None:
    """The first answer (a 200 with no digest) breaks off; the 206 that resumes it names the
    file's digest: the bytes written before it are read back into the hash, so a byte
    corrupted in them fails the file (then a fresh download of the same corruption too)."""
    size, cut = 1 * MiB, 400 * KiB

    def on_206_only(data: bytes, body: bytes) -> Mapping[str, str]:
        return repr_digest(data, body) if len(body) < len(data) else {}

    server.add_file("a.bin", size, Rule(reset_after=cut), headers=on_206_only)
    server.add_file(
        "bad.bin", size, Rule(reset_after=cut, times=None, corrupt_at=1000), headers=on_206_only
    )
    result, log = run(server, tmp_path, *unchecked(server, "a.bin", "bad.bin"))
    assert result.returncode == 1, result.describe()
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin")})  # bad.bin: not even a .part
    assert verified(log)["a.bin"]["checksum_from"] == "Repr-Digest"
    gets = server.stats("a.bin").gets
    assert [r.status for r in gets] == [200, 206] and gets[0].ended == "reset"
    assert len(result.failed_lines) == 1 and result.failed_lines[0].startswith(
        "FAILED bad.bin: checksum mismatch"
    ), result.describe()


def test_a_split_file_is_verified_against_the_repr_digest_and_a_parts_content_digest_is_not_used(
    server: FaultServer, tmp_path: Path
) -> None:
    """Every answer of a split download is a 206: ``Repr-Digest`` names the whole file, while
    ``Content-Digest`` names that part only and must not be taken for the file's."""

    def part_digest(data: bytes, body: bytes) -> Mapping[str, str]:
        return {"Content-Digest": f"sha-256=:{b64(hashlib.sha256(body).digest())}:"}

    server.add_file("repr.bin", 6 * MiB, headers=repr_digest, chunk_delay=0.002)
    server.add_file("content.bin", 6 * MiB, headers=part_digest, chunk_delay=0.002)
    split = ("--split-min", "1M", "--connections-per-file", "3", "--split-claim", "2M")
    result, log = run(
        server,
        tmp_path,
        *unchecked(server, "repr.bin", "content.bin"),
        extra=split,
    )
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {n: server.content(n) for n in ("repr.bin", "content.bin")})
    for name in ("repr.bin", "content.bin"):
        assert {r.status for r in server.stats(name).gets} == {206}
        assert len(server.stats(name).gets) >= 2, name  # it was split
    events = verified(log)
    assert events["repr.bin"]["checksum_from"] == "Repr-Digest"
    assert events["content.bin"]["checksum_from"] is None


def test_a_file_that_changes_mid_download_is_verified_against_the_new_versions_digest(
    server: FaultServer, tmp_path: Path
) -> None:
    """Version 1 breaks off; the resume finds version 2 (If-Range fails, a 200 of the new
    bytes): the digest taken from version 1 is dropped with its bytes, version 2's is used."""
    server.add_file(
        "a.bin", 600 * KiB, Rule(reset_after=200 * KiB), change_after=1, headers=repr_digest
    )
    result, log = run(server, tmp_path, entry(server, "a.bin", size=False, checksum=False))
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin", 2)})
    assert server.content("a.bin", 2) != server.content("a.bin", 1)
    gets = server.stats("a.bin").gets
    assert [(r.version, r.status) for r in gets] == [(1, 200), (2, 200)]
    assert gets[1].if_range == server.etag("a.bin", 1)
    assert verified(log)["a.bin"]["checksum_from"] == "Repr-Digest"


def test_no_server_digests_checks_the_size_only(server: FaultServer, tmp_path: Path) -> None:
    """The way out for a server whose digests are wrong: the file the wrong digest fails
    above downloads, verified by its size, and no digest is asked for."""
    server.add_file("a.bin", 300 * KiB, headers=wrong_repr_digest)
    result, log = run(server, tmp_path, *unchecked(server, "a.bin"), extra=("--no-server-digests",))
    assert result.returncode == 0, result.describe()
    assert_files(tmp_path / "d", {"a.bin": server.content("a.bin")})
    assert verified(log)["a.bin"]["checksum_from"] is None
    gets = server.stats("a.bin").gets
    assert len(gets) == 1 and "Want-Repr-Digest" not in gets[0].headers
