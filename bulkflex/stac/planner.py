"""The planner: a STAC search in, manifest entries out, streamed with flat memory.

Pages are turned into entries as they arrive and handed to a sink (a list, or a
:class:`~bulkflex.manifest.ManifestWriter` that writes each line at once), so no page outlives
its processing. The only state that grows is the de-duplication set: one 64-bit hash per
(collection, item), about 70 bytes an item.

Items seen twice (unstable server ordering across pages) are planned once. When the listing ran
to its end and the server's ``numberMatched`` differs from the items received, a
``number-matched`` warning says so: the plan may be incomplete.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from datetime import datetime as DateTime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import anyio

from bulkflex.errors import UsageError
from bulkflex.manifest import ManifestEntry, ManifestWriter
from bulkflex.stac.assets import AssetSelector, Skipped, check_path_template, entries_for_item
from bulkflex.stac.client import (
    DEFAULT_CATALOG,
    CatalogClient,
    CatalogOptions,
    normalise_catalog_url,
)
from bulkflex.stac.params import (
    CollectionQuery,
    ItemQuery,
    parse_bbox,
    parse_datetime,
    parse_filter,
    parse_ids,
    parse_intersects,
)
from bulkflex.stac.search import (
    SearchProgress,
    open_catalog,
    search_collections,
    search_items,
)

__all__ = [
    "Plan",
    "PlanRequest",
    "PlanStats",
    "PlanWarning",
    "collections",
    "collections_async",
    "make_plan_request",
    "plan",
    "plan_async",
]

log = logging.getLogger(__name__)
_SKIPPED_KEPT = 20
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PlanWarning:
    """Something the user should know about a plan; ``kind`` is stable for scripts.

    Kinds: ``number-matched`` (the server's count and the items received differ),
    ``client-side-filter`` (the catalog cannot filter; done here), ``skipped-assets`` (assets
    without a usable href or safe path), ``unverifiable-checksum`` (a ``file:checksum`` with an
    unknown multihash code; size-only verification), ``catalog-url``.
    """

    kind: str
    message: str


@dataclass(slots=True)
class PlanStats:
    """What a plan holds. ``bytes`` sums the known sizes; ``unknown_size`` counts the rest."""

    items: int = 0
    assets: int = 0
    bytes: int = 0
    unknown_size: int = 0
    duplicates: int = 0
    pages: int = 0
    received: int = 0
    number_matched: int | None = None
    truncated: bool = False
    skipped: list[Skipped] = field(default_factory=list)
    skipped_count: int = 0
    unverifiable_checksums: int = 0
    warnings: list[PlanWarning] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """A validated plan: where to search, what to select, where files go."""

    catalog: str
    query: ItemQuery
    selector: AssetSelector = field(default_factory=AssetSelector)
    max_items: int | None = None
    path_template: str | None = None
    method: str | None = None
    options: CatalogOptions = field(default_factory=CatalogOptions)


def _strings(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def make_plan_request(
    catalog: str = DEFAULT_CATALOG,
    *,
    collections: str | Sequence[str] | None = None,
    bbox: str | Sequence[float] | None = None,
    intersects: str | dict[str, Any] | None = None,
    datetime: str | DateTime | date | Sequence[Any] | None = None,
    ids: str | Sequence[str] | None = None,
    filter: str | dict[str, Any] | None = None,
    filter_lang: str | None = None,
    max_items: int | None = None,
    assets: str | Sequence[str] | None = None,
    roles: str | Sequence[str] | None = None,
    media_types: str | Sequence[str] | None = None,
    path_template: str | None = None,
    method: str | None = None,
    options: CatalogOptions | None = None,
) -> PlanRequest:
    """Validate loose inputs into a :class:`PlanRequest`; UsageError/FilterError say why not.

    Nothing is sent: a bad filter, bbox, datetime or geometry is refused before any request.
    """
    if max_items is not None and (isinstance(max_items, bool) or max_items < 1):
        raise UsageError("--max-items must be at least 1")
    if method is not None and method.upper() not in ("GET", "POST"):
        raise UsageError(f"--method must be GET or POST, not {method!r}")
    lang, parsed_filter = parse_filter(filter, filter_lang) if filter is not None else (None, None)
    query = ItemQuery(
        collections=_strings(collections),
        bbox=parse_bbox(bbox) if bbox is not None else None,
        intersects=parse_intersects(intersects) if intersects is not None else None,
        datetime=parse_datetime(datetime) if datetime is not None else None,
        ids=parse_ids(ids) if ids is not None else (),
        filter=parsed_filter,
        filter_lang=lang,
    )
    return PlanRequest(
        catalog=normalise_catalog_url(catalog),
        query=query,
        selector=AssetSelector(_strings(assets), _strings(roles), _strings(media_types)),
        max_items=max_items,
        path_template=check_path_template(path_template) if path_template is not None else None,
        method=method.upper() if method else None,
        options=options or CatalogOptions(),
    )


def _item_key(collection: str, item_id: str) -> int:
    digest = hashlib.blake2b(f"{collection}\0{item_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _session(options: CatalogOptions) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=4)
    return aiohttp.ClientSession(connector=connector, trust_env=False)


async def plan_async(
    request: PlanRequest,
    sink: Callable[[ManifestEntry], None],
    *,
    on_page: Callable[[PlanStats], None] | None = None,
    session: aiohttp.ClientSession | None = None,
) -> PlanStats:
    """Run ``request``, handing each entry to ``sink`` as soon as its page arrives.

    Raises:
        CatalogError: the catalog refused, answered non-JSON, an unknown collection, a paging
            loop. CatalogUnreachable: network errors after retries.
    """
    stats = PlanStats()
    own = session is None
    http = session or _session(request.options)
    try:
        client = CatalogClient(http, request.options)
        landing = await open_catalog(client, request.catalog)
        progress = SearchProgress()
        seen: set[int] = set()

        def page_done(p: SearchProgress) -> None:
            stats.pages, stats.received = p.pages, p.received
            if on_page is not None:
                on_page(stats)

        async for item, page_url in search_items(
            client,
            landing,
            request.query,
            method=request.method,
            page_size=min(request.options.page_size, request.max_items or 10**9),
            progress=progress,
            on_page=page_done,
        ):
            key = _item_key(str(item.get("collection") or ""), str(item.get("id") or ""))
            if key in seen:
                stats.duplicates += 1
                continue
            seen.add(key)
            stats.items += 1
            for produced in entries_for_item(
                item, request.selector, base_url=page_url, path_template=request.path_template
            ):
                if isinstance(produced, Skipped):
                    stats.skipped_count += 1
                    if len(stats.skipped) < _SKIPPED_KEPT:
                        stats.skipped.append(produced)
                    continue
                if "file:checksum" in produced.extra:
                    stats.unverifiable_checksums += 1
                stats.assets += 1
                if produced.size is None:
                    stats.unknown_size += 1
                else:
                    stats.bytes += produced.size
                sink(produced)
            if request.max_items is not None and stats.items >= request.max_items:
                progress.truncated = True
                break
        stats.pages, stats.received = progress.pages, progress.received
        stats.number_matched = progress.number_matched
        stats.truncated = progress.truncated
        _conclude(stats, progress)
    finally:
        if own:
            await http.close()
    return stats


def _conclude(stats: PlanStats, progress: SearchProgress) -> None:
    for note in progress.notes:
        stats.warnings.append(PlanWarning("client-side-filter", note))
    if (
        not progress.truncated
        and not progress.client_side_filter
        and progress.number_matched is not None
        and progress.number_matched != progress.received
    ):
        stats.warnings.append(
            PlanWarning(
                "number-matched",
                f"the catalog said {progress.number_matched} items match but sent "
                f"{progress.received}: the plan may be incomplete (try again, or split the "
                "search by --datetime)",
            )
        )
    if stats.skipped_count:
        first = stats.skipped[0]
        stats.warnings.append(
            PlanWarning(
                "skipped-assets",
                f"{stats.skipped_count} selected assets were left out, e.g. {first.item} "
                f"{first.asset}: {first.reason}",
            )
        )
    if stats.unverifiable_checksums:
        stats.warnings.append(
            PlanWarning(
                "unverifiable-checksum",
                f"{stats.unverifiable_checksums} assets have a file:checksum this version "
                "cannot verify (kept in the manifest's 'file:checksum'; size-only check)",
            )
        )
    for warning in stats.warnings:
        log.info("plan warning (%s): %s", warning.kind, warning.message)


class Plan(Sequence[ManifestEntry]):
    """The result of :func:`plan`: the entries (empty when written to a file) and the stats."""

    def __init__(
        self, entries: list[ManifestEntry], stats: PlanStats, manifest: Path | None
    ) -> None:
        self.entries = entries
        self.stats = stats
        self.manifest = manifest

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: Any) -> Any:
        return self.entries[index]

    @property
    def warnings(self) -> list[PlanWarning]:
        return self.stats.warnings

    def __repr__(self) -> str:
        s = self.stats
        where = f" -> {self.manifest}" if self.manifest else ""
        return f"<Plan {s.items} items, {s.assets} assets, {s.bytes} bytes{where}>"


def run_sync(function: Callable[[], Any]) -> Any:
    """Run an async callable to completion from sync code, also inside a running event loop
    (a Jupyter notebook): then it runs on a fresh loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return anyio.run(function)
    result: list[Any] = []
    failure: list[BaseException] = []

    def worker() -> None:
        try:
            result.append(anyio.run(function))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=worker, name="bulkflex-plan")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def plan(
    catalog: str = DEFAULT_CATALOG,
    *,
    collections: str | Sequence[str] | None = None,
    bbox: str | Sequence[float] | None = None,
    intersects: str | dict[str, Any] | None = None,
    datetime: str | DateTime | date | Sequence[Any] | None = None,
    ids: str | Sequence[str] | None = None,
    filter: str | dict[str, Any] | None = None,
    filter_lang: str | None = None,
    max_items: int | None = None,
    assets: str | Sequence[str] | None = None,
    roles: str | Sequence[str] | None = None,
    media_types: str | Sequence[str] | None = None,
    path_template: str | None = None,
    method: str | None = None,
    output: str | os.PathLike[str] | None = None,
    options: CatalogOptions | None = None,
) -> Plan:
    """Search a STAC catalog and turn the selected assets into manifest entries.

    With ``output``, entries stream into that manifest file (atomically: a failed plan leaves
    any previous file untouched) and the returned :class:`Plan` holds only the stats; without
    it, the entries are returned in memory. Works inside a running event loop (notebooks).

    Args:
        catalog: STAC API root (default ESA MAAP); a missing trailing slash is added.
        collections, bbox, intersects, datetime, ids, filter, filter_lang: the search, as in
            pystac-client (``filter`` is CQL2 text or a CQL2-JSON dict; ``intersects`` a
            geometry dict, a JSON string or a GeoJSON file path; ``datetime`` a string such
            as ``"2023-07-01/2023-07-31"``, with ``..`` for an open end, or a pair).
        max_items: stop after this many (distinct) items.
        assets, roles, media_types: asset selection (globs on keys, any role, media type globs).
        path_template: e.g. ``"{collection}/{item}/{file}"``; default: ``file:local_path``.
        method: "GET" or "POST"; default GET (POST with ``intersects``).

    Raises:
        UsageError / FilterError: bad input, before any request.
        CatalogError / CatalogUnreachable: see :func:`plan_async`.
    """
    request = make_plan_request(
        catalog,
        collections=collections,
        bbox=bbox,
        intersects=intersects,
        datetime=datetime,
        ids=ids,
        filter=filter,
        filter_lang=filter_lang,
        max_items=max_items,
        assets=assets,
        roles=roles,
        media_types=media_types,
        path_template=path_template,
        method=method,
        options=options,
    )
    entries: list[ManifestEntry] = []

    if output is None:

        async def collect() -> PlanStats:
            return await plan_async(request, entries.append)

        return Plan(entries, run_sync(collect), None)

    target = Path(output)

    async def write() -> PlanStats:
        with ManifestWriter(target) as writer:
            return await plan_async(request, writer.write)

    return Plan([], run_sync(write), target)


