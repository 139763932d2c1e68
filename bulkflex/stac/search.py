"""Item search and collection search over a STAC API, streamed page by page.

What the catalog cannot do is done here, with a warning, rather than silently wrong:

- a CQL2 filter sent to a catalog that does not advertise the filter extension (an empty or
  unfiltered answer would follow) is evaluated on this machine instead, against both spellings
  of each property (:mod:`bulkflex.stac.properties`);
- collection search on a catalog without the collection-search extension fetches every
  collection and filters by ``q``, ``filter``, ``bbox`` and ``datetime`` here.

Collections named in an item search are checked first (``GET collections/{id}``), so a typo is
"unknown collection" rather than an empty plan.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote, urljoin

import cql2

from bulkflex.errors import CatalogError
from bulkflex.stac.client import CatalogClient, CatalogNotFound, PageRequest, with_params
from bulkflex.stac.params import CollectionQuery, ItemQuery
from bulkflex.stac.properties import (
    collection_overlaps,
    collection_queryables,
    free_text_matches,
    item_queryables,
    parse_free_text,
)

__all__ = ["Landing", "SearchProgress", "open_catalog", "search_collections", "search_items"]

log = logging.getLogger(__name__)

_ITEM_FILTER = re.compile(r"item-search#filter|ogcapi-features-3/[^/]+/conf/(features-)?filter")
_COLLECTION_SEARCH = re.compile(r"collection-search(?!#)")
_COLLECTION_FREE_TEXT = re.compile(r"collection-search#free-text")
_COLLECTION_FILTER = re.compile(r"collection-search#filter")


@dataclass(frozen=True, slots=True)
class Landing:
    """What the planner needs from a catalog's landing page."""

    url: str
    conforms_to: tuple[str, ...]
    search_url: str
    search_methods: tuple[str, ...]
    collections_url: str

    def conforms(self, pattern: re.Pattern[str]) -> bool:
        return any(pattern.search(uri) for uri in self.conforms_to)


async def open_catalog(client: CatalogClient, url: str) -> Landing:
    """Read the landing page (and ``conformance`` when the page does not list it).

    Raises CatalogError when the answer is not a STAC API landing page.
    """
    try:
        root = await client.get_json(url)
    except CatalogNotFound:
        raise CatalogError(f"{url} answered 404: is this a STAC API root?") from None
    links = root.get("links")
    if not isinstance(links, list) or not ("conformsTo" in root or root.get("type") == "Catalog"):
        raise CatalogError(f"{url} is JSON but not a STAC API landing page")
    conforms = root.get("conformsTo")
    if not isinstance(conforms, list):
        for link in links:
            if isinstance(link, dict) and link.get("rel") == "conformance" and link.get("href"):
                try:
                    conforms = (await client.get_json(urljoin(url, link["href"]))).get("conformsTo")
                except CatalogError:
                    conforms = []
                break
    search_url = urljoin(url, "search")
    methods: list[str] = []
    collections_url = urljoin(url, "collections")
    for link in links:
        if not isinstance(link, dict) or not isinstance(link.get("href"), str):
            continue
        rel, kind = link.get("rel"), str(link.get("type") or "")
        if rel == "search" and ("json" in kind or not kind):
            search_url = urljoin(url, link["href"])
            methods.append(str(link.get("method") or "GET").upper())
        elif rel == "data":
            collections_url = urljoin(url, link["href"])
    return Landing(
        url=url,
        conforms_to=tuple(str(c) for c in conforms or () if isinstance(c, str)),
        search_url=search_url,
        search_methods=tuple(methods) or ("GET",),
        collections_url=collections_url,
    )


@dataclass(slots=True)
class SearchProgress:
    """Filled in while a search streams.

    Attributes:
        number_matched: the first page's ``numberMatched`` (or ``context.matched``), if any.
        received: features received (before client-side filtering and de-duplication).
        pages: pages fetched.
        client_side_filter: the filter was evaluated here (catalog lacks the extension).
        truncated: stopped early because ``max_items`` was reached.
    """

    number_matched: int | None = None
    received: int = 0
    pages: int = 0
    client_side_filter: bool = False
    truncated: bool = False
    notes: list[str] = field(default_factory=list)


async def check_collections(client: CatalogClient, landing: Landing, ids: Sequence[str]) -> None:
    """Raise CatalogError ``unknown collection`` for an id the catalog answers 404 for."""
    base = landing.collections_url.rstrip("/") + "/"
    for collection_id in ids:
        try:
            await client.get_json(base + quote(collection_id, safe=""))
        except CatalogNotFound:
            raise CatalogError(
                f"unknown collection {collection_id!r} at {landing.url} "
                "(`bulkflex collections` lists them)"
            ) from None


