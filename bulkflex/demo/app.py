"""HTTP side of the embedded catalog: a MAAP-like STAC API, asset server and token endpoint.

Routes (one origin, ``http://127.0.0.1:PORT``)::

    GET  /catalogue                 503 from the "load balancer" (MAAP quirk: keep the slash)
    GET  /catalogue/                landing page (FedEO-like conformance, GET and POST search)
    GET  /catalogue/conformance
    GET  /catalogue/collections     collection search: q, filter (cql2-text), bbox, datetime,
                                    limit (default 10), startRecord (1-based), numberMatched
    GET  /catalogue/collections/{id}[/queryables | /items | /items/{item}]
    GET  /catalogue/search          item search: collections, bbox, intersects, datetime, ids,
    POST /catalogue/search            filter + filter-lang, limit, startRecord; next links are
                                      plain GET hrefs (opaque to clients), also after a POST
    GET  /data/...                  assets: Range, If-Range, strong ETag, 416; bearer token
    HEAD /data/...                    needed except under a /public/ segment; product zips are
                                      streamed with no Content-Length and ignore Range
    GET  /flat/NNNNNN.bin           only with DemoConfig.flat_files: N synthetic files of one
    HEAD /flat/NNNNNN.bin             size, no token, Range like /data/, optional per-response
                                      rate cap and delay (``bulkflex bench``)
    POST /realms/demo/protocol/openid-connect/token   password, client_credentials and
                                                      refresh_token grants (Keycloak-like)
    GET  /realms/demo/.well-known/openid-configuration

Every URL in a response is built from the request's ``Host``, so the same app works on any port.
Faults (:class:`bulkflex.demo.server.Faults`) are read on every request and may be changed while
the server runs.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode

from aiohttp import web

from bulkflex.demo.catalog import (
    BadQuery,
    ItemFilter,
    bbox_polygon,
    compile_filter,
    geometry_extent,
)
from bulkflex.demo.content import FileSpec
from bulkflex.errors import UsageError
from bulkflex.stac.params import parse_bbox, parse_datetime, parse_ids, parse_intersects
from bulkflex.stac.properties import parse_free_text

if TYPE_CHECKING:
    from bulkflex.demo.server import DemoState, Stats

__all__ = ["CONFORMANCE", "FLAT_PREFIX", "flat_spec", "make_app", "parse_instant", "parse_range"]

log = logging.getLogger(__name__)

CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi_common-2/1.0/conf/collections",
    "http://www.opengis.net/spec/ogcapi-common-2/1.0/conf/simple-query",
    "http://www.opengis.net/spec/ogcapi-records-1/1.0/req/cql-filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0-rc.1/collection-search",
    "https://api.stacspec.org/v1.0.0-rc.1/collection-search#filter",
    "https://api.stacspec.org/v1.0.0-rc.1/collection-search#free-text",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0-rc.3/item-search#filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
]

GEOJSON = "application/geo+json"
_REALM = "/realms/demo"
_LB_503 = (
    "<html><head><title>503 Service Temporarily Unavailable</title></head><body>"
    "<center><h1>503 Service Temporarily Unavailable</h1></center></body></html>"
)


FLAT_PREFIX = "/flat/"
_FLAT_MODIFIED = "Fri, 07 Mar 2025 14:22:20 GMT"


def flat_spec(index: int, size: int) -> FileSpec:
    """The ``index``-th flat file, ``/flat/000042.bin``, of ``size`` bytes (0-based index).

    Its bytes (and so its checksum, ``ContentStore.checksum(flat_spec(i, size))``) depend on the
    path only, so the same index and size give the same file on every server.
    """
    return FileSpec(path=f"{FLAT_PREFIX}{index:06d}.bin", size=size)


def parse_instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00")).timestamp()


def _interval(text: str) -> tuple[float | None, float | None]:
    try:
        normal = parse_datetime(text, option="datetime")
    except UsageError as exc:
        raise BadQuery(str(exc)) from None
    first, _, second = normal.partition("/")
    if not second:
        moment = parse_instant(first)
        return moment, moment
    start = None if first == ".." else parse_instant(first)
    end = None if second == ".." else parse_instant(second)
    return start, end


def _json(body: Any, *, status: int = 200, content_type: str = "application/json") -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type=content_type,
    )


def _error(status: int, code: str, description: str) -> web.Response:
    return _json({"code": code, "description": description}, status=status)


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _catalog_url(request: web.Request) -> str:
    return f"{_origin(request)}/catalogue/"


class _Handlers:
    def __init__(self, state: DemoState) -> None:
        self.state = state
        self.catalog = state.catalog

    # -- fault gate for catalog requests -----------------------------------------------------

    def _catalog_fault(self) -> web.Response | None:
        faults = self.state.faults
        if faults.catalog_503 > 0:
            faults.catalog_503 -= 1
            self.state.stats.catalog_errors += 1
            return web.Response(
                status=503,
                text=_LB_503,
                content_type="text/html",
                headers={"Retry-After": str(faults.retry_after_s)},
            )
        return None

    # -- landing -----------------------------------------------------------------------------

    async def root_without_slash(self, request: web.Request) -> web.Response:
        return web.Response(status=503, text=_LB_503, content_type="text/html")

    async def landing(self, request: web.Request) -> web.Response:
        self.state.stats.catalog_requests += 1
        cat = _catalog_url(request)
        links = [
            {
                "rel": "search",
                "type": "application/opensearchdescription+xml",
                "href": f"{cat}api?httpAccept=application/opensearchdescription%2Bxml",
            },
            {"rel": "self", "type": "application/json", "href": cat},
            {"rel": "root", "type": "application/json", "href": cat},
            {
                "rel": "service-desc",
                "type": "application/vnd.oai.openapi+json;version=3.0",
                "href": f"{cat}api?httpAccept=application/vnd.oai.openapi%2Bjson;version=3.0",
            },
            {"rel": "conformance", "type": "application/json", "href": f"{cat}conformance"},
            {"rel": "data", "type": "application/json", "href": f"{cat}collections"},
            {"rel": "search", "type": GEOJSON, "method": "GET", "href": f"{cat}search"},
            {"rel": "search", "type": GEOJSON, "method": "POST", "href": f"{cat}search"},
            {
                "rel": "http://www.opengis.net/def/rel/ogc/1.0/queryables",
                "type": "application/schema+json",
                "href": f"{cat}queryables",
            },
        ]
        return _json(
            {
                "type": "Catalog",
                "id": "fedeo",
                "stac_version": "1.1.0",
                "title": "MAAP Catalogue (bulkflex embedded demo)",
                "description": "MAAP Catalogue provides interoperable access, following ISO/OGC "
                "interface guidelines, to Earth Observation metadata (embedded bulkflex demo "
                "with synthetic FLEX and BIOMASS products).",
                "conformsTo": CONFORMANCE,
                "links": links,
            }
        )

    async def conformance(self, request: web.Request) -> web.Response:
        return _json({"conformsTo": CONFORMANCE})

    async def queryables(self, request: web.Request) -> web.Response:
        cat = _catalog_url(request)
        cid = request.match_info.get("cid")
        if cid is not None and cid not in self.catalog.specs:
            return _error(404, "NotFound", f"Collection {cid!r} not found")
        names = sorted(self.catalog.item_queryable_names - {"geometry"})
        return _json(
            {
                "$schema": "https://json-schema.org/draft/2019-09/schema",
                "$id": f"{cat}collections/{cid}/queryables" if cid else f"{cat}queryables",
                "type": "object",
                "title": f"Queryables for {cid}" if cid else "Queryables",
                "properties": {name: {"title": name} for name in names},
                "additionalProperties": False,
            },
            content_type="application/schema+json",
        )

    # -- collections ---------------------------------------------------------------------------

    async def collections(self, request: web.Request) -> web.Response:
        self.state.stats.catalog_requests += 1
        fault = self._catalog_fault()
        if fault is not None:
            return fault
        query = request.query
        try:
            limit, start_record = self._paging(query)
            terms = parse_free_text(query.get("q", ""))
            expr = None
            if "filter" in query:
                expr = compile_filter(
                    query["filter"],
                    query.get("filter-lang"),
                    self.catalog.collection_queryable_names(),
                )
            bbox = None
            if "bbox" in query:
                numbers = self._bbox(query["bbox"])
                half = len(numbers) // 2
                bbox = (numbers[0], numbers[1], numbers[half], numbers[half + 1])
            start, end = _interval(query["datetime"]) if "datetime" in query else (None, None)
        except BadQuery as exc:
            return _error(400, "InvalidParameterValue", str(exc))
        cat = _catalog_url(request)
        found = self.catalog.search_collections(
            catalog=cat, terms=terms, expr=expr, bbox=bbox, start=start, end=end
        )
        page = found[start_record - 1 : start_record - 1 + limit]
        base = {k: v for k, v in query.items() if k != "startRecord"}
        links = [
            {
                "rel": "self",
                "type": "application/json",
                "href": f"{cat}collections?{urlencode(base)}",
            },
            {"rel": "root", "type": "application/json", "href": cat},
        ]
        if start_record - 1 + limit < len(found):
            links.append(
                {
                    "rel": "next",
                    "type": "application/json",
                    "href": f"{cat}collections?"
                    + urlencode({**base, "startRecord": start_record + limit}),
                }
            )
        if start_record > 1:
            links.append(
                {
                    "rel": "previous",
                    "type": "application/json",
                    "href": f"{cat}collections?"
                    + urlencode({**base, "startRecord": max(1, start_record - limit)}),
                }
            )
        return _json(
            {
                "collections": page,
                "numberMatched": len(found),
                "numberReturned": len(page),
                "links": links,
            }
        )

    async def collection(self, request: web.Request) -> web.Response:
        self.state.stats.catalog_requests += 1
        body = self.catalog.collection(request.match_info["cid"], catalog=_catalog_url(request))
        if body is None:
            return _error(404, "NotFound", f"Collection {request.match_info['cid']!r} not found")
        return _json(body)

    async def item(self, request: web.Request) -> web.Response:
        self.state.stats.catalog_requests += 1
        record = self.catalog.by_id.get(request.match_info["iid"])
        if record is None or record.collection != request.match_info["cid"]:
            return _error(404, "NotFound", f"Item {request.match_info['iid']!r} not found")
        body = await asyncio.to_thread(
            self.catalog.render_item, record, root=_origin(request), catalog=_catalog_url(request)
        )
        return _json(body, content_type=GEOJSON)

    # -- item search -----------------------------------------------------------------------------

    def _paging(self, params: Mapping[str, Any]) -> tuple[int, int]:
        config = self.state.config
        try:
            limit = int(params.get("limit", config.page_size_default))
            start_record = int(params.get("startRecord", 1))
        except (TypeError, ValueError):
            raise BadQuery("limit and startRecord must be integers") from None
        if limit < 1:
            raise BadQuery("limit must be at least 1")
        if start_record < 1:
            raise BadQuery("startRecord must be at least 1")
        return min(limit, config.page_size_max), start_record

    @staticmethod
    def _bbox(value: Any) -> tuple[float, ...]:
        try:
            return parse_bbox(value, option="bbox")
        except UsageError as exc:
            raise BadQuery(str(exc)) from None

    def _item_filter(self, params: Mapping[str, Any], fixed: str | None) -> ItemFilter:
        collections: tuple[str, ...] | None = None
        raw = params.get("collections")
        if fixed is not None:
            collections = (fixed,)
        elif raw:
            names = raw if isinstance(raw, list) else str(raw).split(",")
            collections = tuple(str(n).strip() for n in names if str(n).strip())
            unknown = [n for n in collections if n not in self.catalog.specs]
            if unknown:
                raise BadQuery(f"unknown collection {unknown[0]!r}")
        ids = None
        if params.get("ids"):
            try:
                ids = frozenset(parse_ids(params["ids"], option="ids"))
            except UsageError as exc:
                raise BadQuery(str(exc)) from None
        start = end = None
        if params.get("datetime"):
            start, end = _interval(str(params["datetime"]))
        geometry = extent = None
        if params.get("bbox") is not None and params.get("intersects") is not None:
            raise BadQuery("bbox and intersects are mutually exclusive")
        if params.get("bbox") is not None:
            geometry, extent = bbox_polygon(self._bbox(params["bbox"]))
        elif params.get("intersects") is not None:
            try:
                geometry = parse_intersects(params["intersects"], option="intersects")
            except UsageError as exc:
                raise BadQuery(str(exc)) from None
            extent = geometry_extent(geometry)
        expr = None
        filter_key: Any = None
        if params.get("filter") is not None:
            expr = compile_filter(
                params["filter"], params.get("filter-lang"), self.catalog.item_queryable_names
            )
            filter_key = expr.to_json()
        key = json.dumps(
            [
                collections,
                sorted(ids) if ids is not None else None,
                start,
                end,
                geometry,
                filter_key,
            ],
            sort_keys=True,
        )
        return ItemFilter(collections, ids, start, end, geometry, extent, expr, key)

    async def search(self, request: web.Request) -> web.Response:
        self.state.stats.catalog_requests += 1
        self.state.stats.searches += 1
        fault = self._catalog_fault()
        if fault is not None:
            return fault
        params: dict[str, Any]
        if request.method == "POST":
            try:
                params = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                return _error(400, "InvalidParameterValue", "request body is not JSON")
            if not isinstance(params, dict):
                return _error(400, "InvalidParameterValue", "request body is not a JSON object")
        else:
            params = dict(request.query)
        return await self._items_page(request, params, fixed=None)

    async def collection_items(self, request: web.Request) -> web.Response:
        self.state.stats.catalog_requests += 1
        cid = request.match_info["cid"]
        if cid not in self.catalog.specs:
            return _error(404, "NotFound", f"Collection {cid!r} not found")
        return await self._items_page(request, dict(request.query), fixed=cid)

    async def _items_page(
        self, request: web.Request, params: dict[str, Any], *, fixed: str | None
    ) -> web.Response:
        try:
            limit, start_record = self._paging(params)
            query = self._item_filter(params, fixed)
        except BadQuery as exc:
            return _error(400, "InvalidParameterValue", str(exc))
        origin, cat = _origin(request), _catalog_url(request)

        def render() -> bytes:
            found = self.catalog.search(query)
            page = found[start_record - 1 : start_record - 1 + limit]
            features = [self.catalog.render_item(r, root=origin, catalog=cat) for r in page]
            link_params = self._link_params(params, query, fixed)
            path = f"{cat}collections/{fixed}/items" if fixed else f"{cat}search"
            links: list[dict[str, Any]] = [
                {"rel": "self", "type": GEOJSON, "href": f"{path}?{urlencode(link_params)}"},
                {"rel": "root", "type": "application/json", "href": cat},
            ]
            if start_record - 1 + len(page) < len(found):
                following = {**link_params, "startRecord": start_record + limit}
                links.append(
                    {"rel": "next", "type": GEOJSON, "href": f"{path}?{urlencode(following)}"}
                )
            if start_record > 1:
                previous = {**link_params, "startRecord": max(1, start_record - limit)}
                links.append(
                    {"rel": "previous", "type": GEOJSON, "href": f"{path}?{urlencode(previous)}"}
                )
            body = {
                "type": "FeatureCollection",
                "numberMatched": len(found),
                "numberReturned": len(features),
                "features": features,
                "links": links,
            }
            return json.dumps(body, separators=(",", ":")).encode()

        payload = await asyncio.to_thread(render)
        return web.Response(body=payload, content_type=GEOJSON)

    @staticmethod
    def _link_params(
        params: Mapping[str, Any], query: ItemFilter, fixed: str | None
    ) -> dict[str, str]:
        """The search as GET query parameters (next links are GET hrefs, also after a POST)."""
        out: dict[str, str] = {}
        for key, value in params.items():
            if key in ("startRecord",) or value is None:
                continue
            if key == "collections" and fixed:
                continue
            if isinstance(value, list):
                out[key] = ",".join(str(v) for v in value)
            elif isinstance(value, dict):
                if key == "filter" and query.expr is not None:
                    out["filter"] = query.expr.to_text()
                    out["filter-lang"] = "cql2-text"
                else:
                    out[key] = json.dumps(value, separators=(",", ":"))
            elif key == "filter-lang" and "filter-lang" in out:
                continue
            else:
                out[key] = str(value)
        return out

    # -- data ------------------------------------------------------------------------------------

    async def data(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        stats = state.stats
        stats.data_requests += 1
        path = request.path
        public = "/public/" in path
        auth = request.headers.get("Authorization")
        if public and auth:
            stats.public_with_token += 1
        faults = state.faults
        if not public and faults.throttle_429 > 0:
            faults.throttle_429 -= 1
            stats.throttled += 1
            return web.Response(
                status=429,
                text="Too Many Requests",
                headers={"Retry-After": str(faults.retry_after_s)},
            )
        if not public and state.config.require_token:
            reason = "no bearer token"
            if auth and auth.lower().startswith("bearer "):
                found = state.tokens.check(auth[7:].strip())
                reason = found if found is not None else ""
            if reason:
                stats.unauthorized += 1
                return web.Response(
                    status=401,
                    text=f"401 Unauthorized: {reason}",
                    headers={
                        "WWW-Authenticate": f'Bearer realm="demo", error="invalid_token", '
                        f'error_description="{reason}"'
                    },
                )
        located = self.catalog.find_file(path)
        if located is None:
            return web.Response(status=404, text="404 Not Found")
        record, asset = located
        spec = asset.file
        if spec.zipped:
            return await self._zip(request, record, asset.local_path or "product.zip")
        assert spec.size is not None
        size = spec.size
        etag = state.content.etag(spec)
        last_modified = email.utils.formatdate(record.start + 600 * 86400, usegmt=True)
        headers = {
            "ETag": etag,
            "Last-Modified": last_modified,
            "Accept-Ranges": "bytes",
            "Content-Type": asset.media_type,
        }
        response, span = await _open_ranged(request, size, headers, stats)
        if span is None:
            return response
        start, end = span
        cut = end
        if (
            faults.drop_after_bytes is not None
            and faults.drop_files > 0
            and not public
            and path not in state.dropped
            and end - start > faults.drop_after_bytes
        ):
            faults.drop_files -= 1
            state.dropped.add(path)
            cut = min(end, start + faults.drop_after_bytes)
        try:
            for chunk in state.content.iter_bytes(spec, start, cut):
                await response.write(chunk)
                stats.bytes_served += len(chunk)
        except ConnectionError:
            return response
        if cut < end:
            stats.dropped += 1
            transport = request.transport
            if transport is not None:
                await asyncio.sleep(0.05)
                transport.close()
            return response
        await response.write_eof()
        return response

    async def _zip(self, request: web.Request, record: Any, name: str) -> web.StreamResponse:
        """Stream the product zip: chunked, no Content-Length, Range ignored (like MAAP)."""
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "application/zip",
                "Content-Disposition": f'attachment; filename="{name}"',
            },
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        self.state.stats.zips += 1
        try:
            for chunk in self.state.content.iter_zip(self.catalog.zip_members(record)):
                await response.write(chunk)
                self.state.stats.bytes_served += len(chunk)
        except ConnectionError:
            return response
        await response.write_eof()
        return response

    async def flat(self, request: web.Request) -> web.StreamResponse:
        """One of the ``flat_files`` files: no token, no faults; 404 for any other name.

        ``flat_delay_s`` is slept before the headers go out; ``flat_rate`` paces the body of
        each response (not the connection, like nginx's ``limit_rate``).
        """
        state = self.state
        config = state.config
        stem, _, ext = request.match_info["name"].partition(".")
        canonical = stem.isdigit() and f"{int(stem):06d}" == stem  # as flat_spec names it
        if ext != "bin" or not canonical or int(stem) >= config.flat_files:
            return web.Response(status=404, text="404 Not Found")
        state.stats.data_requests += 1
        if config.flat_delay_s > 0:
            await asyncio.sleep(config.flat_delay_s)
        spec = flat_spec(int(stem), config.flat_size)
        size = config.flat_size
        etag = state.content.etag(spec)
        headers = {
            "ETag": etag,
            "Last-Modified": _FLAT_MODIFIED,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        response, span = await _open_ranged(request, size, headers, state.stats)
        if span is None:
            return response
        start, end = span
        rate = config.flat_rate
        began = time.monotonic()
        sent = 0
        try:
            for chunk in state.content.iter_bytes(spec, start, end):
                await response.write(chunk)
                sent += len(chunk)
                state.stats.bytes_served += len(chunk)
                if rate:
                    ahead = sent / rate - (time.monotonic() - began)
                    if ahead > 0.001:
                        await asyncio.sleep(ahead)
        except ConnectionError:
            return response
        await response.write_eof()
        return response

    # -- tokens ------------------------------------------------------------------------------------

    async def openid_configuration(self, request: web.Request) -> web.Response:
        issuer = f"{_origin(request)}{_REALM}"
        return _json(
            {
                "issuer": issuer,
                "token_endpoint": f"{issuer}/protocol/openid-connect/token",
                "grant_types_supported": ["password", "client_credentials", "refresh_token"],
            }
        )

    async def token(self, request: web.Request) -> web.Response:
        state = self.state
        config = state.config
        form = await request.post()
        grant = form.get("grant_type")

        def oauth_error(status: int, error: str, description: str) -> web.Response:
            return _json({"error": error, "error_description": description}, status=status)

        secret = form.get("client_secret")
        if secret is not None and secret != config.client_secret:
            return oauth_error(401, "invalid_client", "Invalid client credentials")
        refresh: str | None = None
        if grant == "password":
            if form.get("username") != config.username or form.get("password") != config.password:
                return oauth_error(401, "invalid_grant", "Invalid user credentials")
            refresh = state.tokens.issue_refresh()
        elif grant == "client_credentials":
            if secret != config.client_secret:
                return oauth_error(401, "invalid_client", "Invalid client credentials")
        elif grant == "refresh_token":
            given = form.get("refresh_token")
            if not isinstance(given, str) or not given:
                return oauth_error(400, "invalid_request", "Missing parameter: refresh_token")
            problem = state.tokens.check(given, kind="Offline")
            if problem is not None:
                return oauth_error(400, "invalid_grant", f"Token is not active ({problem})")
            refresh = given
        else:
            return oauth_error(400, "unsupported_grant_type", f"Unsupported grant_type {grant!r}")
        state.stats.tokens_issued += 1
        body: dict[str, Any] = {
            "access_token": state.tokens.issue_access(),
            "expires_in": int(config.token_lifetime_s),
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": "openid profile offline_access",
        }
        if refresh is not None:
            body["refresh_token"] = refresh
        return _json(body)

    async def index(self, request: web.Request) -> web.Response:
        origin = _origin(request)
        return _json(
            {
                "catalog": f"{origin}/catalogue/",
                "token_endpoint": f"{origin}{_REALM}/protocol/openid-connect/token",
                "note": "bulkflex embedded demo: synthetic data on loopback",
                "time": int(time.time()),
            }
        )


async def _open_ranged(
    request: web.Request, size: int, headers: dict[str, str], stats: Stats
) -> tuple[web.StreamResponse, tuple[int, int] | None]:
    """Answer a file of ``size`` bytes: the response and the ``[start, end)`` still to send.

    ``headers`` carries the file's ``ETag`` and ``Last-Modified``: an ``If-Range`` equal to either
    lets a single ``Range`` through (206 with ``Content-Range``); any other ``If-Range``, several
    ranges or a malformed header get a 200 with the whole file. An unsatisfiable range gets a 416
    (``Content-Range: bytes */size``). Both a 206 and a 416 count in ``stats.range_requests``.
    The span is None when nothing more is to be sent (a 416, not yet prepared; a HEAD, prepared).
    """
    start, end, status = 0, size, 200
    range_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    validators = (headers["ETag"], headers["Last-Modified"])
    if range_header is not None and (if_range is None or if_range.strip() in validators):
        parsed = parse_range(range_header, size)
        if parsed == "unsatisfiable":
            stats.range_requests += 1
            unsatisfiable = {**headers, "Content-Range": f"bytes */{size}"}
            return web.Response(status=416, headers=unsatisfiable), None
        if isinstance(parsed, tuple):
            stats.range_requests += 1
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    if request.method == "HEAD":
        return response, None
    return response, (start, end)


def parse_range(header: str, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """A ``Range`` header against a file of ``size`` bytes: ``(start, end)`` with ``end``
    exclusive and clamped to ``size``, ``"unsatisfiable"`` (answer 416), or None to ignore it.

    Ignored (a 200 with the whole file, as RFC 9110 allows): a unit other than ``bytes``,
    several ranges, bad syntax, ``last < first``. Unsatisfiable: a first byte at or past the end,
    a suffix of 0 bytes, any suffix of an empty file. ``bytes=-N`` is the last N bytes (all of a
    shorter file).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0 or size == 0:
                return "unsatisfiable"
            return max(0, size - suffix), size
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start < 0 or (last and end <= start):
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size)


