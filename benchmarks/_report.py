# Turning raw benchmark runs into the report: Markdown tables (printed and written to
# report.md), a PNG bar chart next to it (matplotlib, when installed), and results.json.
#
# Numbers per workload x profile x tool, over the runs that exited 0 AND whose every file matched
# its sha256 ("good runs"): MiB/s = total bytes / wall clock, median of the good runs;
# CPU s/GiB = (user + system CPU of the tool's process tree) / GiB, median; peak RSS = median of
# ru_maxrss. "bulkflex x" = bulkflex's MiB/s / the tool's MiB/s (> 1: bulkflex faster);
# "CPU x" = bulkflex's CPU s/GiB / the tool's (< 1: bulkflex cheaper); "machine busy" = the CPU
# seconds all cores spent (every process, the server and the kernel included) / (wall x cores),
# median. The ceiling line: how fast any tool that hashes every byte could be, against the best
# peer, from that peer's machine busy seconds and the set's measured sha256 CPU seconds.

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CHECKED_AFTER", "SYNCED_AFTER", "KillResult", "Row", "ToolRun", "render", "write_chart"]

MiB = 1024 * 1024
#: key suffix of the rows that run a peer, then a sha256 pass over its files (_peers.py)
CHECKED_AFTER = "+sha256"
#: ... and of those that sync the destination's file system after that pass
SYNCED_AFTER = CHECKED_AFTER + "+sync"
GiB = 1024 * MiB


