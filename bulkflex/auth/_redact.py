# Keeps secrets out of text: log records, exception lines, a failing command's stderr.
#
# Rules kept here:
# - Known secrets (every token Credentials ever held, refresh tokens, client secrets) are replaced
#   by "***" wherever they appear, longest first so a secret containing another is fully hidden.
# - Shapes that are secrets whoever made them are masked too: "Bearer <x>", JWT-looking
#   strings, and token-named form/JSON fields. This catches a token we never learned (a server
#   echoing one back, a command printing one to stderr).
# - The filter formats a record's message once, redacts it, and stores the result with no args,
#   so a handler can never re-insert a secret from the args. Exception text is formatted and
#   redacted up front (record.exc_text), which logging.Formatter then uses as is.
"""Redaction of bearer tokens and other secrets in text and log records."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

__all__ = ["MASK", "SecretFilter", "install_secret_filter", "redact"]

MASK = "***"

#: Secrets shorter than this are not masked by plain substring replacement: masking a
#: one- or two-character "token" would shred every log line. (The shape rules still apply.)
MIN_SECRET_LENGTH = 3

_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer <token> (also "Basic"): a value of 6+ token characters with at
    # least one digit or symbol, so prose such as "needs a bearer token" is left alone.
    (
        re.compile(
            r"(?i)\b(bearer|basic)(\s+)(?=[A-Za-z0-9._~+/=-]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{6,}"
        ),
        rf"\1\2{MASK}",
    ),
    # JWT-shaped strings: header.payload.signature, base64url, header starts with '{"'
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), MASK),
    # form or query fields: access_token=..., refresh_token=..., client_secret=...
    (
        re.compile(
            r"(?i)\b((?:access|refresh|id|offline)_token|client_secret|token|password)"
            r"=[^&\s\"']+"
        ),
        rf"\1={MASK}",
    ),
    # JSON fields: "access_token": "..."
    (
        re.compile(
            r"(?i)(\"(?:(?:access|refresh|id|offline)_token|client_secret|token|password)\""
            r"\s*:\s*\")[^\"]*(\")"
        ),
        rf"\1{MASK}\2",
    ),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with every secret in ``secrets`` and every secret-shaped part masked.

    Secret-shaped: ``Bearer <x>``/``Basic <x>`` (``x`` of 6 or more token characters with a
    digit or symbol), JWT-looking strings (``eyJ...``), and
    ``access_token``/``refresh_token``/``id_token``/``client_secret``/``token``/``password``
    values in form (``name=value``) or JSON (``"name": "value"``) syntax. Secrets shorter than
    ``MIN_SECRET_LENGTH`` are skipped. ``redact("")`` is ``""``.
    """
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, MASK)
    for pattern, replacement in _SHAPES:
        text = pattern.sub(replacement, text)
    return text


class SecretFilter(logging.Filter):
    """A logging filter that masks secrets in a record's message, args and exception text.

    Install it on *handlers* (see :func:`install_secret_filter`): a filter on a logger does not
    see records that propagate from child loggers. Credentials calls :meth:`add` with every
    token it learns, so tokens from earlier generations stay masked too. Safe to use from any
    thread. The filter never drops a record (``filter`` always returns True).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._lock = threading.Lock()
        # Replaced as a whole on add(), so readers in other threads see a consistent set.
        self._secrets: frozenset[str] = frozenset(s for s in secrets if s)

    def add(self, secret: str) -> None:
        """Remember ``secret`` (empty strings are ignored)."""
        if not secret:
            return
        with self._lock:
            self._secrets = self._secrets | {secret}

    @property
    def secrets(self) -> frozenset[str]:
        """The secrets learned so far (for :func:`redact` callers outside logging)."""
        return self._secrets

    def redact(self, text: str) -> str:
        """:func:`redact` with the secrets learned so far."""
        return redact(text, self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # bad %-args: keep the template, drop the args
            message = str(record.msg)
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def install_secret_filter(
    secret_filter: SecretFilter, logger_names: Iterable[str] = ("bulkflex", "")
) -> None:
    """Add ``secret_filter`` to every handler of the named loggers (``""`` is the root logger).

    Call it after logging is configured; handlers added later do not get the filter. Adding
    the same filter twice to a handler has no effect.
    """
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(secret_filter)
