"""bulkflex: fast, resumable, verified bulk downloads of Earth-observation collections from STAC.

The public API is small and explicit; everything else is internal and may change.
"""

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from bulkflex._api import download
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
    "download",
    "plan",
    "read_manifest",
    "write_manifest",
]


def __getattr__(name: str) -> Any:
    # plan() and download() pull in aiohttp and the engine: load them on first use, so that
    # `import bulkflex` (and the command line's start) stays quick
    if name == "plan":
        from bulkflex.stac import plan

        return plan
    if name == "download":
        from bulkflex._api import download

        return download
    raise AttributeError(f"module 'bulkflex' has no attribute {name!r}")
