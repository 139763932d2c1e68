# Throughput of the Dask path with 1, 2 and 4 worker processes, and its overhead against the
# plain engine, on loopback.
#
# The server runs in its own process and caps every connection's rate (it sleeps between
# chunks), like an archive that throttles each connection. Two questions:
#   1. cluster-wide cap: --per-host 8 for the whole cluster, whatever the workers. The split
#      keeps 8 connections in all, so throughput should stay at about 8 x the rate.
#   2. per-worker connections: 4 per worker (per-host = 4 x workers): does adding worker
#      processes add throughput (until this machine's cores are the limit)?
#   3. overhead: one worker process through Dask against the plain engine in this process, on
#      the capped server (bandwidth-bound) and on an uncapped server with small files
#      (per-file cost bound). Goal: within 10%.
# Cluster start-up is not timed (a cluster is started once and reused), the split is.
#
# Run: .venv/bin/python benchmarks/bench_dask.py [--rate 2M] [--files 32] [--size 1M]
"""Dask scale-out benchmark: prints a Markdown table."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

CHUNK = 64 * 1024


def _serve(port_queue: multiprocessing.Queue[int], rate: float, sizes: list[int]) -> None:
    from aiohttp import web

    blobs = {size: random.Random(size).randbytes(size) for size in set(sizes)}

    async def handle(request: web.Request) -> web.StreamResponse:
        size = int(request.match_info["size"])
        data = blobs[size]
        response = web.StreamResponse(headers={"Content-Length": str(size)})
        await response.prepare(request)
        for start in range(0, size, CHUNK):
            piece = data[start : start + CHUNK]
            await response.write(piece)
            if rate > 0:
                await asyncio.sleep(len(piece) / rate)
        await response.write_eof()
        return response

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{size}/{name}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_queue.put(int(runner.addresses[0][1]))
        await asyncio.Event().wait()

    asyncio.run(main())


class Server:
    """The capped file server in a child process."""

    def __init__(self, rate: float, sizes: list[int]) -> None:
        self.sizes = sizes
        queue: multiprocessing.Queue[int] = multiprocessing.Queue()
        self.process = multiprocessing.Process(
            target=_serve, args=(queue, rate, sizes), daemon=True
        )
        self.process.start()
        self.port = queue.get(timeout=30)

    def manifest(self, folder: Path, count: int, size: int) -> Path:
        digest = hashlib.sha256(random.Random(size).randbytes(size)).hexdigest()
        path = folder / f"manifest-{count}x{size}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for i in range(count):
                record = {
                    "url": f"http://127.0.0.1:{self.port}/{size}/f{i}",
                    "path": f"d{i % 10}/f{i:05d}.bin",
                    "size": size,
                    "checksum": "1220" + digest,
                }
                handle.write(json.dumps(record) + "\n")
        return path

    def close(self) -> None:
        self.process.terminate()
        self.process.join(timeout=10)


def _timed(run: Callable[[Path], object], work: Path, repeats: int) -> float:
    """Best wall time of ``repeats`` runs, each into a fresh destination."""
    times = []
    for _ in range(repeats):
        dest = Path(tempfile.mkdtemp(dir=work))
        started = time.perf_counter()
        summary = run(dest)
        times.append(time.perf_counter() - started)
        if not getattr(summary, "ok", False):
            raise SystemExit(f"a benchmark run did not complete: {summary}")
    return min(times)


def _size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def main() -> None:
    import distributed

    from bulkflex.distributed import connect, download_on_cluster
    from bulkflex.transfer import DownloadOptions, run_download

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=_size, default=_size("2M"), help="bytes/s per connection")
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--size", type=_size, default=_size("1M"))
    parser.add_argument("--small-files", type=int, default=2000)
    parser.add_argument("--small-size", type=_size, default=_size("16K"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rows: list[tuple[str, str, float, float]] = []
    mib = 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as tmp:
        work = Path(tmp)
        capped = Server(args.rate, [args.size])
        free = Server(0, [args.small_size])
        try:
            big = capped.manifest(work, args.files, args.size)
            small = free.manifest(work, args.small_files, args.small_size)
            big_bytes = args.files * args.size
            small_bytes = args.small_files * args.small_size

            def plain(manifest: Path, per_host: int) -> Callable[[Path], object]:
                return lambda dest: run_download(
                    manifest, dest, DownloadOptions(per_host=per_host, connections=per_host)
                )

            def dask(
                client: distributed.Client, manifest: Path, per_host: int
            ) -> Callable[[Path], object]:
                return lambda dest: download_on_cluster(
                    manifest, dest, client, DownloadOptions(per_host=per_host, connections=per_host)
                )

            base_big = _timed(plain(big, 4), work, args.repeats)
            rows.append(("plain engine, 4 conns", "capped", base_big, big_bytes / base_big))
            base_small = _timed(plain(small, 4), work, args.repeats)
            rows.append(
                ("plain engine, 4 conns", "small files", base_small, small_bytes / base_small)
            )
            overhead: dict[str, float] = {}
            for workers in (1, 2, 4):
                # the CLI's --dask local:N cluster
                with connect(f"local:{workers}") as client:
                    client.wait_for_workers(workers, timeout=60)
                    seconds = _timed(dask(client, big, 4 * workers), work, args.repeats)
                    rows.append(
                        (
                            f"dask {workers} worker(s), 4 conns each",
                            "capped",
                            seconds,
                            big_bytes / seconds,
                        )
                    )
                    seconds = _timed(dask(client, big, 8), work, args.repeats)
                    rows.append(
                        (
                            f"dask {workers} worker(s), 8 conns in all",
                            "capped",
                            seconds,
                            big_bytes / seconds,
                        )
                    )
                    if workers == 1:
                        overhead["capped"] = rows[-2][2] / base_big - 1
                        seconds = _timed(dask(client, small, 4), work, args.repeats)
                        rows.append(
                            (
                                "dask 1 worker, 4 conns",
                                "small files",
                                seconds,
                                small_bytes / seconds,
                            )
                        )
                        overhead["small files"] = seconds / base_small - 1
        finally:
            capped.close()
            free.close()

    print(
        f"\nBig files: {args.files} x {args.size / mib:.1f} MiB, each connection capped at "
        f"{args.rate / mib:.1f} MiB/s. Small files: {args.small_files} x "
        f"{args.small_size // 1024} KiB, uncapped. Best of {args.repeats}.\n"
    )
    print("| setup | server | seconds | MiB/s |")
    print("|---|---|---:|---:|")
    for name, server, seconds, rate in rows:
        print(f"| {name} | {server} | {seconds:.2f} | {rate / mib:.1f} |")
    print()
    for kind, value in overhead.items():
        print(f"Dask path overhead on one worker, {kind}: {value * 100:+.1f}%")


if __name__ == "__main__":
    main()
