"""End to end over HTTPS, as MAAP serves its assets: the real CLI (on uvloop when installed)
against an aiohttp server with a certificate from a test CA (trustme), on 127.0.0.1.

- With the CA in ``SSL_CERT_FILE``: whole files, a split file and a connection cut mid-body all
  arrive with the exact bytes; the cut file resumes with a Range request over TLS.
- Without it: every entry fails at once, saying the certificate is not trusted (no retries: a
  certificate does not become trusted by waiting), exit 1.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from clirun import RUN_TIMEOUT, Result, assert_files, command, download_args, write_manifest

from bulkflex.demo import ServerThread

KiB = 1024
MiB = 1024 * KiB


def payload(name: str, size: int) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


@dataclass
class TLSFiles:
    """Files over HTTPS. ``cut`` names files whose first request is cut after half the body."""

    root: Path
    cut: set[str] = field(default_factory=set)
    ranges: dict[str, list[str | None]] = field(default_factory=dict)
    port: int = 0

    def url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.port}/files/{name}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.ranges.setdefault(name, []).append(request.headers.get("Range"))
        path = self.root / name
        if name in self.cut and len(self.ranges[name]) == 1:
            data = path.read_bytes()
            response = web.StreamResponse(headers={"Content-Length": str(len(data))})
            await response.prepare(request)
            await response.write(data[: len(data) // 2])
            assert request.transport is not None
            request.transport.abort()  # the connection breaks mid-body
            return response
        return web.FileResponse(path)  # Range, If-Range, ETag as a static server does


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(tmp_path: Path, ca: trustme.CA) -> Iterator[TLSFiles]:
    root = tmp_path / "served"
    root.mkdir()
    files = TLSFiles(root)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    app = web.Application()
    app.router.add_get("/files/{name}", files.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        server = site._server
        assert server is not None
        files.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    thread = ServerThread(start, runner.cleanup, name="tls-server", what="TLS server")
    thread.start()
    try:
        yield files
    finally:
        thread.stop()


def add(files: TLSFiles, name: str, size: int) -> dict[str, object]:
    data = payload(name, size)
    (files.root / name).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    return {"url": files.url(name), "path": name, "size": size, "checksum": "1220" + digest}


def run(args: list[str | os.PathLike[str]], ca_file: Path | None) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.pop("SSL_CERT_FILE", None)
    env.pop("SSL_CERT_DIR", None)
    if ca_file is not None:
        env["SSL_CERT_FILE"] = str(ca_file)
    proc = subprocess.run(
        command(*args), capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_https_download_with_a_split_file_and_a_cut_connection(
    tls_files: TLSFiles, ca: trustme.CA, tmp_path: Path
) -> None:
    tls_files.cut.add("cut.bin")
    records = [
        add(tls_files, "small.bin", 300 * KiB),
        add(tls_files, "cut.bin", 3 * MiB),
        add(tls_files, "big.bin", 12 * MiB),
    ]
    manifest = write_manifest(tmp_path / "m.jsonl", records)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    dest = tmp_path / "d"

    result = run(download_args(manifest, dest, "--split-min", "8MiB"), ca_file)

    assert result.returncode == 0, result.describe()
    assert_files(
        dest,
        {
            n: payload(n, int(str(r["size"])))
            for n, r in zip(("small.bin", "cut.bin", "big.bin"), records, strict=True)
        },
    )
    # the cut file came back with a Range from where the bytes on disk ended
    first, second = tls_files.ranges["cut.bin"]
    assert first is None
    assert second is not None and second.startswith("bytes=") and not second.startswith("bytes=0-")
    # the big file went over several ranged requests
    assert len(tls_files.ranges["big.bin"]) >= 2
    assert all(r is not None for r in tls_files.ranges["big.bin"])


def test_untrusted_certificate_fails_each_entry_at_once(
    tls_files: TLSFiles, tmp_path: Path
) -> None:
    records = [add(tls_files, "a.bin", 64 * KiB), add(tls_files, "b.bin", 64 * KiB)]
    manifest = write_manifest(tmp_path / "m.jsonl", records)

    result = run(download_args(manifest, tmp_path / "d"), ca_file=None)

    assert result.returncode == 1, result.describe()
    failed = sorted(result.failed_lines)
    assert len(failed) == 2, result.describe()
    for line, name in zip(failed, ("a.bin", "b.bin"), strict=True):
        assert line.startswith(f"FAILED {name}: TLS certificate of 127.0.0.1 not trusted"), line
        assert "set SSL_CERT_FILE to a CA bundle that has its CA" in line
    assert tls_files.ranges == {}  # no request reached the server
    assert not (tmp_path / "d" / "a.bin").exists()
