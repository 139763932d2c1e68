"""The hidden prompt, in a real pseudo-terminal, and its refusal without one."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from bulkflex.auth import HOW_TO_GIVE_A_TOKEN, PromptSource, TokenUnavailable

PROMPT = (
    "The server at data.example needs a bearer token (MAAP tokens last 10 hours); "
    "paste it, input is hidden: "
)

# A tiny program that builds Credentials the way the CLI does (no flags), refreshes after a
# pretend 401, and reports what it got: a hash, never the token. Then it reads one more line
# with the terminal's normal settings, to show that echo is back on.
SCRIPT = """
import hashlib, sys
import anyio
from bulkflex.auth import TokenOptions, credentials_from_options
from bulkflex.errors import AuthError

async def main() -> int:
    creds = credentials_from_options(TokenOptions(), ["data.example"], environ={})
    await creds.start()
    sys.stdout.write(f"STARTED generation={creds.generation}\\n")
    sys.stdout.flush()
    try:
        await creds.refresh(0, host="data.example")
    except AuthError as exc:
        sys.stderr.write(f"bulkflex: error: {exc}\\n")
        return 3
    header = creds.header_for("https://data.example/x")["Authorization"]
    digest = hashlib.sha256(header.removeprefix("Bearer ").encode()).hexdigest()
    sys.stdout.write(f"GOT {digest} generation={creds.generation}\\n")
    sys.stdout.flush()
    line = input("echo check: ")
    sys.stdout.write(f"READ {line}\\n")
    return 0

sys.exit(anyio.run(main))
"""


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "prompt_once.py"
    path.write_text(SCRIPT)
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MAAP_TOKEN"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(script: Path) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        [str(script)],
        env=_env(),
        encoding="utf-8",
        timeout=20,
        dimensions=(24, 200),
    )


def test_prompt_in_a_terminal_reads_the_token_without_echo(script: Path) -> None:
    child = spawn(script)
    try:
        child.expect_exact("STARTED generation=0")  # start() never prompts
        child.expect_exact(PROMPT)
        # A typo fixed with Backspace: the driver does not edit in non-canonical mode.
        child.send("tok-typed-secret-7X\x7f\r")
        child.expect(r"GOT ([0-9a-f]{64}) generation=1")
        shown = child.before + child.after
        assert child.match.group(1) == hashlib.sha256(b"tok-typed-secret-7").hexdigest()
        assert "tok-typed" not in shown  # hidden: nothing typed came back
        child.expect_exact("echo check: ")
        child.sendline("visible-line")
        child.expect_exact("visible-line")  # echoed by the terminal: settings restored
        child.expect_exact("READ visible-line")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert "tok-typed" not in (child.before or "")


def test_prompt_ctrl_d_gives_no_token_and_one_line(script: Path) -> None:
    child = spawn(script)
    try:
        child.expect_exact(PROMPT)
        child.sendeof()
        child.expect(pexpect.EOF)
        output = child.before
    finally:
        child.close(force=True)
    assert child.exitstatus == 3
    lines = [line for line in output.splitlines() if line.startswith("bulkflex: error:")]
    assert lines == [
        "bulkflex: error: data.example needs a new bearer token and none could be had "
        "(the terminal prompt: the pasted token is unusable: it is empty): " + HOW_TO_GIVE_A_TOKEN
    ]


def test_no_terminal_means_no_prompt_and_one_line(script: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(script)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=30,
        check=False,
    )
    assert result.returncode == 3
    assert "hidden" not in result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"bulkflex: error: data.example needs a bearer token: {HOW_TO_GIVE_A_TOKEN}"
    ]


@pytest.mark.anyio
async def test_prompt_source_refuses_without_a_terminal(tmp_path: Path) -> None:
    with open(os.devnull) as devnull:
        source = PromptSource(fd=devnull.fileno())
        with pytest.raises(TokenUnavailable) as info:
            await source.fetch("data.example")
    assert str(info.value) == "standard input is not a terminal"
    assert not info.value.retryable
    assert source.asks == 0
