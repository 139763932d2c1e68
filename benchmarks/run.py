#!/usr/bin/env python3
# One command for the whole comparison: install the peers where possible, generate the file sets
# once, serve them on loopback (nginx, else an aiohttp fallback), run bulkflex and every peer on
# the same files in the same run, check every output file by sha256, and write
# benchmarks/results/<timestamp>/report.md (+ chart.png, results.json). See benchmarks/README.md.
#
#   python benchmarks/run.py [--workload small|large|tiny|kill|all] [--profile unthrottled|wan|both]
#                            [--repeat 3] [--quick] [--tools bulkflex,aria2c,...]

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _caches import CacheReset, cache_reset, run_quietly
from _memory import held_free_pages
from _peers import PEERS, Context, Peer, clean_env
from _report import KillResult, Row, ToolRun, render, write_chart, write_json
from _servers import PROFILES, Server, find_lua_modules
from _sha256_check import hash_cpu_s
from _workloads import FileSet, ensure_set, file_set_spec, verify_tree

from bulkflex.bench.measure import gnu_time, run_measured
from bulkflex.bench.tools import compile_bulkflex

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: GNU time, which gives each tool's own peak RSS (see bulkflex/bench/measure.py)
_TIME = gnu_time()
ALL_WORKLOADS = ("small", "large", "tiny", "kill")
#: caches are reset only before runs of sets with this many files (see benchmarks/_caches.py)
RESET_MIN_FILES = 1000


def log(msg: str) -> None:
    print(msg, flush=True)


# -- installation -------------------------------------------------------------------------------


def _apt_install(packages: list[str], notes: list[str]) -> None:
    if not packages:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        notes.append(f"cannot install {', '.join(packages)}: needs root and apt-get")
        return
    log(f"installing with apt-get: {' '.join(packages)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", *packages]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["?"]
            notes.append(f"apt-get install {' '.join(packages)} failed: {tail[0]}")


def _pip_install(specs: list[str], notes: list[str]) -> None:
    if not specs:
        return
    log(f"installing with pip: {' '.join(specs)}")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", *specs], capture_output=True, text=True
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["?"]
        notes.append(f"pip install {' '.join(specs)} failed: {tail[0]}")


def install(notes: list[str]) -> None:
    """Install what is missing where possible; what stays missing is reported later."""
    apt: list[str] = []
    if not shutil.which("nginx"):
        apt.append("nginx")
    if find_lua_modules() is None:
        apt.append("libnginx-mod-http-lua")
    if not shutil.which("time", path="/usr/bin:/bin"):
        apt.append("time")  # GNU time: peak RSS without the harness's floor (bench/measure.py)
    for exe, pkg in (("aria2c", "aria2"), ("rclone", "rclone"), ("wget", "wget"), ("curl", "curl")):
        if not shutil.which(exe):
            apt.append(pkg)
    _apt_install(apt, notes)
    pip: list[str] = []
    stac_asset = next(p for p in PEERS if p.key == "stac-asset")
    if stac_asset.available() is not None:
        pip.append("stac-asset[cli]")
    for module, spec in (("matplotlib", "matplotlib"), ("requests", "requests")):
        if importlib.util.find_spec(module) is None:
            pip.append(spec)
    _pip_install(pip, notes)


# -- versions -----------------------------------------------------------------------------------


