# The tools compared in a benchmark run, and how each is told to fetch a file set into DEST so
# that DEST/<relative path> holds each file (then checked by sha256 against the source).
#
# Every tool gets the same URLs, the same empty destination, and its own input file written
# before the clock starts. Connection counts follow the issue: 16 where the tool has a knob.

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _report import CHECKED_AFTER, SYNCED_AFTER
from _workloads import FileSet

import bulkflex.bench

__all__ = ["PEERS", "Context", "Peer", "bulkflex_available", "clean_env"]

CONNECTIONS = 16


@dataclass(frozen=True)
class Context:
    files: FileSet
    base_url: str  # server root, e.g. http://127.0.0.1:PORT
    dest: Path  # empty destination folder
    work: Path  # a private folder for input files

    def url(self, rel: str) -> str:
        return f"{self.base_url}/{self.files.name}/{rel}"


@dataclass(frozen=True)
class Peer:
    key: str  # for --tools
    label: str  # in the report
    build: Callable[[Context], list[str]]
    available: Callable[[], str | None]  # None when usable, else why not
    default: bool = True  # part of a run without --tools
    #: the workloads it runs on (None: all)
    workloads: frozenset[str] | None = None
    #: the server profiles it runs on (None: all)
    profiles: frozenset[str] | None = None


