"""A real OIDC token endpoint on 127.0.0.1 for the token tests (grants are counted)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer
from authkit import make_jwt


@dataclass
class TokenEndpoint:
    """A scripted refresh-token grant endpoint; counts what it is asked.

    Answers from ``script`` first (status, JSON body), then the normal grant: a JWT access token
    living ``lifetime_s`` for any refresh token in ``accepted``, a 400 ``invalid_grant`` (whose
    description echoes the refresh token, as careless servers do) for any other.
    """

    url: str = ""
    accepted: set[str] = field(default_factory=lambda: {"offline-1"})
    lifetime_s: float = 36_000.0
    rotate: bool = False
    script: list[tuple[int, object]] = field(default_factory=list)
    forms: list[dict[str, str]] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)

    @property
    def grants(self) -> int:
        """Access tokens issued so far."""
        return len(self.issued)

    async def handle(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.forms.append(form)
        if self.script:
            status, body = self.script.pop(0)
            return web.json_response(body, status=status)
        refresh_token = form.get("refresh_token", "")
        if form.get("grant_type") != "refresh_token" or refresh_token not in self.accepted:
            return web.json_response(
                {
                    "error": "invalid_grant",
                    "error_description": f"Token is not active: {refresh_token}",
                },
                status=400,
            )
        access = make_jwt(exp=time.time() + self.lifetime_s)
        self.issued.append(access)
        body: dict[str, object] = {
            "access_token": access,
            "expires_in": int(self.lifetime_s),
            "token_type": "Bearer",
        }
        if self.rotate:
            new = f"offline-{len(self.issued) + 1}"
            self.accepted = {new}
            body["refresh_token"] = new
        return web.json_response(body)


@asynccontextmanager
async def serve_token_endpoint() -> AsyncIterator[TokenEndpoint]:
    """Serve a :class:`TokenEndpoint` on 127.0.0.1 (free port) for the ``with`` block."""
    endpoint = TokenEndpoint()
    app = web.Application()
    app.router.add_post("/realms/test/protocol/openid-connect/token", endpoint.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        endpoint.url = str(server.make_url("/realms/test/protocol/openid-connect/token"))
        yield endpoint
