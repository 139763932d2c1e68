# Token sources: each one small I/O shell with one method, ``fetch``, that returns a token or
# raises TokenUnavailable.
#
# Rules kept here:
# - Nothing a source raises, logs or describes contains a secret: messages name the source
#   (flag and variable, path or command) and the kind of failure, never the text read or the
#   body received. Text from outside (a command's stderr, an OIDC error_description) is redacted
#   and shortened before it goes into a message.
# - A source reads its input afresh on every fetch (the env var, the file, the command, the grant):
#   whatever rotates the token outside bulkflex is picked up on the next refresh.
# - TokenUnavailable.retryable says whether trying the same source again later may help; the
#   refresh loop in Credentials uses it to stop early on failures that will not go away.
"""Where tokens come from: environment, file, command, OIDC refresh-token grant."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import anyio
import anyio.abc

from bulkflex.auth._policy import clean_token
from bulkflex.auth._redact import SecretFilter
from bulkflex.errors import redact_url

__all__ = [
    "CommandSource",
    "EnvSource",
    "FileSource",
    "OidcRefreshSource",
    "TokenSource",
    "TokenUnavailable",
]

log = logging.getLogger(__name__)

_REASON_CHARS = 200


class TokenUnavailable(Exception):
    """A source could not produce a token. ``str()`` is one line without any secret.

    Attributes:
        retryable: True when the same source may succeed later (a command that failed, a
            network error, a file being rewritten); False when it will not without the user
            (variable unset, permission denied, refresh token refused).
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class TokenSource(Protocol):
    """One way to get a token.

    ``description`` names the source the way the user configured it (a flag and its value),
    never a secret. ``interactive`` sources ask a human and are only used on a refusal (401),
    never at start or for a proactive renewal. ``can_change`` is False for sources that return
    the same token for the whole run (an environment variable): a refused token from such a
    source is final.
    """

    @property
    def description(self) -> str: ...
    @property
    def interactive(self) -> bool: ...
    @property
    def can_change(self) -> bool: ...
    async def fetch(self, host: str | None) -> str:
        """Return a clean token (see :func:`clean_token`) or raise TokenUnavailable.

        ``host`` is the host that refused the token, or None at start and for renewals.
        """
        ...


