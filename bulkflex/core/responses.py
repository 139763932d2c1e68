"""Is this HTTP response acceptable for the byte range we asked for? A pure decision.

The engine sends a request for ``[start, end)`` of a resource (``end`` None meaning "to the end"),
maybe with ``If-Range``, and hands the status and headers here before touching the body.
:func:`check_response` answers with a :class:`Decision`:

=================  ===============================================================================
ACCEPT             write the body at ``decision.start``; ``length``/``total`` say what to expect
WHOLE_FILE         a 200 carrying the whole resource although a range was asked: discard every
                   byte on disk and write this body from 0. ``changed`` says why: True if the
                   resource changed (If-Range failed), False if the server ignores Range.
RANGE_BROKEN       a 206 that does not match the request (wrong Content-Range or length, another
                   version): write nothing, stop ranging this file, fetch it whole from 0
NOT_SATISFIABLE    416: the range starts at or past the end; ``total`` if the server said it
RETRY              transient (408, 429, 5xx): back off, honour ``retry_after_s``
AUTH               401: the token is missing or expired
FAIL               permanent for this entry (404, 410, 403, other 4xx, a lying server)
=================  ===============================================================================

Rules, after rclone's ``CheckContentRange`` and the lessons in the research notes: a 206 must name
exactly the start we asked, end where we asked (or at the resource's end) and carry a matching
Content-Length; a 200 is only the whole file; a Content-Encoding other than identity is refused,
because ranges and checksums are about the bytes of the resource. An accepted response also
carries the file's digest when the server announced one (``decision.digest``, see
:mod:`bulkflex.core.digests`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

from bulkflex.core.digests import ServerDigest, server_digest
from bulkflex.core.retry import parse_retry_after

__all__ = ["Decision", "RangeRequest", "Validator", "Verdict", "check_response"]

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504, 522, 524})
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)


class Verdict(enum.Enum):
    ACCEPT = "accept"
    WHOLE_FILE = "whole-file"
    RANGE_BROKEN = "range-broken"
    NOT_SATISFIABLE = "not-satisfiable"
    RETRY = "retry"
    AUTH = "auth"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Validator:
    """What partial bytes on disk are valid for: a strong ETag, else a Last-Modified date."""

    etag: str | None = None
    last_modified: str | None = None

    @property
    def if_range(self) -> str | None:
        """The ``If-Range`` value to send, or None when nothing strong enough is known."""
        return self.etag or self.last_modified

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Validator:
        etag = headers.get("ETag")
        if etag is not None and (etag.startswith("W/") or not etag.strip()):
            etag = None  # weak ETags may not be used with If-Range (RFC 9110 13.1.5)
        return cls(etag=etag, last_modified=headers.get("Last-Modified"))

    def same_resource(self, other: Validator) -> bool:
        """True if both name the same version; unknown on either side counts as the same."""
        if self.etag and other.etag:
            return self.etag == other.etag
        if self.last_modified and other.last_modified:
            return self.last_modified == other.last_modified
        return True


@dataclass(frozen=True, slots=True)
class RangeRequest:
    """What was asked. ``start``/``end`` are a half-open byte range; ``end`` None = to the end.

    ``ranged`` is False for a plain GET of the whole file (``start`` must then be 0).
    ``validator`` is what ``If-Range`` carried (None if it was not sent).
    ``known_total`` is the resource size we already believe (manifest or earlier response).
    """

    start: int = 0
    end: int | None = None
    ranged: bool = False
    validator: Validator | None = None
    known_total: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str = ""
    #: Offset in the resource of the first body byte (ACCEPT; 0 for WHOLE_FILE).
    start: int = 0
    #: Number of body bytes to expect, when the server said.
    length: int | None = None
    #: Size of the whole resource, when the server said.
    total: int | None = None
    #: True for WHOLE_FILE when the resource changed since the bytes on disk were fetched.
    changed: bool = False
    validator: Validator | None = None
    retry_after_s: float | None = None
    #: The file's digest announced by the server (ACCEPT, WHOLE_FILE), see ``core.digests``.
    digest: ServerDigest | None = None


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() else -1


def check_response(
    request: RangeRequest,
    status: int,
    headers: Mapping[str, str],
    *,
    now: float,
) -> Decision:
    """Decide what to do with a response to ``request``. ``now`` is a Unix time (Retry-After dates).

    ``headers`` must be case-insensitive (aiohttp's ``CIMultiDictProxy`` is).
    """
    if status == 401:
        return Decision(Verdict.AUTH, "401 Unauthorized")
    if status in RETRYABLE_STATUS:
        retry_after = parse_retry_after(headers.get("Retry-After"), now=now)
        return Decision(Verdict.RETRY, f"HTTP {status}", retry_after_s=retry_after)
    if status in (404, 410):
        return Decision(Verdict.FAIL, f"HTTP {status}: not found on the server")
    if status == 403:
        return Decision(Verdict.FAIL, "HTTP 403 Forbidden")
    if status == 416:
        match = _UNSATISFIED_RANGE.match(headers.get("Content-Range", ""))
        total = int(match.group(1)) if match else None
        return Decision(Verdict.NOT_SATISFIABLE, "416 Range Not Satisfiable", total=total)
    if status not in (200, 206):
        return Decision(Verdict.FAIL, f"unexpected HTTP {status}")

    encoding = headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        return Decision(
            Verdict.FAIL,
            f"server sent Content-Encoding: {encoding} although identity was asked",
        )

    validator = Validator.from_headers(headers)
    digest = server_digest(status, headers)
    length = _int_header(headers, "Content-Length")
    if length is not None and length < 0:
        return Decision(Verdict.RETRY, "unparseable Content-Length")

    if status == 200:
        if request.ranged:
            changed = request.validator is not None and not request.validator.same_resource(
                validator
            )
            reason = (
                "the file changed on the server (If-Range did not match)"
                if changed
                else "the server ignores Range and sent the whole file"
            )
            return Decision(
                Verdict.WHOLE_FILE,
                reason,
                start=0,
                length=length,
                total=length,
                changed=changed,
                validator=validator,
                digest=digest,
            )
        if request.start != 0:
            return Decision(Verdict.FAIL, "bug: a non-ranged request must start at 0")
        return Decision(
            Verdict.ACCEPT,
            "200",
            start=0,
            length=length,
            total=length,
            validator=validator,
            digest=digest,
        )

    # 206 Partial Content
    if not request.ranged:
        return Decision(Verdict.RETRY, "206 to a request without Range")
    match = _CONTENT_RANGE.match(headers.get("Content-Range", ""))
    if match is None:
        return Decision(Verdict.RANGE_BROKEN, "206 without a valid Content-Range")
    first, last, total_text = int(match.group(1)), int(match.group(2)), match.group(3)
    total = None if total_text == "*" else int(total_text)
    if first != request.start:
        return Decision(
            Verdict.RANGE_BROKEN,
            f"wrong Content-Range: asked from byte {request.start}, got {first}-{last}",
        )
    if last < first or (total is not None and last >= total):
        return Decision(
            Verdict.RANGE_BROKEN, f"wrong Content-Range: bytes {first}-{last}/{total_text}"
        )
    expected_end = request.end
    if total is not None and expected_end is not None:
        expected_end = min(expected_end, total)
    if expected_end is None:
        expected_end = total
    if expected_end is not None and last + 1 != expected_end:
        return Decision(
            Verdict.RANGE_BROKEN,
            f"wrong Content-Range: asked up to byte {expected_end - 1}, got {first}-{last}",
        )
    if length is not None and length != last - first + 1:
        return Decision(
            Verdict.RANGE_BROKEN,
            f"Content-Length {length} does not match Content-Range {first}-{last}",
        )
    if request.known_total is not None and total is not None and total != request.known_total:
        return Decision(
            Verdict.RANGE_BROKEN,
            f"size changed: expected {request.known_total} bytes, server says {total}",
            total=total,
        )
    if request.validator is not None and not request.validator.same_resource(validator):
        return Decision(
            Verdict.RANGE_BROKEN,
            "206 for a different version of the file (validator differs despite If-Range)",
        )
    return Decision(
        Verdict.ACCEPT,
        "206",
        start=first,
        length=last - first + 1,
        total=total,
        validator=validator,
        digest=digest,
    )
