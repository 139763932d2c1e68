"""``bulkflex download --dask``, driven as a user would: a real CLI process, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dask_helpers import assert_bytes_equal, make_manifest

pytest.importorskip("distributed")

RUN_TIMEOUT = 90.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["NO_PROXY"] = "*"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _bulkflex(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "bulkflex", *map(os.fspath, args)]


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


def test_scheduler_that_does_not_answer_is_one_line_and_exit_1(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"url": "http://127.0.0.1:9/a", "path": "a"}\n', encoding="utf-8")
    address = f"tcp://127.0.0.1:{_closed_port()}"
    result = subprocess.run(
        _bulkflex("download", manifest, "-d", tmp_path / "dest", "--dask", address),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=_env(),
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"bulkflex: error: cannot reach the Dask scheduler at {address} within 5 s "
        "(OSError); nothing was started"
    ]
    assert not (tmp_path / "dest").exists()


def test_bad_local_spec_is_a_usage_error(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"url": "http://127.0.0.1:9/a", "path": "a"}\n', encoding="utf-8")
    result = subprocess.run(
        _bulkflex("download", manifest, "-d", tmp_path / "dest", "--dask", "local:zero"),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=_env(),
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "bulkflex: error: --dask local:zero: expected local:N with N a number of workers"
    ]


def test_ctrl_c_stops_the_cluster_job_and_the_same_command_finishes(
    tmp_path: Path,
    server,  # type: ignore[no-untyped-def]
) -> None:
    # slow enough (about 0.1 s a file) that the job is still running when the signal lands
    manifest, expected = make_manifest(server, tmp_path, 300, chunk_size=2048, chunk_delay=0.05)
    dest = tmp_path / "dest"
    command = _bulkflex("download", manifest, "-d", dest, "--dask", "local:2", "--no-progress")
    # a new session, so Ctrl-C can go to the whole process group as a terminal sends it
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if sum(1 for _ in dest.glob("d*/*.bin")) >= 20:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the job ended before it could be interrupted"
        # a local cluster holds DEST's lock, as a run without Dask does
        shown = subprocess.run(
            _bulkflex("status", dest), capture_output=True, text=True, timeout=30, env=_env()
        )
        assert f"  a download runs there now (pid {process.pid})" in shown.stdout, shown.stdout
        second = subprocess.run(
            _bulkflex("download", manifest, "-d", dest, "--no-progress"),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            env=_env(),
        )
        assert second.returncode == 4, second.stderr
        assert f"is in use by another bulkflex download (pid {process.pid})" in second.stderr
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    assert process.returncode == 130, err
    assert "bulkflex: interrupted; progress is saved, run the same command to finish" in err
    status = subprocess.run(
        _bulkflex("status", dest), capture_output=True, text=True, timeout=30, env=_env()
    )
    done = int(status.stdout.split("done")[1].split()[0])
    pending = int(status.stdout.split("pending")[1].split()[0])
    assert done >= 20 and done + pending == 300, status.stdout

    again = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=_env())
    assert again.returncode == 0, again.stderr
    assert f"{done} already complete" in again.stdout
    assert_bytes_equal(dest, expected)
