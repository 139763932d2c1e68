"""The bulkflex error tree, grouped by what the user can do about it.

::

    BulkflexError                      exit code
    ├── UsageError                     2   fix the command line or the input
    │   ├── ManifestError              2     a manifest line is malformed (line number on it)
    │   ├── UnsafePathError            2     a path would escape the destination
    │   └── FilterError                2     a CQL2 filter does not parse
    ├── CatalogError                   2   the catalog refused or answered nonsense
    │   └── CatalogUnreachable         1     network errors after retries
    ├── AuthError                      3   a token is needed and none could be had
    ├── TransferError                  1   one entry failed (the run lists them)
    │   ├── NotFound                         404 / 410: fail fast
    │   ├── RemoteLied                       size, Content-Range or encoding not as promised
    │   ├── ChecksumMismatch                 bytes arrived but do not verify
    │   ├── NotEntitled                      the server refuses a freshly refreshed token
    │   └── RetriesExhausted                 transient errors outlasted the budget
    ├── DestinationError               4   disk full, permission denied, read-only
    └── StateError                     2   the state database is unusable or from elsewhere

``str(err)`` is always one actionable line; details live on attributes. Messages never contain
a token: URLs are shown without their query string (see :func:`redact_url`).
"""

from __future__ import annotations

import errno
import os
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "AuthError",
    "BulkflexError",
    "CatalogError",
    "CatalogUnreachable",
    "ChecksumMismatch",
    "DestinationError",
    "FilterError",
    "ManifestError",
    "NotEntitled",
    "NotFound",
    "RemoteLied",
    "RetriesExhausted",
    "StateError",
    "TransferError",
    "UnsafePathError",
    "UsageError",
    "disk_error",
    "redact_url",
]


def redact_url(url: str) -> str:
    """Return ``url`` without user info, query string or fragment (they may carry secrets)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    if ":" in (parts.hostname or ""):  # IPv6 literal
        netloc = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class BulkflexError(Exception):
    """Base of every error bulkflex raises on purpose. ``exit_code`` is the CLI's exit status."""

    exit_code: int = 1


class UsageError(BulkflexError):
    """The command line or an input file is wrong; nothing was fetched."""

    exit_code = 2


class ManifestError(UsageError):
    """A manifest line is malformed. ``line`` is 1-based."""

    def __init__(self, source: str, line: int, problem: str) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        super().__init__(f"{source}:{line}: {problem}")


class UnsafePathError(UsageError):
    """A path would land outside the destination, or is not a plain relative file path."""


class FilterError(UsageError):
    """A CQL2 filter does not parse."""


class CatalogError(BulkflexError):
    """The STAC catalog refused the request or answered something that is not STAC JSON."""

    exit_code = 2


class CatalogUnreachable(CatalogError):
    """The catalog could not be reached after retries."""

    exit_code = 1


class AuthError(BulkflexError):
    """Authentication is needed and no token source could provide a working token."""

    exit_code = 3


class TransferError(BulkflexError):
    """One manifest entry could not be downloaded. The run goes on with the others."""

    exit_code = 1
    #: Short machine-readable reason, stored in the state database and shown by ``status``.
    kind = "transfer"


class NotFound(TransferError):
    kind = "not-found"


class RemoteLied(TransferError):
    kind = "remote-lied"


class ChecksumMismatch(TransferError):
    kind = "checksum-mismatch"

    def __init__(self, message: str, *, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(message)


class NotEntitled(TransferError):
    kind = "not-entitled"


class RetriesExhausted(TransferError):
    kind = "retries-exhausted"


class UntrustedServer(TransferError):
    """The server's TLS certificate did not verify: retrying cannot help, so the entry fails
    at once (set ``SSL_CERT_FILE`` to a CA bundle that has the server's CA)."""

    kind = "tls-untrusted"


class DestinationError(BulkflexError):
    """The destination cannot take the files (disk full, permission denied). State is kept."""

    exit_code = 4


def disk_error(exc: OSError, path: str | os.PathLike[str]) -> DestinationError:
    """Translate an OSError from the destination into one actionable line."""
    reason = {
        errno.ENOSPC: "no space left on the device: free some space and run the same command",
        errno.EDQUOT: "disk quota exceeded: free some space and run the same command",
        errno.EROFS: "the destination is on a read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return DestinationError(f"cannot write {os.fspath(path)}: {reason}")


class StateError(BulkflexError):
    """The state database cannot be used."""

    exit_code = 2
