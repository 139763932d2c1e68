"""Run an aiohttp server on loopback, on the caller's loop or on a private loop in a thread.

Two pieces, shared by the demo server and the test servers (fault injection, rotating tokens):

- :func:`start_app` sets an :class:`aiohttp.web.Application` listening and says on which port.
- :class:`ServerThread` runs a server's own async ``start``/``stop`` pair on a private event loop
  in a daemon thread, so synchronous code (the CLI, tests that drive a subprocess) can use it::

      thread = ServerThread(server.start_async, server.stop_async, name="demo", what="demo server")
      thread.start()   # returns once start_async has returned (the server listens)
      ...
      thread.stop()    # stop_async on the server loop, then the loop ends and the thread is joined

Nothing here binds anything but the host it is given; callers pass 127.0.0.1 (port 0: a free one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable

from aiohttp import web

__all__ = ["ServerThread", "start_app"]

log = logging.getLogger(__name__)


async def start_app(
    app: web.Application,
    host: str,
    port: int = 0,
    *,
    shutdown_timeout: float = 60.0,
    handler_cancellation: bool = False,
    reuse_address: bool | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (no access log); return its runner and the bound port.

    ``port`` 0 picks a free port; the port returned is the real one. With a host name that
    resolves to several addresses, the port is the first socket's. ``shutdown_timeout`` is how
    long ``runner.cleanup()`` lets open requests finish before it closes their connections.
    If the site cannot listen (port taken: :class:`OSError`), the runner is cleaned up and the
    error propagates. Stop the server with ``await runner.cleanup()``.
    """
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=shutdown_timeout,
        handler_cancellation=handler_cancellation,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=reuse_address)
        await site.start()
        addresses = [address for address in runner.addresses if isinstance(address, tuple)]
        return runner, int(addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise


class ServerThread:
    """A server's async ``start`` and ``stop`` run on a private event loop in a daemon thread.

    Args:
        start: called on the private loop by :meth:`start`; the server listens once it returns.
        stop: called on the private loop by :meth:`stop`; it should close every connection
            (release handlers that wait forever first) so the loop can end.
        name: the thread's name.
        what: how errors name the server ("fault server").
        timeout: seconds allowed for starting, for ``stop`` to finish and for the thread to end.

    One instance runs one thread at a time; after :meth:`stop` (or a failed :meth:`start`) it can
    be started again.
    """

    def __init__(
        self,
        start: Callable[[], Awaitable[object]],
        stop: Callable[[], Awaitable[object]],
        *,
        name: str,
        what: str = "server",
        timeout: float = 30.0,
    ) -> None:
        self._start = start
        self._stop = stop
        self.name = name
        self.what = what
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._thread is not None

    def start(self) -> None:
        """Start the thread and run ``start`` on its loop; return once that has returned.

        Raises:
            RuntimeError: already running, or ``start`` did not return within ``timeout``
                (the thread is then stopped).
            BaseException: whatever ``start`` raised (an :class:`OSError` for a taken port); the
                thread has ended by then.
        """
        if self._thread is not None:
            raise RuntimeError(f"the {self.what} is already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=self._serve, args=(loop, ready, failure), name=self.name, daemon=True
        )
        thread.start()
        if not ready.wait(timeout=self.timeout):
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=self.timeout)
            raise RuntimeError(f"the {self.what} did not start within {self.timeout:g} s")
        if failure:
            thread.join(timeout=self.timeout)
            raise failure[0]
        self._loop, self._thread = loop, thread

    def stop(self) -> None:
        """Run ``stop`` on the server loop, end the loop and join the thread. Idempotent.

        The loop ends and the thread is joined even if ``stop`` raised or timed out (its error
        propagates then).

        Raises:
            RuntimeError: the thread was still alive ``timeout`` seconds after the loop was told
                to stop.
        """
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        try:
            asyncio.run_coroutine_threadsafe(self._call_stop(), loop).result(timeout=self.timeout)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=self.timeout)
        if thread.is_alive():
            raise RuntimeError(f"the {self.what} thread did not stop within {self.timeout:g} s")

    async def _call_stop(self) -> None:
        await self._stop()

    def _serve(
        self,
        loop: asyncio.AbstractEventLoop,
        ready: threading.Event,
        failure: list[BaseException],
    ) -> None:
        """The thread: start, signal ``ready``, serve until stopped, then close the loop."""
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                ready.set()
            loop.run_forever()
            self._cancel_leftovers(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def _cancel_leftovers(self, loop: asyncio.AbstractEventLoop) -> None:
        """Cancel tasks still pending after ``stop`` and wait for them (bounded), as
        :func:`asyncio.run` does, so closing the loop does not destroy pending tasks."""
        pending = asyncio.all_tasks(loop)
        if not pending:
            return
        for task in pending:
            task.cancel()
        gathered = asyncio.gather(*pending, return_exceptions=True)
        try:
            loop.run_until_complete(asyncio.wait_for(gathered, timeout=self.timeout))
        except TimeoutError:
            log.warning("%s: %d task(s) ignored cancellation", self.what, len(pending))
