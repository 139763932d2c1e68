# One measured run of one command for `bulkflex bench`: wall clock, CPU seconds and peak RSS of
# the child, with a time limit.
#
# CPU seconds come from os.wait4's rusage of the child (user + system, including descendants it
# waited for). Peak RSS cannot come from the same rusage: Linux records in a process's ru_maxrss
# the high-water mark of the memory image it replaced at exec, which for a child spawned from
# this process (with the embedded server in it) is this process's own RSS. So the child is
# wrapped in GNU time when it is installed (its %M is the tool's own peak), else its VmHWM in
# /proc/PID/status is polled while it runs, else ru_maxrss is used (an upper bound).
#
# The machine's busy CPU seconds over the run (all cores, every process and the kernel's own
# work: the server, softirqs, writeback) come from /proc/stat. They tell whether a tool left
# cores idle, and so how much work could still be added to its run without making it longer.

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Measured", "cpu_ticks", "gnu_time", "machine_busy_s", "run_measured"]

_POLL_S = 0.02
_KILL_POLL_S = 0.01


@dataclass(frozen=True, slots=True)
class Measured:
    """One finished run.

    Attributes:
        wall: seconds from spawn to exit (interpreter start-up included).
        cpu: user + system CPU seconds of the child and the descendants it waited for.
        peak_rss_kib: the largest resident set of the child, in KiB.
        rss_source: ``"gnu-time"``, ``"proc"`` (VmHWM polled every 20 ms: growth in the last
            20 ms before exit is missed) or ``"wait4"`` (an upper bound, see the module header).
        exit_code: the child's exit status; negative for a signal (-9 after a timeout).
        timed_out: the run was killed because it exceeded its time limit.
        log_tail: the last 4000 characters of its stdout + stderr.
        killed_at: seconds after the start at which the caller's kill rule (``kill_after``,
            ``kill_at_written``) SIGKILLed the run, or None.
        machine_busy: CPU seconds the whole machine was busy from spawn to exit, all cores
            and processes together (see :func:`machine_busy_s`); None where /proc/stat is
            missing.
    """

    wall: float
    cpu: float
    peak_rss_kib: int
    rss_source: str
    exit_code: int
    timed_out: bool
    log_tail: str
    killed_at: float | None = None
    machine_busy: float | None = None


def cpu_ticks(stat: str) -> tuple[int, int]:
    """``(busy, idle)`` clock ticks of all cores together, from the text of /proc/stat.

    Its first line is ``cpu  user nice system idle iowait irq softirq steal guest
    guest_nice``. Busy is user + nice + system + irq + softirq + steal (guest time is already
    inside user and nice); idle is idle + iowait, since a core waiting for the disk could run
    other work. Older kernels print fewer columns: the missing ones count as 0.
    """
    first = stat.split("\n", 1)[0].split()
    if not first or first[0] != "cpu":
        raise ValueError(f"not the text of /proc/stat: {stat[:40]!r}")
    ticks = [int(x) for x in first[1:9]] + [0] * (9 - len(first))
    user, nice, system, idle, iowait, irq, softirq, steal = ticks[:8]
    return user + nice + system + irq + softirq + steal, idle + iowait


def machine_busy_s() -> float | None:
    """Busy CPU seconds of all cores since boot (see :func:`cpu_ticks`); None without
    /proc/stat. The difference of two readings is what the machine did between them."""
    try:
        text = Path("/proc/stat").read_text()
    except OSError:
        return None
    return cpu_ticks(text)[0] / os.sysconf("SC_CLK_TCK")


def gnu_time() -> str | None:
    """The path of GNU time (``/usr/bin/time``), not the shell keyword; None if absent."""
    found = shutil.which("time", path="/usr/bin:/bin")
    if found is None:
        return None
    probe = subprocess.run(
        [found, "-f", "%M", "true"], capture_output=True, text=True, check=False
    )  # BSD time has no -f
    return found if probe.returncode == 0 else None


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _vm_hwm_kib(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _written(root: int) -> int:
    """Bytes written so far by process ``root`` and its descendants (``wchar`` of
    /proc/PID/io: every write and pwrite); 0 when unreadable."""
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
    time_exe: str | None,
    kill_after: float | None = None,
    kill_at_written: int | None = None,
    on_start: Callable[[], None] | None = None,
) -> Measured:
    """Run ``cmd`` in its own session, its output to ``log_path``, and measure it.

    ``time_exe``: GNU time to wrap the command in (from :func:`gnu_time`), or None. After
    ``timeout`` seconds the child's whole process group is SIGKILLed; the group is killed after
    a normal exit too, so no helper outlives its run. Ctrl-C (KeyboardInterrupt) kills the group
    and re-raises.

    For a kill in the middle: ``kill_after`` SIGKILLs the group that many seconds after the
    start, ``kill_at_written`` once the child and its descendants have written that many bytes
    (the downloaded data plus a little state; checked every 10 ms). ``on_start`` runs right
    before the spawn (to mark a server log offset).
    """
    rss_file = log_path.with_suffix(".rss")
    rss_file.unlink(missing_ok=True)
    full = list(cmd)
    if time_exe is not None:
        full = [time_exe, "-q", "-f", "%M", "-o", str(rss_file), "--", *full]
    poll_proc = time_exe is None and sys.platform.startswith("linux")
    timed_out = threading.Event()
    finished = threading.Event()
    hwm = [0]
    killed_at: list[float] = []
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        if on_start is not None:
            on_start()
        busy_before = machine_busy_s()
        start = time.perf_counter()
        proc = subprocess.Popen(
            full,
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
            if not killed_at:
                killed_at.append(time.perf_counter() - start)
            _kill_group(proc.pid)

        def poll() -> None:
            while not finished.wait(_KILL_POLL_S if kill_at_written is not None else _POLL_S):
                if poll_proc:
                    hwm[0] = max(hwm[0], _vm_hwm_kib(proc.pid))
                if kill_at_written is not None and _written(proc.pid) >= kill_at_written:
                    kill_now()
                    return

        timers = [threading.Timer(timeout, on_timeout)]
        if kill_after is not None:
            timers.append(threading.Timer(kill_after, kill_now))
        for timer in timers:
            timer.daemon = True
            timer.start()
        watched = poll_proc or kill_at_written is not None
        poller = threading.Thread(target=poll, daemon=True) if watched else None
        if poller is not None:
            poller.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            _kill_group(proc.pid)
            proc.wait()
            raise
        finally:
            finished.set()
            for timer in timers:
                timer.cancel()
            if poller is not None:
                poller.join()
        wall = time.perf_counter() - start
        busy_after = machine_busy_s()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait again
        _kill_group(proc.pid)
    peak, source = usage.ru_maxrss, "wait4"
    if sys.platform == "darwin":
        peak //= 1024  # bytes there, KiB on Linux
    if poll_proc and hwm[0]:
        peak, source = hwm[0], "proc"
    if time_exe is not None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            peak, source = int(rss_file.read_text().split()[-1]), "gnu-time"
    text = log_path.read_text(encoding="utf-8", errors="replace")
    return Measured(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_rss_kib=peak,
        rss_source=source,
        exit_code=proc.returncode,
        timed_out=timed_out.is_set(),
        log_tail=text[-4000:],
        killed_at=killed_at[0] if killed_at else None,
        machine_busy=(
            None if busy_before is None or busy_after is None else busy_after - busy_before
        ),
    )
