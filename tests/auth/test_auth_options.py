"""Token flags -> TokenOptions -> Credentials: which sources, in which order, for which hosts."""

from __future__ import annotations

import argparse
import re

import pytest

import bulkflex.auth
from bulkflex.auth import (
    CommandSource,
    EnvSource,
    FileSource,
    OidcRefreshSource,
    PromptSource,
    TokenOptions,
    add_token_arguments,
    credentials_from_options,
    token_options_from_args,
)
from bulkflex.errors import UsageError


def parse(*argv: str) -> TokenOptions:
    parser = argparse.ArgumentParser(prog="bulkflex download", exit_on_error=False)
    add_token_arguments(parser)
    return token_options_from_args(parser.parse_args(argv))


def kinds(options: TokenOptions, *, interactive: bool, environ: dict[str, str]) -> list[str]:
    credentials = credentials_from_options(
        options, ["data.example"], interactive=interactive, environ=environ
    )
    return [type(source).__name__ for source in credentials.sources]


def test_flags_map_to_options() -> None:
    options = parse(
        "--token-file",
        "tok.txt",
        "--oidc-token-url",
        "https://iam.example/token",
        "--oidc-client-id",
        "offline-token",
        "--oidc-refresh-token-env",
        "OFFLINE",
        "--oidc-client-secret-env",
        "SECRET",
        "--auth-host",
        "a.example",
        "--auth-host",
        "b.example:8443",
        "--refresh-on-403",
        "--no-prompt",
    )
    assert options == TokenOptions(
        token_file="tok.txt",
        oidc_token_url="https://iam.example/token",
        oidc_client_id="offline-token",
        oidc_refresh_token_env="OFFLINE",
        oidc_client_secret_env="SECRET",
        auth_hosts=("a.example", "b.example:8443"),
        refresh_on_403=True,
        prompt=False,
    )
    assert parse() == TokenOptions()


def test_plain_sources_are_mutually_exclusive() -> None:
    with pytest.raises(argparse.ArgumentError):
        parse("--token-env", "A", "--token-file", "f")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--oidc-client-id", "x"], "--oidc-* options need --oidc-token-url URL"),
        (["--oidc-token-url", "u", "--oidc-refresh-token-env", "R"], "needs --oidc-client-id"),
        (["--oidc-token-url", "u", "--oidc-client-id", "c"], "needs exactly one of"),
    ],
)
def test_bad_oidc_combinations_are_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        parse(*argv)


def test_namespace_without_the_flags_gives_defaults() -> None:
    assert token_options_from_args(argparse.Namespace()) == TokenOptions()


def test_default_env_and_prompt_only_without_explicit_sources() -> None:
    maap = {"MAAP_TOKEN": "tok"}
    assert kinds(TokenOptions(), interactive=False, environ={}) == []
    assert kinds(TokenOptions(), interactive=False, environ=maap) == ["EnvSource"]
    assert kinds(TokenOptions(), interactive=True, environ=maap) == ["EnvSource", "PromptSource"]
    assert kinds(TokenOptions(prompt=False), interactive=True, environ=maap) == ["EnvSource"]
    explicit = TokenOptions(token_command="print-token")
    assert kinds(explicit, interactive=True, environ=maap) == ["CommandSource"]


def test_all_sources_in_order() -> None:
    options = TokenOptions(
        token_env="MY",
        oidc_token_url="http://127.0.0.1/token",
        oidc_client_id="c",
        oidc_refresh_token_file="offline.txt",
    )
    credentials = credentials_from_options(options, [], interactive=True, environ={})
    assert [type(s) for s in credentials.sources] == [EnvSource, OidcRefreshSource]
    assert [s.description for s in credentials.sources] == [
        "--token-env MY",
        "--oidc-token-url http://127.0.0.1/token",
    ]
    for other in (TokenOptions(token_file="f"), TokenOptions(token_command="c")):
        (source,) = credentials_from_options(other, [], environ={}).sources
        assert isinstance(source, FileSource | CommandSource)
    assert PromptSource.interactive


def test_scope_is_manifest_hosts_plus_auth_hosts() -> None:
    options = TokenOptions(auth_hosts=("extra.example",))
    credentials = credentials_from_options(
        options, ["data.example", "https://cdn.example/x"], interactive=False, environ={}
    )
    assert credentials.covers("https://data.example/a")
    assert credentials.covers("https://extra.example/a")
    assert credentials.covers("https://cdn.example/b")
    assert not credentials.covers("https://other.example/a")


def test_public_names_are_exactly_all() -> None:
    public = sorted(name for name in dir(bulkflex.auth) if not name.startswith("_"))
    modules = {"annotations"}
    assert sorted(bulkflex.auth.__all__) == sorted(set(public) - modules)
