#!/usr/bin/env python3
# Peak memory of loading a large manifest into the state database (issue 3: "a 1,000,000-line
# manifest is loaded into the state database with flat memory").
#
# Generates manifests of several sizes (default 10,000 / 100,000 / 1,000,000 lines, MAAP-like
# lines with STAC context and a sha2-256 multihash) in a private temp folder (or in --cache DIR,
# kept and reused), then for each one starts a fresh Python process that does only
#     StateDB(dest).load_manifest(manifest)
# and records its wall time and peak RSS (GNU time %M when installed, else VmHWM or ru_maxrss;
# see bulkflex/bench/measure.py). A "0 lines" row is the same process loading an empty
# manifest: the interpreter + bulkflex + SQLite floor. Flat memory means the peak RSS column
# stays near that floor while the manifest grows 100x.
#
#   python benchmarks/bench_manifest_load.py [--lines 10000,100000,1000000] [--cache DIR]

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peers import clean_env

from bulkflex.bench.measure import gnu_time, run_measured

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MiB = 1024 * 1024

_LOADER = """
import sys
from bulkflex.state import StateDB
db = StateDB(sys.argv[1])
count = db.load_manifest(sys.argv[2])
db.close()
print(count)
"""


def write_manifest(path: Path, lines: int) -> None:
    """A manifest of ``lines`` distinct, valid entries (written once, then reused)."""
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for i in range(lines):
            item = f"FLX_L1C_2026{i // 1000:06d}_{i:08d}"
            digest = hashlib.sha256(item.encode()).hexdigest()
            record = {
                "url": f"https://data.example.org/flex/L1C/{i // 1000:06d}/{item}.nc",
                "path": f"FLEXL1C/{i // 1000:06d}/{item}.nc",
                "size": 5_000_000 + i,
                "checksum": "1220" + digest,
                "collection": "FLEXL1CommissioningProducts10",
                "item": item,
                "asset": "enclosure_nc",
                "type": "application/x-netcdf",
                "roles": ["data"],
            }
            f.write(json.dumps(record, separators=(",", ":")) + "\n")
    tmp.replace(path)


def main() -> int:
    p = argparse.ArgumentParser(description="peak RSS of loading manifests into the state DB")
    p.add_argument("--lines", default="10000,100000,1000000", help="comma-separated sizes")
    p.add_argument("--cache", type=Path, help="keep and reuse the manifests in this folder")
    p.add_argument("--timeout", type=float, default=1800.0)
    args = p.parse_args()
    sizes = [0, *(int(x) for x in args.lines.split(",") if x.strip())]
    env = clean_env()
    env["PYTHONPATH"] = str(REPO) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    rows: list[str] = []
    time_exe = gnu_time()
    scratch = Path(tempfile.mkdtemp(prefix="bulkflex-manifest-bench-"))
    try:
        for n in sizes:
            manifest = (args.cache or scratch) / f"manifest-{n}.jsonl"
            print(f"{n:>9,} lines: generating and loading" if n else "empty manifest", flush=True)
            write_manifest(manifest, n)
            dest = scratch / f"dest-{n}"
            dest.mkdir()
            result = run_measured(
                [sys.executable, "-c", _LOADER, str(dest), str(manifest)],
                log_path=scratch / f"load-{n}.log",
                timeout=args.timeout,
                env=env,
                time_exe=time_exe,
            )
            if result.exit_code != 0:
                print(result.log_tail, file=sys.stderr)
                return 1
            db_bytes = sum(
                f.stat().st_size for f in (dest / ".bulkflex").glob("state.sqlite*") if f.is_file()
            )
            row = (
                f"| {n:,} | {manifest.stat().st_size / MiB:,.1f} | {result.wall:,.1f} "
                f"| {n / result.wall if n else 0:,.0f} | {result.peak_rss_kib / 1024:,.1f} "
                f"| {db_bytes / MiB:,.1f} |"
            )
            print(row, flush=True)
            rows.append(row)
            shutil.rmtree(dest)
        print()
        print(f"peak RSS measured with {result.rss_source}")
        print("| manifest lines | manifest MiB | load s | lines/s | peak RSS MiB | state DB MiB |")
        print("|---:|---:|---:|---:|---:|---:|")
        for row in rows:
            print(row)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
