"""``bulkflex bench``: a quick side-by-side of bulkflex and the installed peers (curl, aria2c,
wget, a requests loop) on N synthetic files served by the embedded server on 127.0.0.1.

::

    from bulkflex.bench import BenchOptions, plan_bench, run_bench, render
    plan = plan_bench(BenchOptions("tiny", files=50, size=16 * 1024, tools=("bulkflex",)))
    print(render(run_bench(plan)))

The embedded server is Python and shares the cores with the tools, so this is a quick look;
``benchmarks/run.py`` (nginx on loopback) is the real comparison.
"""

from bulkflex.bench.report import render
from bulkflex.bench.runner import (
    WORKLOADS,
    BenchOptions,
    BenchPlan,
    BenchReport,
    ToolResult,
    ToolRun,
    plan_bench,
    run_bench,
    verify,
)
from bulkflex.bench.tools import TOOLS, BenchFile, Tool

__all__ = [
    "TOOLS",
    "WORKLOADS",
    "BenchFile",
    "BenchOptions",
    "BenchPlan",
    "BenchReport",
    "Tool",
    "ToolResult",
    "ToolRun",
    "plan_bench",
    "render",
    "run_bench",
    "verify",
]
