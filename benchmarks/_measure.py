# Running one benchmarked command: wall clock, CPU seconds and peak RSS of the child process tree.
#
# The child is waited for with os.wait4, whose rusage covers the child and every descendant it
# waited for (the same accounting as getrusage(RUSAGE_CHILDREN), restricted to this child): that
# gives the CPU seconds. Peak RSS is ru_maxrss, the largest resident set of any single process in
# that tree, not a sum. Pitfall: Linux records in a child's ru_maxrss the high-water RSS of the
# memory image it replaced at exec, and a child spawned by Python (vfork) replaces the harness's
# image, so a 5 MiB curl would report the harness's ~25+ MiB. When GNU time is installed the tool
# is therefore started through it (a ~2 MiB process) and its %M, which is free of that floor, is
# the peak RSS; otherwise ru_maxrss is used and is only an upper bound for small tools.
# Each run is bounded by a timeout that kills the child's whole process group.

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunResult", "run_measured"]


@dataclass
class RunResult:
    """One run of one tool.

    ``exit_code`` is negative for a signal (e.g. -9 after SIGKILL); ``timed_out`` is True when
    the harness killed the run because it exceeded its time limit.
    """

    wall: float
    cpu_user: float
    cpu_sys: float
    maxrss_kib: int
    maxrss_source: str  # "gnu-time" or "wait4"
    exit_code: int
    timed_out: bool
    log: str
    killed_at: float | None = None

    @property
    def cpu(self) -> float:
        return self.cpu_user + self.cpu_sys


def _kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _written(root: int) -> int:
    """Bytes written so far by process ``root`` and its descendants (0 if unreadable)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(entry.path, "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    total = 0
    for pid in tree:
        with contextlib.suppress(OSError, ValueError, StopIteration):
            io = Path(f"/proc/{pid}/io").read_text().splitlines()
            total += int(next(line for line in io if line.startswith("wchar:")).split()[1])
    return total


def run_measured(
    cmd: Sequence[str],
    *,
    log_path: Path,
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    kill_after: float | None = None,
    kill_at_written: int | None = None,
    on_start: Callable[[], None] | None = None,
) -> RunResult:
    """Run ``cmd`` to completion, or SIGKILL its process group ``kill_after`` seconds after the
    start or as soon as its processes have written ``kill_at_written`` bytes (``wchar`` of
    /proc/PID/io: every write/pwrite, so the downloaded data plus a little state).

    stdout and stderr go to ``log_path`` (never a pipe, so a chatty tool cannot block).
    ``on_start`` is called right before the process is spawned (e.g. to mark a log offset).
    ``RunResult.killed_at`` is the second at which the harness sent SIGKILL, if it did.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    rss_file = log_path.with_suffix(".rss")
    rss_file.unlink(missing_ok=True)
    if gnu_time:
        cmd = [gnu_time, "-q", "-f", "%M", "-o", str(rss_file), "--", *cmd]
    timed_out = threading.Event()
    done = threading.Event()
    killed_at: list[float] = []
    with open(log_path, "wb") as log:
        if on_start is not None:
            on_start()
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def on_timeout() -> None:
            timed_out.set()
            _kill_group(proc.pid)

        def kill_now() -> None:
            killed_at.append(time.perf_counter() - start)
            _kill_group(proc.pid)

        def watch_writes(limit: int) -> None:
            while not done.wait(0.01):
                if _written(proc.pid) >= limit:
                    kill_now()
                    return

        timers: list[threading.Timer | threading.Thread] = [threading.Timer(timeout, on_timeout)]
        if kill_after is not None:
            timers.append(threading.Timer(kill_after, kill_now))
        if kill_at_written is not None:
            timers.append(threading.Thread(target=watch_writes, args=(kill_at_written,)))
        for t in timers:
            t.daemon = True
            t.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C in the harness: the tool has its own session, stop it
            _kill_group(proc.pid)
            proc.wait()
            raise
        finally:
            done.set()
            for t in timers:
                if isinstance(t, threading.Timer):
                    t.cancel()
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code  # already reaped; keep Popen from waiting again
        # Descendants that outlived the child (daemonised helpers) must not leak into the next run.
        _kill_group(proc.pid)
    text = log_path.read_text(errors="replace")
    maxrss, source = usage.ru_maxrss, "wait4"
    # No file (or an empty one) when GNU time is missing or was killed along with the tool.
    with contextlib.suppress(OSError, ValueError, IndexError):
        maxrss, source = int(rss_file.read_text().split()[-1]), "gnu-time"
    return RunResult(
        wall=wall,
        cpu_user=usage.ru_utime,
        cpu_sys=usage.ru_stime,
        maxrss_kib=maxrss,
        maxrss_source=source,
        exit_code=code,
        timed_out=timed_out.is_set(),
        log=text[-4000:],
        killed_at=killed_at[0] if killed_at else None,
    )