async def collections_async(
    catalog: str,
    query: CollectionQuery,
    *,
    options: CatalogOptions | None = None,
    max_collections: int | None = None,
    page_size: int = 100,
) -> tuple[list[dict[str, Any]], int | None, list[str]]:
    """Collection search: ``(collections, numberMatched, notes)``. See
    :func:`bulkflex.stac.search.search_collections`."""
    settings = options or CatalogOptions()
    async with _session(settings) as http:
        client = CatalogClient(http, settings)
        landing = await open_catalog(client, normalise_catalog_url(catalog))
        return await search_collections(
            client, landing, query, page_size=page_size, max_collections=max_collections
        )


def collections(
    catalog: str = DEFAULT_CATALOG,
    *,
    q: str | None = None,
    filter: str | None = None,
    bbox: str | Sequence[float] | None = None,
    datetime: str | Sequence[Any] | None = None,
    max_collections: int | None = None,
    page_size: int = 100,
    options: CatalogOptions | None = None,
) -> list[dict[str, Any]]:
    """Collections of ``catalog`` matching free text ``q``, a CQL2-text ``filter`` (``title``,
    ``platform``, ``organisationName``, ...), a ``bbox`` and a ``datetime`` overlap."""
    query = collection_query(q=q, filter=filter, bbox=bbox, datetime=datetime)

    async def run() -> list[dict[str, Any]]:
        found, _, _ = await collections_async(
            catalog, query, options=options, max_collections=max_collections, page_size=page_size
        )
        return found

    result: list[dict[str, Any]] = run_sync(run)
    return result


def collection_query(
    *,
    q: str | None = None,
    filter: str | None = None,
    bbox: str | Sequence[float] | None = None,
    datetime: str | Sequence[Any] | None = None,
) -> CollectionQuery:
    """Validate collection-search inputs (the filter must be CQL2 text)."""
    text = None
    if filter is not None:
        _, value = parse_filter(filter, "cql2-text")
        text = str(value)
    return CollectionQuery(
        q=q or None,
        filter=text,
        bbox=parse_bbox(bbox) if bbox is not None else None,
        datetime=parse_datetime(datetime) if datetime is not None else None,
    )
