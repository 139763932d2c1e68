"""bulkflex: fast, resumable, verified bulk downloads of Earth-observation collections from STAC.

The public API is small and explicit; everything else is internal and may change.
"""

from bulkflex.errors import (
    AuthError,
    BulkflexError,
    CatalogError,
    ChecksumMismatch,
    DestinationError,
    ManifestError,
    TransferError,
    UsageError,
)
from bulkflex.manifest import ManifestEntry, read_manifest, write_manifest
from bulkflex.stac import plan

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BulkflexError",
    "CatalogError",
    "ChecksumMismatch",
    "DestinationError",
    "ManifestEntry",
    "ManifestError",
    "TransferError",
    "UsageError",
    "__version__",
    "plan",
    "read_manifest",
    "write_manifest",
]
