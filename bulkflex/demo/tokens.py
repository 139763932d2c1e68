"""Demo bearer tokens: JWT-shaped, HMAC-signed with a per-server secret, with an ``exp`` claim.

Shaped like the ESA MAAP (Keycloak) tokens bulkflex meets in the wild: an access token valid for
a configurable time, and an offline refresh token redeemed with ``grant_type=refresh_token``.
Validation is stateless (signature + expiry) except for :meth:`TokenIssuer.expire_access_tokens`
and :meth:`TokenIssuer.revoke_refresh_tokens`, which invalidate the tokens issued so far (tests
use them instead of waiting for a clock).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["TokenIssuer"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    """Issue and check tokens. Thread-safe. ``clock`` returns POSIX seconds."""

    def __init__(
        self,
        *,
        issuer: str,
        access_lifetime_s: float,
        refresh_lifetime_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.access_lifetime_s = access_lifetime_s
        self.refresh_lifetime_s = refresh_lifetime_s
        self._clock = clock
        self._secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._serial = 0
        self._not_before: dict[str, int] = {}
        self.issued = 0

    def _sign(self, payload: dict[str, Any]) -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        mac = hmac.new(self._secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
        return f"{header}.{body}.{_b64(mac)}"

    def _issue(self, kind: str, lifetime_s: float, subject: str) -> str:
        with self._lock:
            self._serial += 1
            serial = self._serial
            self.issued += 1
        now = self._clock()
        return self._sign(
            {
                "iss": self.issuer,
                "sub": subject,
                "typ": kind,
                "iat": int(now),
                "exp": now + lifetime_s,
                "jti": serial,
            }
        )

    def issue_access(self, subject: str = "demo") -> str:
        return self._issue("Bearer", self.access_lifetime_s, subject)

    def issue_refresh(self, subject: str = "demo") -> str:
        return self._issue("Offline", self.refresh_lifetime_s, subject)

    def check(self, token: str, kind: str = "Bearer") -> str | None:
        """None if ``token`` is a valid, unexpired token of ``kind``; else the reason."""
        parts = token.split(".")
        if len(parts) != 3:
            return "malformed token"
        expected = hmac.new(
            self._secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256
        ).digest()
        try:
            given = _unb64(parts[2])
            payload = json.loads(_unb64(parts[1]))
        except (ValueError, json.JSONDecodeError):
            return "malformed token"
        if not hmac.compare_digest(expected, given) or not isinstance(payload, dict):
            return "bad signature"
        if payload.get("typ") != kind:
            return f"not a {kind} token"
        with self._lock:
            revoked = int(payload.get("jti", 0)) <= self._not_before.get(kind, 0)
        if revoked:
            return "token revoked"
        if float(payload.get("exp", 0)) <= self._clock():
            return "token expired"
        return None

    def expire_access_tokens(self) -> None:
        """Make every access token issued so far invalid (refresh tokens stay valid)."""
        with self._lock:
            self._not_before["Bearer"] = self._serial

    def revoke_refresh_tokens(self) -> None:
        """Make every refresh token issued so far invalid (``invalid_grant`` on redemption)."""
        with self._lock:
            self._not_before["Offline"] = self._serial
