# The quick comparison behind `bulkflex bench`: serve N synthetic files of one size from the
# embedded server on 127.0.0.1 (in a thread of this process, always stopped), write a bulkflex
# manifest with their sha256, run every chosen tool as a child process into a fresh folder,
# measure it (measure.py), check every output file by size and sha256, and collect the results.
# Nothing here prints; the CLI renders the report (report.py) and drives the progress bar.

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bulkflex.bench.measure import Measured, gnu_time, run_measured
from bulkflex.bench.tools import TOOLS, BenchFile, RunContext, Tool, child_env, compile_bulkflex
from bulkflex.manifest import ManifestEntry, write_manifest

if TYPE_CHECKING:  # aiohttp.web loads only when a bench runs
    from bulkflex.demo import DemoServer

__all__ = [
    "WAN_DELAY_S",
    "WAN_RATE",
    "WORKLOADS",
    "BenchOptions",
    "BenchPlan",
    "BenchReport",
    "ToolResult",
    "ToolRun",
    "plan_bench",
    "run_bench",
    "verify",
]

log = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# name -> (files, bytes each)
WORKLOADS: dict[str, tuple[int, int]] = {
    "small": (200, 256 * KiB),
    "large": (2, 64 * MiB),
    "tiny": (1000, 16 * KiB),
}
# The WAN-like profile of benchmarks/run.py: each response capped, a delay before each one.
WAN_RATE = 25 * MiB
WAN_DELAY_S = 0.02


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What to run.

    Attributes:
        workload: the set's label in the report: a :data:`WORKLOADS` name, or ``custom``.
        files, size: the file set; ``size`` may be 0 (empty files).
        tools: keys of :data:`bulkflex.bench.tools.TOOLS`, in report order; duplicates ignored.
        repeat: runs per tool (the report shows medians); at least 1.
        wan: cap each response at :data:`WAN_RATE` and delay it by :data:`WAN_DELAY_S`.
        keep: keep the manifest, inputs, logs and downloaded files under this folder (created
            if needed); None = a temporary folder, removed at the end.
        timeout: seconds per run before it is killed (and counted as failed).
    """

    workload: str
    files: int
    size: int
    tools: tuple[str, ...]
    repeat: int = 1
    wan: bool = False
    keep: Path | None = None
    timeout: float = 600.0


@dataclass(frozen=True, slots=True)
class ToolRun:
    """One verified-or-not run. ``problems``: missing / wrong-size / wrong-sha256 files (the
    first few, as "PATH: why"); ``bad_files`` counts them all."""

    measured: Measured
    bad_files: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Exit status 0, no timeout, every file present with the right size and sha256."""
        m = self.measured
        return m.exit_code == 0 and not m.timed_out and self.bad_files == 0


@dataclass(slots=True)
class ToolResult:
    """Every run of one tool; medians over the good runs only (None if there is none)."""

    tool: Tool
    runs: list[ToolRun] = field(default_factory=list)

    @property
    def good(self) -> list[ToolRun]:
        return [r for r in self.runs if r.ok]

    def median_wall(self) -> float | None:
        good = self.good
        return statistics.median(r.measured.wall for r in good) if good else None

    def median_cpu(self) -> float | None:
        good = self.good
        return statistics.median(r.measured.cpu for r in good) if good else None

    def median_rss_kib(self) -> float | None:
        good = self.good
        return statistics.median(r.measured.peak_rss_kib for r in good) if good else None


@dataclass(frozen=True, slots=True)
class BenchPlan:
    """The tools that will run and those that will not (label, why)."""

    options: BenchOptions
    tools: tuple[Tool, ...]
    missing: tuple[tuple[str, str], ...]

    @property
    def total_runs(self) -> int:
        return len(self.tools) * self.options.repeat


@dataclass(slots=True)
class BenchReport:
    """The outcome of :func:`run_bench`."""

    plan: BenchPlan
    total_bytes: int
    results: list[ToolResult]
    rss_source: str = "none"
    kept: Path | None = None

    @property
    def ok(self) -> bool:
        """At least one run, and every run verified."""
        runs = [run for result in self.results for run in result.runs]
        return bool(runs) and all(run.ok for run in runs)


def plan_bench(options: BenchOptions) -> BenchPlan:
    """Split ``options.tools`` into available tools and missing ones (KeyError: unknown key)."""
    known = {tool.key: tool for tool in TOOLS}
    chosen: list[Tool] = []
    missing: list[tuple[str, str]] = []
    for key in dict.fromkeys(options.tools):
        tool = known[key]
        why = tool.missing()
        if why is None:
            chosen.append(tool)
        else:
            missing.append((tool.label, why))
    return BenchPlan(options, tuple(chosen), tuple(missing))


