"""Credentials: scope and redirects, start, single-flight refresh, gate, retries, JWT renewal."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest
from authkit import counting_command, make_jwt, run_count
from tokenserver import TokenEndpoint

from bulkflex.auth import (
    HOW_TO_GIVE_A_TOKEN,
    CommandSource,
    Credentials,
    EnvSource,
    FileSource,
    OidcRefreshSource,
    RefreshPolicy,
    TokenUnavailable,
)
from bulkflex.errors import AuthError

pytestmark = pytest.mark.anyio

HOST = "127.0.0.1"
URL = "http://127.0.0.1:8000/data/a.tif"


class Scripted:
    """A source answering from a list (a token, or a TokenUnavailable to raise); counts calls."""

    def __init__(
        self,
        answers: list[str | TokenUnavailable],
        *,
        interactive: bool = False,
        can_change: bool = True,
        description: str = "scripted",
    ) -> None:
        self.answers = answers
        self.interactive = interactive
        self.can_change = can_change
        self.description = description
        self.calls: list[str | None] = []
        self.release: anyio.Event | None = None  # when set, fetch waits for it

    async def fetch(self, host: str | None) -> str:
        self.calls.append(host)
        if self.release is not None:
            await self.release.wait()
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, TokenUnavailable):
            raise answer
        return answer


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def creds(*sources: object, **kwargs: object) -> Credentials:
    return Credentials(sources, [HOST], **kwargs)  # type: ignore[arg-type]


# -- header_for: scope and redirects -------------------------------------------------------


async def test_header_only_for_hosts_in_scope_and_only_with_a_token() -> None:
    credentials = creds(Scripted(["tok-scope-1"]))
    assert credentials.header_for(URL) == {}  # no token yet
    assert credentials.covers(URL)
    await credentials.start()
    assert credentials.header_for(URL) == {"Authorization": "Bearer tok-scope-1"}
    assert credentials.header_for("https://127.0.0.1/x") == {"Authorization": "Bearer tok-scope-1"}
    assert credentials.header_for("http://127.0.0.2:8000/data/a.tif") == {}
    assert not credentials.covers("http://127.0.0.2:8000/data/a.tif")
    assert credentials.header_for("http://example.org/") == {}


@pytest.mark.parametrize(
    "redirect_to",
    [
        "http://127.0.0.2:8000/data/a.tif",  # another host
        "https://127.0.0.1:8000/data/a.tif",  # another scheme
        "http://127.0.0.1:8001/data/a.tif",  # another port
    ],
)
async def test_header_stripped_on_cross_origin_redirect(redirect_to: str) -> None:
    credentials = Credentials([Scripted(["tok-redir"])], [HOST, "127.0.0.2"])
    await credentials.start()
    assert credentials.header_for(redirect_to, origin_url=URL) == {}
    assert credentials.header_for(redirect_to) != {}  # in scope as a first request


async def test_header_kept_on_same_origin_redirect() -> None:
    credentials = creds(Scripted(["tok-same"]))
    await credentials.start()
    header = credentials.header_for("http://127.0.0.1:8000/other?x=1", origin_url=URL)
    assert header == {"Authorization": "Bearer tok-same"}


# -- start ----------------------------------------------------------------------------------


async def test_start_reads_sources_in_order_and_never_prompts() -> None:
    failing = Scripted([TokenUnavailable("nope", retryable=True)], description="first")
    second = Scripted(["tok-second"])
    prompt = Scripted(["tok-typed"], interactive=True)
    credentials = creds(failing, second, prompt)
    await credentials.start()
    assert credentials.generation == 1
    assert credentials.header_for(URL) == {"Authorization": "Bearer tok-second"}
    assert len(failing.calls) == 1
    assert prompt.calls == []


async def test_start_without_a_token_warns_and_does_not_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    credentials = creds(EnvSource("UNSET_FOR_TEST", {}))
    with caplog.at_level(logging.WARNING, logger="bulkflex.auth"):
        await credentials.start()
    assert credentials.generation == 0
    assert not credentials.has_token
    assert caplog.messages == [
        "no token yet (--token-env UNSET_FOR_TEST: $UNSET_FOR_TEST is not set or empty)"
    ]


# -- refresh ----------------------------------------------------------------------------------


async def test_fifty_concurrent_refreshes_run_the_command_once(tmp_path: Path) -> None:
    command, runs = counting_command(tmp_path)
    credentials = creds(CommandSource(command))
    await credentials.start()
    assert run_count(runs) == 1
    assert credentials.header_for(URL) == {"Authorization": "Bearer tok-1"}
    failed = credentials.generation
    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(lambda: credentials.refresh(failed, host=HOST))
    assert run_count(runs) == 2
    assert credentials.generation == failed + 1
    assert credentials.header_for(URL) == {"Authorization": "Bearer tok-2"}
    await credentials.refresh(failed, host=HOST)  # a late caller with the old generation
    assert run_count(runs) == 2
    await credentials.refresh(credentials.generation, host=HOST)  # a new refusal: run again
    assert run_count(runs) == 3
    assert credentials.fetches == 3


async def test_token_file_is_reread_on_refresh(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("tok-file-a\n")
    credentials = creds(FileSource(path), policy=RefreshPolicy(attempts=2), sleep=Sleeps())
    await credentials.start()
    path.write_text("tok-file-b\n")
    await credentials.refresh(1, host=HOST)
    assert credentials.header_for(URL) == {"Authorization": "Bearer tok-file-b"}
    # The file still holds the refused token: retried (a tool may rewrite it), then given up.
    with pytest.raises(AuthError) as info:
        await credentials.refresh(2, host=HOST)
    assert str(info.value) == (
        f"{HOST} needs a new bearer token and none could be had after 2 attempts "
        f"(--token-file {path} gave the token {HOST} refused): {HOW_TO_GIVE_A_TOKEN}"
    )


async def test_refresh_retries_with_backoff_then_fails_with_one_line(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    command = f'echo x >> "{runs}"; printf "service down (had tok-secret-%s)" 9 >&2; exit 1'
    sleeps = Sleeps()
    policy = RefreshPolicy(attempts=4, first_delay_s=0.5, max_delay_s=1.5)
    credentials = Credentials([CommandSource(command)], [HOST], policy=policy, sleep=sleeps)
    credentials.secret_filter.add("tok-secret-9")
    await credentials.start()
    assert run_count(runs) == 1
    async with anyio.create_task_group() as tg:
        errors: list[str] = []

        async def refresh() -> None:
            try:
                await credentials.refresh(0, host=HOST)
            except AuthError as exc:
                errors.append(str(exc))

        for _ in range(10):
            tg.start_soon(refresh)
    assert run_count(runs) == 1 + 4  # one refresh, four attempts, for ten callers
    assert sleeps.delays == [0.5, 1.0, 1.5]
    expected = (
        f"{HOST} needs a new bearer token and none could be had after 4 attempts "
        f"(--token-command {command!r}: the token command exited with status 1: "
        f"service down (had ***)): {HOW_TO_GIVE_A_TOKEN}"
    )
    assert errors == [expected] * 10
    assert "\n" not in expected


async def test_final_failure_stops_after_one_pass() -> None:
    sleeps = Sleeps()
    credentials = creds(EnvSource("MAAP_TOKEN", {"MAAP_TOKEN": "tok-env"}), sleep=sleeps)
    await credentials.start()
    with pytest.raises(AuthError) as info:
        await credentials.refresh(1, host=HOST)
    assert str(info.value) == (
        f"{HOST} needs a new bearer token and none could be had "
        f"(--token-env MAAP_TOKEN gave the token {HOST} refused): {HOW_TO_GIVE_A_TOKEN}"
    )
    assert sleeps.delays == []
    assert "tok-env" not in str(info.value)


async def test_no_source_at_all() -> None:
    credentials = creds()
    await credentials.start()
    with pytest.raises(AuthError) as info:
        await credentials.refresh(0, host="data.example")
    assert str(info.value) == f"data.example needs a bearer token: {HOW_TO_GIVE_A_TOKEN}"


async def test_falls_through_to_the_next_source_and_prompts_once_per_refresh() -> None:
    static = Scripted(["tok-static"], can_change=False)
    prompt = Scripted(["tok-static", "tok-typed"], interactive=True, description="prompt")
    sleeps = Sleeps()
    credentials = creds(static, prompt, sleep=sleeps)
    await credentials.start()
    assert prompt.calls == []
    with pytest.raises(AuthError):  # the prompt gave the refused token again: asked once only
        await credentials.refresh(1, host=HOST)
    assert prompt.calls == [HOST]
    assert len(sleeps.delays) <= 1
    credentials2 = creds(Scripted(["tok-static"], can_change=False), prompt)
    await credentials2.start()
    await credentials2.refresh(1, host=HOST)
    assert credentials2.header_for(URL) == {"Authorization": "Bearer tok-typed"}


async def test_gate_holds_requests_while_a_refresh_runs() -> None:
    source = Scripted(["tok-g1", "tok-g2"])
    credentials = creds(source)
    await credentials.start()
    source.release = anyio.Event()
    passed: list[int] = []

    async def request() -> None:
        await credentials.wait_ready()
        passed.append(credentials.generation)

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: credentials.refresh(1, host=HOST))
        await anyio.wait_all_tasks_blocked()
        for _ in range(5):
            tg.start_soon(request)
        await anyio.wait_all_tasks_blocked()
        assert passed == []  # all five wait at the gate
        source.release.set()
    assert passed == [2] * 5


async def test_every_token_is_fed_to_the_secret_filter() -> None:
    credentials = creds(Scripted(["tok-first", "tok-second"]))
    await credentials.start()
    await credentials.refresh(1, host=HOST)
    assert {"tok-first", "tok-second"} <= credentials.secret_filter.secrets


# -- OIDC and JWT expiry ------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def oidc(endpoint: TokenEndpoint) -> OidcRefreshSource:
    return OidcRefreshSource(endpoint.url, "cid", refresh_token_env="R", environ={"R": "offline-1"})


async def test_oidc_grant_on_start_and_on_refresh(token_endpoint: TokenEndpoint) -> None:
    credentials = creds(oidc(token_endpoint))
    await credentials.start()
    assert token_endpoint.grants == 1
    assert credentials.header_for(URL) == {"Authorization": f"Bearer {token_endpoint.issued[0]}"}
    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(lambda: credentials.refresh(1, host=HOST))
    assert token_endpoint.grants == 2
    assert credentials.header_for(URL) == {"Authorization": f"Bearer {token_endpoint.issued[1]}"}


async def test_jwt_is_renewed_shortly_before_exp(token_endpoint: TokenEndpoint) -> None:
    import time

    clock = Clock(time.time())
    credentials = creds(oidc(token_endpoint), clock=clock, sleep=Sleeps())
    await credentials.start()
    first = token_endpoint.issued[0]
    await credentials.wait_ready()
    assert token_endpoint.grants == 1  # 10 hours left: nothing to do
    clock.now += 36_000 - 61
    await credentials.wait_ready()
    assert token_endpoint.grants == 1  # 61 s left: still outside the 60 s margin
    clock.now += 2
    async with anyio.create_task_group() as tg:
        for _ in range(30):
            tg.start_soon(credentials.wait_ready)
    assert token_endpoint.grants == 2  # one renewal for thirty waiting requests
    assert credentials.generation == 2
    assert credentials.header_for(URL) == {"Authorization": f"Bearer {token_endpoint.issued[1]}"}
    assert token_endpoint.issued[1] != first


async def test_failed_proactive_renewal_keeps_the_token_and_backs_off(
    token_endpoint: TokenEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    import time

    clock = Clock(time.time())
    policy = RefreshPolicy(first_delay_s=5, max_delay_s=20)
    credentials = creds(oidc(token_endpoint), clock=clock, policy=policy)
    await credentials.start()
    clock.now += 36_000 - 30
    token_endpoint.script.append((503, {"error": "temporarily_unavailable"}))
    with caplog.at_level(logging.WARNING, logger="bulkflex.auth"):
        await credentials.wait_ready()
    assert credentials.generation == 1  # kept: it still works for 30 s
    assert len(token_endpoint.forms) == 2
    assert "next try in 5.0 s" in caplog.text
    await credentials.wait_ready()
    assert len(token_endpoint.forms) == 2  # backing off
    clock.now += 5
    await credentials.wait_ready()
    assert credentials.generation == 2
    assert token_endpoint.grants == 2


async def test_opaque_tokens_are_never_renewed_proactively() -> None:
    clock = Clock(0.0)
    source = Scripted(["opaque-1", "opaque-2"])
    credentials = creds(source, clock=clock)
    await credentials.start()
    clock.now = 1e12
    await credentials.wait_ready()
    assert len(source.calls) == 1


async def test_short_lived_jwt_renewal_margin_is_a_tenth_of_its_life() -> None:
    clock = Clock(1000.0)
    source = Scripted([make_jwt(exp=1030.0), make_jwt(exp=2000.0)])
    credentials = creds(source, clock=clock)
    await credentials.start()
    clock.now = 1026.9
    await credentials.wait_ready()
    assert credentials.generation == 1
    clock.now = 1027.0
    await credentials.wait_ready()
    assert credentials.generation == 2


async def test_expired_static_jwt_is_reported_and_not_renewed_ahead(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock(5000.0)
    environ = {"MAAP_TOKEN": make_jwt(exp=4000.0)}
    credentials = creds(EnvSource("MAAP_TOKEN", environ), clock=clock)
    with caplog.at_level(logging.INFO, logger="bulkflex.auth"):
        await credentials.start()
        await credentials.wait_ready()
        await credentials.wait_ready()
    assert caplog.messages == ["token 1 from --token-env MAAP_TOKEN expired 1000 s ago"]
    assert credentials.fetches == 1  # the env var cannot renew it: wait for the 401
    assert credentials.generation == 1
