# Fallback file server for the benchmarks when nginx is not installed: aiohttp, loopback only.
#
# Serves files under --root with single-range support (Range, If-Range, strong ETag,
# Last-Modified), HTML folder listings (for rclone's http backend), an optional per-request rate
# cap and an optional sleep before each response (the WAN-like profile). It writes one access-log
# line per request in the same format as the nginx config of _servers.py, with the body bytes it
# really handed to the socket (so an aborted transfer counts what was sent), and answers
# /__status with "Active connections: N" (requests in flight + the status request itself).
#
# Run: python _static_server.py --root DIR --port-file FILE --log FILE [--rate BPS] [--delay S]

from __future__ import annotations

import argparse
import asyncio
import html
import os
import re
import time
from email.utils import formatdate
from pathlib import Path

from aiohttp import web

CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Server:
    def __init__(self, root: Path, log_path: Path, rate: float, delay: float) -> None:
        self.root = root.resolve()
        self.log = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the server
        self.rate = rate
        self.delay = delay
        self.in_flight = 0

    def _log(self, request: web.Request, status: int, sent: int, started: float) -> None:
        rng = request.headers.get("Range", "-")
        now = time.time()
        conn = id(request.transport)
        self.log.write(
            f"{request.method} {request.path_qs} {status} {sent} {now:.3f} {now - started:.3f} "
            f'{conn} "{rng}"\n'
        )

    async def status(self, request: web.Request) -> web.Response:
        return web.Response(text=f"Active connections: {self.in_flight + 1}\n")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        started = time.time()
        sent = 0
        status = 500
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            path = (self.root / request.path.lstrip("/")).resolve()
            if not path.is_relative_to(self.root) or not path.exists():
                status = 404
                raise web.HTTPNotFound()
            if path.is_dir():
                if not request.path.endswith("/"):
                    status = 301
                    raise web.HTTPMovedPermanently(request.path + "/")
                status = 200
                return self._listing(path)
            st = path.stat()
            etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
            last_modified = formatdate(st.st_mtime, usegmt=True)
            start, end = 0, st.st_size - 1
            status = 200
            rng = request.headers.get("Range")
            if_range = request.headers.get("If-Range")
            if rng and if_range is not None and if_range not in (etag, last_modified):
                rng = None
            if rng:
                m = _RANGE.match(rng.strip())
                if m and (m.group(1) or m.group(2)):
                    if m.group(1):
                        start = int(m.group(1))
                        if m.group(2):
                            end = min(int(m.group(2)), st.st_size - 1)
                    else:
                        start = max(0, st.st_size - int(m.group(2)))
                    if start >= st.st_size or start > end:
                        status = 416
                        raise web.HTTPRequestRangeNotSatisfiable(
                            headers={"Content-Range": f"bytes */{st.st_size}"}
                        )
                    status = 206
            resp = web.StreamResponse(status=status)
            resp.content_length = end - start + 1
            resp.headers["Accept-Ranges"] = "bytes"
            resp.headers["ETag"] = etag
            resp.headers["Last-Modified"] = last_modified
            resp.content_type = "application/octet-stream"
            if status == 206:
                resp.headers["Content-Range"] = f"bytes {start}-{end}/{st.st_size}"
            await resp.prepare(request)
            if request.method == "HEAD":
                return resp
            left = end - start + 1
            t0 = time.monotonic()
            # open() off the loop; 256 KiB reads from the page cache are cheap enough in it
            with await asyncio.to_thread(open, path, "rb") as f:
                f.seek(start)
                while left:
                    chunk = f.read(min(CHUNK, left))
                    if not chunk:
                        break
                    await resp.write(chunk)
                    sent += len(chunk)
                    left -= len(chunk)
                    if self.rate:
                        ahead = sent / self.rate - (time.monotonic() - t0)
                        if ahead > 0:
                            await asyncio.sleep(ahead)
            await resp.write_eof()
            return resp
        finally:
            self.in_flight -= 1
            self._log(request, status, sent, started)

    def _listing(self, folder: Path) -> web.Response:
        rows = ['<a href="../">../</a>']
        for child in sorted(folder.iterdir()):
            name = child.name + ("/" if child.is_dir() else "")
            rows.append(f'<a href="{html.escape(name)}">{html.escape(name)}</a>')
        body = "<html><body><pre>\n" + "\n".join(rows) + "\n</pre></body></html>\n"
        return web.Response(text=body, content_type="text/html")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--port-file", required=True, type=Path)
    parser.add_argument("--log", required=True, type=Path)
    parser.add_argument("--rate", type=float, default=0.0, help="bytes/s per request, 0 = none")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each response")
    args = parser.parse_args()
    server = Server(args.root, args.log, args.rate, args.delay)
    app = web.Application()
    app.router.add_get("/__status", server.status)
    app.router.add_route("GET", "/{tail:.*}", server.handle)
    app.router.add_route("HEAD", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = runner.addresses[0][1]
    tmp = args.port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    os.replace(tmp, args.port_file)
    try:
        await asyncio.Event().wait()  # until SIGTERM
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    import contextlib

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
