# From command-line flags to a Credentials object.
#
# Rules kept here:
# - Flags become a frozen TokenOptions value first (testable without argparse), then a factory
#   turns the value plus the manifest's hosts into Credentials.
# - Source order: --token-env, --token-file, --token-command, then the OIDC grant. With none of
#   those, $MAAP_TOKEN is used when set. The prompt is added last only when no source flag was
#   given, stdin is a terminal and --no-prompt was not: a user who configured a source wants
#   automation, not a question at hour ten.
"""Command-line flags for tokens and the factory that builds Credentials from them."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bulkflex.auth._credentials import Credentials
from bulkflex.auth._policy import HostScope, RefreshPolicy
from bulkflex.auth._prompt import PromptSource, stdin_is_terminal
from bulkflex.auth._redact import SecretFilter
from bulkflex.auth._sources import (
    CommandSource,
    EnvSource,
    FileSource,
    OidcRefreshSource,
    TokenSource,
)
from bulkflex.errors import UsageError

__all__ = [
    "DEFAULT_TOKEN_ENV",
    "TokenOptions",
    "add_token_arguments",
    "credentials_from_options",
    "token_options_from_args",
]

DEFAULT_TOKEN_ENV = "MAAP_TOKEN"


@dataclass(frozen=True, slots=True)
class TokenOptions:
    """How to get a bearer token, as the user said it (flags or Python).

    Attributes:
        token_env: environment variable holding the token (default: ``MAAP_TOKEN`` when it
            is set and no other source is given).
        token_file: file holding the token, re-read on every refresh.
        token_command: shell command printing the token, run at start and on every refresh.
        oidc_token_url / oidc_client_id: OIDC token endpoint and client for the refresh-token
            grant; the refresh (offline) token comes from ``oidc_refresh_token_env`` or
            ``oidc_refresh_token_file`` (exactly one); ``oidc_client_secret_env`` names a
            variable with the client secret, if the client has one; ``oidc_scope`` is sent as
            ``scope`` when given.
        auth_hosts: hosts to send the token to, besides the manifest's hosts.
        refresh_on_403: treat a 403 like a 401 (the engine reads this).
        prompt: allow the hidden prompt when stdin is a terminal and no source is given.
        command_timeout_s: how long the token command may run.
    """

    token_env: str | None = None
    token_file: str | None = None
    token_command: str | None = None
    oidc_token_url: str | None = None
    oidc_client_id: str | None = None
    oidc_refresh_token_env: str | None = None
    oidc_refresh_token_file: str | None = None
    oidc_client_secret_env: str | None = None
    oidc_scope: str | None = None
    auth_hosts: tuple[str, ...] = ()
    refresh_on_403: bool = False
    prompt: bool = True
    command_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        oidc_extras = (
            self.oidc_client_id,
            self.oidc_refresh_token_env,
            self.oidc_refresh_token_file,
            self.oidc_client_secret_env,
            self.oidc_scope,
        )
        if self.oidc_token_url is None:
            if any(value is not None for value in oidc_extras):
                raise UsageError("--oidc-* options need --oidc-token-url URL")
            return
        if not self.oidc_client_id:
            raise UsageError("--oidc-token-url needs --oidc-client-id ID")
        if (self.oidc_refresh_token_env is None) == (self.oidc_refresh_token_file is None):
            raise UsageError(
                "--oidc-token-url needs exactly one of --oidc-refresh-token-env VAR "
                "and --oidc-refresh-token-file FILE"
            )

    @property
    def explicit(self) -> bool:
        """True when a token source was named (not counting the MAAP_TOKEN default)."""
        return any(
            value is not None
            for value in (self.token_env, self.token_file, self.token_command, self.oidc_token_url)
        )


def add_token_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the token flags (an "authentication" group) to ``parser``."""
    group = parser.add_argument_group(
        "authentication",
        "Where the bearer token comes from. Without these, $MAAP_TOKEN is used when set, and "
        "on a terminal bulkflex asks when a server first refuses the download.",
    )
    plain = group.add_mutually_exclusive_group()
    plain.add_argument("--token-env", metavar="VAR", help="environment variable holding the token")
    plain.add_argument(
        "--token-file", metavar="FILE", help="file holding the token (re-read on every renewal)"
    )
    plain.add_argument(
        "--token-command",
        metavar="CMD",
        help="shell command printing the token (run at start and on every renewal)",
    )
    group.add_argument(
        "--oidc-token-url", metavar="URL", help="OIDC token endpoint for a refresh-token grant"
    )
    group.add_argument("--oidc-client-id", metavar="ID", help="OIDC client id")
    offline = group.add_mutually_exclusive_group()
    offline.add_argument(
        "--oidc-refresh-token-env",
        metavar="VAR",
        help="environment variable holding the refresh (offline) token",
    )
    offline.add_argument(
        "--oidc-refresh-token-file",
        metavar="FILE",
        help="file holding the refresh (offline) token (never rewritten)",
    )
    group.add_argument(
        "--oidc-client-secret-env",
        metavar="VAR",
        help="environment variable holding the OIDC client secret, if the client has one",
    )
    group.add_argument("--oidc-scope", metavar="SCOPE", help="scope to ask for in the grant")
    group.add_argument(
        "--auth-host",
        metavar="HOST",
        action="append",
        default=[],
        help="also send the token to HOST (repeatable); default: the manifest's hosts",
    )
    group.add_argument(
        "--refresh-on-403",
        action="store_true",
        help="treat 403 Forbidden as an expired token (renew, then retry)",
    )
    group.add_argument(
        "--no-prompt",
        action="store_true",
        help="never ask for a token on the terminal; stop with exit 3 instead",
    )