def verify(dest: Path, files: Sequence[BenchFile], *, keep_first: int = 5) -> tuple[int, list[str]]:
    """Check every file under ``dest`` by size, then sha256; (bad count, first problems).

    Extra files in ``dest`` are not an error (tools may leave control files behind).
    """
    bad = 0
    problems: list[str] = []
    for f in files:
        path = dest / f.path
        why = ""
        try:
            actual = path.stat().st_size
        except OSError:
            why = "missing"
        else:
            if actual != f.size:
                why = f"{actual} bytes, expected {f.size}"
            else:
                hasher = hashlib.sha256()
                with open(path, "rb") as data:
                    while chunk := data.read(MiB):
                        hasher.update(chunk)
                if hasher.hexdigest() != f.sha256:
                    why = "sha256 mismatch"
        if why:
            bad += 1
            if len(problems) < keep_first:
                problems.append(f"{f.path}: {why}")
    return bad, problems


def _serve_and_list(options: BenchOptions) -> tuple[DemoServer, list[BenchFile]]:
    """Start the embedded server with the flat file set; (server, its files with sha256)."""
    from bulkflex.demo import DemoConfig, DemoServer
    from bulkflex.demo.app import flat_spec

    config = DemoConfig(
        flat_files=options.files,
        flat_size=options.size,
        flat_rate=float(WAN_RATE) if options.wan else None,
        flat_delay_s=WAN_DELAY_S if options.wan else 0.0,
        items_per_collection=1,  # the catalog is not used: keep its start-up small
    )
    server = DemoServer(config).start()
    try:
        files = []
        for index in range(options.files):
            spec = flat_spec(index, options.size)
            checksum = server.content.checksum(spec)
            files.append(
                BenchFile(
                    path=spec.path.rsplit("/", 1)[1],
                    url=server.url + spec.path,
                    size=options.size,
                    sha256=checksum.removeprefix("1220"),
                )
            )
    except BaseException:
        server.stop()
        raise
    return server, files


def run_bench(
    plan: BenchPlan,
    *,
    on_start: Callable[[Tool, int], None] | None = None,
    on_done: Callable[[Tool, int, ToolRun], None] | None = None,
) -> BenchReport:
    """Run every tool of ``plan`` ``repeat`` times (rotating the order between repeats).

    ``on_start(tool, repeat_index)`` is called before a run and ``on_done(tool, repeat_index,
    run)`` after it is verified. The server is stopped and (without ``keep``) the scratch folder
    removed on every way out, Ctrl-C included; the running tool's process group is killed.
    """
    options = plan.options
    if options.repeat < 1:
        raise ValueError("repeat must be at least 1")
    if options.keep is not None:
        options.keep.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="bench-", dir=options.keep))
    else:
        root = Path(tempfile.mkdtemp(prefix="bulkflex-bench-"))
    results = [ToolResult(tool) for tool in plan.tools]
    kept = root if options.keep is not None else None
    report = BenchReport(plan, options.files * options.size, results, kept=kept)
    time_exe = gnu_time()
    env = child_env()
    compile_bulkflex()
    server: DemoServer | None = None
    try:
        server, files = _serve_and_list(options)
        manifest = root / "manifest.jsonl"
        write_manifest(
            manifest,
            (
                ManifestEntry(url=f.url, path=f.path, size=f.size, checksum="1220" + f.sha256)
                for f in files
            ),
        )
        for rep in range(options.repeat):
            shift = rep % max(len(results), 1)
            for result in results[shift:] + results[:shift]:
                tool = result.tool
                if on_start is not None:
                    on_start(tool, rep)
                run_dir = root / f"{tool.key}-{rep + 1}"
                dest, work = run_dir / "dest", run_dir / "work"
                dest.mkdir(parents=True)
                work.mkdir()
                cmd = tool.build(RunContext(files, manifest, dest, work))
                os.sync()  # no dirty pages of the previous run charged to this one
                measured = run_measured(
                    cmd,
                    log_path=run_dir / "output.log",
                    timeout=options.timeout,
                    cwd=work,
                    env=env,
                    time_exe=time_exe,
                )
                report.rss_source = measured.rss_source
                bad, problems = verify(dest, files)
                run = ToolRun(measured, bad, tuple(problems))
                result.runs.append(run)
                log.info("%s run %d: %.2f s, ok=%s", tool.key, rep + 1, measured.wall, run.ok)
                if options.keep is None:
                    shutil.rmtree(dest, ignore_errors=True)
                if on_done is not None:
                    on_done(tool, rep, run)
    finally:
        if server is not None:
            server.stop()
        if options.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return report
