"""The planner's HTTP shell: JSON requests to a STAC API with timeouts, retries and paging.

Rules kept here:

- Every request has a total timeout; 429, 500, 502, 503, 504, connection errors and timeouts are
  retried with exponential backoff (``Retry-After`` honoured, capped) per
  :class:`~bulkflex.core.retry.RetryPolicy`. Exhausted retries raise
  :class:`~bulkflex.errors.CatalogUnreachable` (exit 1).
- A response must be JSON (``application/json``, ``application/geo+json``, any ``+json``): an HTML
  page (a login portal, a proxy error, a web page at the wrong URL) is a
  :class:`~bulkflex.errors.CatalogError`, never parsed.
- Foreign errors (aiohttp, JSON) are translated here, once, with ``from``; URLs in messages have
  no query string (:func:`~bulkflex.errors.redact_url`).
- Paging follows ``rel="next"`` links as opaque requests: method, href and (for POST) body, with
  ``merge``. A next request already made is a loop and stops with a CatalogError; an empty page
  ends the listing.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import aiohttp
import anyio

from bulkflex.core.retry import RetryPolicy, parse_retry_after
from bulkflex.errors import CatalogError, CatalogUnreachable, redact_url

__all__ = [
    "DEFAULT_CATALOG",
    "CatalogClient",
    "CatalogNotFound",
    "CatalogOptions",
    "PageRequest",
    "next_request",
    "normalise_catalog_url",
    "with_params",
]

log = logging.getLogger(__name__)

#: ESA MAAP's catalog. The trailing slash matters: without it the load balancer answers 503.
DEFAULT_CATALOG = "https://catalog.maap.eo.esa.int/catalogue/"
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_NETWORK_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError, OSError)


def normalise_catalog_url(url: str) -> str:
    """Check a catalog root URL and give it a trailing slash (MAAP answers 503 without one).

    Raises CatalogError for anything but an absolute http(s) URL.
    """
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CatalogError(f"catalog URL must be an absolute http(s) URL, not {url!r}")
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


@dataclass(frozen=True, slots=True)
class CatalogOptions:
    """How the planner talks to a catalog.

    Attributes:
        timeout_s: total time for one request (headers and body) before it is retried.
        connect_timeout_s: TCP connect timeout.
        retry: attempts and backoff for 429/5xx/network errors (per request).
        page_size: ``limit`` sent with searches (servers may clamp it).
        user_agent: the User-Agent header.
    """

    timeout_s: float = 120.0
    connect_timeout_s: float = 20.0
    retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(
            max_attempts=6, base_s=1.0, cap_s=32.0, retry_after_cap_s=120.0
        )
    )
    page_size: int = 200
    user_agent: str = "bulkflex"


class CatalogNotFound(CatalogError):
    """The catalog answered 404 (the caller knows what was missing and rephrases it)."""

    def __init__(self, url: str, description: str) -> None:
        self.url = url
        self.description = description
        super().__init__(
            f"not found: {redact_url(url)}" + (f" ({description})" if description else "")
        )


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One request of a listing. ``body`` only for POST; ``href`` may carry a query string."""

    method: str
    href: str
    body: dict[str, Any] | None = None

    def fingerprint(self) -> str:
        parts = urlsplit(self.href)
        query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))
        canonical = urlunsplit((parts.scheme, parts.netloc.lower(), parts.path, query, ""))
        body = json.dumps(self.body, sort_keys=True) if self.body is not None else ""
        return f"{self.method} {canonical} {body}"


def _is_json(content_type: str) -> bool:
    essence = content_type.split(";", 1)[0].strip().lower()
    return essence in ("application/json", "text/json") or essence.endswith("+json")


