"""Bearer tokens for downloads: where they come from, where they may go, how they stay secret.

The engine calls :class:`Credentials` (``start``, ``wait_ready``, ``header_for``, ``refresh``);
the CLI adds the flags with :func:`add_token_arguments`, turns them into :class:`TokenOptions`
with :func:`token_options_from_args`, builds the holder with :func:`credentials_from_options`
and installs its ``secret_filter`` on the log handlers with :func:`install_secret_filter`.
"""

from __future__ import annotations

from bulkflex.auth._credentials import HOW_TO_GIVE_A_TOKEN, Credentials
from bulkflex.auth._options import (
    DEFAULT_TOKEN_ENV,
    TokenOptions,
    add_token_arguments,
    credentials_from_options,
    token_options_from_args,
)
from bulkflex.auth._policy import (
    HostScope,
    RefreshPolicy,
    clean_token,
    jwt_expiry,
    renew_at,
    same_origin,
)
from bulkflex.auth._prompt import PromptSource, read_hidden_line, stdin_is_terminal
from bulkflex.auth._redact import MASK, SecretFilter, install_secret_filter, redact
from bulkflex.auth._sources import (
    CommandSource,
    EnvSource,
    FileSource,
    OidcRefreshSource,
    TokenSource,
    TokenUnavailable,
)

__all__ = [
    "DEFAULT_TOKEN_ENV",
    "HOW_TO_GIVE_A_TOKEN",
    "MASK",
    "CommandSource",
    "Credentials",
    "EnvSource",
    "FileSource",
    "HostScope",
    "OidcRefreshSource",
    "PromptSource",
    "RefreshPolicy",
    "SecretFilter",
    "TokenOptions",
    "TokenSource",
    "TokenUnavailable",
    "add_token_arguments",
    "clean_token",
    "credentials_from_options",
    "install_secret_filter",
    "jwt_expiry",
    "read_hidden_line",
    "redact",
    "renew_at",
    "same_origin",
    "stdin_is_terminal",
    "token_options_from_args",
]
