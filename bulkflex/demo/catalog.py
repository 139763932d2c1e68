"""The embedded catalog's search engine: which items and collections a query matches.

Semantics follow what the MAAP research note records for FedEO:

- ``datetime`` matches items whose ``[start_datetime, end_datetime]`` *overlaps* the requested
  instant or interval (open ends allowed);
- ``bbox`` and ``intersects`` match items whose footprint geometry intersects the given shape
  (a bbox with west > east crosses the antimeridian);
- ``filter`` (CQL2 text or JSON) sees both spellings of each property (``productType`` and
  ``"product:type"``, ``instrument`` and ``instruments``, ...), see
  :mod:`bulkflex.stac.properties`; an unknown property is a 400, not an empty result;
- results are in a stable order (collection order, then acquisition time), so offset paging
  with ``startRecord`` is consistent; the last few result lists are cached by query, so paging
  through 100k items does not re-scan them for every page.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cql2

from bulkflex.demo.content import ContentStore, FileSpec
from bulkflex.demo.data import (
    COLLECTIONS,
    AssetSpec,
    CollectionSpec,
    ItemRecord,
    _properties,
    build_records,
    collection_json,
    item_assets,
    item_json,
)
from bulkflex.stac.properties import (
    COLLECTION_QUERYABLES,
    ITEM_QUERYABLES,
    collection_overlaps,
    collection_queryables,
    free_text_matches,
    item_queryables,
)

__all__ = ["BadQuery", "Catalog", "ItemFilter"]

_CACHE_QUERIES = 16


class BadQuery(ValueError):
    """The request's parameters are invalid; the message is the 400 description."""


def _property_names(node: Any) -> Iterable[str]:
    if isinstance(node, Mapping):
        if set(node) == {"property"} and isinstance(node["property"], str):
            yield node["property"]
            return
        for value in node.values():
            yield from _property_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _property_names(value)


def compile_filter(value: str | Mapping[str, Any], lang: str | None, known: set[str]) -> Any:
    """Parse a filter (``cql2.Expr``) and check its property names; BadQuery on any problem."""
    try:
        if isinstance(value, Mapping):
            expr = cql2.parse_json(json.dumps(value))
        elif lang == "cql2-json" or value.lstrip().startswith("{"):
            expr = cql2.parse_json(value)
        else:
            expr = cql2.parse_text(value)
    except (cql2.ParseError, cql2.ValidationError, ValueError) as exc:
        raise BadQuery(f"invalid filter: {' '.join(str(exc).split())}") from None
    for name in _property_names(expr.to_json()):
        if name not in known:
            raise BadQuery(f"invalid filter: unknown queryable {name!r}")
    return expr


@dataclass(frozen=True, slots=True)
class ItemFilter:
    """A parsed item search. ``None`` fields do not restrict.

    ``start``/``end`` are POSIX seconds; ``geometry`` is a GeoJSON geometry (a bbox arrives as a
    polygon); ``expr`` a compiled ``cql2.Expr``; ``key`` identifies the query for caching.
    """

    collections: tuple[str, ...] | None
    ids: frozenset[str] | None
    start: float | None
    end: float | None
    geometry: dict[str, Any] | None
    geometry_bbox: tuple[float, float, float, float] | None
    expr: Any
    key: str


def bbox_polygon(bbox: Sequence[float]) -> tuple[dict[str, Any], tuple[float, float, float, float]]:
    """A GeoJSON (Multi)Polygon for a 4- or 6-number bbox, and its extent for prefiltering."""
    half = len(bbox) // 2
    west, south, east, north = bbox[0], bbox[1], bbox[half], bbox[half + 1]

    def box(w: float, e: float) -> list[list[list[float]]]:
        return [[[w, south], [e, south], [e, north], [w, north], [w, south]]]

    if west <= east:
        return {"type": "Polygon", "coordinates": box(west, east)}, (west, south, east, north)
    return (
        {"type": "MultiPolygon", "coordinates": [box(west, 180.0), box(-180.0, east)]},
        (-180.0, south, 180.0, north),
    )


def _positions(node: Any) -> Iterable[tuple[float, float]]:
    if isinstance(node, list) and node and isinstance(node[0], int | float):
        yield float(node[0]), float(node[1])
    elif isinstance(node, list):
        for child in node:
            yield from _positions(child)


def geometry_extent(geometry: Mapping[str, Any]) -> tuple[float, float, float, float]:
    if geometry.get("type") == "GeometryCollection":
        points = [
            p for g in geometry.get("geometries", []) for p in _positions(g.get("coordinates"))
        ]
    else:
        points = list(_positions(geometry.get("coordinates")))
    if not points:
        raise BadQuery("invalid intersects: geometry has no coordinates")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