def make_app(state: DemoState) -> web.Application:
    handlers = _Handlers(state)
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_get("/", handlers.index)
    app.router.add_get("/catalogue", handlers.root_without_slash)
    app.router.add_get("/catalogue/", handlers.landing)
    app.router.add_get("/catalogue/conformance", handlers.conformance)
    app.router.add_get("/catalogue/queryables", handlers.queryables)
    app.router.add_get("/catalogue/collections", handlers.collections)
    app.router.add_get("/catalogue/collections/{cid}", handlers.collection)
    app.router.add_get("/catalogue/collections/{cid}/queryables", handlers.queryables)
    app.router.add_get("/catalogue/collections/{cid}/items", handlers.collection_items)
    app.router.add_get("/catalogue/collections/{cid}/items/{iid}", handlers.item)
    app.router.add_get("/catalogue/search", handlers.search)
    app.router.add_post("/catalogue/search", handlers.search)
    app.router.add_route("GET", "/data/{tail:.*}", handlers.data)
    app.router.add_route("HEAD", "/data/{tail:.*}", handlers.data)
    if state.config.flat_files > 0:
        app.router.add_route("GET", FLAT_PREFIX + "{name}", handlers.flat)
        app.router.add_route("HEAD", FLAT_PREFIX + "{name}", handlers.flat)
    app.router.add_get(f"{_REALM}/.well-known/openid-configuration", handlers.openid_configuration)
    app.router.add_post(f"{_REALM}/protocol/openid-connect/token", handlers.token)
    return app