@dataclass
class ToolRun:
    wall: float
    cpu: float
    maxrss_kib: int
    exit_code: int
    timed_out: bool
    problems: int  # files missing or not matching their sha256
    requests: int
    served_bytes: int
    peak_in_flight: int = 0  # most data requests in flight at once (server's access log)
    connections: int = 0  # distinct TCP connections used
    first_problem: str = ""
    log_tail: str = ""
    killed_at: float | None = None  # seconds after the start at which the harness sent SIGKILL
    machine_busy: float | None = None  # CPU s of all cores over the run (bench/measure.py)

    @property
    def good(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.problems == 0


@dataclass
class Row:
    workload: str
    profile: str
    tool: str  # key
    label: str
    files: int
    total_bytes: int
    runs: list[ToolRun] = field(default_factory=list)
    cpus: int = 1  # the machine's cores
    #: CPU seconds sha256 alone takes over the set (_sha256_check.hash_cpu_s), or None
    hash_cpu: float | None = None

    def good_runs(self) -> list[ToolRun]:
        return [r for r in self.runs if r.good]

    def mib_s(self) -> float | None:
        good = self.good_runs()
        if not good:
            return None
        return statistics.median(self.total_bytes / MiB / r.wall for r in good)

    def cpu_per_gib(self) -> float | None:
        good = self.good_runs()
        if not good:
            return None
        return statistics.median(r.cpu / (self.total_bytes / GiB) for r in good)

    def median_run(self) -> ToolRun | None:
        """The good run of median wall time (the slower middle one of an even count)."""
        good = sorted(self.good_runs(), key=lambda r: r.wall)
        return good[len(good) // 2] if good else None

    def machine_share(self) -> float | None:
        """Median share of the machine's cores busy during a good run (0 to 1)."""
        shares = [
            r.machine_busy / (r.wall * self.cpus)
            for r in self.good_runs()
            if r.machine_busy is not None and r.wall > 0
        ]
        if not shares or len(shares) != len(self.good_runs()):
            return None
        return statistics.median(shares)

    def rss_mib(self) -> float | None:
        good = self.good_runs() or self.runs
        if not good:
            return None
        return statistics.median(r.maxrss_kib / 1024 for r in good)

    def status(self) -> str:
        if not self.runs:
            return "not run"
        good = len(self.good_runs())
        if good == len(self.runs):
            return f"ok {good}/{len(self.runs)}"
        bad = next(r for r in self.runs if not r.good)
        if bad.timed_out:
            why = "timeout"
        elif bad.exit_code != 0:
            why = f"exit {bad.exit_code}"
        else:
            why = f"{bad.problems} bad files"
        return f"**{good}/{len(self.runs)} ok** ({why})"


@dataclass
class KillResult:
    profile: str
    files: int
    total_bytes: int
    connections: int  # requests cut short by the SIGKILL (in flight at that moment)
    flush_window: str
    full_wall: float
    served_full: int  # bytes served to the uninterrupted run (its own overhead when > total)
    kill_after: float
    killed_exit: int
    served_killed: int
    served_rerun: int
    rerun_exit: int
    rerun_problems: int
    finished_rerun_data_requests: int
    finished_rerun_bytes: int
    finished_rerun_exit: int
    note: str = ""
    #: most requests in flight at once in the killed run: the connections at work. A kill can
    #: land while some are between two requests, which "connections" (cut) does not count
    in_flight: int = 0

    @property
    def refetched(self) -> int:
        return max(0, self.served_killed + self.served_rerun - self.total_bytes)


def _fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{share:.0%}"


def _ceiling(ref: Row, peer: Row) -> list[str]:
    """The fastest any tool could be that does ``peer``'s work and also hashes every byte by
    sha256, as bulkflex does, on this machine: the peer's busy CPU seconds plus the set's
    sha256 CPU seconds, spread perfectly over every core, and never faster than the peer.
    Nothing else bulkflex does (fsync, state, Python) is counted, so the bound is generous;
    a ratio to the peer above it is out of reach for any implementation."""
    run, ref_speed, peer_speed = peer.median_run(), ref.mib_s(), peer.mib_s()
    if run is None or run.machine_busy is None or ref.hash_cpu is None:
        return []
    if ref_speed is None or peer_speed is None:
        return []
    busy, peer_wall = run.machine_busy, run.wall
    least = max(peer_wall, (busy + ref.hash_cpu) / ref.cpus)
    ceiling = peer_wall / least
    reached = ref_speed / peer_speed
    return [
        "",
        f"Ceiling for any tool that also checks every byte by sha256, against {peer.label}: "
        f"its median run kept the machine busy {busy:.2f} CPU s of {peer_wall * ref.cpus:.2f} "
        f"({_percent(busy / (peer_wall * ref.cpus))}); sha256 over the set takes "
        f"{ref.hash_cpu:.2f} CPU s (measured in this run); that work added and nothing else, "
        f"spread perfectly over {ref.cpus} cores, takes at least {least:.2f} s: at most "
        f"**{ceiling:.2f}×** the peer's speed. bulkflex: {reached:.2f}×, "
        f"{reached / ceiling:.0%} of that ceiling.",
    ]


def _size(n: int) -> str:
    if n >= GiB:
        return f"{n / GiB:.2f} GiB"
    if n >= MiB:
        return f"{n / MiB:.0f} MiB"
    return f"{n / 1024:.0f} KiB"


def _group_title(row: Row) -> str:
    each = row.total_bytes // max(row.files, 1)
    return (
        f"{row.workload}: {row.files:,} × {_size(each)} ({_size(row.total_bytes)}), {row.profile}"
    )


def render(rows: list[Row], kills: list[KillResult], header: list[str], notes: list[str]) -> str:
    out: list[str] = ["# bulkflex benchmark", ""]
    out += [f"- {h}" for h in header]
    out.append("")
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.workload, row.profile), []).append(row)
    for group in groups.values():
        out += [f"## {_group_title(group[0])}", ""]
        ref = next((r for r in group if r.tool == "bulkflex"), None)
        ref_speed = ref.mib_s() if ref else None
        ref_cpu = ref.cpu_per_gib() if ref else None
        out.append(
            "| tool | MiB/s | CPU s/GiB | machine busy | peak RSS MiB | bulkflex speed × "
            "| bulkflex CPU × | requests | served MiB | in flight | conns | runs |"
        )
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        ordered = sorted(group, key=lambda r: -(r.mib_s() or -1.0))
        for row in ordered:
            good = row.good_runs() or row.runs
            reqs = statistics.median(r.requests for r in good) if good else None
            served = statistics.median(r.served_bytes / MiB for r in good) if good else None
            flight = max((r.peak_in_flight for r in good), default=None)
            conns = statistics.median(r.connections for r in good) if good else None
            is_ref = row.tool.startswith("bulkflex")
            name = f"**{row.label}**" if row.tool.startswith("bulkflex") else row.label
            out.append(
                f"| {name} | {_fmt(row.mib_s())} | {_fmt(row.cpu_per_gib(), 2)} "
                f"| {_percent(row.machine_share())} | {_fmt(row.rss_mib(), 0)} "
                f"| {'' if is_ref else _ratio(ref_speed, row.mib_s())} "
                f"| {'' if is_ref else _ratio(ref_cpu, row.cpu_per_gib())} "
                f"| {_fmt(reqs, 0)} | {_fmt(served, 0)} | {_fmt(flight, 0)} | {_fmt(conns, 0)} "
                f"| {row.status()} |"
            )
        measured = [r for r in ordered if not r.tool.startswith("bulkflex") and r.mib_s()]
        peers = [r for r in measured if CHECKED_AFTER not in r.tool]
        for against, candidates in (
            ("best peer", peers),
            (
                "best row with a sha256 pass after the download",
                [r for r in measured if r.tool.endswith(CHECKED_AFTER)],
            ),
            (
                "best row with a sha256 pass and a sync after the download "
                "(bulkflex's guarantee: every byte verified and on disk)",
                [r for r in measured if r.tool.endswith(SYNCED_AFTER)],
            ),
        ):
            if ref_speed is not None and candidates:
                best = candidates[0]
                out += [
                    "",
                    f"bulkflex / {against} ({best.label}, {_fmt(best.mib_s())} MiB/s): "
                    f"**{_ratio(ref_speed, best.mib_s())}**",
                ]
        if ref is not None and peers:
            out += _ceiling(ref, peers[0])
        variants = [r for r in ordered if r.tool.startswith("bulkflex-") and r.mib_s()]
        for variant in variants if peers else []:
            best = peers[0]
            out += [
                "",
                f"{variant.label} / best peer ({best.label}): "
                f"**{_ratio(variant.mib_s(), best.mib_s())}**",
            ]
        out.append("")
    if kills:
        out += ["## kill in the middle, then rerun (bulkflex)", ""]
        out.append(
            "| profile | files | uninterrupted s | uninterrupted served MiB | SIGKILL at s "
            "| served before kill MiB "
            "| served by rerun MiB | re-fetched MiB | requests cut by the kill "
            "| re-fetched per cut request MiB | peak in flight "
            "| re-fetched per request in flight MiB "
            "| flush window | rerun | rerun of finished job |"
        )
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
        for k in kills:
            rerun = (
                "verified"
                if k.rerun_exit == 0 and k.rerun_problems == 0
                else (f"**exit {k.rerun_exit}, {k.rerun_problems} bad files**")
            )
            finished = (
                f"exit {k.finished_rerun_exit}, {k.finished_rerun_data_requests} data requests, "
                f"{k.finished_rerun_bytes / MiB:.1f} MiB"
            )
            out.append(
                f"| {k.profile} | {k.files} × {_size(k.total_bytes // max(k.files, 1))} "
                f"| {k.full_wall:.2f} | {k.served_full / MiB:.1f} | {k.kill_after:.2f} "
                f"| {k.served_killed / MiB:.1f} "
                f"| {k.served_rerun / MiB:.1f} | {k.refetched / MiB:.1f} | {k.connections} "
                f"| {k.refetched / MiB / max(k.connections, 1):.2f} | {k.in_flight} "
                f"| {k.refetched / MiB / max(k.in_flight, 1):.2f} | {k.flush_window} "
                f"| {rerun} | {finished} |"
            )
        out.append("")
        out += [f"- {k.profile}: {k.note}" for k in kills if k.note]
        out.append("")
        out.append(
            "Re-fetched = bytes the server sent in the killed run + in the rerun − the total. "
            "It includes data that was in socket buffers when the process died (sent by the "
            "server, never read by bulkflex), up to a few MiB per connection on loopback, and "
            "any overhead the engine has without a kill (uninterrupted served − total)."
        )
        out.append("")
    failures = [
        (row, r) for row in rows for r in row.runs if not r.good and (r.first_problem or r.log_tail)
    ]
    if failures:
        out += ["## failed runs", ""]
        seen: set[tuple[str, str, str]] = set()
        for row, r in failures:
            key = (row.workload, row.profile, row.tool)
            if key in seen:
                continue
            seen.add(key)
            detail = r.first_problem or r.log_tail.strip().splitlines()[-1][:300]
            out.append(f"- {row.workload}/{row.profile} {row.label}: {detail}")
        out.append("")
    if notes:
        out += ["## notes, missing and skipped", ""]
        out += [f"- {n}" for n in notes]
        out.append("")
    return "\n".join(out)


