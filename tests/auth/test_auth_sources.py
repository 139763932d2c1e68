"""Token sources against real files, real processes and a real OIDC endpoint."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import anyio
import anyio.abc
import pytest
from authkit import counting_command, run_count
from tokenserver import TokenEndpoint

from bulkflex.auth import (
    CommandSource,
    EnvSource,
    FileSource,
    OidcRefreshSource,
    SecretFilter,
    TokenUnavailable,
    jwt_expiry,
)

pytestmark = pytest.mark.anyio


async def test_env_source_reads_each_time_and_fails_for_good_when_unset() -> None:
    environ = {"MY_TOKEN": " tok-env-1\n"}
    source = EnvSource("MY_TOKEN", environ)
    assert await source.fetch(None) == "tok-env-1"
    environ["MY_TOKEN"] = "tok-env-2"
    assert await source.fetch("h") == "tok-env-2"
    del environ["MY_TOKEN"]
    with pytest.raises(TokenUnavailable) as info:
        await source.fetch("h")
    assert str(info.value) == "$MY_TOKEN is not set or empty"
    assert not info.value.retryable
    assert not source.can_change
    assert source.description == "--token-env MY_TOKEN"


async def test_file_source_rereads_the_file_on_every_fetch(tmp_path: Path) -> None:
    path = tmp_path / "token"
    source = FileSource(path)
    with pytest.raises(TokenUnavailable) as info:
        await source.fetch(None)
    assert info.value.retryable
    assert str(info.value) == f"{path} does not exist"
    path.write_text("tok-file-1\n")
    assert await source.fetch(None) == "tok-file-1"
    path.write_text("Bearer tok-file-2")
    assert await source.fetch("h") == "tok-file-2"
    path.write_text("  \n")
    with pytest.raises(TokenUnavailable) as info:
        await source.fetch("h")
    assert str(info.value) == f"{path} gave no usable token: it is empty"
    assert info.value.retryable
    path.write_text("tok-a\ntok-b\n")
    with pytest.raises(TokenUnavailable) as info:
        await source.fetch("h")
    assert "tok-a" not in str(info.value)


async def test_file_source_that_is_a_folder_is_final(tmp_path: Path) -> None:
    source = FileSource(tmp_path)
    with pytest.raises(TokenUnavailable) as info:
        await source.fetch(None)
    assert not info.value.retryable
    assert str(info.value).startswith(f"cannot read {tmp_path}: ")


async def test_command_source_runs_the_command_on_every_fetch(tmp_path: Path) -> None:
    command, runs = counting_command(tmp_path)
    source = CommandSource(command)
    assert await source.fetch(None) == "tok-1"
    assert await source.fetch("h") == "tok-2"
    assert run_count(runs) == 2


async def test_command_failure_quotes_last_stderr_line_redacted() -> None:
    secrets = SecretFilter(["tok-known-secret"])
    source = CommandSource(
        "echo first >&2; echo 'oops tok-known-secret Bearer xyz-123' >&2; exit 3", secrets=secrets
    )
    with pytest.raises(TokenUnavailable) as info:
        await source.fetch(None)
    assert str(info.value) == "the token command exited with status 3: oops *** Bearer ***"
    assert info.value.retryable


async def test_command_not_found_is_final() -> None:
    source = CommandSource("no-such-command-bulkflex-test")
    with pytest.raises(TokenUnavailable) as info:
        await source.fetch(None)
    assert str(info.value).startswith("the token command exited with status 127")
    assert not info.value.retryable


async def test_command_printing_nothing_is_retryable() -> None:
    with pytest.raises(TokenUnavailable) as info:
        await CommandSource("true").fetch(None)
    assert str(info.value) == "the token command gave no usable token: it is empty"
    assert info.value.retryable


async def test_command_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    # The shell starts a grandchild that holds stdout open, records its pid, and waits.
    source = CommandSource(f'sleep 30 & echo $! > "{pid_file}"; wait', timeout_s=0.5)
    with pytest.raises(TokenUnavailable) as info:
        await source.fetch(None)
    assert str(info.value) == "the token command did not finish within 0.5 s"
    grandchild = int(pid_file.read_text())
    for _ in range(100):  # reaped by init shortly after the kill
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        await anyio.sleep(0.05)
    else:
        pytest.fail("the token command's child outlived the timeout")


async def test_command_gets_no_stdin(tmp_path: Path) -> None:
    source = CommandSource(f"{sys.executable} -c \"import sys; print('tok-' + sys.stdin.read())\"")
    assert await source.fetch(None) == "tok-"


async def test_oidc_grant_sends_the_refresh_token_and_returns_the_access_token(
    token_endpoint: TokenEndpoint,
) -> None:
    secrets = SecretFilter()
    environ = {"OFFLINE": "offline-1", "SECRET": "client-secret-xyz"}
    source = OidcRefreshSource(
        token_endpoint.url,
        "offline-token",
        refresh_token_env="OFFLINE",
        client_secret_env="SECRET",
        scope="offline_access openid",
        environ=environ,
        secrets=secrets,
    )
    before = time.time()
    token = await source.fetch(None)
    assert token == token_endpoint.issued[-1]
    expiry = jwt_expiry(token)
    assert expiry is not None
    assert expiry >= before + 36_000 - 1
    assert token_endpoint.forms == [
        {
            "grant_type": "refresh_token",
            "client_id": "offline-token",
            "refresh_token": "offline-1",
            "client_secret": "client-secret-xyz",
            "scope": "offline_access openid",
        }
    ]
    assert {"offline-1", "client-secret-xyz"} <= secrets.secrets
    assert await source.fetch(None) != token
    assert token_endpoint.grants == 2 == source.grants


async def test_oidc_keeps_a_rotated_refresh_token_until_the_file_changes(
    token_endpoint: TokenEndpoint, tmp_path: Path
) -> None:
    token_endpoint.rotate = True
    path = tmp_path / "offline"
    path.write_text("offline-1\n")
    source = OidcRefreshSource(token_endpoint.url, "cid", refresh_token_file=path)
    await source.fetch(None)
    await source.fetch(None)  # with the rotated offline-2, not the file's spent offline-1
    assert [f["refresh_token"] for f in token_endpoint.forms] == ["offline-1", "offline-2"]
    assert path.read_text() == "offline-1\n"  # never rewritten
    token_endpoint.accepted.add("offline-new")
    path.write_text("offline-new")
    await source.fetch(None)
    assert token_endpoint.forms[-1]["refresh_token"] == "offline-new"


async def test_oidc_invalid_grant_is_final_and_redacted(token_endpoint: TokenEndpoint) -> None:
    source = OidcRefreshSource(
        token_endpoint.url, "cid", refresh_token_env="R", environ={"R": "offline-revoked"}
    )
    with pytest.raises(TokenUnavailable) as info:
        await source.fetch(None)
    assert str(info.value) == (
        f"{token_endpoint.url} answered HTTP 400 (invalid_grant: Token is not active: ***); "
        "get a new refresh token"
    )
    assert not info.value.retryable


@pytest.mark.parametrize(
    ("status", "body", "retryable", "message_end"),
    [
        (
            503,
            {"error": "temporarily_unavailable"},
            True,
            "answered HTTP 503 (temporarily_unavailable)",
        ),
        (429, "slow down", True, "answered HTTP 429"),
        (403, {"error": "unauthorized_client"}, False, "answered HTTP 403 (unauthorized_client)"),
        (200, {"token_type": "Bearer"}, True, "answered without an access_token"),
    ],
)
async def test_oidc_failures(
    token_endpoint: TokenEndpoint,
    status: int,
    body: object,
    retryable: bool,
    message_end: str,
) -> None:
    token_endpoint.script.append((status, body))
    source = OidcRefreshSource(
        token_endpoint.url, "cid", refresh_token_env="R", environ={"R": "offline-1"}
    )
    with pytest.raises(TokenUnavailable) as info:
        await source.fetch(None)
    assert str(info.value) == f"{token_endpoint.url} {message_end}"
    assert info.value.retryable is retryable


async def test_oidc_unreachable_endpoint_is_retryable() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/token?secret=abc"
    source = OidcRefreshSource(url, "cid", refresh_token_env="R", environ={"R": "offline-1"})
    with pytest.raises(TokenUnavailable) as info:
        await source.fetch(None)
    assert str(info.value).startswith(f"cannot reach http://127.0.0.1:{port}/token: ")
    assert info.value.retryable


def test_oidc_needs_exactly_one_refresh_token_source() -> None:
    with pytest.raises(ValueError):
        OidcRefreshSource("http://127.0.0.1/t", "cid")
