# The downloaders `bulkflex bench` compares, and how each is started on a file set: bulkflex
# itself (a child `python -m bulkflex download`), curl --parallel, aria2c -x16, wget, and the plain
# requests loop. The commands match benchmarks/_peers.py so a quick look and the full harness
# measure the same thing; a tool that is not installed is reported as missing, never an error.

from __future__ import annotations

import compileall
import importlib.util
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import bulkflex

__all__ = ["CONNECTIONS", "TOOLS", "BenchFile", "RunContext", "Tool", "child_env", "tool_by_key"]

CONNECTIONS = 16


@dataclass(frozen=True, slots=True)
class BenchFile:
    """One served file: its relative ``path`` under a destination, ``url``, ``size`` and hex
    ``sha256``."""

    path: str
    url: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class RunContext:
    """What a command builder gets: the files, bulkflex's manifest of them, the empty
    destination of this run and a private ``work`` folder for the tool's input files."""

    files: Sequence[BenchFile]
    manifest: Path
    dest: Path
    work: Path


@dataclass(frozen=True, slots=True)
class Tool:
    """A compared downloader.

    Attributes:
        key: its name for ``--tools``.
        label: its name in the report.
        build: the command of one run (may write input files into ``ctx.work``).
        missing: None when usable here, else why not (e.g. "curl not installed").
    """

    key: str
    label: str
    build: Callable[[RunContext], list[str]]
    missing: Callable[[], str | None]


def child_env() -> dict[str, str]:
    """The environment of every run: no proxy (loopback only), bulkflex importable even from a
    source checkout, and its bytecode used as an installed package's would be (see
    :func:`compile_bulkflex`)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    source_root = str(Path(bulkflex.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH")) if p)
    return env


def compile_bulkflex() -> None:
    """Write bulkflex's bytecode before the first timed run, as ``pip install`` does.

    The peers written in Python (the requests loop, stac-asset) start from their installed
    bytecode; bulkflex run from a checkout under ``PYTHONDONTWRITEBYTECODE`` would compile its
    modules again at every start (about 50 ms on 2 cores, counted in its wall time). Files go to
    ``__pycache__`` folders (or ``PYTHONPYCACHEPREFIX``), as any import would put them.
    """
    package = Path(bulkflex.__file__).resolve().parent
    compileall.compile_dir(package, quiet=2)


def _on_path(exe: str) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if shutil.which(exe) else f"{exe} not installed"

    return check


def _bulkflex(ctx: RunContext) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bulkflex",
        "download",
        str(ctx.manifest),
        "-d",
        str(ctx.dest),
        "--no-progress",
        "--connections",
        str(CONNECTIONS),
        "--per-host",
        str(CONNECTIONS),
    ]


def _curl(ctx: RunContext) -> list[str]:
    config = ctx.work / "curl.cfg"
    config.write_text(
        "".join(f'url = "{f.url}"\noutput = "{ctx.dest / f.path}"\n' for f in ctx.files),
        encoding="utf-8",
    )
    return [
        "curl",
        "-q",  # no .curlrc
        "--parallel",
        "--parallel-max",
        str(CONNECTIONS),
        "--create-dirs",
        "--fail",
        "--silent",
        "--show-error",
        "-K",
        str(config),
    ]


def _aria2c(ctx: RunContext) -> list[str]:
    listing = ctx.work / "aria2.txt"
    with open(listing, "w", encoding="utf-8") as out:
        for f in ctx.files:
            target = ctx.dest / f.path
            out.write(f"{f.url}\n  dir={target.parent}\n  out={target.name}\n")
    return [
        "aria2c",
        "-i",
        str(listing),
        "-x16",
        "-s16",
        "-k1M",
        "-j16",
        "--quiet=true",
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
    ]


def _wget(ctx: RunContext) -> list[str]:
    # The bench's files are flat (no folders), so -nd keeps wget's names equal to theirs.
    listing = ctx.work / "wget.txt"
    listing.write_text("".join(f"{f.url}\n" for f in ctx.files), encoding="utf-8")
    return ["wget", "--no-config", "-q", "-nd", "-i", str(listing), "-P", str(ctx.dest)]


def _requests_loop(ctx: RunContext) -> list[str]:
    listing = ctx.work / "requests.tsv"
    listing.write_text("".join(f"{f.url}\t{f.path}\n" for f in ctx.files), encoding="utf-8")
    script = Path(__file__).with_name("_requests_loop.py")
    return [sys.executable, str(script), str(listing), str(ctx.dest)]


def _requests_missing() -> str | None:
    return None if importlib.util.find_spec("requests") else "requests not importable"


TOOLS: tuple[Tool, ...] = (
    Tool("bulkflex", "bulkflex", _bulkflex, lambda: None),
    Tool("curl", "curl --parallel 16", _curl, _on_path("curl")),
    Tool("aria2c", "aria2c -x16 -s16 -k1M -j16", _aria2c, _on_path("aria2c")),
    Tool("wget", "wget -i", _wget, _on_path("wget")),
    Tool("requests", "requests loop", _requests_loop, _requests_missing),
)


def tool_by_key(key: str) -> Tool:
    """The tool named ``key``; KeyError for an unknown name."""
    for tool in TOOLS:
        if tool.key == key:
            return tool
    raise KeyError(key)
