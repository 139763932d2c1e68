# Pure decisions of the token layer: no I/O, no clock, no event loop.
#
# Rules kept here:
# - A token is sent only to hosts in scope, and never across a redirect that changes scheme,
#   host or port (the origin check is separate from the scope check, both must pass).
# - Renewal time is derived from a JWT's ``exp`` only; a token that is not a JWT with ``exp`` is
#   renewed reactively (on a 401) and never proactively.
# - Backoff between refresh attempts is a value computed from the attempt number; the shell sleeps.
"""Pure policy for bearer tokens: scope, origin, JWT expiry, refresh backoff, token hygiene."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "HostScope",
    "RefreshPolicy",
    "clean_token",
    "jwt_expiry",
    "renew_at",
    "same_origin",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """How hard a refresh tries before giving up, and when a JWT is renewed ahead of expiry.

    Attributes:
        attempts: passes over the token sources in one refresh (at least 1). A pass where every
            failure is final (no file permission, env var unchanged, refresh token refused) ends
            the refresh at once; only transient failures use further attempts.
        first_delay_s: sleep after the first failed pass; doubles after each next one.
        max_delay_s: cap of one sleep.
        renew_margin_s: renew a JWT this long before its ``exp`` (shortened to a tenth of the
            token's remaining life for short-lived tokens, see :func:`renew_at`).
    """

    attempts: int = 4
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    renew_margin_s: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.first_delay_s < 0 or self.max_delay_s < 0 or self.renew_margin_s < 0:
            raise ValueError("delays and margins must not be negative")

    def delay_after(self, failed_attempt: int) -> float:
        """Seconds to wait after pass number ``failed_attempt`` (1-based) failed.

        ``delay_after(1) == first_delay_s``, doubling each time, never above ``max_delay_s``.
        """
        if failed_attempt < 1:
            raise ValueError("attempts are numbered from 1")
        exponent = min(failed_attempt - 1, 62)  # 2**62 already exceeds any sane cap
        return float(min(self.max_delay_s, self.first_delay_s * (2**exponent)))


def renew_at(fetched_at: float, expires_at: float, margin_s: float) -> float:
    """When to renew a token fetched at ``fetched_at`` that expires at ``expires_at`` (epoch s).

    The margin is ``margin_s``, but at most a tenth of the life the token had when fetched, so a
    30-second token is renewed 3 s before expiry rather than at once. A token already expired
    when fetched is due at ``fetched_at``.
    """
    life = expires_at - fetched_at
    if life <= 0:
        return fetched_at
    return expires_at - min(margin_s, life / 10)


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (epoch seconds) of a JWT, or None for anything else.

    The signature is not checked (the token is not ours to verify, only to time). Returns None
    for opaque tokens, malformed base64 or JSON, a payload that is not an object, and an ``exp``
    that is missing, not a finite number, or a bool.
    """
    parts = token.split(".")
    if len(parts) != 3 or not parts[1]:
        return None
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(claims, dict):
        return None
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    value = float(exp)
    return value if math.isfinite(value) else None


def clean_token(raw: str) -> str:
    """Normalise what a source produced into a token fit for an ``Authorization`` header.

    Strips surrounding whitespace and one leading ``Bearer`` (any case), since users paste the
    whole header value. Raises ValueError, with a reason that never quotes the text, when the
    result is empty or contains whitespace, control or non-ASCII characters (a header
    injection, or two tokens on two lines).
    """
    text = raw.strip()
    scheme, _, rest = text.partition(" ") if " " in text else text.partition("\t")
    if scheme.lower() == "bearer":
        text = rest.strip()
    if not text:
        raise ValueError("it is empty")
    if not text.isascii() or not text.isprintable() or any(c.isspace() for c in text):
        raise ValueError("it contains spaces, line breaks or non-ASCII characters")
    return text


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not host:
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORTS.get(scheme)


def same_origin(url: str, other: str) -> bool:
    """True when both URLs have the same scheme, host and port (default ports filled in).

    Unparseable or host-less URLs are never the same origin as anything.
    """
    a, b = _origin(url), _origin(other)
    return a is not None and a == b


@dataclass(frozen=True, slots=True)
class HostScope:
    """The hosts a token may be sent to.

    Entries are lowercase host names or IP literals, optionally with ``:port``; an entry without
    a port matches any port of that host. Only ``http`` and ``https`` URLs are ever covered.
    """

    entries: frozenset[str]

    @classmethod
    def of(cls, hosts: Iterable[str]) -> HostScope:
        """Build a scope from host names, ``host:port`` strings or whole URLs (their host)."""
        entries: set[str] = set()
        for item in hosts:
            text = item.strip().lower()
            if not text:
                continue
            if "://" in text:
                origin = _origin(text)
                if origin is None:
                    continue
                text = origin[1]
            if text.startswith("[") and "]" in text:  # [v6] or [v6]:port
                address, _, rest = text[1:].partition("]")
                text = address + rest
            entries.add(text)
        return cls(frozenset(entries))

    def covers(self, url: str) -> bool:
        """True when ``url`` is http(s) and its host (or host:port) is in scope."""
        origin = _origin(url)
        if origin is None or origin[0] not in _DEFAULT_PORTS:
            return False
        _, host, port = origin
        return host in self.entries or f"{host}:{port}" in self.entries


def bearer_header(
    token: str | None, scope: HostScope, url: str, *, origin_url: str | None = None
) -> dict[str, str]:
    """The one rule for where a token goes: ``{"Authorization": "Bearer ..."}`` only when a
    token is held, ``url``'s host is in ``scope``, and (for a redirect, ``origin_url`` given)
    ``url`` has the same scheme, host and port as where the request chain started."""
    if token is None or not scope.covers(url):
        return {}
    if origin_url is not None and not same_origin(url, origin_url):
        return {}
    return {"Authorization": f"Bearer {token}"}
