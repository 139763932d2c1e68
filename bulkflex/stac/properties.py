"""What a CQL2 filter or a free-text query sees of an item or a collection.

ESA MAAP (FedEO) publishes OpenSearch-EO queryable names (``productType``, ``instrument``,
``orbitNumber``, ``modificationDate``, ...) while its items carry STAC property names
(``product:type``, ``instruments``, ``sat:absolute_orbit``, ``updated``, ...). Filters in the wild
use both spellings, and the server accepts both. :func:`item_queryables` builds one flat mapping
holding every spelling, so a filter written either way can be evaluated against it. The embedded
catalog evaluates filters with it, and so does the planner when a catalog does not implement the
filter extension itself (client-side fallback).

Pure: no I/O. Values are JSON scalars or lists, the shape the ``cql2`` package evaluates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

__all__ = [
    "COLLECTION_QUERYABLES",
    "ITEM_QUERYABLES",
    "collection_overlaps",
    "collection_queryables",
    "free_text_matches",
    "item_queryables",
    "parse_free_text",
]

#: OpenSearch-EO queryable name -> the STAC item property it stands for.
ITEM_QUERYABLES: dict[str, str] = {
    "productType": "product:type",
    "platform": "platform",
    "instrument": "instruments",
    "orbitNumber": "sat:absolute_orbit",
    "relativeOrbitNumber": "sat:relative_orbit",
    "orbitDirection": "sat:orbit_state",
    "productVersion": "version",
    "processingLevel": "processing:level",
    "processingDate": "processing:datetime",
    "modificationDate": "updated",
    "creationDate": "created",
    "missionPhase": "missionPhase",
    "acquisitionType": "acquisitionType",
    "uid": "id",
    "identifier": "id",
    "parentIdentifier": "collection",
    "startTimeFromAscendingNode": "start_datetime",
    "completionTimeFromAscendingNode": "end_datetime",
}

#: Queryables of collection search: what MAAP's portal pages filter on.
COLLECTION_QUERYABLES: tuple[str, ...] = (
    "id",
    "identifier",
    "title",
    "description",
    "platform",
    "instrument",
    "organisationName",
    "keywords",
)


def item_queryables(item: Mapping[str, Any]) -> dict[str, Any]:
    """A flat mapping of every filterable value of a STAC item, under both spellings.

    STAC property names keep their value (``instruments`` stays a list); each OpenSearch alias
    gets a scalar where a list would make ``=`` useless: ``instrument`` is the first entry of
    ``instruments``. ``id``, ``collection``, ``geometry`` and ``datetime`` are included. Missing
    properties are simply absent (a filter on them does not match).
    """
    props = item.get("properties")
    flat: dict[str, Any] = dict(props) if isinstance(props, Mapping) else {}
    flat["id"] = item.get("id")
    if item.get("collection") is not None:
        flat["collection"] = item.get("collection")
    if item.get("geometry") is not None:
        flat["geometry"] = item.get("geometry")
    for alias, stac_name in ITEM_QUERYABLES.items():
        if alias in flat or stac_name not in flat:
            continue
        value = flat[stac_name]
        if stac_name == "instruments" and isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            flat[alias] = value
    return flat


def collection_queryables(collection: Mapping[str, Any]) -> dict[str, Any]:
    """What a collection-search filter sees: id, title, platform, instrument, organisationName.

    ``platform`` and ``instrument`` come from the collection's ``summaries`` (first value);
    ``organisationName`` is the first provider's name.
    """
    summaries = collection.get("summaries")
    summaries = summaries if isinstance(summaries, Mapping) else {}
    flat: dict[str, Any] = {
        "id": collection.get("id"),
        "identifier": collection.get("id"),
        "title": collection.get("title") or "",
        "description": collection.get("description") or "",
    }
    for name, key in (("platform", "platform"), ("instrument", "instruments")):
        values = summaries.get(key)
        if isinstance(values, list) and values:
            flat[name] = values[0]
        elif isinstance(values, str):
            flat[name] = values
    providers = collection.get("providers")
    if isinstance(providers, list) and providers and isinstance(providers[0], Mapping):
        provider = providers[0].get("name")
        if isinstance(provider, str):
            flat["organisationName"] = provider
    keywords = collection.get("keywords")
    if isinstance(keywords, list):
        flat["keywords"] = [k for k in keywords if isinstance(k, str)]
    return flat


_TERM = re.compile(r'"([^"]*)"|(\S+)')


def parse_free_text(q: str) -> list[str]:
    """Split a free-text query into lowercase terms; ``"quoted phrases"`` stay whole.

    ``OR`` and ``AND`` between terms are accepted and ignored (terms are alternatives, as in the
    STAC free-text extension's default). Empty input gives no terms.
    """
    terms: list[str] = []
    for match in _TERM.finditer(q):
        phrase, word = match.group(1), match.group(2)
        term = phrase if phrase is not None else word
        if term is None or term.upper() in ("OR", "AND"):
            continue
        term = term.strip().lower()
        if term:
            terms.append(term)
    return terms


def free_text_matches(terms: Iterable[str], collection: Mapping[str, Any]) -> bool:
    """True if any term occurs (case-insensitive substring) in the collection's id, title,
    description or keywords. No terms match everything."""
    wanted = list(terms)
    if not wanted:
        return True
    keywords = collection.get("keywords")
    haystack = " ".join(
        [
            str(collection.get("id") or ""),
            str(collection.get("title") or ""),
            str(collection.get("description") or ""),
            *(k for k in (keywords if isinstance(keywords, list) else []) if isinstance(k, str)),
        ]
    ).lower()
    return any(term in haystack for term in wanted)


def _instant(text: Any) -> float | None:
    if not isinstance(text, str) or not text or text == "..":
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp()


def collection_overlaps(
    collection: Mapping[str, Any],
    bbox: tuple[float, float, float, float] | None,
    start: float | None,
    end: float | None,
) -> bool:
    """True if the collection's extent meets ``bbox`` (W, S, E, N) and ``[start, end]`` (POSIX
    seconds, None = open). A missing or malformed extent matches."""
    extent = collection.get("extent")
    extent = extent if isinstance(extent, Mapping) else {}
    if bbox is not None:
        try:
            west, south, east, north = (float(v) for v in extent["spatial"]["bbox"][0][:4])
        except (KeyError, IndexError, TypeError, ValueError):
            pass
        else:
            if west > bbox[2] or east < bbox[0] or south > bbox[3] or north < bbox[1]:
                return False
    try:
        interval = extent["temporal"]["interval"][0]
    except (KeyError, IndexError, TypeError):
        return True
    c_start = _instant(interval[0]) if len(interval) > 0 else None
    c_end = _instant(interval[1]) if len(interval) > 1 else None
    if end is not None and c_start is not None and c_start > end:
        return False
    return not (start is not None and c_end is not None and c_end < start)