class Catalog:
    """Collections, items and files of one embedded catalog (immutable after construction)."""

    def __init__(
        self, *, items_per_collection: int | None, data_size: tuple[int, int], content: ContentStore
    ) -> None:
        self.specs: dict[str, CollectionSpec] = {spec.id: spec for spec in COLLECTIONS}
        self.data_size = data_size
        self.content = content
        self.records: dict[str, list[ItemRecord]] = {}
        self.by_id: dict[str, ItemRecord] = {}
        for spec in COLLECTIONS:
            count = items_per_collection if items_per_collection is not None else spec.count
            records = build_records(spec, count if spec.kind else 0)
            self.records[spec.id] = records
            for record in records:
                self.by_id[record.id] = record
        sample = next(iter(self.by_id.values()), None)
        known = set(ITEM_QUERYABLES) | {"id", "collection", "geometry", "datetime"}
        if sample is not None:
            known |= set(self.item_properties(sample))
        self.item_queryable_names = known
        self._cache: OrderedDict[str, list[ItemRecord]] = OrderedDict()
        self._lock = threading.Lock()

    # -- items ------------------------------------------------------------------------------

    def item_properties(self, record: ItemRecord) -> dict[str, Any]:
        """What a filter sees of ``record`` (no assets rendered)."""
        spec = self.specs[record.collection]
        ring = [list(p) for p in record.ring] + [list(record.ring[0])]
        return item_queryables(
            {
                "id": record.id,
                "collection": record.collection,
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": _properties(spec, record),
            }
        )

    def render_item(self, record: ItemRecord, *, root: str, catalog: str) -> dict[str, Any]:
        return item_json(
            self.specs[record.collection],
            record,
            root=root,
            catalog=catalog,
            data_size=self.data_size,
            checksum_of=self.content.checksum,
        )

    def assets_of(self, record: ItemRecord) -> tuple[AssetSpec, ...]:
        spec = self.specs[record.collection]
        return item_assets(record, self.data_size, spec.kind, spec.bucket)

    def search(self, query: ItemFilter) -> list[ItemRecord]:
        """Every matching record, in stable order (cached by ``query.key``)."""
        with self._lock:
            cached = self._cache.get(query.key)
            if cached is not None:
                self._cache.move_to_end(query.key)
                return cached
        found = list(self._scan(query))
        with self._lock:
            self._cache[query.key] = found
            while len(self._cache) > _CACHE_QUERIES:
                self._cache.popitem(last=False)
        return found

    def _scan(self, query: ItemFilter) -> Iterable[ItemRecord]:
        names = query.collections if query.collections is not None else tuple(self.records)
        spatial = None
        if query.geometry is not None:
            spatial = cql2.parse_json(
                json.dumps(
                    {"op": "s_intersects", "args": [{"property": "geometry"}, query.geometry]}
                )
            )
        for name in names:
            for record in self.records.get(name, ()):
                if query.ids is not None and record.id not in query.ids:
                    continue
                if query.start is not None and record.end < query.start:
                    continue
                if query.end is not None and record.start > query.end:
                    continue
                if spatial is not None:
                    assert query.geometry_bbox is not None
                    west, south, east, north = query.geometry_bbox
                    bw, bs, be, bn = record.bbox
                    if bw > east or be < west or bs > north or bn < south:
                        continue
                    ring = [list(p) for p in record.ring] + [list(record.ring[0])]
                    if not spatial.matches(
                        {"geometry": {"type": "Polygon", "coordinates": [ring]}}
                    ):
                        continue
                if query.expr is not None and not query.expr.matches(self.item_properties(record)):
                    continue
                yield record

    # -- collections ------------------------------------------------------------------------

    def collection(self, collection_id: str, *, catalog: str) -> dict[str, Any] | None:
        spec = self.specs.get(collection_id)
        if spec is None:
            return None
        return collection_json(spec, catalog=catalog, count=len(self.records[spec.id]))

    def search_collections(
        self,
        *,
        catalog: str,
        terms: Sequence[str],
        expr: Any,
        bbox: tuple[float, float, float, float] | None,
        start: float | None,
        end: float | None,
    ) -> list[dict[str, Any]]:
        """Collections matching free-text ``terms``, a filter, a bbox and a datetime overlap."""
        found = []
        for spec in COLLECTIONS:
            body = collection_json(spec, catalog=catalog, count=len(self.records[spec.id]))
            if not free_text_matches(terms, body):
                continue
            if expr is not None and not expr.matches(collection_queryables(body)):
                continue
            if not collection_overlaps(body, bbox, start, end):
                continue
            found.append(body)
        return found

    def collection_queryable_names(self) -> set[str]:
        return set(COLLECTION_QUERYABLES)

    # -- files ------------------------------------------------------------------------------

    def find_file(self, path: str) -> tuple[ItemRecord, AssetSpec] | None:
        """The item and asset served at URL ``path`` (``/data/...``), if any."""
        segments = path.split("/")
        # /data/<bucket>/<Col>/<yyyy>/<mm>/<dd>/<ID>/...   or   /data/zipper/<bucket>/.../<ID>/<ID>
        index = 8 if len(segments) > 2 and segments[2] == "zipper" else 7
        if len(segments) <= index:
            return None
        record = self.by_id.get(segments[index])
        if record is None:
            return None
        for asset in self.assets_of(record):
            if asset.file.path == path:
                return record, asset
        return None

    def zip_members(self, record: ItemRecord) -> list[tuple[str, FileSpec]]:
        """The files of an item's ``product`` zip, under ``<ID>/...`` like a SAFE folder."""
        members = []
        for asset in self.assets_of(record):
            if asset.key.startswith("enclosure_") and asset.local_path:
                members.append((asset.local_path, asset.file))
        return members
