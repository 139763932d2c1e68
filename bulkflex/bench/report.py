# The Markdown report of `bulkflex bench`: a header that says what was measured and against
# what (the embedded Python server, not nginx), one table row per tool, the missing tools and
# the failed runs. Returns text; the CLI prints it.

from __future__ import annotations

from bulkflex.bench.runner import WAN_DELAY_S, WAN_RATE, BenchReport, ToolResult

__all__ = ["render"]

_MiB = 1024 * 1024
_GiB = 1024 * _MiB

_RSS_SOURCES = {
    "gnu-time": "GNU time %M",
    "proc": "VmHWM of /proc/PID/status, polled",
    "wait4": "ru_maxrss of the child, an upper bound (includes this process's size at spawn)",
    "none": "no run",
}


def _size(n: int) -> str:
    for unit, scale in (("GiB", _GiB), ("MiB", _MiB), ("KiB", 1024)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def _cell(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _speed(result: ToolResult, total: int) -> float | None:
    wall = result.median_wall()
    return None if wall is None or wall <= 0 else total / _MiB / wall


def render(report: BenchReport) -> str:
    """The whole report as Markdown (ends with a newline).

    Columns: MiB/s = bytes of the set / median wall clock (start-up included); CPU s/GiB =
    median CPU seconds of the tool's process tree per GiB; peak RSS = median of the largest
    resident set; bulkflex × = bulkflex's MiB/s / the tool's (above 1: bulkflex faster). A tool
    with no verified run shows dashes; bulkflex × is a dash without a verified bulkflex run.
    """
    plan = report.plan
    options = plan.options
    total = report.total_bytes
    profile = (
        f"WAN-like (each response capped at {WAN_RATE // _MiB} MiB/s, "
        f"{WAN_DELAY_S * 1000:.0f} ms before it starts)"
        if options.wan
        else "unthrottled"
    )
    runs = "1 run per tool" if options.repeat == 1 else f"median of {options.repeat} runs per tool"
    lines = [
        f"## bulkflex bench: {options.workload}, {options.files} × {_size(options.size)} "
        f"({_size(total)}), {profile}, {runs}",
        "",
        "> Quick look only: every tool downloads from bulkflex's embedded **Python** (aiohttp) "
        "server on 127.0.0.1, running in this process on the same CPU cores, which may itself "
        "be the bottleneck. The real comparison is `python benchmarks/run.py` (nginx on "
        "loopback, more peers, bigger sets; see benchmarks/README.md).",
        "",
        "| tool | verified runs | MiB/s | CPU s/GiB | peak RSS MiB | bulkflex × |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ours = next((r for r in report.results if r.tool.key == "bulkflex"), None)
    ours_speed = _speed(ours, total) if ours is not None else None
    for result in report.results:
        speed = _speed(result, total)
        cpu = result.median_cpu()
        cpu_per_gib = None if cpu is None or total == 0 else cpu / (total / _GiB)
        rss = result.median_rss_kib()
        ratio = None if ours_speed is None or not speed else ours_speed / speed
        lines.append(
            f"| {result.tool.label} | {len(result.good)}/{len(result.runs)} "
            f"| {_cell(speed, 1)} | {_cell(cpu_per_gib, 2)} "
            f"| {_cell(None if rss is None else rss / 1024, 0)} | {_cell(ratio, 2)} |"
        )
    lines.append("")
    lines.append(
        "Every output file checked by size and sha256. bulkflex also verifies and fsyncs each "
        "file itself; the peers do neither. Start-up time is included: a Python tool pays "
        "a few tenths of a second for it, which dominates sets that take about a second."
    )
    lines.append(f"Peak RSS from: {_RSS_SOURCES.get(report.rss_source, report.rss_source)}.")
    if plan.missing:
        lines.append("")
        lines.append(
            "Missing (not run): " + "; ".join(f"{label} ({why})" for label, why in plan.missing)
        )
    if not plan.tools:
        lines.append("")
        lines.append("No tool ran.")
    failed = [
        (result.tool.label, index, run)
        for result in report.results
        for index, run in enumerate(result.runs, 1)
        if not run.ok
    ]
    if failed:
        lines.append("")
        lines.append("Failed runs:")
        for label, index, run in failed:
            m = run.measured
            state = "timed out" if m.timed_out else f"exit {m.exit_code}"
            lines.append(f"- {label} run {index}: {state}, {run.bad_files} bad files")
            lines.extend(f"  - {problem}" for problem in run.problems)
            tail = m.log_tail.strip().splitlines()[-3:]
            lines.extend(f"  - output: {line[:200]}" for line in tail)
    if report.kept is not None:
        lines.append("")
        lines.append(f"Manifest, inputs, logs and downloads kept in {report.kept}")
    return "\n".join(lines) + "\n"
