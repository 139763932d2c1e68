# Credentials: the one holder of the current bearer token for a run.
#
# Lifecycle of the token (``generation`` counts successful fetches):
#   generation 0: no token; requests go out bare (public files need none).
#   start():      non-interactive sources are read once; a failure only logs a warning.
#   refresh(g):   a request sent with generation g was refused. The first caller takes the lock,
#                 closes the gate, walks the sources (bounded passes with backoff), installs a
#                 new token (generation g+1) and opens the gate. Callers with an older g return
#                 at once; callers waiting on the lock find the generation moved and return.
#                 When the refresh for g fails, every caller for g gets the same AuthError
#                 without fetching again.
#   wait_ready(): waits while the gate is closed; renews a JWT shortly before its exp.
#
# Rules kept here:
# - One source fetch per refresh, however many transfers were refused at once.
# - The interactive prompt is only used inside refresh(), at most once per refresh.
# - Every token learned is fed to the SecretFilter before it is used, so it can never be logged.
# - Decisions (scope, origin, renewal time, backoff) come from _policy; this module does the
#   waiting and the bookkeeping.
"""The bearer-token holder the download engine calls: scope, single-flight refresh, gate."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager

import anyio

from bulkflex.auth._policy import (
    HostScope,
    RefreshPolicy,
    bearer_header,
    jwt_expiry,
    renew_at,
)
from bulkflex.auth._redact import SecretFilter
from bulkflex.auth._sources import TokenSource, TokenUnavailable
from bulkflex.errors import AuthError

__all__ = ["HOW_TO_GIVE_A_TOKEN", "Credentials"]

log = logging.getLogger(__name__)

HOW_TO_GIVE_A_TOKEN = (
    "pass --token-env VAR, --token-file FILE, --token-command CMD or --oidc-token-url URL "
    "(or set MAAP_TOKEN)"
)


class Credentials:
    """Holds the current bearer token, scoped to hosts; single-flight refresh.

    Args:
        sources: token sources, tried in order; the first that gives a usable new token wins.
        scope: the hosts the token may be sent to (a :class:`HostScope`, or host names).
        policy: refresh attempts, backoff and the JWT renewal margin.
        secret_filter: learns every token (and the sources' own secrets, if they share it);
            install it on the log handlers with :func:`~bulkflex.auth.install_secret_filter`.
        clock: wall-clock seconds (JWT ``exp`` is wall-clock); a test passes a fake one.
        sleep: awaited between refresh attempts; a test passes a fake one.

    All methods must be called from one event loop. The object may be built before the loop
    runs (the CLI does so).
    """

    def __init__(
        self,
        sources: Sequence[TokenSource],
        scope: HostScope | Iterable[str],
        *,
        policy: RefreshPolicy | None = None,
        secret_filter: SecretFilter | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
    ) -> None:
        self.sources: tuple[TokenSource, ...] = tuple(sources)
        self.scope = scope if isinstance(scope, HostScope) else HostScope.of(scope)
        self.policy = policy or RefreshPolicy()
        self.secret_filter = secret_filter if secret_filter is not None else SecretFilter()
        self._clock = clock
        self._sleep = sleep
        self._lock = anyio.Lock()
        self._token: str | None = None  # the bearer token sent now; None before the first one
        self._generation = 0  # +1 on every token installed; requests remember the one they used
        self._renew_at: float | None = None  # epoch s of the proactive renewal (JWT exp only)
        self._renew_not_before = 0.0  # after a failed proactive renewal: next try not before
        self._renew_failures = 0  # failed proactive renewals of the current token (backoff)
        self._gate: anyio.Event | None = None  # set while a fetch runs; wait_ready waits on it
        self._failed: tuple[int, str] | None = None  # (generation, message) of a failed refresh
        #: Calls to a source's fetch (all sources, successful or not): for logs and tests.
        self.fetches = 0

    # -- what the engine reads for every request ------------------------------------------

    @property
    def generation(self) -> int:
        """0 before any token; +1 on every successful (re)fetch."""
        return self._generation

    @property
    def has_token(self) -> bool:
        """True once a token has been fetched."""
        return self._token is not None

    def covers(self, url: str) -> bool:
        """True when ``url``'s host is in scope (whether or not a token is held yet).

        The engine should use this, not ``header_for``, to decide whether a 401 from ``url`` is
        something a refresh can fix: before the first token ``header_for`` is always empty.
        """
        return self.scope.covers(url)

    def header_for(self, url: str, *, origin_url: str | None = None) -> dict[str, str]:
        """``{"Authorization": "Bearer ..."}`` for ``url``, or ``{}``.

        Empty when no token is held, when ``url``'s host is not in scope, or when
        ``origin_url`` (the URL the request chain started at) is given and differs from
        ``url`` in scheme, host or port: a token is never carried across such a redirect,
        even to another host in scope. A new dict on every call.
        """
        return bearer_header(self._token, self.scope, url, origin_url=origin_url)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the non-interactive sources once, before the first request.

        Never prompts and never raises for a source failure (public files need no token): a
        failure is logged as a warning and the first 401 will refresh, with retries.
        """
        async with self._lock, self._gate_closed():
            reasons: list[str] = []
            for source in self.sources:
                if source.interactive:
                    continue
                try:
                    token = await self._fetch(source, None)
                except TokenUnavailable as exc:
                    reasons.append(f"{source.description}: {exc}")
                    continue
                self._install(token, source)
                return
            if reasons:
                log.warning("no token yet (%s)", self._redact("; ".join(reasons)))

    async def wait_ready(self) -> None:
        """Return at once unless a token fetch is running; then wait until it ends.

        Also renews a JWT proactively when its renewal time has come (see
        :func:`~bulkflex.auth.renew_at`) and a source can give a new token (file, command,
        OIDC; not an environment variable or the prompt): the caller then waits for that
        fetch. A failed
        proactive renewal is only logged; the current token is kept until a 401 says
        otherwise, and the next proactive try waits for a growing delay.
        """
        while (gate := self._gate) is not None:
            await gate.wait()
        due = self._renew_at
        if due is not None:
            now = self._clock()
            if now >= due and now >= self._renew_not_before:
                await self._renew_proactively()

    async def refresh(self, failed_generation: int, *, host: str) -> None:
        """Get a new token after a request sent with ``failed_generation`` was refused.

        Returns at once if the generation has moved past ``failed_generation`` (another task
        refreshed). Otherwise exactly one task fetches; the others wait on the lock and then
        return. A fetch walks the sources in order (the prompt at most once), taking the first
        usable token that differs from the refused one; when every source failed and some
        failure may pass, it waits (``policy.delay_after``) and walks again, up to
        ``policy.attempts`` times.

        Raises:
            AuthError: one line, saying how to give a token, when no source is configured or
                none gave a new token within the attempts. Later calls with the same
                ``failed_generation`` raise the same message without fetching again.
        """
        if self._generation > failed_generation:
            return
        self._raise_if_failed(failed_generation)
        async with self._lock:
            if self._generation > failed_generation:
                return
            self._raise_if_failed(failed_generation)
            async with self._gate_closed():
                try:
                    await self._refresh_locked(host)
                except AuthError as exc:
                    self._failed = (failed_generation, str(exc))
                    raise

    async def aclose(self) -> None:
        """Release resources. Nothing is held between fetches today; kept for the API."""

    # -- internals --------------------------------------------------------------------------

    @asynccontextmanager
    async def _gate_closed(self) -> AsyncIterator[None]:
        gate = anyio.Event()
        self._gate = gate
        try:
            yield
        finally:
            self._gate = None
            gate.set()

    def _raise_if_failed(self, generation: int) -> None:
        if self._failed is not None and self._failed[0] == generation:
            raise AuthError(self._failed[1])

    def _redact(self, text: str) -> str:
        return self.secret_filter.redact(" ".join(text.split()))

    async def _fetch(self, source: TokenSource, host: str | None) -> str:
        self.fetches += 1
        token = await source.fetch(host)
        self.secret_filter.add(token)  # before anything else can see it
        return token

    def _install(self, token: str, source: TokenSource) -> None:
        now = self._clock()
        self._token = token
        self._generation += 1
        self._renew_failures = 0
        self._renew_not_before = 0.0
        expires_at = jwt_expiry(token)
        self._renew_at = (
            renew_at(now, expires_at, self.policy.renew_margin_s) if expires_at else None
        )
        if expires_at is None:
            log.info("token %d from %s", self._generation, source.description)
        elif expires_at <= now:
            # Say so now: the 401 that follows would otherwise be the first hint.
            log.warning(
                "token %d from %s expired %.0f s ago",
                self._generation,
                source.description,
                now - expires_at,
            )
        else:
            log.info(
                "token %d from %s, expires in %.0f s",
                self._generation,
                source.description,
                expires_at - now,
            )

    async def _refresh_locked(self, host: str) -> None:
        if not self.sources:
            raise AuthError(f"{host} needs a bearer token: {HOW_TO_GIVE_A_TOKEN}")
        refused = self._token
        prompted = False
        reasons: list[str] = []
        attempt = 0
        for attempt in range(1, self.policy.attempts + 1):
            reasons = []
            may_pass = False
            for source in self.sources:
                if source.interactive:
                    if prompted:
                        continue
                    prompted = True
                try:
                    token = await self._fetch(source, host)
                except TokenUnavailable as exc:
                    reasons.append(f"{source.description}: {exc}")
                    may_pass = may_pass or exc.retryable
                    continue
                if token == refused:
                    reasons.append(f"{source.description} gave the token {host} refused")
                    may_pass = may_pass or source.can_change
                    continue
                self._install(token, source)
                return
            if not may_pass or attempt == self.policy.attempts:
                break
            delay = self.policy.delay_after(attempt)
            log.warning(
                "cannot renew the token for %s yet (%s); trying again in %.1f s",
                host,
                self._redact("; ".join(reasons)),
                delay,
            )
            await self._sleep(delay)
        tries = f" after {attempt} attempts" if attempt > 1 else ""
        raise AuthError(
            self._redact(
                f"{host} needs a new bearer token and none could be had{tries} "
                f"({'; '.join(reasons)}): {HOW_TO_GIVE_A_TOKEN}"
            )
        )

    async def _renew_proactively(self) -> None:
        generation = self._generation
        async with self._lock:
            now = self._clock()
            if (
                self._generation != generation
                or self._renew_at is None
                or now < self._renew_at
                or now < self._renew_not_before
            ):
                return  # another task renewed, or backed off, while this one waited
            renewers = [s for s in self.sources if s.can_change and not s.interactive]
            if not renewers:
                # A pasted or env token cannot be renewed ahead of time: wait for the 401,
                # which may prompt.
                self._renew_at = None
                return
            async with self._gate_closed():
                reasons: list[str] = []
                for source in renewers:
                    try:
                        token = await self._fetch(source, None)
                    except TokenUnavailable as exc:
                        reasons.append(f"{source.description}: {exc}")
                        continue
                    if token != self._token:
                        self._install(token, source)
                        return
                    reasons.append(f"{source.description} gave the same token")
                self._renew_failures += 1
                delay = self.policy.delay_after(self._renew_failures)
                self._renew_not_before = self._clock() + delay
                log.warning(
                    "token %d expires soon and could not be renewed yet (%s); next try in %.1f s",
                    self._generation,
                    self._redact("; ".join(reasons) or "no source can renew it"),
                    delay,
                )