def _first_line(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def tool_versions() -> str:
    git = _first_line(["git", "-C", str(REPO), "log", "-1", "--format=%h %s"])
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "bulkflex"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    parts = [
        f"bulkflex {git[:60]}" + (" + uncommitted changes in bulkflex/" if dirty else ""),
        _first_line(["aria2c", "--version"]) if shutil.which("aria2c") else "aria2c missing",
        " ".join(_first_line(["curl", "--version"]).split()[:2]),
        _first_line(["rclone", "version"]) if shutil.which("rclone") else "rclone missing",
        " ".join(_first_line(["wget", "--version"]).split()[:3]),
        f"stac-asset {_dist_version('stac-asset')}",
        f"requests {_dist_version('requests')}",
        f"aiohttp {_dist_version('aiohttp')}",
    ]
    return "; ".join(parts)


# -- one tool run -------------------------------------------------------------------------------


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def run_tool(
    peer: Peer,
    files: FileSet,
    server: Server,
    scratch: Path,
    timeout: float,
    kill_at_written: int | None = None,
    keep_dest: bool = False,
    before: Callable[[Peer], None] | None = None,
) -> tuple[ToolRun, Path]:
    """One measured run of ``peer`` into a fresh destination (unless ``keep_dest``);
    ``before`` runs first, off the clock (the cache reset)."""
    dest = scratch / "dest"
    if not keep_dest:
        _fresh(dest)
    if before is not None:
        before(peer)
    work = _fresh(scratch / f"work-{peer.key}")
    ctx = Context(files=files, base_url=server.base_url, dest=dest, work=work)
    cmd = peer.build(ctx)
    os.sync()  # every tool starts with no dirty pages from the previous one
    offset = 0

    def mark() -> None:
        nonlocal offset
        offset = server.log_offset()

    result = run_measured(
        cmd,
        log_path=scratch / "logs" / f"{peer.key}.log",
        timeout=timeout,
        cwd=work,
        env=clean_env(),
        time_exe=_TIME,
        kill_at_written=kill_at_written,
        on_start=mark,
    )
    if not server.wait_idle():
        log("  warning: server still has open connections after the run")
    served = server.served_since(offset)
    problems = verify_tree(dest, files.files) if kill_at_written is None else []
    run = ToolRun(
        wall=result.wall,
        cpu=result.cpu,
        maxrss_kib=result.peak_rss_kib,
        exit_code=result.exit_code,
        timed_out=result.timed_out,
        problems=len(problems),
        requests=served.data_requests,
        served_bytes=served.body_bytes,
        peak_in_flight=served.peak_in_flight,
        connections=served.connections,
        first_problem=problems[0] if problems else "",
        log_tail="" if result.exit_code == 0 else result.log_tail,
        killed_at=result.killed_at,
        machine_busy=result.machine_busy,
    )
    return run, dest


def _describe(run: ToolRun, total: int) -> str:
    speed = total / (1024 * 1024) / run.wall
    busy = (
        ""
        if run.machine_busy is None
        else f" machine {run.machine_busy / (run.wall * (os.cpu_count() or 1)):4.0%}"
    )
    state = (
        "verified"
        if run.good
        else ("TIMEOUT" if run.timed_out else f"exit {run.exit_code}, {run.problems} bad files")
    )
    return (
        f"{run.wall:7.2f} s {speed:8.1f} MiB/s cpu {run.cpu:6.2f} s{busy} "
        f"rss {run.maxrss_kib / 1024:6.0f} MiB  {run.requests} data requests "
        f"(<= {run.peak_in_flight} in flight, {run.connections} conns)  {state}"
    )


# -- kill in the middle -------------------------------------------------------------------------


def _flush_window() -> str:
    try:
        from bulkflex.transfer import DownloadOptions

        opts = DownloadOptions()
        value = getattr(opts, "flush_bytes", None)
        if isinstance(value, int):
            return f"{value / (1024 * 1024):.0f} MiB or {getattr(opts, 'flush_seconds', '?')} s"
    except Exception:  # informational only
        pass
    return "see `bulkflex download --help`"


def run_kill(
    peer: Peer,
    files: FileSet,
    server: Server,
    scratch: Path,
    timeout: float,
    at: float,
    before: Callable[[Peer], None] | None = None,
) -> KillResult:
    """Uninterrupted run, then a run SIGKILLed once ``at`` of the bytes were written, then the
    same command again (must finish, verified), then once more (must fetch nothing)."""
    log(f"[kill/{server.profile}] uninterrupted run")
    full, _ = run_tool(peer, files, server, scratch, timeout, before=before)
    log(f"  {_describe(full, files.total_bytes)}")
    threshold = int(files.total_bytes * at)
    log(f"[kill/{server.profile}] SIGKILL once {threshold / 2**20:.0f} MiB are written")
    offset = server.log_offset()
    killed, _ = run_tool(
        peer, files, server, scratch, timeout, kill_at_written=threshold, before=before
    )
    sizes = {f"/{files.name}/{spec.rel}": spec.size for spec in files.files}
    cut = [
        e
        for e in server.entries_since(offset)
        if e.is_data and e.uri in sizes and e.body_bytes < e.expected_bytes(sizes[e.uri])
    ]
    log(
        f"  exit {killed.exit_code} at {killed.killed_at or killed.wall:.2f} s, server sent "
        f"{killed.served_bytes / 2**20:.1f} MiB, {len(cut)} requests cut"
    )
    rerun, _ = run_tool(peer, files, server, scratch, timeout, keep_dest=True, before=before)
    log(f"[kill/{server.profile}] rerun: {_describe(rerun, files.total_bytes)}")
    again, _ = run_tool(peer, files, server, scratch, timeout, keep_dest=True, before=before)
    log(f"[kill/{server.profile}] rerun of the finished job: {again.requests} data requests")
    note = ""
    if killed.killed_at is None:
        note = f"the run ended by itself (exit {killed.exit_code}) before the SIGKILL"
    return KillResult(
        profile=server.profile,
        files=len(files.files),
        total_bytes=files.total_bytes,
        connections=len(cut),
        flush_window=_flush_window(),
        full_wall=full.wall,
        served_full=full.served_bytes,
        kill_after=killed.killed_at if killed.killed_at is not None else killed.wall,
        killed_exit=killed.exit_code,
        served_killed=killed.served_bytes,
        served_rerun=rerun.served_bytes,
        rerun_exit=rerun.exit_code,
        rerun_problems=rerun.problems,
        finished_rerun_data_requests=again.requests,
        finished_rerun_bytes=again.served_bytes,
        finished_rerun_exit=again.exit_code,
        note=note,
        in_flight=killed.peak_in_flight,
    )


# -- main ---------------------------------------------------------------------------------------


def _reset_before(
    args: argparse.Namespace, files: FileSet, server: Server
) -> Callable[[Peer], None] | None:
    """What runs before each measured run of ``files``: the cache reset of ``_caches.py``, with
    the tool's warm-up on the one-file set; None when caches are not reset. A set with fewer
    than ``RESET_MIN_FILES`` files is not reset, only read back in (a reset for another set may
    have evicted it)."""
    reset: CacheReset | None = args.cache_reset
    if reset is None:
        return None
    sources = [files.root / spec.rel for spec in files.files]
    if len(files.files) < RESET_MIN_FILES:
        return lambda peer: reset.read_in(sources)
    scratch: Path = args.scratch

    def before(peer: Peer) -> None:
        dest = _fresh(scratch / "warm-up-dest")
        work = _fresh(scratch / "warm-up-work")
        ctx = Context(files=args.warm_up_set, base_url=server.base_url, dest=dest, work=work)
        cmd = peer.build(ctx)
        reset(sources, lambda: run_quietly(cmd, cwd=work, env=clean_env(), dest=dest))

    return before


def run_workload(
    w: str,
    files: FileSet,
    server: Server,
    peers: list[Peer],
    args: argparse.Namespace,
    rows: list[Row],
    kills: list[KillResult],
    notes: list[str],
) -> None:
    """Every tool on one file set with one server profile, ``args.repeat`` times (appends)."""
    scratch: Path = args.scratch
    before = _reset_before(args, files, server)
    if w == "kill":
        bulkflex = next((p for p in peers if p.key == "bulkflex"), None)
        if bulkflex is None:
            notes.append("kill workload skipped: bulkflex not available")
            return
        kills.append(run_kill(bulkflex, files, server, scratch, args.timeout, args.kill_at, before))
        return
    peers = [
        p
        for p in peers
        if (p.workloads is None or w in p.workloads)
        and (p.profiles is None or server.profile in p.profiles)
    ]
    hash_cpu = _hash_cpu(files, args)
    group = {
        p.key: Row(
            w,
            server.profile,
            p.key,
            p.label,
            len(files.files),
            files.total_bytes,
            cpus=os.cpu_count() or 1,
            hash_cpu=hash_cpu,
        )
        for p in peers
    }
    rows.extend(group.values())
    for rep in range(args.repeat):
        for peer in run_order(peers, f"{w}/{server.profile}/{rep}"):
            run, _ = run_tool(peer, files, server, scratch, args.timeout, before=before)
            group[peer.key].runs.append(run)
            log(
                f"[{w}/{server.profile} {rep + 1}/{args.repeat}] {peer.label:32s} "
                f"{_describe(run, files.total_bytes)}"
            )


def _hash_cpu(files: FileSet, args: argparse.Namespace) -> float:
    """The CPU seconds sha256 alone takes over ``files`` (once per set and benchmark)."""
    known: dict[str, float] = args.__dict__.setdefault("hash_cpu", {})
    if files.name not in known:
        known[files.name] = hash_cpu_s(files.root / spec.rel for spec in files.files)
        log(f"  sha256 over {files.name}: {known[files.name]:.2f} CPU s")
    return known[files.name]


def run_order(peers: list[Peer], seed: str) -> list[Peer]:
    """The order of the tools in one repeat: shuffled, seeded by ``seed`` (the same every time
    for one workload, profile and repeat). A rotation left each tool behind the same tool in
    every repeat it did not start. On the WAN-like large files, the three runs that came right
    after the requests loop's 82 s were all bulkflex's, and they used 7.6 to 8.9 CPU seconds
    (16 or 64 connections), against 3.3 and 4.2 for the 64-connection row's other runs and
    3.3 for the same command by hand (the VM's memory, see ``_memory.py``)."""
    order = list(peers)
    random.Random(seed).shuffle(order)
    return order


def _run_profiles(
    args: argparse.Namespace,
    file_sets: dict[str, FileSet],
    peers: list[Peer],
    rows: list[Row],
    kills: list[KillResult],
    notes: list[str],
    sets_root: Path,
    server_kinds: list[str],
) -> None:
    """Every workload on every server profile (appends to rows, kills, notes, server_kinds)."""
    prefer_nginx = args.server != "aiohttp"
    for profile in args.profiles:
        with Server(sets_root, profile, prefer_nginx=prefer_nginx) as server:
            server_kinds.append(f"{profile}: {server.kind}")
            for n in server.notes:
                if n not in notes:
                    notes.append(n)
            log(f"== profile {profile}: {server.kind} on {server.base_url}")
            for w in args.workloads:
                try:
                    run_workload(w, file_sets[w], server, peers, args, rows, kills, notes)
                except Exception as exc:  # keep the other workloads and the report
                    log(f"!! {w}/{profile} crashed: {exc!r}")
                    log("".join(traceback.format_exc()))
                    notes.append(f"{w}/{profile}: harness error {exc!r}; results incomplete")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__ or "bulkflex benchmark")
    p.add_argument(
        "--workload",
        default="small",
        help="small (2000 x 256 KiB), large (4 x 512 MiB), tiny (20,000 x 16 KiB), kill, all; "
        "or a comma-separated list (default small)",
    )
    p.add_argument("--profile", default="unthrottled", choices=["unthrottled", "wan", "both"])
    p.add_argument("--repeat", type=int, default=None, help="runs per tool (default 3; 1 --quick)")
    p.add_argument("--quick", action="store_true", help="small file sets for a smoke run")
    p.add_argument(
        "--tools",
        default=",".join(p.key for p in PEERS if p.default),
        help="comma-separated subset of: "
        + ", ".join(p.key if p.default else f"{p.key} (not by default)" for p in PEERS),
    )
    p.add_argument("--server", choices=["auto", "nginx", "aiohttp"], default="auto")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per run (default 900)")
    p.add_argument(
        "--kill-at", type=float, default=0.5, help="kill once this fraction is written (0.5)"
    )
    p.add_argument("--no-install", action="store_true", help="do not apt-get / pip install")
    p.add_argument(
        "--no-hold-memory",
        dest="hold_memory",
        action="store_false",
        help="leave free page reporting as it is (see benchmarks/_memory.py)",
    )
    p.add_argument(
        "--no-reset-caches",
        dest="reset_caches",
        action="store_false",
        help="do not drop the page cache before runs of many-file sets (benchmarks/_caches.py)",
    )
    p.add_argument("--cache", type=Path, default=HERE / ".data", help="generated files")
    p.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    args = p.parse_args(argv)
    names = [w.strip() for w in args.workload.split(",") if w.strip()]
    args.workloads = list(ALL_WORKLOADS) if "all" in names else names
    for w in args.workloads:
        if w not in ALL_WORKLOADS:
            p.error(f"unknown workload {w!r}")
    args.profiles = list(PROFILES) if args.profile == "both" else [args.profile]
    keys = [k.strip() for k in args.tools.split(",") if k.strip()]
    known = {peer.key for peer in PEERS}
    for k in keys:
        if k not in known:
            p.error(f"unknown tool {k!r}")
    args.peer_keys = keys
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    notes: list[str] = []
    if not args.no_install:
        install(notes)
    peers: list[Peer] = []
    for peer in PEERS:
        if peer.key not in args.peer_keys:
            continue
        why = peer.available()
        if why:
            notes.append(f"{peer.label} skipped: {why}")
            log(f"skipping {peer.label}: {why}")
        else:
            peers.append(peer)
    if args.server == "nginx" and not shutil.which("nginx"):
        log("nginx is not installed")
        return 2
    compile_bulkflex()  # as installed: the peers written in Python start from bytecode too
    if args.server == "aiohttp":
        notes.append("aiohttp fallback server chosen with --server aiohttp")

    sets_root = args.cache / "sets"
    # Private per run: several runs (several engineers) may share benchmarks/.data at once.
    args.cache.mkdir(parents=True, exist_ok=True)
    scratch = args.scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=args.cache))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out / stamp
    suffix = 1
    while True:
        try:
            out.mkdir()
            break
        except FileExistsError:
            suffix += 1
            out = args.out / f"{stamp}-{suffix}"
    rows: list[Row] = []
    kills: list[KillResult] = []
    file_sets: dict[str, FileSet] = {}
    for w in args.workloads:
        count, size = file_set_spec(w, args.quick)
        log(f"file set for {w}: {count} x {size} bytes (generated once, cached)")
        file_sets[w] = ensure_set(sets_root, count, size)
    # each tool's warm-up before a run, after the caches are dropped (benchmarks/_caches.py)
    args.warm_up_set = ensure_set(sets_root, 1, 16 * 1024)
    if args.reset_caches:
        args.cache_reset = cache_reset(notes, RESET_MIN_FILES)
    else:
        args.cache_reset = None
        notes.append("kernel caches not reset between runs (--no-reset-caches)")
    server_kinds: list[str] = []
    versions = tool_versions()  # before the runs: the code measured, not the code at the end
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    interrupted = False
    # room for the largest output, its copy in the page cache while it is verified, and spare
    warm = 2 * max(fs.total_bytes for fs in file_sets.values()) + 2**30
    steady = held_free_pages(warm, notes) if args.hold_memory else contextlib.nullcontext()
    try:
        with steady:
            _run_profiles(args, file_sets, peers, rows, kills, notes, sets_root, server_kinds)
    except KeyboardInterrupt:
        interrupted = True
        notes.append("interrupted (Ctrl-C): results incomplete")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    header = [
        f"started {started}; mode {'--quick' if args.quick else 'full'}; "
        f"{args.repeat} run(s) per tool, median of verified runs",
        f"machine: {os.cpu_count()} CPUs (shared), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; client and server on loopback",
        "server: " + "; ".join(server_kinds),
        "WAN-like = 25 MiB/s per response + 20 ms before each response (nginx limit_rate + Lua "
        "ngx.sleep, or the fallback server's equivalent)",
        "peak RSS: "
        + (
            "GNU time %M (largest single process of the tool)"
            if shutil.which("time", path="/usr/bin:/bin")
            else "ru_maxrss from wait4 (GNU time missing: an upper bound, floored at the "
            "harness's own RSS)"
        ),
        "tools: " + versions,
    ]
    chart_note = write_chart(out / "chart.png", rows)
    if chart_note:
        notes.append(chart_note)
    report = render(rows, kills, header, notes)
    (out / "report.md").write_text(report)
    write_json(out / "results.json", rows, kills, header)
    log("")
    log(report)
    try:
        shown = out.relative_to(REPO)
    except ValueError:
        shown = out
    log(f"report written to {shown}/report.md")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
