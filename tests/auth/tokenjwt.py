"""Unsigned JWTs for tests (the client only reads ``exp``; nobody verifies a signature)."""

from __future__ import annotations

import base64
import json
import uuid


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def make_jwt(exp: float, **claims: object) -> str:
    """A JWT with ``alg: none``, the given ``exp`` and a unique ``jti`` (so no two are equal)."""
    payload: dict[str, object] = {"exp": exp, "jti": uuid.uuid4().hex, **claims}
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(payload)}."
