"""Digests a server announces for a file: RFC 9530 ``Repr-Digest`` and ``Content-Digest``, and
RFC 3230's ``Digest`` that came before them. Pure: header text in, a :class:`Checksum` out.

The engine verifies against one of these when the manifest has no checksum, as aria2 does with
``Digest``: ESA MAAP's assets carry no ``file:checksum``, so without a server digest a file
could only be checked by its size.

Rules:

- Only sha-256 and sha-512 are taken. RFC 9530 marks md5, sha (SHA-1), unixsum and unixcksum
  insecure, and bulkflex would not know what to do with an algorithm it cannot verify. sha-256
  wins when both are sent: it is as good for catching corruption, and about twice as fast on
  CPUs with SHA instructions.
- ``Repr-Digest`` covers the whole representation, so it holds for a 206 as much as for a 200;
  RFC 3230's ``Digest`` is an instance digest, the same. ``Content-Digest`` covers the bytes of
  this message, so it is the file's digest only on a 200 (a content coding is refused before).
- A malformed header, a wrong digest length or an unknown algorithm is ignored, never an
  error: a header the server need not send must not fail a download that would succeed
  without it. The first usable header in the order above wins.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bulkflex.core.checksum import Checksum

__all__ = ["WANT_REPR_DIGEST", "ServerDigest", "server_digest"]

#: RFC 9530 name -> (multihash algorithm, digest length in bytes), most wanted first
_ALGORITHMS: dict[str, tuple[str, int]] = {
    "sha-256": ("sha2-256", 32),
    "sha-512": ("sha2-512", 64),
}
#: sent as ``Want-Repr-Digest`` when the manifest has no checksum (preferences 1 to 10)
WANT_REPR_DIGEST = "sha-256=10, sha-512=3"


@dataclass(frozen=True, slots=True)
class ServerDigest:
    """A checksum and the header that announced it."""

    checksum: Checksum
    header: str

    def describe(self) -> str:
        """``Repr-Digest sha2-256`` for messages."""
        return f"{self.header} {self.checksum.algorithm}"


def _base64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def _structured(value: str) -> dict[str, bytes]:
    """An RFC 8941 dictionary of byte sequences, ``sha-256=:<base64>:, sha-512=:<base64>:``
    (parameters after ``;`` are dropped; members that are not byte sequences skipped)."""
    found: dict[str, bytes] = {}
    for member in value.split(","):  # base64 has no commas
        key, equals, item = member.partition("=")
        item = item.split(";", 1)[0].strip()
        if not equals or len(item) < 2 or item[0] != ":" or item[-1] != ":":
            continue
        raw = _base64(item[1:-1])
        if raw is not None:
            found.setdefault(key.strip().lower(), raw)
    return found


def _legacy(value: str) -> dict[str, bytes]:
    """RFC 3230's ``SHA-256=<base64>, MD5=<base64>``: names are case-insensitive, and the
    base64 padding after the first ``=`` belongs to the value."""
    found: dict[str, bytes] = {}
    for member in value.split(","):
        key, equals, item = member.partition("=")
        raw = _base64(item) if equals else None
        if raw is not None:
            found.setdefault(key.strip().lower(), raw)
    return found


def server_digest(status: int, headers: Mapping[str, str]) -> ServerDigest | None:
    """The file's digest announced by a 200 or 206 response, or None (see the module rules).

    ``headers`` must be case-insensitive, with repeated fields joined by ``", "``.
    """
    sources: list[tuple[str, Callable[[str], dict[str, bytes]]]] = [("Repr-Digest", _structured)]
    if status == 200:
        sources.append(("Content-Digest", _structured))
    sources.append(("Digest", _legacy))
    for header, parse in sources:
        value = headers.get(header)
        if not value:
            continue
        found = parse(value)
        for name, (algorithm, length) in _ALGORITHMS.items():
            raw = found.get(name)
            if raw is not None and len(raw) == length:
                return ServerDigest(Checksum.from_digest(algorithm, raw), header)
    return None
