"""An asset server that wants a bearer token which rotates, for the token end-to-end tests.

A real aiohttp server on a loopback address (a free port), run on its own event loop in a thread
(``with AuthServer() as server:``), so the test can drive the real CLI in a subprocess.

- ``GET /files/<name>``: the file's bytes (single open-ended ``Range: bytes=N-`` honoured, strong
  ETag), only with ``Authorization: Bearer <current token>`` when ``require_token``; else 401.
- Rotation is lazy and deterministic: when a request with the current token arrives and that
  token has already been accepted ``rotate_every`` times, the server rotates (a new token becomes
  current, the old one is dead) and answers that request 401. So every rotation is seen by a
  client request, and a client that refreshes once per rotation makes exactly
  ``1 + rotations`` token fetches.
- ``cut_on_rotation``: a body being streamed under a token that has since been rotated is cut
  (connection closed) after its next chunk, like a strict server that re-checks tokens; the
  client must resume from its durable offset.
- ``GET /token``: the current token as text (what a ``--token-command`` script fetches); counted.
- ``GET /redirect/<name>``: 302 to ``redirect_base + /files/<name>`` (another server).
- ``jwt_lifetime_s``: tokens are unsigned JWTs with an ``exp`` that far ahead; any issued JWT is
  accepted until its ``exp`` (a real server's rule), and ``POST /oidc`` (a refresh-token grant
  for ``refresh_token == OFFLINE_TOKEN``) issues a new one, counted in ``grants``.
- ``token_file``: if set, the server writes the current token there on every rotation (an
  outside tool rotating the file that ``--token-file`` points at).

Every token ever issued is kept in ``issued`` so a test can scan outputs for them. Counters are
guarded by a lock: the test thread reads them while the server thread writes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import re
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from aiohttp import web

from bulkflex.demo import ServerThread, start_app

CHUNK = 16 * 1024
OFFLINE_TOKEN = "offline-7f3a9c2e5b1d4e6f8a0b"


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def new_jwt(exp: float) -> str:
    payload = {"exp": exp, "jti": uuid.uuid4().hex}
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(payload)}."


def content(name: str, size: int) -> bytes:
    return random.Random(name).randbytes(size)


def sha256_multihash(data: bytes) -> str:
    return "1220" + hashlib.sha256(data).hexdigest()


def new_token() -> str:
    # Distinctive, so a scan for it cannot match by accident.
    return f"tok{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"


class AuthServer:
    """See the module docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        require_token: bool = True,
        rotate_every: int | None = None,
        cut_on_rotation: bool = False,
        chunk_delay: float = 0.0,
        token_file: Path | None = None,
        jwt_lifetime_s: float | None = None,
    ) -> None:
        self.host = host
        self.require_token = require_token
        self.rotate_every = rotate_every
        self.cut_on_rotation = cut_on_rotation
        self.chunk_delay = chunk_delay
        self.token_file = token_file
        self.jwt_lifetime_s = jwt_lifetime_s
        self.jwt_expiry: dict[str, float] = {}  # issued JWT -> its exp
        self.grants = 0
        self.redirect_base = ""
        self.files: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.current = new_token()
        self.issued = [self.current]
        self._uses = 0  # requests accepted with the current token
        self.rotations = 0
        self.token_fetches = 0
        self.unauthorized = 0
        self.cuts = 0
        self.bytes_served: Counter[str] = Counter()
        self.authorization_seen: list[tuple[str, str | None]] = []  # (path, header) per request
        self._write_token_file()
        self._runner: web.AppRunner | None = None
        self._thread = ServerThread(
            self._start, self._stop, name=f"authserver-{host}", what="auth server", timeout=15.0
        )
        self.port = 0

    # -- setup ---------------------------------------------------------------------------

    def add_file(self, name: str, size: int) -> bytes:
        data = content(name, size)
        self.files[name] = data
        return data

    def url(self, name: str, route: str = "files") -> str:
        return f"{self.base_url}/{route}/{name}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def oidc_args(self, refresh_token_env: str) -> list[str]:
        """Command-line flags for refresh-token grants at this server's ``/oidc``, the
        refresh token read from ``refresh_token_env``."""
        return [
            "--oidc-token-url",
            f"{self.base_url}/oidc",
            "--oidc-client-id",
            "bulkflex-test",
            "--oidc-refresh-token-env",
            refresh_token_env,
        ]

    def _write_token_file(self) -> None:
        if self.token_file is not None:
            temporary = self.token_file.with_suffix(".tmp")
            temporary.write_text(self.current + "\n")
            os.replace(temporary, self.token_file)  # atomic, as a careful tool would

    def _rotate(self) -> None:
        self.current = new_token()
        self.issued.append(self.current)
        self._uses = 0
        self.rotations += 1
        self._write_token_file()

    # -- serving -------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        with self._lock:
            self.token_fetches += 1
            token = self.current
        return web.Response(text=token + "\n")

    async def _oidc(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "refresh_token" or form.get("refresh_token") != OFFLINE_TOKEN:
            return web.json_response({"error": "invalid_grant"}, status=400)
        lifetime = self.jwt_lifetime_s or 60.0
        with self._lock:
            token = new_jwt(time.time() + lifetime)
            self.jwt_expiry[token] = time.time() + lifetime
            self.current = token
            self.issued.append(token)
            self.grants += 1
        return web.json_response(
            {"access_token": token, "expires_in": int(lifetime), "token_type": "Bearer"}
        )

    async def _redirect(self, request: web.Request) -> web.Response:
        with self._lock:
            self.authorization_seen.append((request.path, request.headers.get("Authorization")))
        name = request.match_info["name"]
        raise web.HTTPFound(f"{self.redirect_base}/files/{name}")

    async def _file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        header = request.headers.get("Authorization")
        with self._lock:
            self.authorization_seen.append((request.path, header))
            accepted_token: str | None = None
            presented = (header or "").removeprefix("Bearer ")
            if not self.require_token:
                accepted_token = ""
            elif self.jwt_lifetime_s is not None:
                if time.time() < self.jwt_expiry.get(presented, 0.0):
                    accepted_token = self.current  # JWTs stay valid until exp: never cut
            elif header == f"Bearer {self.current}":
                if self.rotate_every is not None and self._uses >= self.rotate_every:
                    self._rotate()
                else:
                    self._uses += 1
                    accepted_token = self.current
            if accepted_token is None:
                self.unauthorized += 1
        if accepted_token is None:
            return web.Response(
                status=401,
                text="token missing, expired or invalid\n",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        data = self.files.get(name)
        if data is None:
            return web.Response(status=404, text="no such file\n")
        etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
        start = 0
        status = 200
        range_header = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match and (if_range is None or if_range == etag):
            start = int(match.group(1))
            if start >= len(data) and len(data) > 0:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            status = 206
        headers = {"ETag": etag, "Content-Length": str(len(data) - start)}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        for offset in range(start, len(data), CHUNK):
            chunk = data[offset : offset + CHUNK]
            await response.write(chunk)
            with self._lock:
                self.bytes_served[name] += len(chunk)
                rotated = self.require_token and accepted_token != self.current
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            if rotated and self.cut_on_rotation and offset + CHUNK < len(data):
                with self._lock:
                    self.cuts += 1
                if request.transport is not None:
                    request.transport.abort()
                return response
        await response.write_eof()
        return response

    # -- lifecycle -----------------------------------------------------------------------

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/files/{name}", self._file)
        app.router.add_get("/redirect/{name}", self._redirect)
        app.router.add_get("/token", self._token)
        app.router.add_post("/oidc", self._oidc)
        self._runner, self.port = await start_app(app, self.host, shutdown_timeout=1.0)

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def __enter__(self) -> AuthServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._thread.stop()