def write_json(path: Path, rows: list[Row], kills: list[KillResult], header: list[str]) -> None:
    data: dict[str, Any] = {
        "header": header,
        "rows": [asdict(r) for r in rows],
        "kills": [asdict(k) for k in kills],
    }
    path.write_text(json.dumps(data, indent=1))


def write_chart(path: Path, rows: list[Row]) -> str | None:
    """Draw MiB/s per tool, one panel per workload x profile; returns why not, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no chart (pip install matplotlib)"
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.workload, row.profile), []).append(row)
    if not groups:
        return "no results to chart"
    n = len(groups)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.2 + 0.42 * 8 * n), squeeze=False)
    for ax, group in zip(axes[:, 0], groups.values(), strict=True):
        ordered = sorted(group, key=lambda r: r.mib_s() or 0.0)
        labels = [r.label for r in ordered]
        values = [r.mib_s() or 0.0 for r in ordered]
        colors = ["#d9480f" if r.tool.startswith("bulkflex") else "#4c6ef5" for r in ordered]
        bars = ax.barh(labels, values, color=colors)
        for bar, row in zip(bars, ordered, strict=True):
            text = f" {row.mib_s():.0f}" if row.mib_s() is not None else " failed"
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, text, va="center")
        ax.set_title(_group_title(group[0]), fontsize=10)
        ax.set_xlabel("MiB/s (median, verified runs)")
        ax.margins(x=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
