# Tokens on a cluster: the client is the one token holder; workers borrow its token.
#
# Lifecycle:
#   client: builds bulkflex.auth.Credentials from the user's sources (as on one machine), runs
#           start() and publishes {"generation", "token", "failed"} in a Dask Variable.
#   worker: ClusterCredentials reads that Variable at start, and every second in the background
#           (so a renewal made for one worker reaches all of them).
#   401 on a worker with generation g: the worker (one task per process, behind a lock) asks
#           the client through an event topic and waits until the Variable's generation passes g,
#           or a failure for g is published. The client runs Credentials.refresh(g), which is
#           single-flight: however many workers ask about g, the sources are read once.
#
# Rules kept here:
# - Token sources run on the client only: the environment, the prompt and files are the user's,
#   not the workers'. A worker never fetches a token itself.
# - The token travels over the Dask connections and sits in the scheduler's memory while the job
#   runs (use a TLS-secured cluster for untrusted networks); it is deleted when the job ends,
#   never logged, and every worker adds it to a SecretFilter.
"""Cluster-wide token sharing: ClusterCredentials (workers) and TokenRelay (client)."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
from anyio.from_thread import BlockingPortal

from bulkflex.auth import Credentials, HostScope, SecretFilter, install_secret_filter
from bulkflex.auth._policy import bearer_header
from bulkflex.errors import AuthError

__all__ = ["ClusterCredentials", "TokenRelay", "TokenState"]

log = logging.getLogger(__name__)

#: What the Variable holds: {"generation": int, "token": str | None, "failed": [int, str] | None}
TokenState = dict[str, Any]

#: How often a waiting worker looks at the Variable, and how long it waits for the client (a
#: prompt on the client's terminal may take a while).
_POLL_S = 0.25
_WAIT_FOR_CLIENT_S = 900.0


class ClusterCredentials:
    """The engine's ``Credentials`` on a worker; tokens come from the client.

    Args:
        scope: hosts the token may be sent to (the client's scope).
        read_state: blocking call returning the current :data:`TokenState` (a Dask Variable's
            ``get``); run in a thread.
        ask_refresh: non-blocking call that tells the client "generation g was refused by host".

    All async methods run on the shard's event loop.
    """

    def __init__(
        self,
        scope: HostScope,
        read_state: Callable[[], TokenState],
        ask_refresh: Callable[[int, str], None],
        *,
        poll_s: float = _POLL_S,
        wait_for_client_s: float = _WAIT_FOR_CLIENT_S,
    ) -> None:
        self.scope = scope
        self._read_state = read_state
        self._ask_refresh = ask_refresh
        self._poll_s = poll_s
        self._wait_s = wait_for_client_s
        self._token: str | None = None  # the token sent now
        self._generation = 0  # the client's generation of that token
        self._failed: tuple[int, str] | None = None  # a refresh the client gave up on
        self._lock = anyio.Lock()
        self._gate: anyio.Event | None = None  # set while this worker waits for a new token
        self.secret_filter = _process_filter()

    @property
    def generation(self) -> int:
        return self._generation

    def covers(self, url: str) -> bool:
        return self.scope.covers(url)

    def header_for(self, url: str, *, origin_url: str | None = None) -> dict[str, str]:
        """As :meth:`bulkflex.auth.Credentials.header_for`: in scope and same origin only."""
        return bearer_header(self._token, self.scope, url, origin_url=origin_url)

    def adopt(self, state: TokenState) -> None:
        """Take a newer token (or a newer failure) from the client's published state."""
        generation = int(state.get("generation") or 0)
        if generation > self._generation:
            token = state.get("token")
            if isinstance(token, str) and token:
                self.secret_filter.add(token)
                self._token = token
            else:
                self._token = None
            self._generation = generation
        failed = state.get("failed")
        if failed:
            self._failed = (int(failed[0]), str(failed[1]))

    async def sync(self) -> None:
        """Read the published state (in a thread: it is a round trip to the scheduler)."""
        self.adopt(await anyio.to_thread.run_sync(self._read_state))

    async def start(self) -> None:
        await self.sync()

    async def wait_ready(self) -> None:
        while (gate := self._gate) is not None:
            await gate.wait()

    async def refresh(self, failed_generation: int, *, host: str) -> None:
        """Wait for the client to replace the token of ``failed_generation`` (see module).

        Raises:
            AuthError: the client could not get a new token (its message), or did not answer
                within 15 minutes.
        """
        if self._generation > failed_generation:
            return
        self._raise_if_failed(failed_generation)
        async with self._lock:
            if self._generation > failed_generation:
                return
            gate = self._gate = anyio.Event()
            try:
                await self.sync()
                if self._generation > failed_generation:
                    return
                self._raise_if_failed(failed_generation)
                self._ask_refresh(failed_generation, host)
                deadline = time.monotonic() + self._wait_s
                while time.monotonic() < deadline:
                    await anyio.sleep(self._poll_s)
                    await self.sync()
                    if self._generation > failed_generation:
                        return
                    self._raise_if_failed(failed_generation)
                raise AuthError(
                    f"{host} refused the token and the client sent no new one within "
                    f"{self._wait_s:.0f} s"
                )
            finally:
                self._gate = None
                gate.set()

    def _raise_if_failed(self, generation: int) -> None:
        if self._failed is not None and self._failed[0] >= generation:
            raise AuthError(self._failed[1])


_FILTERS: list[SecretFilter] = []


def _process_filter() -> SecretFilter:
    """One SecretFilter per worker process, installed once on its log handlers.

    Process-wide on purpose: log handlers are process-wide, and a filter per shard would pile
    up on them as a worker runs shard after shard.
    """
    if not _FILTERS:
        _FILTERS.append(SecretFilter())
        install_secret_filter(_FILTERS[0])
    return _FILTERS[0]


def current_token(credentials: Credentials) -> str | None:
    """The bearer token ``credentials`` holds now, or None.

    Read through ``header_for`` on a URL of its own scope (the holder has no public getter).
    """
    for entry in sorted(credentials.scope.entries):
        host = f"[{entry}]" if entry.count(":") > 1 else entry
        for scheme in ("https", "http"):
            header = credentials.header_for(f"{scheme}://{host}/")
            value = header.get("Authorization", "")
            if value.startswith("Bearer "):
                return value[len("Bearer ") :]
    return None


class TokenRelay:
    """The client's side: runs the user's Credentials on a portal loop and publishes tokens.

    Args:
        credentials: the holder built from the user's token options.
        portal: an anyio blocking portal (an event loop in a thread) for the async holder.
        publish: blocking call that stores a :data:`TokenState` (a Dask Variable's ``set``).

    Methods are called from the thread that drives the job; none blocks for long except
    :meth:`start` (the first token, as on one machine).
    """

    #: How often the client checks whether a JWT is due for a proactive renewal.
    RENEW_CHECK_S = 5.0

    def __init__(
        self,
        credentials: Credentials,
        portal: BlockingPortal,
        publish: Callable[[TokenState], None],
    ) -> None:
        self.credentials = credentials
        self._portal = portal
        self._publish = publish
        self._pending: concurrent.futures.Future[None] | None = None
        self._pending_generation = -1
        self._failed: tuple[int, str] | None = None
        self._published = -1
        self._next_check = 0.0
        #: refreshes run for workers (tests check there is one per refused generation)
        self.refreshes = 0

    def state(self) -> TokenState:
        return {
            "generation": self.credentials.generation,
            "token": current_token(self.credentials),
            "failed": list(self._failed) if self._failed else None,
        }

    def publish(self) -> None:
        self._publish(self.state())
        self._published = self.credentials.generation

    def start(self) -> None:
        """Read the non-interactive sources once (never raises for a missing token)."""
        self._portal.call(self.credentials.start)
        self.publish()

    def request(self, failed_generation: int, host: str) -> None:
        """A worker says ``failed_generation`` was refused: refresh once for everybody."""
        if failed_generation < self.credentials.generation:
            self.publish()  # that worker missed a newer token: show it again
            return
        if self._pending is not None or failed_generation <= self._pending_generation:
            return  # a refresh for this generation is running or already done
        if self._failed is not None and self._failed[0] >= failed_generation:
            self.publish()
            return
        self._pending_generation = failed_generation
        self.refreshes += 1
        self._pending = self._portal.start_task_soon(self._refresh, failed_generation, host)

    async def _refresh(self, failed_generation: int, host: str) -> None:
        await self.credentials.refresh(failed_generation, host=host)

    def poll(self) -> None:
        """Publish the result of a finished refresh; renew a JWT that is about to expire."""
        pending = self._pending
        if pending is not None and pending.done():
            self._pending = None
            exc = pending.exception()
            if isinstance(exc, AuthError):
                self._failed = (self._pending_generation, str(exc))
            elif exc is not None:
                self._failed = (self._pending_generation, f"token refresh failed: {exc!r}")
            self.publish()
        now = time.monotonic()
        if self._pending is None and now >= self._next_check:
            self._next_check = now + self.RENEW_CHECK_S
            self._portal.call(self.credentials.wait_ready)
            if self.credentials.generation != self._published:
                self.publish()
