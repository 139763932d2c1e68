"""Safe relative paths for files under a destination folder.

Catalog-supplied paths (``file:local_path``, href file names) are hostile until proven otherwise:
the STAC file extension's own schema accepts ``../../etc/passwd``. :func:`safe_relative_path`
turns a candidate into a normalised POSIX relative path or says, in one line, why it refuses.

Pure: no file system access. The engine additionally opens files without following symlinks.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

__all__ = ["PART_SUFFIX", "STATE_DIR", "UnsafePath", "path_from_url", "safe_relative_path"]

#: Folder under the destination that holds bulkflex's own state; no manifest path may enter it.
STATE_DIR = ".bulkflex"
#: Suffix of the file a download streams into before it is verified and renamed.
PART_SUFFIX = ".part"

_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")  # a regex: 4x faster than a loop over characters
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[1-9]|lpt[1-9])(\..*)?$", re.IGNORECASE)
_MAX_COMPONENT = 255
_MAX_PATH = 4096


class UnsafePath(ValueError):
    """The path is not a plain relative file path inside the destination."""


def safe_relative_path(candidate: str) -> str:
    """Return ``candidate`` as a normalised relative POSIX path, or raise :class:`UnsafePath`.

    Refused: empty paths, NUL or control characters, lone surrogates, backslashes, absolute
    paths, drive letters (``C:``), ``..`` components, paths ending in ``/`` (a folder, not a
    file), Windows device names, components longer than 255 bytes, and anything inside
    bulkflex's state folder.
    ``.`` components and repeated slashes are dropped.
    """
    if not isinstance(candidate, str) or candidate == "":
        raise UnsafePath("path is empty")
    if "\x00" in candidate:
        raise UnsafePath("path contains a NUL byte")
    if _SURROGATE.search(candidate):  # JSON can carry "\ud800"
        raise UnsafePath("path contains a lone surrogate (not a valid file name)")
    if _CONTROL.search(candidate):
        raise UnsafePath("path contains a control character")
    if "\\" in candidate:
        raise UnsafePath("path contains a backslash")
    if candidate.startswith("/"):
        raise UnsafePath("path is absolute")
    if _DRIVE.match(candidate):
        raise UnsafePath("path starts with a drive letter")
    if candidate.endswith("/"):
        raise UnsafePath("path names a folder, not a file")
    parts = [p for p in candidate.split("/") if p not in ("", ".")]
    if not parts:
        raise UnsafePath("path is empty")
    if _DRIVE.match(parts[0]):  # "./C:/x" normalises to "C:/x"
        raise UnsafePath("path starts with a drive letter")
    for part in parts:
        if part == "..":
            raise UnsafePath("path escapes the destination with '..'")
        if _WINDOWS_RESERVED.match(part):
            raise UnsafePath(f"path component {part!r} is a reserved device name")
        if len(part.encode("utf-8", "surrogatepass")) > _MAX_COMPONENT:
            raise UnsafePath("path component is longer than 255 bytes")
    if parts[0] == STATE_DIR:
        raise UnsafePath(f"path is inside bulkflex's state folder {STATE_DIR}/")
    result = "/".join(parts)
    if len(result) > _MAX_PATH:
        raise UnsafePath("path is longer than 4096 characters")
    return result


def path_from_url(url: str) -> str:
    """The last non-empty path segment of ``url`` (query ignored), or ``"download"``."""
    segments = [s for s in urlsplit(url).path.split("/") if s]
    return unquote(segments[-1]) if segments else "download"
