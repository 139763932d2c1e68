"""Run the embedded catalog: on the caller's event loop or on a private one in a thread.

::

    async with DemoServer() as server:          # async tests
        server.catalog_url                      # http://127.0.0.1:PORT/catalogue/

    with DemoServer(DemoConfig(token_lifetime_s=2)) as server:   # sync code: a daemon thread
        ...

Leaving either block closes every connection and frees the port. The server binds 127.0.0.1
only; port 0 (the default) picks a free one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

from bulkflex.demo._threaded import ServerThread, start_app
from bulkflex.demo.app import make_app
from bulkflex.demo.catalog import Catalog
from bulkflex.demo.content import ContentStore
from bulkflex.demo.tokens import TokenIssuer

__all__ = ["DemoConfig", "DemoServer", "DemoState", "Faults", "Stats"]

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """Settings fixed for a server's life.

    Attributes:
        host, port: where to listen (loopback only; port 0 = a free port).
        items_per_collection: overrides every item-bearing collection's default count (FLEX L1
            1600, FLEX L2 1200, BIOMASS L1B 1000, BIOMASS L2A 600).
        data_size: (smallest, largest) size of data files in bytes; sizes are spread
            log-uniformly. Metadata files are 2-16 KiB, thumbnails 8-32 KiB.
        token_lifetime_s: lifetime of access tokens from the token endpoint.
        refresh_lifetime_s: lifetime of refresh ("offline") tokens.
        require_token: whether ``/data/`` (outside ``/public/``) needs a bearer token.
        username, password, client_id, client_secret: accepted by the token endpoint.
        page_size_default, page_size_max: ``limit`` when absent, and its clamp.
        flat_files, flat_size: also serve ``flat_files`` synthetic files of ``flat_size`` bytes
            each at ``/flat/000000.bin``, ``/flat/000001.bin``, ... with no token (Range,
            If-Range and ETag like ``/data/``; see :func:`bulkflex.demo.app.flat_spec`). 0 = off.
        flat_rate: cap each ``/flat/`` response at this many bytes per second (None = no cap).
        flat_delay_s: sleep this long before each ``/flat/`` response starts (an emulated
            round trip). The rate cap and delay apply to ``/flat/`` only.
    """

    host: str = "127.0.0.1"
    port: int = 0
    items_per_collection: int | None = None
    data_size: tuple[int, int] = (64 * KiB, 4 * MiB)
    token_lifetime_s: float = 600.0
    refresh_lifetime_s: float = 90 * 86400.0
    require_token: bool = True
    username: str = "demo"
    password: str = "demo"
    client_id: str = "bulkflex-demo"
    client_secret: str = "demo-secret"
    page_size_default: int = 10
    page_size_max: int = 1000
    flat_files: int = 0
    flat_size: int = 0
    flat_rate: float | None = None
    flat_delay_s: float = 0.0


@dataclass(slots=True)
class Faults:
    """Misbehaviour switches, read on every request; change them while the server runs.

    Attributes:
        drop_after_bytes / drop_files: the first ``drop_files`` distinct data files requested
            each get their connection closed after ``drop_after_bytes`` body bytes, once.
        throttle_429: answer this many ``/data/`` requests with 429 and ``Retry-After``.
        catalog_503: answer this many search / collection-search requests with an HTML 503
            and ``Retry-After``.
        retry_after_s: the ``Retry-After`` value in seconds.
    """

    drop_after_bytes: int | None = None
    drop_files: int = 0
    throttle_429: int = 0
    catalog_503: int = 0
    retry_after_s: int = 1


@dataclass(slots=True)
class Stats:
    """Counters a test or the demo can read (written only by the server's loop)."""

    catalog_requests: int = 0
    searches: int = 0
    catalog_errors: int = 0
    data_requests: int = 0
    range_requests: int = 0
    bytes_served: int = 0
    unauthorized: int = 0
    throttled: int = 0
    dropped: int = 0
    zips: int = 0
    tokens_issued: int = 0
    public_with_token: int = 0


@dataclass(slots=True)
class DemoState:
    """Everything the request handlers share."""

    config: DemoConfig
    faults: Faults
    catalog: Catalog
    content: ContentStore
    tokens: TokenIssuer
    stats: Stats = field(default_factory=Stats)
    dropped: set[str] = field(default_factory=set)


class DemoServer:
    """The embedded MAAP-like catalog, asset server and token endpoint on 127.0.0.1."""

    def __init__(self, config: DemoConfig | None = None, faults: Faults | None = None) -> None:
        self.config = config or DemoConfig()
        content = ContentStore()
        self.state = DemoState(
            config=self.config,
            faults=faults or Faults(),
            catalog=Catalog(
                items_per_collection=self.config.items_per_collection,
                data_size=self.config.data_size,
                content=content,
            ),
            content=content,
            tokens=TokenIssuer(
                issuer="bulkflex-demo",
                access_lifetime_s=self.config.token_lifetime_s,
                refresh_lifetime_s=self.config.refresh_lifetime_s,
            ),
        )
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._thread = ServerThread(
            self.start_async, self.stop_async, name="bulkflex-demo", what="demo server"
        )

    # -- addresses --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the demo server is not running")
        return self._port

    @property
    def url(self) -> str:
        """The origin, ``http://127.0.0.1:PORT``."""
        return f"http://{self.config.host}:{self.port}"

    @property
    def catalog_url(self) -> str:
        """The STAC API root, with its trailing slash."""
        return f"{self.url}/catalogue/"

    @property
    def token_url(self) -> str:
        return f"{self.url}/realms/demo/protocol/openid-connect/token"

    @property
    def faults(self) -> Faults:
        return self.state.faults

    @property
    def stats(self) -> Stats:
        return self.state.stats

    @property
    def content(self) -> ContentStore:
        return self.state.content

    def issue_token(self) -> str:
        """An access token minted directly (tests; the demo uses the token endpoint)."""
        return self.state.tokens.issue_access()

    def expire_tokens(self) -> None:
        """Every access token issued so far stops working at once (refresh tokens still do)."""
        self.state.tokens.expire_access_tokens()

    # -- lifecycle on the caller's loop ---------------------------------------------------------

    async def start_async(self) -> DemoServer:
        runner, self._port = await start_app(
            make_app(self.state),
            self.config.host,
            self.config.port,
            handler_cancellation=True,
            reuse_address=True,
            # a demo stops at once on Ctrl-C: transfers under way are cut (and resume later)
            shutdown_timeout=2.0,
        )
        self._runner = runner
        return self

    async def stop_async(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._port = 0

    async def __aenter__(self) -> DemoServer:
        return await self.start_async()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop_async()

    # -- lifecycle in a thread ------------------------------------------------------------------

    def start(self) -> DemoServer:
        """Start on a private event loop in a daemon thread; returns once it listens.

        Raises whatever starting raised (:class:`OSError` for a port in use), or
        :class:`RuntimeError` if already started or not listening within 30 s.
        """
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread started by :meth:`start`: closes connections, joins the thread.

        Does nothing if not started. Raises :class:`RuntimeError` if the thread is still alive
        30 s later.
        """
        self._thread.stop()

    def __enter__(self) -> DemoServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