def token_options_from_args(args: argparse.Namespace) -> TokenOptions:
    """Turn parsed flags into :class:`TokenOptions`. Raises UsageError on a bad combination.

    Flags missing from ``args`` (a command that did not add them all) take their defaults.
    """

    def get(name: str) -> str | None:
        value = getattr(args, name, None)
        return None if value is None else str(value)

    return TokenOptions(
        token_env=get("token_env"),
        token_file=get("token_file"),
        token_command=get("token_command"),
        oidc_token_url=get("oidc_token_url"),
        oidc_client_id=get("oidc_client_id"),
        oidc_refresh_token_env=get("oidc_refresh_token_env"),
        oidc_refresh_token_file=get("oidc_refresh_token_file"),
        oidc_client_secret_env=get("oidc_client_secret_env"),
        oidc_scope=get("oidc_scope"),
        auth_hosts=tuple(getattr(args, "auth_host", None) or ()),
        refresh_on_403=bool(getattr(args, "refresh_on_403", False)),
        prompt=not getattr(args, "no_prompt", False),
    )


def credentials_from_options(
    options: TokenOptions,
    manifest_hosts: Iterable[str],
    *,
    interactive: bool | None = None,
    environ: Mapping[str, str] | None = None,
    policy: RefreshPolicy | None = None,
    secret_filter: SecretFilter | None = None,
) -> Credentials:
    """Build the :class:`Credentials` for a run.

    Args:
        options: the token options.
        manifest_hosts: hosts (or URLs) the manifest downloads from: the token's scope,
            together with ``options.auth_hosts``.
        interactive: whether a prompt may be shown; None means "stdin is a terminal". The
            prompt is only added when no source flag was given and ``options.prompt``.
        environ: environment to read variables from (default ``os.environ``).
        policy: refresh attempts and backoff.
        secret_filter: shared with the log handlers; a new one when None.

    The result may have no source at all (nothing configured, no terminal): then its first
    refresh raises AuthError saying how to give a token.
    """
    env = os.environ if environ is None else environ
    secrets = secret_filter if secret_filter is not None else SecretFilter()
    sources: list[TokenSource] = []
    if options.token_env is not None:
        sources.append(EnvSource(options.token_env, env))
    if options.token_file is not None:
        sources.append(FileSource(options.token_file))
    if options.token_command is not None:
        sources.append(
            CommandSource(
                options.token_command, timeout_s=options.command_timeout_s, secrets=secrets
            )
        )
    if options.oidc_token_url is not None and options.oidc_client_id is not None:
        sources.append(
            OidcRefreshSource(
                options.oidc_token_url,
                options.oidc_client_id,
                refresh_token_env=options.oidc_refresh_token_env,
                refresh_token_file=options.oidc_refresh_token_file,
                client_secret_env=options.oidc_client_secret_env,
                scope=options.oidc_scope,
                environ=env,
                secrets=secrets,
            )
        )
    if not options.explicit:
        if env.get(DEFAULT_TOKEN_ENV, "").strip():
            sources.append(EnvSource(DEFAULT_TOKEN_ENV, env))
        if interactive is None:
            interactive = stdin_is_terminal()
        if options.prompt and interactive:
            sources.append(PromptSource())
    scope = HostScope.of([*manifest_hosts, *options.auth_hosts])
    return Credentials(sources, scope, policy=policy, secret_filter=secrets)