def _one_line(text: str, secrets: SecretFilter | None) -> str:
    """The last non-empty line of ``text``, redacted and shortened: safe for a message."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    line = secrets.redact(line) if secrets is not None else line
    return line[:_REASON_CHARS] + ("..." if len(line) > _REASON_CHARS else "")


def _clean(raw: str, where: str, *, retryable: bool) -> str:
    try:
        return clean_token(raw)
    except ValueError as exc:
        raise TokenUnavailable(
            f"{where} gave no usable token: {exc}", retryable=retryable
        ) from None


class EnvSource:
    """The token in an environment variable, read on every fetch (it cannot change in-process,
    so a refused token from it is final)."""

    interactive = False
    can_change = False

    def __init__(self, variable: str, environ: Mapping[str, str] | None = None) -> None:
        self.variable = variable
        self._environ = os.environ if environ is None else environ
        self.description = f"--token-env {variable}"

    async def fetch(self, host: str | None) -> str:
        raw = self._environ.get(self.variable, "")
        if not raw.strip():
            raise TokenUnavailable(f"${self.variable} is not set or empty", retryable=False)
        return _clean(raw, f"${self.variable}", retryable=False)


class FileSource:
    """The token in a file, re-read on every fetch; surrounding whitespace is stripped.

    A missing or empty file is retryable (a tool may be replacing it right now); a file that
    cannot be read for any other reason (permission, a folder) is not.
    """

    interactive = False
    can_change = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.description = f"--token-file {self.path}"

    async def fetch(self, host: str | None) -> str:
        try:
            raw = await anyio.to_thread.run_sync(self.path.read_text, "utf-8")
        except FileNotFoundError:
            raise TokenUnavailable(f"{self.path} does not exist", retryable=True) from None
        except UnicodeDecodeError:
            raise TokenUnavailable(f"{self.path} is not UTF-8 text", retryable=True) from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise TokenUnavailable(f"cannot read {self.path}: {reason}", retryable=False) from None
        return _clean(raw, str(self.path), retryable=True)


class CommandSource:
    """A shell command whose standard output is the token, run on every fetch.

    The command runs in its own session with stdin from /dev/null (so it cannot steal input from
    a prompt), stdout and stderr captured. A non-zero exit is retryable, except 126/127 (the
    command cannot be run); its message quotes the last line of stderr, redacted. After
    ``timeout_s`` the whole process group is killed.
    """

    interactive = False
    can_change = True

    def __init__(
        self, command: str, *, timeout_s: float = 60.0, secrets: SecretFilter | None = None
    ) -> None:
        self.command = command
        self.timeout_s = timeout_s
        self._secrets = secrets
        self.description = f"--token-command {command!r}"

    async def fetch(self, host: str | None) -> str:
        log.debug("running the token command")
        process = await anyio.open_process(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        out = bytearray()
        err = bytearray()

        async def drain(stream: anyio.abc.ByteReceiveStream | None, into: bytearray) -> None:
            if stream is None:
                return
            async for chunk in stream:
                into += chunk

        finished = False
        try:
            with anyio.fail_after(self.timeout_s):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(drain, process.stdout, out)
                    tg.start_soon(drain, process.stderr, err)
                    await process.wait()
            finished = True
        except TimeoutError:
            raise TokenUnavailable(
                f"the token command did not finish within {self.timeout_s:g} s", retryable=True
            ) from None
        finally:
            with anyio.CancelScope(shield=True):
                if not finished:
                    # The whole group: a shell's children may hold the pipes open.
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(process.pid, signal.SIGKILL)
                await process.aclose()
        code = process.returncode
        if code != 0:
            detail = _one_line(err.decode("utf-8", "replace"), self._secrets)
            reason = f"the token command exited with status {code}"
            if detail:
                reason += f": {detail}"
            raise TokenUnavailable(reason, retryable=code not in (126, 127))
        return _clean(out.decode("utf-8", "replace"), "the token command", retryable=True)


class OidcRefreshSource:
    """An OAuth2/OIDC refresh-token grant (RFC 6749 section 6) against ``token_url``.

    The refresh token comes from an environment variable or a file, read on every fetch. If the
    server rotates it (a ``refresh_token`` in the answer), the new one is kept in memory and
    used for the next grant, until the file (or variable) changes: then the user's new one
    wins. The file is never rewritten: it belongs to the user, may be read-only or shared, and
    ESA MAAP does not rotate its offline tokens. So with a rotating server, the next run needs
    a fresh refresh token in the file.

    Failures: network errors, 429 and 5xx are retryable; 400/401 (``invalid_grant``: the
    refresh token expired or was revoked) and other answers are final. Messages quote only the
    ``error`` and ``error_description`` fields, redacted.

    Every grant opens and closes its own HTTP session: grants are hours apart, and this keeps
    the source free of a lifecycle the engine would have to manage.
    """

    interactive = False
    can_change = True

    def __init__(
        self,
        token_url: str,
        client_id: str,
        *,
        refresh_token_env: str | None = None,
        refresh_token_file: str | os.PathLike[str] | None = None,
        client_secret_env: str | None = None,
        scope: str | None = None,
        environ: Mapping[str, str] | None = None,
        secrets: SecretFilter | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        if (refresh_token_env is None) == (refresh_token_file is None):
            raise ValueError("give exactly one of refresh_token_env and refresh_token_file")
        self.token_url = token_url
        self.client_id = client_id
        self.scope = scope
        self.timeout_s = timeout_s
        self._env_name = refresh_token_env
        self._file = Path(refresh_token_file) if refresh_token_file is not None else None
        self._secret_env = client_secret_env
        self._environ = os.environ if environ is None else environ
        self._secrets = secrets if secrets is not None else SecretFilter()
        self._configured: str | None = None  # the refresh token last read from env/file
        self._rotated: str | None = None  # a newer one the server handed back, if any
        self.grants = 0  # successful grants (for logs and tests)
        self.description = f"--oidc-token-url {redact_url(token_url)}"

    async def _refresh_token(self) -> str:
        if self._file is not None:
            where = f"--oidc-refresh-token-file {self._file}"
            try:
                raw = await anyio.to_thread.run_sync(self._file.read_text, "utf-8")
            except FileNotFoundError:
                raise TokenUnavailable(f"{self._file} does not exist", retryable=False) from None
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                raise TokenUnavailable(
                    f"cannot read {self._file}: {reason}", retryable=False
                ) from None
        else:
            where = f"${self._env_name}"
            raw = self._environ.get(self._env_name or "", "")
        configured = _clean(raw, where, retryable=False)
        self._secrets.add(configured)
        if configured != self._configured:
            self._configured = configured
            self._rotated = None  # the user supplied a new one: it wins over a rotated one
        return self._rotated or configured

    async def fetch(self, host: str | None) -> str:
        refresh_token = await self._refresh_token()
        form = {
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "refresh_token": refresh_token,
        }
        if self._secret_env:
            secret = self._environ.get(self._secret_env, "")
            if not secret:
                raise TokenUnavailable(f"${self._secret_env} is not set", retryable=False)
            self._secrets.add(secret)
            form["client_secret"] = secret
        if self.scope:
            form["scope"] = self.scope
        import aiohttp  # here, not at the top: a download without OIDC never pays its import

        url = redact_url(self.token_url)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout, trust_env=False) as session,
                session.post(
                    self.token_url, data=form, headers={"Accept": "application/json"}
                ) as response,
            ):
                status = response.status
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TokenUnavailable(
                f"cannot reach {url}: {type(exc).__name__}", retryable=True
            ) from None
        if status != 200:
            detail = ""
            if isinstance(body, dict):
                fields = [str(body.get(k, "")) for k in ("error", "error_description")]
                detail = _one_line(": ".join(f for f in fields if f), self._secrets)
            reason = f"{url} answered HTTP {status}" + (f" ({detail})" if detail else "")
            if status in (400, 401):
                reason += "; get a new refresh token"
            raise TokenUnavailable(reason, retryable=status == 429 or status >= 500)
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise TokenUnavailable(f"{url} answered without an access_token", retryable=True)
        rotated = body.get("refresh_token")
        if isinstance(rotated, str) and rotated.strip() and rotated.strip() != refresh_token:
            self._secrets.add(rotated.strip())
            self._rotated = rotated.strip()
        access = _clean(body["access_token"], url, retryable=True)
        self.grants += 1
        return access
