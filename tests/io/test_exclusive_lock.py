"""``bulkflex.state.ExclusiveLock``: the flock behind a destination's lock and each shard's."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from bulkflex.distributed._shard import (
    JobNames,
    ShardFailure,
    ShardLink,
    ShardTask,
    run_shard_locked,
)
from bulkflex.errors import StateError
from bulkflex.state import ExclusiveLock
from bulkflex.transfer import DownloadOptions


def _busy(holder: str) -> StateError:
    return StateError(f"taken by {holder or 'nobody known'}")


def test_a_held_lock_names_its_holder_and_is_free_again_after(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "lock"  # its folder is made
    with (
        ExclusiveLock(path, _busy),
        pytest.raises(StateError, match=f"^taken by pid {os.getpid()}$"),
        ExclusiveLock(path, _busy),
    ):
        pass
    with ExclusiveLock(path, _busy):
        pass


def test_a_waiting_lock_gets_it_once_the_holder_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with ExclusiveLock(path, _busy):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        threading.Timer(0.3, release.set).start()
        with ExclusiveLock(path, _busy, timeout_s=30):
            assert release.is_set()
    finally:
        release.set()
        holder.join(10)


def test_a_holder_on_another_machine_is_named_with_its_host(tmp_path: Path) -> None:
    # a folder shared over NFS: the pid alone would point at a process of this machine
    path = tmp_path / "lock"
    with ExclusiveLock(path, _busy):
        assert path.read_text() == f"{os.getpid()} {socket.gethostname()}\n"
        path.write_text("4242 jupyter-7\n")
        with (
            pytest.raises(StateError, match=r"^taken by pid 4242 on jupyter-7$"),
            ExclusiveLock(path, _busy),
        ):
            pass
    assert path.read_text() == ""  # cleared when let go


def test_a_shard_whose_older_attempt_still_holds_its_lock_fails_without_running(
    tmp_path: Path,
) -> None:
    """A shard moved to another process while its first attempt still runs (and holds
    ``DEST/.bulkflex/shard-0.lock``) waits ``lock_timeout_s``, then fails with one line that
    names the holder; it opens no state file and sends no progress."""
    dest = tmp_path / "dest"
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"url": "http://127.0.0.1:9/a", "path": "a"}\n')
    sent: list[object] = []
    task = ShardTask(
        names=JobNames("test"),
        index=0,
        manifest=str(manifest),
        dest=str(dest),
        options=DownloadOptions(),
        token_scope=None,
        lock_timeout_s=0.2,
    )
    link = ShardLink(
        send_progress=sent.append,
        read_token=lambda: None,
        ask_refresh=lambda generation, host: None,
        should_stop=lambda: False,
    )
    with ExclusiveLock(dest / ".bulkflex" / "shard-0.lock", _busy):  # the older attempt
        result = run_shard_locked(task, link)
    assert isinstance(result, ShardFailure), result
    assert result.error_type == "StateError"
    assert result.exit_code == StateError("x").exit_code
    assert result.message == (
        f"shard-0.lock: another process (pid {os.getpid()}) still runs this shard after 0 s; "
        "stop it, then run the same command again"
    )
    assert sorted(p.name for p in (dest / ".bulkflex").iterdir()) == ["shard-0.lock"]
    assert sent == []
