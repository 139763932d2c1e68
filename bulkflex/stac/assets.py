"""From a STAC item to manifest entries: which assets, and where each one lands.

Asset keys are not stable on ESA MAAP (they change between releases and collections), so
selection is by key glob *and* by roles and media types, never by a fixed list:

- ``assets`` globs (``product``, ``enclosure_*``) match the asset key, case-sensitively;
- ``roles`` match if the asset has any of them;
- ``media_types`` match the asset ``type`` as a glob, with or without its parameters
  (``image/tiff`` matches ``image/tiff; application=geotiff``; ``image/*`` works too).

Each given kind must match (AND); within a kind any value may (OR). Nothing given: every asset.

Paths: ``file:local_path`` when present and safe, else ``{collection}/{item}/{file}`` where
``{file}`` is the href's last segment (``.zip`` added to an extension-less zip, as MAAP's zipper
URLs are). ``path_template`` replaces the rule. Every path goes through
:func:`~bulkflex.core.paths.safe_relative_path`; an unsafe one falls back to the default rule,
and an asset whose fallback is unsafe too is skipped with a reason.

Pure: no I/O.
"""

from __future__ import annotations

import fnmatch
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from bulkflex.core.checksum import MultihashError, parse_multihash
from bulkflex.core.paths import PART_SUFFIX, UnsafePath, path_from_url, safe_relative_path
from bulkflex.errors import UsageError
from bulkflex.manifest import ManifestEntry

__all__ = [
    "DEFAULT_PATH_RULE",
    "TEMPLATE_FIELDS",
    "AssetSelector",
    "Skipped",
    "check_path_template",
    "entries_for_item",
]

DEFAULT_PATH_RULE = "{collection}/{item}/{file}"
#: Placeholders a ``--path-template`` may use.
TEMPLATE_FIELDS = {
    "collection": "the collection id",
    "item": "the item id",
    "asset": "the asset key",
    "file": "the href's file name (.zip added to an extension-less zip)",
    "local_path": "file:local_path, or {file} when the asset has none",
    "year": "the item's datetime year (4 digits)",
    "month": "month (2 digits)",
    "day": "day (2 digits)",
}


def check_path_template(template: str) -> str:
    """Refuse a template with unknown placeholders or broken braces (UsageError, one line)."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise UsageError(f"--path-template: {exc}") from None
    for name in fields:
        if name not in TEMPLATE_FIELDS:
            known = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
            raise UsageError(f"--path-template: unknown placeholder {{{name}}} (known: {known})")
    if not fields:
        raise UsageError("--path-template: needs at least one placeholder, e.g. {item}/{file}")
    return template


@dataclass(frozen=True, slots=True)
class AssetSelector:
    """Which assets of an item to plan. Empty tuples mean "any"."""

    keys: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    media_types: tuple[str, ...] = ()

    def matches(self, key: str, asset: Mapping[str, Any]) -> bool:
        if self.keys and not any(fnmatch.fnmatchcase(key, pattern) for pattern in self.keys):
            return False
        if self.roles:
            roles = asset.get("roles")
            if not isinstance(roles, list) or not any(r in self.roles for r in roles):
                return False
        if self.media_types:
            media = asset.get("type")
            if not isinstance(media, str):
                return False
            essence = media.split(";", 1)[0].strip()
            if not any(
                fnmatch.fnmatchcase(media, pattern) or fnmatch.fnmatchcase(essence, pattern)
                for pattern in self.media_types
            ):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Skipped:
    """An asset left out of the plan, and why (shown as a warning)."""

    collection: str
    item: str
    asset: str
    reason: str


def _file_name(href: str, media_type: str | None) -> str:
    name = path_from_url(href)
    if "." not in name and media_type and media_type.split(";")[0].strip() == "application/zip":
        name += ".zip"
    return name


def _date_fields(properties: Mapping[str, Any]) -> dict[str, str]:
    stamp = properties.get("datetime") or properties.get("start_datetime")
    if isinstance(stamp, str) and len(stamp) >= 10 and stamp[4] == "-" and stamp[7] == "-":
        return {"year": stamp[0:4], "month": stamp[5:7], "day": stamp[8:10]}
    return {"year": "unknown", "month": "unknown", "day": "unknown"}


def _safe(candidate: str) -> str | None:
    try:
        path = safe_relative_path(candidate)
    except UnsafePath:
        return None
    return None if path.endswith(PART_SUFFIX) else path


def _size(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def entries_for_item(
    item: Mapping[str, Any],
    selector: AssetSelector,
    *,
    base_url: str,
    path_template: str | None = None,
) -> Iterator[ManifestEntry | Skipped]:
    """Yield a manifest entry (or the reason it was skipped) per selected asset of ``item``.

    Relative hrefs are resolved against the item's ``self`` link, else ``base_url`` (the page
    the item came from). A ``file:checksum`` this build cannot verify (unknown multihash code) is
    kept in ``extra["file:checksum"]`` and the entry gets no checksum (size-only verification).
    Non-http(s) hrefs (``s3://``) are skipped.
    """
    item_id = str(item.get("id") or "")
    collection = str(item.get("collection") or "")
    assets = item.get("assets")
    if not isinstance(assets, Mapping):
        return
    base = base_url
    for link in item.get("links") or ():
        if isinstance(link, Mapping) and link.get("rel") == "self" and link.get("href"):
            base = str(link["href"])
            break
    props = item.get("properties")
    dates = _date_fields(props if isinstance(props, Mapping) else {})
    for key, asset in assets.items():
        if not isinstance(asset, Mapping) or not selector.matches(key, asset):
            continue
        href = asset.get("href")
        if not isinstance(href, str) or not href:
            yield Skipped(collection, item_id, key, "asset has no href")
            continue
        url = urljoin(base, href)
        if not url.startswith(("http://", "https://")):
            yield Skipped(collection, item_id, key, f"href is not http(s): {url.split(':')[0]}")
            continue
        media = asset.get("type") if isinstance(asset.get("type"), str) else None
        file_name = _file_name(url, media)
        local = asset.get("file:local_path")
        local_safe = _safe(local) if isinstance(local, str) else None
        fields = {
            "collection": collection or "unknown-collection",
            "item": item_id or "unknown-item",
            "asset": key,
            "file": file_name,
            "local_path": local_safe or file_name,
            **dates,
        }
        default = _safe(DEFAULT_PATH_RULE.format_map(fields))
        if path_template is not None:
            path = _safe(path_template.format_map(fields)) or default
        else:
            path = local_safe or default
        if path is None:
            yield Skipped(collection, item_id, key, "no safe local path for this asset")
            continue
        extra: dict[str, Any] = {}
        checksum = asset.get("file:checksum")
        if isinstance(checksum, str):
            try:
                parse_multihash(checksum)
            except MultihashError:
                extra["file:checksum"] = checksum
                checksum = None
        else:
            checksum = None
        roles = asset.get("roles")
        yield ManifestEntry(
            url=url,
            path=path,
            size=_size(asset.get("file:size")),
            checksum=checksum,
            collection=collection or None,
            item=item_id or None,
            asset=key,
            type=media,
            roles=tuple(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else (),
            extra=extra,
        )
