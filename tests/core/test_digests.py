"""A server's digest headers (RFC 9530 ``Repr-Digest``/``Content-Digest``, RFC 3230 ``Digest``)
read into a checksum: which header and algorithm win, and what is ignored."""

from __future__ import annotations

import base64
import hashlib

import pytest

from bulkflex.core.digests import server_digest
from bulkflex.core.http1 import Headers

DATA = b"the bytes of a FLEX product\n" * 10
SHA256 = hashlib.sha256(DATA).digest()
SHA512 = hashlib.sha512(DATA).digest()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def headers(*fields: tuple[str, str]) -> Headers:
    return Headers(list(fields))


def read(status: int, *fields: tuple[str, str]) -> tuple[str, str, bytes] | None:
    found = server_digest(status, headers(*fields))
    if found is None:
        return None
    return found.header, found.checksum.algorithm, found.checksum.digest


def test_repr_digest_sha256_on_a_200_and_a_206() -> None:
    field = ("Repr-Digest", f"sha-256=:{b64(SHA256)}:")
    assert read(200, field) == ("Repr-Digest", "sha2-256", SHA256)
    assert read(206, field) == ("Repr-Digest", "sha2-256", SHA256)


def test_sha256_wins_over_sha512_in_any_order_and_sha512_alone_is_taken() -> None:
    both = f"sha-512=:{b64(SHA512)}:, sha-256=:{b64(SHA256)}:"
    assert read(200, ("Repr-Digest", both)) == ("Repr-Digest", "sha2-256", SHA256)
    only = ("Repr-Digest", f"sha-512=:{b64(SHA512)}:")
    assert read(200, only) == ("Repr-Digest", "sha2-512", SHA512)


def test_parameters_and_insecure_or_unknown_algorithms_are_skipped() -> None:
    md5 = hashlib.md5(DATA).digest()
    value = f"md5=:{b64(md5)}:, unixsum=:AAAA:, sha-256=:{b64(SHA256)}:;foo=1"
    assert read(200, ("Repr-Digest", value)) == ("Repr-Digest", "sha2-256", SHA256)
    assert read(200, ("Repr-Digest", f"md5=:{b64(md5)}:, sha=:{b64(SHA256[:20])}:")) is None


def test_content_digest_counts_only_on_a_200() -> None:
    field = ("Content-Digest", f"sha-256=:{b64(SHA256)}:")
    assert read(200, field) == ("Content-Digest", "sha2-256", SHA256)
    assert read(206, field) is None  # the digest of this part, not of the file


def test_repr_digest_wins_over_content_digest_and_digest() -> None:
    other = hashlib.sha256(b"other").digest()
    fields = [
        ("Digest", f"SHA-256={b64(other)}"),
        ("Content-Digest", f"sha-256=:{b64(other)}:"),
        ("Repr-Digest", f"sha-256=:{b64(SHA256)}:"),
    ]
    assert read(200, *fields) == ("Repr-Digest", "sha2-256", SHA256)


def test_legacy_digest_names_are_case_insensitive_and_md5_is_not_taken() -> None:
    md5 = hashlib.md5(DATA).digest()
    assert read(206, ("Digest", f"MD5={b64(md5)}, SHA-256={b64(SHA256)}")) == (
        "Digest",
        "sha2-256",
        SHA256,
    )
    assert read(200, ("Digest", f"sha-512={b64(SHA512)}")) == ("Digest", "sha2-512", SHA512)
    assert read(200, ("Digest", f"MD5={b64(md5)}")) is None


def test_repeated_fields_are_read_as_one_list() -> None:
    found = read(
        200, ("Repr-Digest", "unixsum=:AAAA:"), ("Repr-Digest", f"sha-256=:{b64(SHA256)}:")
    )
    assert found == ("Repr-Digest", "sha2-256", SHA256)


@pytest.mark.parametrize(
    "value",
    [
        "sha-256=:not base64!:",
        f"sha-256={b64(SHA256)}",  # a token, not a byte sequence
        f"sha-256=:{b64(SHA256[:31])}:",  # one byte short
        f"sha-256=:{b64(SHA256 + b'x')}:",  # one byte long
        "sha-256=::",
        "sha-256",
        "",
        ",,,",
    ],
)
def test_a_malformed_repr_digest_is_ignored(value: str) -> None:
    assert read(200, ("Repr-Digest", value)) is None


def test_a_malformed_header_does_not_hide_a_good_one_below_it() -> None:
    fields = [("Repr-Digest", "sha-256=:%%%:"), ("Digest", f"SHA-256={b64(SHA256)}")]
    assert read(200, *fields) == ("Digest", "sha2-256", SHA256)


def test_no_digest_header() -> None:
    assert read(200, ("ETag", '"abc"'), ("Content-Length", "280")) is None
