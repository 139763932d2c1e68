"""Search inputs, checked and normalised once, before any request.

Loose inputs (strings from the command line, lists, ``datetime`` objects from Python) become one
:class:`ItemQuery` or :class:`CollectionQuery`; later code sees one shape. Every refusal is a
:class:`~bulkflex.errors.UsageError` (or :class:`~bulkflex.errors.FilterError`) whose message is a
single line naming the option, so the CLI can print it as is and exit 2.

Pure apart from reading an ``--intersects`` file.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import cql2

from bulkflex.errors import FilterError, UsageError

__all__ = [
    "BBox",
    "CollectionQuery",
    "ItemQuery",
    "parse_bbox",
    "parse_datetime",
    "parse_filter",
    "parse_ids",
    "parse_intersects",
]

BBox = tuple[float, ...]

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
_FULL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_GEOMETRY_DEPTH = {
    "Point": 1,
    "MultiPoint": 2,
    "LineString": 2,
    "MultiLineString": 3,
    "Polygon": 3,
    "MultiPolygon": 4,
}


def parse_bbox(value: str | Sequence[float], *, option: str = "--bbox") -> BBox:
    """``"W,S,E,N"`` (or 6 numbers with heights) or a sequence of numbers -> a tuple.

    West may exceed east (a box across the antimeridian). Refused: another count of numbers,
    non-numbers, NaN/inf, longitudes outside [-180, 180], latitudes outside [-90, 90], and a
    south edge above the north edge.
    """
    if isinstance(value, str):
        pieces = [p for p in re.split(r"[,\s]+", value.strip()) if p]
        try:
            numbers = [float(p) for p in pieces]
        except ValueError:
            raise UsageError(f"{option}: {value!r} is not a list of numbers W,S,E,N") from None
    else:
        try:
            numbers = [float(v) for v in value]
        except (TypeError, ValueError):
            raise UsageError(f"{option}: {value!r} is not a list of numbers") from None
    if len(numbers) not in (4, 6):
        raise UsageError(
            f"{option}: expected 4 numbers W,S,E,N (or 6 with heights), got {len(numbers)}"
        )
    if not all(math.isfinite(n) for n in numbers):
        raise UsageError(f"{option}: numbers must be finite")
    half = len(numbers) // 2
    west, south, east, north = numbers[0], numbers[1], numbers[half], numbers[half + 1]
    for lon in (west, east):
        if not -180 <= lon <= 180:
            raise UsageError(f"{option}: longitude {lon:g} is outside -180..180")
    for lat in (south, north):
        if not -90 <= lat <= 90:
            raise UsageError(f"{option}: latitude {lat:g} is outside -90..90")
    if south > north:
        raise UsageError(f"{option}: south {south:g} is above north {north:g}")
    return tuple(numbers)


def _format_instant(moment: datetime) -> str:
    text = moment.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def _parse_instant(text: str, *, end: bool, option: str) -> datetime:
    if _FULL_DATE.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise UsageError(f"{option}: {text!r} is not a valid date") from None
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start + timedelta(days=1, microseconds=-1000) if end else start
    match = _RFC3339.match(text)
    if not match:
        raise UsageError(
            f"{option}: {text!r} is not an RFC 3339 date-time "
            "(example: 2023-07-10T09:26:25Z, or a date 2023-07-10)"
        )
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z").replace("t", "T").replace(" ", "T"))
    except ValueError:
        raise UsageError(f"{option}: {text!r} is not a valid date-time") from None
    return moment


def _instant(value: str | datetime | date | None, *, end: bool, option: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return _parse_instant(value.isoformat(), end=end, option=option)
    text = value.strip()
    if text in ("", ".."):
        return None
    return _parse_instant(text, end=end, option=option)


def parse_datetime(
    value: str | datetime | date | Sequence[str | datetime | date | None],
    *,
    option: str = "--datetime",
) -> str:
    """An instant or interval -> the STAC ``datetime`` parameter, in UTC with ``Z``.

    Accepted: ``2023-07-10T09:26:25Z``; intervals ``START/END``; open ends ``../END``,
    ``START/..`` (or an empty side); a full date ``2023-07-10`` means that whole day (as a start
    it is 00:00:00Z, as an end 23:59:59.999Z, alone both); ``datetime`` objects (naive = UTC) and
    ``(start, end)`` pairs with ``None`` for an open end. Refused: anything else, a date-time
    without a time zone, an interval open at both ends, and a start after its end.
    """
    if isinstance(value, str):
        text = value.strip()
        if "/" in text:
            first, _, second = text.partition("/")
            start = _instant(first, end=False, option=option)
            stop = _instant(second, end=True, option=option)
        elif _FULL_DATE.match(text):
            start = _instant(text, end=False, option=option)
            stop = _instant(text, end=True, option=option)
        else:
            moment = _instant(text, end=False, option=option)
            if moment is None:
                raise UsageError(f"{option}: {value!r} is empty")
            return _format_instant(moment)
    elif isinstance(value, datetime | date):
        moment = _instant(value, end=False, option=option)
        assert moment is not None
        if isinstance(value, datetime):
            return _format_instant(moment)
        start, stop = moment, _instant(value, end=True, option=option)
    else:
        pair = list(value)
        if len(pair) != 2:
            raise UsageError(f"{option}: an interval needs exactly a start and an end")
        start = _instant(pair[0], end=False, option=option)
        stop = _instant(pair[1], end=True, option=option)
    if start is None and stop is None:
        raise UsageError(f"{option}: an interval needs at least one end ('../..' is everything)")
    if start is not None and stop is not None and start > stop:
        raise UsageError(
            f"{option}: start {_format_instant(start)} is after end {_format_instant(stop)}"
        )
    return f"{_format_instant(start) if start else '..'}/{_format_instant(stop) if stop else '..'}"


def _check_positions(coords: Any, depth: int, kind: str) -> None:
    if depth == 1:
        if (
            not isinstance(coords, list)
            or len(coords) not in (2, 3)
            or not all(
                isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c)
                for c in coords
            )
        ):
            raise ValueError(f"{kind} has a position that is not 2 or 3 numbers")
        return
    if not isinstance(coords, list) or not coords:
        raise ValueError(f"{kind} has empty or malformed coordinates")
    for child in coords:
        _check_positions(child, depth - 1, kind)
    if (
        kind in ("Polygon", "MultiPolygon")
        and depth == 2
        and (len(coords) < 4 or coords[0] != coords[-1])
    ):
        raise ValueError(f"{kind} ring is not closed or has fewer than 4 positions")


def _check_geometry(geometry: Any) -> None:
    if not isinstance(geometry, Mapping):
        raise ValueError("is not a GeoJSON object")
    kind = geometry.get("type")
    if kind == "GeometryCollection":
        members = geometry.get("geometries")
        if not isinstance(members, list) or not members:
            raise ValueError("GeometryCollection has no geometries")
        for member in members:
            _check_geometry(member)
        return
    if kind not in _GEOMETRY_DEPTH:
        if kind in ("Feature", "FeatureCollection"):
            raise ValueError(f"is a {kind}, not a geometry")
        raise ValueError(f"has GeoJSON type {kind!r}, not a geometry type")
    _check_positions(geometry.get("coordinates"), _GEOMETRY_DEPTH[kind], kind)


def parse_intersects(
    value: str | Mapping[str, Any], *, option: str = "--intersects"
) -> dict[str, Any]:
    """A GeoJSON geometry from a dict, a JSON string or the path of a ``.geojson`` file.

    A Feature is unwrapped to its geometry. Refused: unreadable files, invalid JSON, a
    FeatureCollection or anything else that is not one geometry, malformed coordinates and
    unclosed polygon rings.
    """
    source = "value"
    if isinstance(value, str):
        text = value.strip()
        if not text.startswith("{"):
            source = text
            try:
                text = Path(text).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise UsageError(f"{option}: cannot read {source!r}: {reason}") from None
        try:
            geometry: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{option}: {source} is not valid JSON ({exc.msg})") from None
    else:
        geometry = value
    if isinstance(geometry, Mapping) and geometry.get("type") == "Feature":
        geometry = geometry.get("geometry")
    try:
        _check_geometry(geometry)
    except ValueError as exc:
        raise UsageError(f"{option}: {source} {exc}") from None
    return dict(geometry)


def _one_line_parse_error(message: str) -> str:
    position = re.search(r"-->\s*(\d+):(\d+)", message)
    expected = [
        line.strip()[1:].strip() for line in message.splitlines() if line.strip().startswith("= ")
    ]
    if position and expected:
        return f"does not parse at line {position.group(1)} column {position.group(2)}: " + (
            "; ".join(expected)
        )
    return " ".join(message.split())


def parse_filter(
    value: str | Mapping[str, Any], lang: str | None = None, *, option: str = "--filter"
) -> tuple[str, str | dict[str, Any]]:
    """Check a CQL2 filter with the ``cql2`` parser; return ``(filter_lang, filter)``.

    A string is CQL2-text unless it starts with ``{`` (then CQL2-JSON); a mapping is CQL2-JSON.
    ``lang`` ("cql2-text" or "cql2-json") forces the reading. Text is passed on as written, so a
    server sees exactly what the user typed.

    Raises:
        FilterError: the parser's complaint on one line, e.g. ``--filter: does not parse at
            line 1 column 7: expected ...``.
    """
    if lang not in (None, "cql2-text", "cql2-json"):
        raise UsageError(f"{option}: filter language must be cql2-text or cql2-json, not {lang!r}")
    if isinstance(value, Mapping):
        text = json.dumps(value)
        lang = lang or "cql2-json"
    else:
        text = value.strip()
        if not text:
            raise FilterError(f"{option}: the filter is empty")
        if lang is None:
            lang = "cql2-json" if text.startswith("{") else "cql2-text"
    try:
        if lang == "cql2-json":
            try:
                decoded = json.loads(text)
            except json.JSONDecodeError as exc:
                raise FilterError(f"{option}: CQL2-JSON is not valid JSON ({exc.msg})") from None
            cql2.parse_json(text)
            return lang, dict(decoded)
        cql2.parse_text(text)
    except (cql2.ParseError, cql2.ValidationError, ValueError) as exc:
        if isinstance(exc, FilterError):
            raise
        raise FilterError(f"{option}: {_one_line_parse_error(str(exc))}") from None
    return lang, text


def parse_ids(value: str | Sequence[str], *, option: str = "--ids") -> tuple[str, ...]:
    """Item ids from a sequence or a comma/space separated string; empty ids are refused."""
    items = re.split(r"[,\s]+", value.strip()) if isinstance(value, str) else list(value)
    ids = tuple(i.strip() for i in items if isinstance(i, str) and i.strip())
    if not ids:
        raise UsageError(f"{option}: no item id given")
    return ids


@dataclass(frozen=True, slots=True)
class ItemQuery:
    """One item search, already validated. Empty/None fields are not sent.

    Attributes:
        collections: collection ids.
        bbox: 4 or 6 numbers.
        intersects: a GeoJSON geometry.
        datetime: an RFC 3339 instant or interval (``..`` for open ends).
        ids: item ids.
        filter / filter_lang: CQL2 as text (``cql2-text``) or a JSON object (``cql2-json``).
    """

    collections: tuple[str, ...] = ()
    bbox: BBox | None = None
    intersects: dict[str, Any] | None = None
    datetime: str | None = None
    ids: tuple[str, ...] = ()
    filter: str | dict[str, Any] | None = None
    filter_lang: str | None = None

    def __post_init__(self) -> None:
        if self.bbox is not None and self.intersects is not None:
            raise UsageError("--bbox and --intersects cannot be used together")

    def get_params(self, limit: int) -> dict[str, str]:
        """Query parameters of a GET ``/search``."""
        params: dict[str, str] = {}
        if self.collections:
            params["collections"] = ",".join(self.collections)
        if self.ids:
            params["ids"] = ",".join(self.ids)
        if self.bbox is not None:
            params["bbox"] = ",".join(f"{n:g}" for n in self.bbox)
        if self.intersects is not None:
            params["intersects"] = json.dumps(self.intersects, separators=(",", ":"))
        if self.datetime:
            params["datetime"] = self.datetime
        if self.filter is not None:
            params["filter"] = (
                self.filter
                if isinstance(self.filter, str)
                else json.dumps(self.filter, separators=(",", ":"))
            )
            params["filter-lang"] = self.filter_lang or "cql2-text"
        params["limit"] = str(limit)
        return params

    def post_body(self, limit: int) -> dict[str, Any]:
        """JSON body of a POST ``/search``."""
        body: dict[str, Any] = {}
        if self.collections:
            body["collections"] = list(self.collections)
        if self.ids:
            body["ids"] = list(self.ids)
        if self.bbox is not None:
            body["bbox"] = list(self.bbox)
        if self.intersects is not None:
            body["intersects"] = self.intersects
        if self.datetime:
            body["datetime"] = self.datetime
        if self.filter is not None:
            body["filter"] = self.filter
            body["filter-lang"] = self.filter_lang or "cql2-text"
        body["limit"] = limit
        return body


@dataclass(frozen=True, slots=True)
class CollectionQuery:
    """One collection search (always GET ``/collections``), already validated."""

    q: str | None = None
    filter: str | None = None
    bbox: BBox | None = None
    datetime: str | None = None

    def get_params(self, limit: int) -> dict[str, str]:
        params: dict[str, str] = {}
        if self.q:
            params["q"] = self.q
        if self.filter is not None:
            params["filter"] = self.filter
            params["filter-lang"] = "cql2-text"
        if self.bbox is not None:
            params["bbox"] = ",".join(f"{n:g}" for n in self.bbox)
        if self.datetime:
            params["datetime"] = self.datetime
        params["limit"] = str(limit)
        return params
