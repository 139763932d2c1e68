"""The manifest: JSON Lines, one asset a line, that ``plan`` writes and ``download`` reads.

A line::

    {"url": "https://.../data/...nc", "path": "FLX_.../flx_....nc", "size": 5368709120,
     "checksum": "1220<sha256 hex>", "collection": "FLEXL1CommissioningProducts10",
     "item": "FLX_L1C_...", "asset": "enclosure_nc", "type": "application/x-netcdf",
     "roles": ["data"]}

``url`` and ``path`` are required; ``size`` and ``checksum`` may be null (MAAP's on-the-fly zips
have neither). ``checksum`` is a STAC ``file:checksum`` multihash. Any other field is kept as is
and written back out, so users can add their own columns. Blank lines and lines starting with
``#`` are skipped, so a user can comment an entry out.

Reading is strict and streaming: the first bad line raises :class:`~bulkflex.errors.ManifestError`
naming its line number. Duplicate paths are found when the manifest is loaded into the state
database (a UNIQUE index), which keeps memory flat for millions of lines.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit

from bulkflex.core.checksum import MultihashError, parse_multihash
from bulkflex.core.paths import PART_SUFFIX, UnsafePath, safe_relative_path
from bulkflex.errors import ManifestError, UsageError

__all__ = [
    "ManifestEntry",
    "ManifestWriter",
    "manifest_hosts",
    "read_manifest",
    "read_manifest_lines",
    "write_manifest",
]

_KNOWN = ("url", "path", "size", "checksum", "collection", "item", "asset", "type", "roles")

_NETLOC_END = re.compile(r"[/?#]")
#: ``scheme://netloc`` prefixes seen lately, and the host of each when it is http(s)
_HOSTS: dict[str, str | None] = {}
_HOSTS_KEPT = 256


def _http_host(url: str) -> str | None:
    """The host of an absolute http(s) URL (``urlsplit(url).hostname``); None for any other.

    A manifest names a few hosts in thousands of URLs, so the answer is kept per prefix up to
    the end of the authority (the first ``/``, ``?`` or ``#`` after ``//``): ``urlsplit`` reads
    nothing after that to find the scheme and host, so the prefix gives the URL's own answer.
    It cost 3 of the 13 µs it takes to read a manifest line.

    Raises:
        ValueError: as ``urlsplit`` does (an unbalanced ``[`` in the host, say).
    """
    start = url.find("//")
    end = _NETLOC_END.search(url, start + 2) if start >= 0 else None
    key = url if end is None else url[: end.start()]
    try:
        return _HOSTS[key]
    except KeyError:
        pass
    parts = urlsplit(key)
    host = parts.hostname if parts.scheme in ("http", "https") and parts.hostname else None
    if len(_HOSTS) >= _HOSTS_KEPT:
        _HOSTS.clear()
    _HOSTS[key] = host
    return host


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One asset to download.

    Attributes:
        url: absolute http(s) URL of the asset.
        path: safe relative POSIX path under the destination.
        size: expected size in bytes, or None when the catalog does not say.
        checksum: ``file:checksum`` multihash (lowercase hex), or None.
        collection, item, asset: the STAC context the entry came from, when known.
        type: the asset's media type, when known.
        roles: the asset's roles.
        extra: every other field of the line, kept verbatim.
    """

    url: str
    path: str
    size: int | None = None
    checksum: str | None = None
    collection: str | None = None
    item: str | None = None
    asset: str | None = None
    type: str | None = None
    roles: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> str:
        """One manifest line, without the newline."""
        record: dict[str, Any] = {
            "url": self.url,
            "path": self.path,
            "size": self.size,
            "checksum": self.checksum,
        }
        for key in ("collection", "item", "asset", "type"):
            value = getattr(self, key)
            if value is not None:
                record[key] = value
        if self.roles:
            record["roles"] = list(self.roles)
        for key, value in self.extra.items():
            record.setdefault(key, value)
        return json.dumps(record, ensure_ascii=False, separators=(", ", ": "))

    @classmethod
    def from_record(cls, record: Any) -> ManifestEntry:
        """Validate one decoded JSON value. Raises ValueError with a one-line reason."""
        if not isinstance(record, dict):
            raise ValueError("line is not a JSON object")
        url = record.get("url")
        if not isinstance(url, str) or not url:
            raise ValueError("missing 'url'")
        try:
            host = _http_host(url)
        except ValueError as exc:
            raise ValueError(f"'url' is not a valid URL ({exc})") from None
        if host is None:
            raise ValueError("'url' is not an absolute http(s) URL")
        raw_path = record.get("path")
        if not isinstance(raw_path, str):
            raise ValueError("missing 'path'")
        try:
            path = safe_relative_path(raw_path)
        except UnsafePath as exc:
            raise ValueError(f"unsafe path {raw_path!r}: {exc}") from None
        if path.endswith(PART_SUFFIX):
            raise ValueError(f"path {path!r} ends in {PART_SUFFIX}, which bulkflex uses itself")
        size = record.get("size")
        if size is not None and (
            not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 2**63
        ):
            raise ValueError("'size' must be a non-negative integer or null")
        checksum = record.get("checksum")
        if checksum is not None:
            if not isinstance(checksum, str):
                raise ValueError("'checksum' must be a multihash string or null")
            try:
                parse_multihash(checksum)
            except MultihashError as exc:
                raise ValueError(f"bad checksum: {exc}") from None
        context: dict[str, str | None] = {}
        for key in ("collection", "item", "asset", "type"):
            value = record.get(key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"'{key}' must be a string")
            context[key] = value
        roles = record.get("roles") or ()
        if not isinstance(roles, list | tuple) or not all(isinstance(r, str) for r in roles):
            raise ValueError("'roles' must be a list of strings")
        extra = {k: v for k, v in record.items() if k not in _KNOWN}
        return cls(
            url=url,
            path=path,
            size=size,
            checksum=checksum,
            collection=context["collection"],
            item=context["item"],
            asset=context["asset"],
            type=context["type"],
            roles=tuple(roles),
            extra=extra,
        )


def _iter_lines(lines: Iterable[str], source: str) -> Iterator[tuple[int, str, ManifestEntry]]:
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(source, number, f"not valid JSON ({exc.msg})") from None
        try:
            entry = ManifestEntry.from_record(record)
        except ValueError as exc:
            raise ManifestError(source, number, str(exc)) from None
        yield number, text, entry


def unreadable_manifest(name: str, exc: OSError) -> UsageError:
    """The one-line error for a manifest that cannot be opened or read."""
    return UsageError(f"cannot read {name}: {exc.strerror or exc}")


def read_manifest(source: str | os.PathLike[str] | IO[str]) -> Iterator[tuple[int, ManifestEntry]]:
    """Stream ``(line number, entry)`` pairs from a manifest file or text stream.

    Raises:
        ManifestError: on the first malformed line (bad JSON, missing url, unsafe path, bad
            multihash, wrong field type); entries before it have already been yielded.
        UsageError: the file cannot be opened (missing, a folder, no permission) or read.
    """
    for number, _, entry in read_manifest_lines(source):
        yield number, entry


def read_manifest_lines(
    source: str | os.PathLike[str] | IO[str],
) -> Iterator[tuple[int, str, ManifestEntry]]:
    """:func:`read_manifest` with each entry's line as read (without its end of line): to copy
    lines elsewhere as they are, rather than write every entry anew (5 µs a line)."""
    if isinstance(source, str | os.PathLike):
        name = os.fspath(source)
        try:
            handle = open(name, encoding="utf-8", errors="strict")  # noqa: SIM115
        except OSError as exc:
            raise unreadable_manifest(name, exc) from None
        with handle:
            try:
                yield from _iter_lines(handle, name)
            except UnicodeDecodeError as exc:
                raise ManifestError(name, 0, f"file is not UTF-8 text ({exc.reason})") from None
            except OSError as exc:  # the read itself failed (an I/O error, a vanished mount)
                raise unreadable_manifest(name, exc) from None
    else:
        yield from _iter_lines(source, getattr(source, "name", "<manifest>"))


class ManifestWriter:
    """Write entries to ``path`` atomically: lines go to a temporary file renamed on success.

    A crash or exception while writing leaves any previous manifest at ``path`` untouched.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.count = 0
        self._handle: IO[str] | None = None
        self._tmp: str | None = None

    def __enter__(self) -> ManifestWriter:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        import tempfile  # here: 5 ms of imports that `bulkflex download` does not need

        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=folder)
        self._handle = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        return self

    def write(self, entry: ManifestEntry) -> None:
        self.write_line(entry.to_json())

    def write_line(self, line: str) -> None:
        """Write one line as it is (``line`` has no end of line; it is not checked)."""
        assert self._handle is not None, "use ManifestWriter as a context manager"
        self._handle.write(line)
        self._handle.write("\n")
        self.count += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._handle is not None and self._tmp is not None
        self._handle.close()
        if exc_type is None:
            os.replace(self._tmp, self.path)
        else:
            os.unlink(self._tmp)


def write_manifest(path: str | os.PathLike[str], entries: Iterable[ManifestEntry]) -> int:
    """Write ``entries`` to ``path`` atomically; return how many lines were written."""
    with ManifestWriter(path) as writer:
        for entry in entries:
            writer.write(entry)
    return writer.count


def manifest_hosts(manifest: str | os.PathLike[str]) -> set[str]:
    """The hosts a manifest downloads from (a quick scan; the engine validates every line)."""
    hosts: set[str] = set()
    try:
        with open(manifest, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    url = json.loads(line).get("url")
                    host = _http_host(url) if isinstance(url, str) else None
                except (ValueError, AttributeError):
                    continue
                if host:
                    hosts.add(host)
    except OSError:
        pass  # the engine reports an unreadable manifest with its own message
    return hosts