async def search_items(
    client: CatalogClient,
    landing: Landing,
    query: ItemQuery,
    *,
    method: str | None,
    page_size: int,
    progress: SearchProgress,
    on_page: Callable[[SearchProgress], None] | None = None,
) -> AsyncIterator[tuple[dict[str, Any], str]]:
    """Yield ``(item, page url)`` for every item of the search, page by page.

    ``method`` None picks GET, or POST when ``intersects`` is given (a polygon in a URL can
    exceed server limits) or the catalog only offers POST.
    """
    if query.collections:
        await check_collections(client, landing, query.collections)
    expr = None
    send = query
    if query.filter is not None and not landing.conforms(_ITEM_FILTER):
        expr = _compile(query.filter)
        send = ItemQuery(
            collections=query.collections,
            bbox=query.bbox,
            intersects=query.intersects,
            datetime=query.datetime,
            ids=query.ids,
        )
        progress.client_side_filter = True
        progress.notes.append(
            "the catalog does not advertise the CQL2 filter extension: the filter is applied "
            "on this machine, so every item matching the other criteria is fetched"
        )
    chosen = (method or "").upper()
    if not chosen:
        chosen = "POST" if query.intersects is not None else "GET"
        if chosen not in landing.search_methods and landing.search_methods:
            chosen = landing.search_methods[0]
    if chosen == "POST":
        first = PageRequest("POST", landing.search_url, send.post_body(page_size))
    else:
        first = PageRequest("GET", with_params(landing.search_url, send.get_params(page_size)))
    async for page, url in client.pages(first):
        progress.pages += 1
        if progress.pages == 1:
            progress.number_matched = _matched(page)
        features = page.get("features")
        if not isinstance(features, list):
            raise CatalogError(f"search page from {url.split('?')[0]} has no 'features' list")
        for feature in features:
            if not isinstance(feature, dict):
                continue
            progress.received += 1
            if expr is not None and not expr.matches(item_queryables(feature)):
                continue
            yield feature, url
        if on_page is not None:
            on_page(progress)


def _matched(page: dict[str, Any]) -> int | None:
    value = page.get("numberMatched")
    if value is None and isinstance(page.get("context"), dict):
        value = page["context"].get("matched")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _compile(value: str | dict[str, Any]) -> Any:
    return cql2.parse_json(json.dumps(value)) if isinstance(value, dict) else cql2.parse_text(value)


async def search_collections(
    client: CatalogClient,
    landing: Landing,
    query: CollectionQuery,
    *,
    page_size: int = 100,
    max_collections: int | None = None,
) -> tuple[list[dict[str, Any]], int | None, list[str]]:
    """Collections matching ``query``: ``(collections, numberMatched, notes)``.

    Server-side when the catalog advertises collection search (and its free-text / filter
    parts for ``q`` / ``filter``); otherwise every collection is listed and filtered here.
    """
    notes: list[str] = []
    server_side = landing.conforms(_COLLECTION_SEARCH)
    if query.q and not landing.conforms(_COLLECTION_FREE_TEXT):
        server_side = False
    if query.filter is not None and not landing.conforms(_COLLECTION_FILTER):
        server_side = False
    send = query if server_side else CollectionQuery()
    if not server_side and (query.q or query.filter or query.bbox or query.datetime):
        notes.append(
            "the catalog does not advertise collection search: listing every collection and "
            "filtering on this machine"
        )
    expr = None if server_side or query.filter is None else cql2.parse_text(query.filter)
    terms = parse_free_text(query.q or "") if not server_side else []
    bbox = start = end = None
    if not server_side:
        if query.bbox is not None:
            half = len(query.bbox) // 2
            b = query.bbox
            bbox = (b[0], b[1], b[half], b[half + 1])
        if query.datetime:
            start, end = _interval_seconds(query.datetime)
    found: list[dict[str, Any]] = []
    matched: int | None = None
    first = PageRequest("GET", with_params(landing.collections_url, send.get_params(page_size)))
    async for page, _ in client.pages(first):
        if matched is None:
            matched = _matched(page)
        for collection in page.get("collections") or ():
            if not isinstance(collection, dict):
                continue
            if not server_side:
                if not free_text_matches(terms, collection):
                    continue
                if expr is not None and not expr.matches(collection_queryables(collection)):
                    continue
                if not collection_overlaps(collection, bbox, start, end):
                    continue
            found.append(collection)
            if max_collections is not None and len(found) >= max_collections:
                return found, matched if server_side else len(found), notes
    return found, matched if server_side else len(found), notes


def _interval_seconds(text: str) -> tuple[float | None, float | None]:
    def instant(value: str) -> float | None:
        if value in ("", ".."):
            return None
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()

    first, _, second = text.partition("/")
    if not second:
        moment = instant(first)
        return moment, moment
    return instant(first), instant(second)
