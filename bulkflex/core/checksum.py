"""STAC ``file:checksum`` multihashes: parse, format, and make the matching incremental hasher.

A multihash is ``varint(code) || varint(digest length) || digest``, written as lowercase hex
(https://multiformats.io/multihash/). Truncated digests are legal, so the length comes from the
header, never from the algorithm. md5's code 0xd5 needs a two-byte varint (``d501``).

Pure: no I/O. Hashing itself is done by the caller, off the event loop, in large blocks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

__all__ = ["ALGORITHMS", "Checksum", "Hasher", "MultihashError", "parse_multihash"]


class MultihashError(ValueError):
    """The text is not a multihash this module can verify."""


class Hasher(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...
    def digest(self) -> bytes: ...


# multihash code -> (name, hashlib constructor name, full digest length in bytes)
ALGORITHMS: dict[int, tuple[str, str, int]] = {
    0x11: ("sha1", "sha1", 20),
    0x12: ("sha2-256", "sha256", 32),
    0x13: ("sha2-512", "sha512", 64),
    0x14: ("sha3-512", "sha3_512", 64),
    0x15: ("sha3-384", "sha3_384", 48),
    0x16: ("sha3-256", "sha3_256", 32),
    0x17: ("sha3-224", "sha3_224", 28),
    0x20: ("sha2-384", "sha384", 48),
    0xD5: ("md5", "md5", 16),
    0xB220: ("blake2b-256", "blake2b-256", 32),
    0xB240: ("blake2b-512", "blake2b", 64),
}
_BY_NAME = {name: code for code, (name, _, _) in ALGORITHMS.items()}


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise MultihashError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise MultihashError("varint too long")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@dataclass(frozen=True, slots=True)
class Checksum:
    """A digest and the algorithm that made it. ``digest`` may be a truncated prefix."""

    code: int
    digest: bytes

    @property
    def algorithm(self) -> str:
        return ALGORITHMS[self.code][0]

    def new_hasher(self) -> Hasher:
        """A fresh incremental hasher (hashlib releases the GIL on large blocks)."""
        constructor = ALGORITHMS[self.code][1]
        if constructor == "blake2b-256":
            return hashlib.blake2b(digest_size=32)
        return hashlib.new(constructor)

    def matches(self, full_digest: bytes) -> bool:
        """True if ``full_digest`` (from :meth:`new_hasher`) agrees, allowing truncation."""
        return full_digest[: len(self.digest)] == self.digest

    def multihash(self) -> str:
        return (_varint(self.code) + _varint(len(self.digest)) + self.digest).hex()

    def describe(self, digest: bytes | None = None) -> str:
        """``sha2-256:abcd...`` for messages; with ``digest`` shows that one, truncated alike."""
        shown = self.digest if digest is None else digest[: len(self.digest)]
        return f"{self.algorithm}:{shown.hex()}"

    @classmethod
    def from_digest(cls, algorithm: str, digest: bytes) -> Checksum:
        """Build from an algorithm name such as ``sha2-256`` and a raw digest."""
        try:
            return cls(_BY_NAME[algorithm], digest)
        except KeyError:
            raise MultihashError(f"unsupported algorithm {algorithm!r}") from None


def parse_multihash(text: str) -> Checksum:
    """Parse a ``file:checksum`` value.

    Raises:
        MultihashError: not lowercase hex, a truncated header, a digest length that disagrees with
            the bytes present or exceeds the algorithm's, or an algorithm this module cannot verify.
    """
    if not isinstance(text, str) or not text:
        raise MultihashError("checksum must be a non-empty hex string")
    if text != text.lower():
        raise MultihashError("multihash must be lowercase hex")
    if not (text.isascii() and text.isalnum()):  # bytes.fromhex would skip whitespace
        raise MultihashError("multihash is not hex")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise MultihashError("multihash is not hex") from None
    code, pos = _read_varint(raw, 0)
    length, pos = _read_varint(raw, pos)
    digest = raw[pos:]
    if code not in ALGORITHMS:
        raise MultihashError(f"unsupported multihash code 0x{code:x}")
    name, _, full_length = ALGORITHMS[code]
    if length != len(digest):
        raise MultihashError(f"{name} multihash says {length} digest bytes but has {len(digest)}")
    if length == 0 or length > full_length:
        raise MultihashError(f"{name} digest length {length} is not between 1 and {full_length}")
    return Checksum(code, digest)
