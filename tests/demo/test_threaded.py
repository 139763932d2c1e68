"""ServerThread and start_app: start, listen, fail cleanly on a taken port, stop and join, close
stalled connections, cancel leftover tasks, start again."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
import requests
from aiohttp import web

from bulkflex.demo import ServerThread, start_app


class Stalling:
    """A tiny server: ``/ok`` answers, ``/stall`` sends headers and then nothing until stopped."""

    def __init__(self, port: int = 0) -> None:
        self.wanted_port = port
        self.port = 0
        self.runner: web.AppRunner | None = None
        self.release: asyncio.Event | None = None
        self.stalled = threading.Event()
        self.orphan: asyncio.Task[None] | None = None
        self.thread = ServerThread(self.start, self.stop, name="stalling", timeout=10.0)

    async def ok(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def stall(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 10
        await response.prepare(request)
        await response.write(b"x")
        self.stalled.set()
        assert self.release is not None
        await self.release.wait()
        return response

    async def start(self) -> None:
        self.release = asyncio.Event()
        app = web.Application()
        app.router.add_get("/ok", self.ok)
        app.router.add_get("/stall", self.stall)
        self.runner, self.port = await start_app(
            app, "127.0.0.1", self.wanted_port, shutdown_timeout=0.5
        )
        self.orphan = asyncio.create_task(asyncio.sleep(3600))  # never awaited by anyone

    async def stop(self) -> None:
        assert self.release is not None and self.runner is not None
        self.release.set()
        await self.runner.cleanup()


def get(url: str) -> requests.Response:
    session = requests.Session()
    session.trust_env = False
    return session.get(url, timeout=10)


def test_serves_stops_joins_and_starts_again() -> None:
    server = Stalling()
    server.thread.start()
    assert server.thread.running
    assert get(f"http://127.0.0.1:{server.port}/ok").text == "ok"
    with pytest.raises(RuntimeError, match="already started"):
        server.thread.start()
    server.thread.stop()
    assert not server.thread.running
    assert server.orphan is not None and server.orphan.cancelled()
    assert not any(t.name == "stalling" for t in threading.enumerate())
    with pytest.raises(requests.ConnectionError):
        get(f"http://127.0.0.1:{server.port}/ok")
    server.thread.stop()  # idempotent
    server.thread.start()
    assert get(f"http://127.0.0.1:{server.port}/ok").text == "ok"
    server.thread.stop()


def test_stop_closes_a_stalled_connection() -> None:
    server = Stalling()
    server.thread.start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
        client.sendall(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
        assert server.stalled.wait(timeout=10)
        server.thread.stop()
        received = b""
        while chunk := client.recv(65536):  # ends at EOF: the server closed the connection
            received += chunk
    assert received.startswith(b"HTTP/1.1 200")
    assert not any(t.name == "stalling" for t in threading.enumerate())


def test_a_taken_port_raises_oserror_and_leaves_no_thread() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = Stalling(port=taken.getsockname()[1])
        with pytest.raises(OSError):
            server.thread.start()
    assert not server.thread.running
    assert not any(t.name == "stalling" for t in threading.enumerate())
    server.thread.stop()  # nothing to stop