def _description(text: str) -> str:
    """One line from an error body: its JSON ``description``/``detail``/``message`` or the text."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        for key in ("description", "detail", "message", "error_description", "error"):
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                text = value
                break
    line = " ".join(text.split())
    return line[:300] + ("..." if len(line) > 300 else "")


class CatalogClient:
    """JSON GET/POST against one catalog over a caller-owned ``aiohttp.ClientSession``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        options: CatalogOptions | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.session = session
        self.options = options or CatalogOptions()
        self._rng = rng or random.Random()
        self.requests = 0

    async def get_json(self, url: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        return await self.request_json(PageRequest("GET", with_params(url, params)))

    async def request_json(self, request: PageRequest) -> dict[str, Any]:
        """Send ``request`` (retrying transient failures) and return its JSON object.

        Raises:
            CatalogNotFound: 404.
            CatalogError: another 4xx, a non-JSON answer (HTML), invalid JSON, a non-object.
            CatalogUnreachable: network errors or 429/5xx outlasting the retries.
        """
        options = self.options
        timeout = aiohttp.ClientTimeout(
            total=options.timeout_s, sock_connect=options.connect_timeout_s
        )
        headers = {
            "Accept": "application/geo+json, application/json;q=0.9",
            "User-Agent": options.user_agent,
        }
        attempt = 0
        shown = redact_url(request.href)
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                self.requests += 1
                async with self.session.request(
                    request.method,
                    request.href,
                    json=request.body if request.method == "POST" else None,
                    headers=headers,
                    timeout=timeout,
                    allow_redirects=True,
                ) as response:
                    status = response.status
                    content_type = response.headers.get("Content-Type", "")
                    text = await response.text(errors="replace")
                    if status in _RETRY_STATUSES:
                        retry_after = parse_retry_after(
                            response.headers.get("Retry-After"), now=time.time()
                        )
                        problem = f"HTTP {status}"
                    elif status == 404:
                        raise CatalogNotFound(request.href, _description(text))
                    elif status >= 400:
                        raise CatalogError(
                            f"catalog refused {request.method} {shown} with HTTP {status}: "
                            f"{_description(text)}"
                        )
                    elif not _is_json(content_type):
                        kind = content_type.split(";")[0].strip() or "no Content-Type"
                        raise CatalogError(
                            f"{shown} answered {kind}, not JSON: is this a STAC API URL?"
                        )
                    else:
                        try:
                            body = json.loads(text)
                        except ValueError as exc:
                            raise CatalogError(f"{shown} answered invalid JSON ({exc})") from None
                        if not isinstance(body, dict):
                            raise CatalogError(f"{shown} answered JSON that is not an object")
                        return body
            except _NETWORK_ERRORS as exc:
                problem = _network_problem(exc)
            delay = options.retry.delay(attempt, retry_after_s=retry_after, rng=self._rng)
            if delay is None:
                raise CatalogUnreachable(
                    f"catalog {shown} failed {attempt} times, last with {problem}"
                )
            log.info("catalog %s: %s; retry %d in %.1f s", shown, problem, attempt, delay)
            await anyio.sleep(delay)

    async def pages(self, first: PageRequest) -> AsyncIterator[tuple[dict[str, Any], str]]:
        """Yield ``(page, url)`` for ``first`` and every page its ``next`` links lead to.

        Stops after a page without features/collections or without a next link. A next request
        identical to an earlier one raises CatalogError (a paging loop) instead of looping.
        """
        seen: set[str] = set()
        request: PageRequest | None = first
        while request is not None:
            fingerprint = request.fingerprint()
            if fingerprint in seen:
                raise CatalogError(
                    f"catalog paging loops: the next link repeats an earlier page "
                    f"({request.method} {redact_url(request.href)}); stopped"
                )
            seen.add(fingerprint)
            page = await self.request_json(request)
            yield page, request.href
            records = page.get("features", page.get("collections"))
            if not isinstance(records, list) or not records:
                return
            request = next_request(page, request)


def with_params(url: str, params: Mapping[str, str] | None) -> str:
    if not params:
        return url
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def next_request(page: Mapping[str, Any], current: PageRequest) -> PageRequest | None:
    """The request a page's ``rel="next"`` link describes, or None at the end.

    GET unless the link says otherwise; a POST link's ``body`` replaces the previous body, or is
    merged into it when ``merge`` is true; a POST link without a body resends the previous one.
    """
    for link in page.get("links") or ():
        if not isinstance(link, Mapping) or link.get("rel") != "next":
            continue
        href = link.get("href")
        if not isinstance(href, str) or not href:
            continue
        url = urljoin(current.href, href)
        method = str(link.get("method") or "GET").upper()
        if method != "POST":
            return PageRequest("GET", url)
        body = link.get("body")
        previous = current.body or {}
        if not isinstance(body, Mapping):
            return PageRequest("POST", url, dict(previous))
        if link.get("merge"):
            return PageRequest("POST", url, {**previous, **body})
        return PageRequest("POST", url, dict(body))
    return None


def _network_problem(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "a timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or exc.os_error})"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
