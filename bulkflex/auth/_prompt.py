# The interactive token source: asks the person at the terminal, with echo off.
#
# Rules kept here:
# - Never prompts unless stdin is a terminal; without one it fails at once, and finally.
# - Input is read on the event loop (wait_readable on the terminal), not in a thread, so a
#   cancelled prompt (Ctrl-C, the run stopping) ends at once and the terminal settings are
#   always restored in a finally block.
# - Non-canonical mode, so a pasted token longer than the terminal's line buffer (4095 bytes on
#   Linux) arrives whole; Backspace and Ctrl-U are handled here because the driver no longer
#   does it. Ctrl-C still raises SIGINT (ISIG stays on).
# - Asked at most once per refresh and ``max_asks`` times per run, so a wrong paste cannot
#   turn into an endless loop of prompts.
"""Hidden-input prompt for a bearer token, used only when a terminal is attached."""

from __future__ import annotations

import os

import anyio

from bulkflex.auth._policy import clean_token
from bulkflex.auth._sources import TokenUnavailable

__all__ = ["PromptSource", "read_hidden_line", "stdin_is_terminal"]

_ENTER = (0x0A, 0x0D)
_ERASE = (0x7F, 0x08)
_KILL_LINE = 0x15  # Ctrl-U
_EOF = 0x04  # Ctrl-D


def stdin_is_terminal(fd: int = 0) -> bool:
    """True when ``fd`` (standard input by default) is open and is a terminal."""
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _apply_keys(buffer: bytearray, chunk: bytes) -> bool:
    """Feed typed bytes into ``buffer`` with line editing; True when Enter or EOF was seen."""
    for byte in chunk:
        if byte in _ENTER:
            return True
        if byte in _ERASE:
            if buffer:
                del buffer[-1]
        elif byte == _KILL_LINE:
            buffer.clear()
        elif byte == _EOF:
            if not buffer:
                return True
        else:
            buffer.append(byte)
    return False


async def read_hidden_line(prompt: str, *, fd: int = 0, out_fd: int | None = None) -> str:
    """Write ``prompt`` and read one line from the terminal ``fd`` without echoing it.

    The prompt goes to ``out_fd`` (default: ``fd`` itself, the terminal). Returns the line
    without its end; an empty string on Ctrl-D or end of input. Raises OSError when ``fd`` is
    not a terminal. The terminal's settings are restored however this ends.
    """
    import termios  # POSIX only; imported here so the package imports everywhere

    out = fd if out_fd is None else out_fd
    try:
        saved = termios.tcgetattr(fd)
    except termios.error as exc:  # not a terminal: report it as the OSError it is
        raise OSError(*exc.args) from None
    quiet = termios.tcgetattr(fd)
    quiet[3] &= ~(termios.ECHO | termios.ICANON)
    quiet[6][termios.VMIN] = 1
    quiet[6][termios.VTIME] = 0
    buffer = bytearray()
    termios.tcsetattr(fd, termios.TCSAFLUSH, quiet)
    try:
        os.write(out, prompt.encode())
        while True:
            await anyio.wait_readable(fd)
            chunk = os.read(fd, 65536)
            if not chunk or _apply_keys(buffer, chunk):
                break
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        os.write(out, b"\n")
    return buffer.decode("utf-8", "replace")


class PromptSource:
    """Asks for a token on the terminal, saying which host wants it and why.

    Only :class:`~bulkflex.auth.Credentials` refreshes call it (after a refusal), never ``start``
    or a proactive renewal, so a download of public files never prompts.
    """

    interactive = True
    can_change = True
    description = "the terminal prompt"

    def __init__(self, *, fd: int = 0, max_asks: int = 3) -> None:
        self.fd = fd
        self.max_asks = max_asks
        self.asks = 0  # prompts shown so far in this run

    async def fetch(self, host: str | None) -> str:
        if not stdin_is_terminal(self.fd):
            raise TokenUnavailable("standard input is not a terminal", retryable=False)
        if self.asks >= self.max_asks:
            raise TokenUnavailable(f"already asked {self.asks} times in this run", retryable=False)
        self.asks += 1
        where = f"The server at {host}" if host else "The server"
        prompt = (
            f"{where} needs a bearer token (MAAP tokens last 10 hours); paste it, input is hidden: "
        )
        try:
            text = await read_hidden_line(prompt, fd=self.fd)
        except OSError as exc:
            raise TokenUnavailable(
                f"cannot read from the terminal: {exc.strerror or type(exc).__name__}",
                retryable=False,
            ) from None
        try:
            return clean_token(text)
        except ValueError as exc:
            raise TokenUnavailable(
                f"the pasted token is unusable: {exc}", retryable=False
            ) from None
