"""Tokens end to end through the real CLI: rotation mid-download, redirects, no token, no leaks.

The asset server (tests/e2e/authserver.py) wants a bearer token that it rotates every few
requests and cuts streams still running under a dead token. ``bulkflex download`` runs as a
subprocess with ``--token-command`` (a script fetching the current token from the server) or
``--token-file`` (a file the server rewrites on rotation). Assertions are on exit codes, exact
error lines, bytes on disk, what the server counted, and a scan of everything bulkflex wrote.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path

import pexpect
import pytest
from authserver import OFFLINE_TOKEN, AuthServer, sha256_multihash
from clirun import (
    Result,
    assert_files,
    assert_no_token_anywhere,
    command,
    download_args,
    read_events,
    run_cli,
    write_manifest,
)

KiB = 1024
FLUSH = 64 * KiB
CONNECTIONS = 4

GET_TOKEN = """\
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as answer:
    sys.stdout.write(answer.read().decode())
"""


@pytest.fixture(autouse=True)
def _no_ambient_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAAP_TOKEN", raising=False)


def token_command(tmp_path: Path, server: AuthServer) -> str:
    script = tmp_path / "get_token.py"
    script.write_text(GET_TOKEN)
    return shlex.join([sys.executable, str(script), f"{server.base_url}/token"])


def manifest_for(path: Path, entries: Iterable[tuple[str, str, bytes]]) -> Path:
    """``entries``: (url, relative path, content)."""
    return write_manifest(
        path,
        [
            {"url": url, "path": rel, "size": len(data), "checksum": sha256_multihash(data)}
            for url, rel, data in entries
        ],
    )


def test_rotating_token_download_refreshes_once_per_rotation(tmp_path: Path) -> None:
    # A fresh token outlives a wave of retries (rotate_every > CONNECTIONS), so no file sees
    # the same fresh token refused twice: that would rightly count as "not entitled".
    with AuthServer(rotate_every=6, cut_on_rotation=True, chunk_delay=0.003) as server:
        sizes = {f"f{i}.bin": 100 * KiB + i * 1000 for i in range(16)}
        expected = {f"data/{name}": server.add_file(name, size) for name, size in sizes.items()}
        manifest = manifest_for(
            tmp_path / "m.jsonl",
            [(server.url(name), f"data/{name}", server.files[name]) for name in sizes],
        )
        dest = tmp_path / "dest"
        log = tmp_path / "events.jsonl"
        result = run_cli(
            "-vv",
            *download_args(
                manifest,
                dest,
                "--connections",
                str(CONNECTIONS),
                "--per-host",
                str(CONNECTIONS),
                "--flush-bytes",
                "64K",
                "--token-command",
                token_command(tmp_path, server),
                "--log-json",
                log,
            ),
        )
        assert "pending" not in result.stdout, (
            "engine: files verified and renamed but left pending in the state (seen after a "
            "stream cut by the rotation was resumed and finished last)\n" + result.describe()
        )
        assert result.returncode == 0, result.describe()
        assert_files(dest, expected)
        assert server.rotations >= 2, f"only {server.rotations} rotations: test too easy"
        assert server.cuts >= 1, "no stream was cut by a rotation: test too easy"
        # One fetch at start, then exactly one per rotation, however many transfers saw a 401.
        assert server.token_fetches == 1 + server.rotations, result.describe()
        events = read_events(log)
        paused = [e for e in events if e["event"] == "auth-paused"]
        assert len(paused) == server.rotations
        # Files this small use one connection each: at most one flush window is fetched twice.
        for name, size in sizes.items():
            assert size <= server.bytes_served[name] <= size + FLUSH, name
        assert_no_token_anywhere(server.issued, dest, log, result.stdout, result.stderr)


def test_token_file_rewritten_by_an_outside_tool_is_reread(tmp_path: Path) -> None:
    token_file = tmp_path / "token.txt"
    with AuthServer(rotate_every=4, token_file=token_file, chunk_delay=0.002) as server:
        sizes = {f"g{i}.bin": 96 * KiB + i for i in range(8)}
        expected = {name: server.add_file(name, size) for name, size in sizes.items()}
        manifest = manifest_for(
            tmp_path / "m.jsonl", [(server.url(n), n, server.files[n]) for n in sizes]
        )
        dest = tmp_path / "dest"
        result = run_cli(
            "-vv",
            *download_args(
                manifest, dest, "--connections", "3", "--per-host", "3", "--token-file", token_file
            ),
        )
        assert result.returncode == 0, result.describe()
        assert_files(dest, expected)
        assert server.rotations >= 1
        assert_no_token_anywhere(server.issued, dest, result.stdout, result.stderr)


def test_cross_host_redirect_gets_no_authorization_header(tmp_path: Path) -> None:
    with (
        AuthServer(host="127.0.0.1") as origin,
        AuthServer(host="127.0.0.2", require_token=False) as other,
    ):
        origin.redirect_base = other.base_url
        direct = origin.add_file("direct.bin", 50 * KiB)
        moved = other.add_file("moved.bin", 70 * KiB)
        manifest = manifest_for(
            tmp_path / "m.jsonl",
            [
                (origin.url("direct.bin"), "direct.bin", direct),
                (origin.url("moved.bin", route="redirect"), "moved.bin", moved),
            ],
        )
        dest = tmp_path / "dest"
        result = run_cli(
            "-vv",
            *download_args(
                manifest,
                dest,
                "--token-command",
                token_command(tmp_path, origin),
                # Even a host the token may go to does not get it through a redirect.
                "--auth-host",
                "127.0.0.2",
            ),
        )
        assert result.returncode == 0, result.describe()
        assert_files(dest, {"direct.bin": direct, "moved.bin": moved})
        assert other.authorization_seen, "the redirect target was never asked"
        assert [header for _, header in other.authorization_seen] == [None] * len(
            other.authorization_seen
        )
        first_hop = [h for path, h in origin.authorization_seen if path.startswith("/redirect/")]
        assert first_hop and all(h == f"Bearer {origin.current}" for h in first_hop)
        assert_no_token_anywhere(origin.issued, dest, result.stdout, result.stderr)


def test_no_token_and_no_terminal_stops_with_exit_3_then_a_token_finishes(
    tmp_path: Path,
) -> None:
    with AuthServer() as server:
        sizes = {"a.bin": 40 * KiB, "b.bin": 30 * KiB}
        expected = {name: server.add_file(name, size) for name, size in sizes.items()}
        manifest = manifest_for(
            tmp_path / "m.jsonl", [(server.url(n), n, server.files[n]) for n in sizes]
        )
        dest = tmp_path / "dest"
        args = download_args(manifest, dest)
        # stdin is /dev/null (clirun): no terminal, so no prompt; no flag, no MAAP_TOKEN.
        result: Result = run_cli(*args)
        assert "ExceptionGroup" not in result.stderr, (
            "engine: the AuthError reached the CLI wrapped in an ExceptionGroup (run_download's "
            "task group), so the CLI printed a traceback instead of one line and exit 3\n"
            + result.describe()
        )
        assert result.returncode == 3, result.describe()
        # One line, saying how to give a token (the engine or bulkflex.auth may word it).
        assert len(result.stderr_lines) == 1, result.describe()
        (line,) = result.stderr_lines
        assert line.startswith("bulkflex: error: 127.0.0.1 needs a bearer token"), line
        for flag in ("--token-env", "--token-file", "--token-command", "MAAP_TOKEN"):
            assert flag in line, line
        assert server.token_fetches == 0
        assert (dest / ".bulkflex").is_dir()  # state kept for the next run

        again = run_cli(*args, "--token-command", token_command(tmp_path, server))
        assert again.returncode == 0, again.describe()
        assert_files(dest, expected)
        assert server.token_fetches == 1
        assert_no_token_anywhere(server.issued, dest, again.stdout, again.stderr)


def test_token_from_the_environment_is_not_leaked_by_debug_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with AuthServer() as server:
        data = server.add_file("env.bin", 20 * KiB)
        manifest = manifest_for(tmp_path / "m.jsonl", [(server.url("env.bin"), "env.bin", data)])
        dest = tmp_path / "dest"
        monkeypatch.setenv("MAAP_TOKEN", server.current)
        result = run_cli("-vv", *download_args(manifest, dest))
        assert result.returncode == 0, result.describe()
        assert_files(dest, {"env.bin": data})
        assert_no_token_anywhere(server.issued, dest, result.stdout, result.stderr)


def test_prompt_in_a_terminal_through_the_cli(tmp_path: Path) -> None:
    with AuthServer() as server:
        data = server.add_file("p.bin", 60 * KiB)
        manifest = manifest_for(tmp_path / "m.jsonl", [(server.url("p.bin"), "p.bin", data)])
        dest = tmp_path / "dest"
        env = {k: v for k, v in os.environ.items() if k != "MAAP_TOKEN"}
        env["PYTHONUNBUFFERED"] = "1"
        argv = [str(a) for a in command(*download_args(manifest, dest))]
        child = pexpect.spawn(argv[0], argv[1:], env=env, encoding="utf-8", timeout=30)
        try:
            child.expect_exact(
                "The server at 127.0.0.1 needs a bearer token (MAAP tokens last 10 hours); "
                "paste it, input is hidden: "
            )
            child.sendline(server.current)
            child.expect(pexpect.EOF)
            output = (child.before or "") + ""
        finally:
            child.close(force=True)
        assert child.exitstatus == 0, output
        assert "1 downloaded" in output
        assert_files(dest, {"p.bin": data})
        assert_no_token_anywhere(server.issued, dest, output)


def test_oidc_jwt_is_renewed_before_it_expires_without_a_single_401(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 4-second JWTs are renewed 0.4 s before exp (a tenth of their life). The server paces
    # the bodies so the download cannot take less than 5 s (10 files of 4 chunks, 0.25 s per
    # chunk, 2 connections): requests start after the renewal time.
    with AuthServer(jwt_lifetime_s=4.0, chunk_delay=0.25) as server:
        sizes = {f"j{i}.bin": 64 * KiB for i in range(10)}
        expected = {name: server.add_file(name, size) for name, size in sizes.items()}
        manifest = manifest_for(
            tmp_path / "m.jsonl", [(server.url(n), n, server.files[n]) for n in sizes]
        )
        dest = tmp_path / "dest"
        monkeypatch.setenv("OFFLINE_FOR_TEST", OFFLINE_TOKEN)
        log = tmp_path / "events.jsonl"
        result = run_cli(
            "-vv",
            *download_args(
                manifest,
                dest,
                "--connections",
                "2",
                "--per-host",
                "2",
                *server.oidc_args("OFFLINE_FOR_TEST"),
                "--log-json",
                log,
            ),
        )
        assert result.returncode == 0, result.describe()
        assert_files(dest, expected)
        assert server.unauthorized == 0, result.describe()
        assert server.grants >= 2, f"{server.grants} grants: the download outran the token"
        assert [e for e in read_events(log) if e["event"] == "auth-paused"] == []
        tokens = [*server.issued, OFFLINE_TOKEN]
        assert_no_token_anywhere(tokens, dest, log, result.stdout, result.stderr)
