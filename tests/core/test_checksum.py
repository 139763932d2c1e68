"""bulkflex.core.checksum: STAC ``file:checksum`` multihashes, known vectors and properties."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkflex.core.checksum import ALGORITHMS, Checksum, MultihashError, parse_multihash

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize(
    ("text", "algorithm", "digest"),
    [
        ("1220" + EMPTY_SHA256, "sha2-256", hashlib.sha256(b"").digest()),
        ("1340" + hashlib.sha512(b"a").hexdigest(), "sha2-512", hashlib.sha512(b"a").digest()),
        ("1114" + hashlib.sha1(b"a").hexdigest(), "sha1", hashlib.sha1(b"a").digest()),
        # md5's code 0xd5 needs a two-byte varint
        ("d50110" + hashlib.md5(b"a").hexdigest(), "md5", hashlib.md5(b"a").digest()),
        # blake2b-256 is 0xb220: a three-byte varint
        (
            "a0e40220" + hashlib.blake2b(b"a", digest_size=32).hexdigest(),
            "blake2b-256",
            hashlib.blake2b(b"a", digest_size=32).digest(),
        ),
        ("1204" + EMPTY_SHA256[:8], "sha2-256", bytes.fromhex(EMPTY_SHA256[:8])),  # truncated
    ],
)
def test_parses_known_multihashes(text: str, algorithm: str, digest: bytes) -> None:
    checksum = parse_multihash(text)
    assert checksum.algorithm == algorithm
    assert checksum.digest == digest
    assert checksum.multihash() == text
    assert checksum.describe() == f"{algorithm}:{digest.hex()}"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "non-empty"),
        ("1220" + EMPTY_SHA256.upper(), "lowercase"),
        ("12zz", "not hex"),
        ("122", "not hex"),  # odd number of digits
        ("12", "truncated varint"),  # no length
        ("ff", "truncated varint"),  # continuation bit set, nothing after
        ("ffffffffffffffffffff01", "varint too long"),
        ("1200", "between 1 and 32"),  # zero-length digest
        ("1221" + EMPTY_SHA256 + "00", "between 1 and 32"),  # longer than sha-256 can be
        ("1220" + EMPTY_SHA256[:-2], "says 32 digest bytes but has 31"),
        ("1220" + EMPTY_SHA256 + "00", "says 32 digest bytes but has 33"),
        ("0001ff", "unsupported multihash code 0x0"),
        ("b24020" + "00" * 32, "unsupported multihash code"),  # not a code bulkflex verifies
    ],
)
def test_refuses_malformed_multihashes(text: str, problem: str) -> None:
    with pytest.raises(MultihashError, match=problem):
        parse_multihash(text)


def test_refuses_non_strings() -> None:
    for value in (None, 1220, b"1220"):
        with pytest.raises(MultihashError):
            parse_multihash(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text", [" 1220" + EMPTY_SHA256, "12 20" + EMPTY_SHA256, "1220\n" + EMPTY_SHA256]
)
def test_refuses_whitespace_inside_the_hex(text: str) -> None:
    """``bytes.fromhex`` skips ASCII whitespace; a multihash is plain lowercase hex."""
    with pytest.raises(MultihashError):
        parse_multihash(text)


@pytest.mark.parametrize("code", sorted(ALGORITHMS))
def test_new_hasher_computes_the_named_algorithm(code: int) -> None:
    name, constructor, length = ALGORITHMS[code]
    data = b"bulkflex" * 1000
    hasher = Checksum(code, b"\0").new_hasher()
    hasher.update(data[:100])
    hasher.update(memoryview(data)[100:])
    digest = hasher.digest()
    assert len(digest) == length, name
    if constructor == "blake2b-256":
        assert digest == hashlib.blake2b(data, digest_size=32).digest()
    else:
        assert digest == hashlib.new(constructor, data).digest()


def test_matches_allows_truncated_digests_only_as_prefixes() -> None:
    full = hashlib.sha256(b"x").digest()
    assert Checksum(0x12, full).matches(full)
    assert Checksum(0x12, full[:4]).matches(full)
    assert not Checksum(0x12, full[:4]).matches(hashlib.sha256(b"y").digest())
    wrong = bytes([full[0] ^ 1]) + full[1:]
    assert not Checksum(0x12, full).matches(wrong)
    assert Checksum(0x12, full[:4]).describe(full) == f"sha2-256:{full[:4].hex()}"


def test_from_digest_by_name() -> None:
    digest = hashlib.md5(b"a").digest()
    assert Checksum.from_digest("md5", digest).multihash() == "d50110" + digest.hex()
    with pytest.raises(MultihashError, match="unsupported algorithm 'crc32'"):
        Checksum.from_digest("crc32", b"\0\0\0\0")


@st.composite
def checksums(draw: st.DrawFn) -> Checksum:
    code = draw(st.sampled_from(sorted(ALGORITHMS)))
    length = draw(st.integers(min_value=1, max_value=ALGORITHMS[code][2]))
    return Checksum(code, draw(st.binary(min_size=length, max_size=length)))


@given(checksums())
def test_multihash_round_trips(checksum: Checksum) -> None:
    text = checksum.multihash()
    assert text == text.lower()
    assert parse_multihash(text) == checksum
    assert Checksum.from_digest(checksum.algorithm, checksum.digest) == checksum


@given(st.text(max_size=80) | st.binary(max_size=40).map(bytes.hex))
def test_parse_raises_only_multihash_error(text: str) -> None:
    try:
        checksum = parse_multihash(text)
    except MultihashError:
        return
    assert checksum.multihash() == text  # whatever is accepted is canonical