def clean_env() -> dict[str, str]:
    """The environment for every tool: no proxy (loopback only), same locale, and Python's
    bytecode used as installed (bulkflex's is written first: ``compile_bulkflex``)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _which(name: str) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if shutil.which(name) else f"{name} not installed"

    return check


def _venv_tool(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    return shutil.which(name)


# -- command builders ---------------------------------------------------------------------------


def _requests_loop(ctx: Context) -> list[str]:
    listing = ctx.work / "requests.tsv"
    listing.write_text("".join(f"{ctx.url(f.rel)}\t{f.rel}\n" for f in ctx.files.files))
    # the same script `bulkflex bench` runs, so both measure the identical loop
    script = Path(bulkflex.bench.__file__).with_name("_requests_loop.py")
    return [sys.executable, str(script), str(listing), str(ctx.dest)]


def _aria2_input(ctx: Context) -> Path:
    path = ctx.work / "aria2.txt"
    with open(path, "w") as f:
        for spec in ctx.files.files:
            folder, _, name = spec.rel.rpartition("/")
            f.write(f"{ctx.url(spec.rel)}\n  dir={ctx.dest / folder}\n  out={name}\n")
    return path


_ARIA2_COMMON = ["--quiet=true", "--allow-overwrite=true", "--auto-file-renaming=false"]


def _aria2c_tuned(ctx: Context) -> list[str]:
    return [
        "aria2c",
        "-i",
        str(_aria2_input(ctx)),
        "-x16",
        "-s16",
        "-k1M",
        "-j16",
        *_ARIA2_COMMON,
    ]


def _aria2c_default(ctx: Context) -> list[str]:
    return ["aria2c", "-i", str(_aria2_input(ctx)), *_ARIA2_COMMON]


def _curl(ctx: Context) -> list[str]:
    config = ctx.work / "curl.cfg"
    with open(config, "w") as f:
        for spec in ctx.files.files:
            f.write(f'url = "{ctx.url(spec.rel)}"\noutput = "{ctx.dest / spec.rel}"\n')
    return [
        "curl",
        "-q",  # ignore any .curlrc
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


def _curl_immediate(ctx: Context) -> list[str]:
    cmd = _curl(ctx)
    cmd.insert(cmd.index("--parallel") + 1, "--parallel-immediate")
    return cmd


def _rclone(ctx: Context) -> list[str]:
    config = ctx.work / "rclone.conf"
    config.write_text("")
    return [
        "rclone",
        "copy",
        "--config",
        str(config),
        "--http-url",
        f"{ctx.base_url}/{ctx.files.name}/",
        ":http:",
        str(ctx.dest),
        "--transfers",
        str(CONNECTIONS),
        "--multi-thread-streams",
        "8",
        "-q",
    ]


def _wget(ctx: Context) -> list[str]:
    listing = ctx.work / "wget.txt"
    listing.write_text("".join(f"{ctx.url(f.rel)}\n" for f in ctx.files.files))
    return [
        "wget",
        "--no-config",
        "-q",
        "-i",
        str(listing),
        "-x",  # keep the folder structure
        "-nH",  # without the host:port folder
        "--cut-dirs=1",  # nor the file set's folder
        "-P",
        str(ctx.dest),
    ]


def _stac_asset(ctx: Context) -> list[str]:
    items: dict[str, dict[str, object]] = {}
    for spec in ctx.files.files:
        folder, _, name = spec.rel.rpartition("/")
        item = items.setdefault(
            folder,
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "id": folder,
                "geometry": None,
                "properties": {"datetime": "2024-01-01T00:00:00Z"},
                "links": [],
                "assets": {},
            },
        )
        assets = item["assets"]
        assert isinstance(assets, dict)
        assets[name.removesuffix(".bin")] = {
            "href": ctx.url(spec.rel),
            "type": "application/octet-stream",
            "file:size": spec.size,
        }
    path = ctx.work / "item-collection.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": list(items.values())}))
    exe = _venv_tool("stac-asset") or "stac-asset"
    # Default path template "${id}": DEST/<item id>/<file name>, the same layout as the source.
    return [
        exe,
        "download",
        "--quiet",
        "--max-concurrent-downloads",
        str(CONNECTIONS),
        str(path),
        str(ctx.dest),
    ]


def _stac_asset_available() -> str | None:
    exe = _venv_tool("stac-asset")
    if exe is None:
        return "stac-asset not installed"
    probe = subprocess.run([exe, "download", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        return "stac-asset CLI does not start: " + (probe.stderr.strip().splitlines() or ["?"])[-1]
    return None


def _then_check(
    build: Callable[[Context], list[str]], *, sync: bool = False
) -> Callable[[Context], list[str]]:
    """``build``'s command, then the checksum pass a user would run after a tool that does not
    verify (``_sha256_check.py``: hashlib, one thread a core), all on the clock. With ``sync``,
    then ``sync -f DEST`` (one syncfs of the destination's file system): every byte verified
    and on disk, the guarantee bulkflex gives when it exits."""

    def command(ctx: Context) -> list[str]:
        sums = ctx.work / "sha256sums.txt"
        with open(sums, "w") as f:
            for spec in ctx.files.files:
                f.write(f"{spec.sha256}  {spec.rel}\n")
        checker = Path(__file__).resolve().parent / "_sha256_check.py"
        steps = [build(ctx), [sys.executable, str(checker), str(sums), str(ctx.dest)]]
        if sync:
            steps.append(["sync", "-f", str(ctx.dest)])
        *first, last = (shlex.join(step) for step in steps)
        return ["sh", "-c", " && ".join([*first, f"exec {last}"])]

    return command


def _checked(name: str, label: str, build: Callable[[Context], list[str]], *, sync: bool) -> Peer:
    """The row for ``name`` (a tool on PATH) followed by :func:`_then_check`. With a sync it runs
    on the unthrottled profile only: there the disk and the CPU are the limits; on the WAN-like
    rows the network is, whatever a tool does after it."""
    return Peer(
        name + (SYNCED_AFTER if sync else CHECKED_AFTER),
        f"{label}, then sha256" + (" and sync" if sync else ""),
        _then_check(build, sync=sync),
        _which(name),
        workloads=frozenset({"small", "large"}),
        profiles=frozenset({"unthrottled"}) if sync else None,
    )


def bulkflex_manifest(ctx: Context, *, checksums: bool = True) -> Path:
    """The manifest bulkflex is given: every file's URL, path and size, and its sha2-256 as a
    multihash unless ``checksums`` is False."""
    path = ctx.work / "manifest.jsonl"
    with open(path, "w") as f:
        for spec in ctx.files.files:
            record: dict[str, str | int] = {
                "url": ctx.url(spec.rel),
                "path": spec.rel,
                "size": spec.size,
            }
            if checksums:
                record["checksum"] = "1220" + spec.sha256
            f.write(json.dumps(record) + "\n")
    return path


def _bulkflex(
    ctx: Context, connections: int = CONNECTIONS, per_file: int = 4, *, checksums: bool = True
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bulkflex",
        "download",
        str(bulkflex_manifest(ctx, checksums=checksums)),
        "-d",
        str(ctx.dest),
        "--no-progress",
        "--connections",
        str(connections),
        "--per-host",
        str(connections),
        "--connections-per-file",
        str(per_file),
    ]


def _bulkflex_one_process(ctx: Context) -> list[str]:
    """bulkflex held to one process (its default on many files is one worker per core)."""
    return [*_bulkflex(ctx), "--processes", "1"]


def _bulkflex_sizes_only(ctx: Context) -> list[str]:
    """bulkflex given no checksums: it checks sizes and fsyncs as always, and hashes nothing,
    like the peers. The difference to the ``bulkflex`` row is what sha256 verification costs."""
    return _bulkflex(ctx, checksums=False)


def _bulkflex_wide(ctx: Context) -> list[str]:
    """bulkflex with aria2c -x16 -j16's connection budget on 4 large files: 16 per file."""
    return _bulkflex(ctx, connections=64, per_file=16)


def bulkflex_available() -> str | None:
    probe = subprocess.run(
        [sys.executable, "-m", "bulkflex", "download", "--help"],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=Path(__file__).resolve().parent.parent,
    )
    if probe.returncode != 0:
        lines = (probe.stderr or probe.stdout).strip().splitlines()
        return "`bulkflex download` not available yet: " + (lines[-1] if lines else "?")
    return None


PEERS: tuple[Peer, ...] = (
    Peer("bulkflex", "bulkflex", _bulkflex, bulkflex_available),
    # the same engine given what aria2c -x16 -j16 uses on the large files (64 connections), so
    # the WAN-like large row compares at the same connections per host; not a peer
    Peer(
        "bulkflex-64",
        "bulkflex --connections 64 -x16 (aria2c's budget)",
        _bulkflex_wide,
        bulkflex_available,
        workloads=frozenset({"large"}),
    ),
    # the same engine held to one process (on many files bulkflex runs one worker process a
    # core by default): what the second core buys; not a peer
    Peer(
        "bulkflex-p1",
        "bulkflex --processes 1",
        _bulkflex_one_process,
        bulkflex_available,
        workloads=frozenset({"small", "tiny"}),
    ),
    # the same engine given a manifest without checksums, so that it hashes nothing, like the
    # peers: the difference to the first row is what verifying every byte costs; not a peer
    Peer(
        "bulkflex-sizes",
        "bulkflex, sizes only (no sha256 in the manifest)",
        _bulkflex_sizes_only,
        bulkflex_available,
        workloads=frozenset({"small", "large"}),
    ),
    Peer("aria2c", "aria2c -x16 -s16 -k1M -j16", _aria2c_tuned, _which("aria2c")),
    Peer("aria2c-default", "aria2c (defaults)", _aria2c_default, _which("aria2c")),
    Peer("curl", "curl --parallel 16", _curl, _which("curl")),
    # curl 7.88's --parallel waits to reuse connections; --parallel-immediate opens them at once
    Peer(
        "curl-immediate",
        "curl --parallel-immediate 16",
        _curl_immediate,
        _which("curl"),
        default=False,
    ),
    Peer("rclone", "rclone --transfers 16 --mts 8", _rclone, _which("rclone")),
    # the two fastest peers on the unthrottled rows, followed by a sha256 pass over their files
    # (what a user who wants bulkflex's verification gets from them), and by that pass and a
    # sync (bulkflex's whole guarantee); not peers for "best peer"
    *(
        _checked(name, label, build, sync=sync)
        for sync in (False, True)
        for name, label, build in (
            ("curl", "curl --parallel 16", _curl),
            ("rclone", "rclone", _rclone),
        )
    ),
    Peer("wget", "wget -i", _wget, _which("wget")),
    Peer("stac-asset", "stac-asset (16 concurrent)", _stac_asset, _stac_asset_available),
    Peer("requests", "requests loop", _requests_loop, lambda: None),
)
