"""``bulkflex download MANIFEST -d DEST``: fetch a manifest, resumably, with a progress bar."""

from __future__ import annotations

import argparse
import importlib.util
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from bulkflex.auth import Credentials as AuthCredentials
from bulkflex.auth import (
    TokenOptions,
    add_token_arguments,
    credentials_from_options,
    install_secret_filter,
    token_options_from_args,
)
from bulkflex.cli import _exit
from bulkflex.cli._args import human_bytes, positive_float, positive_int, size
from bulkflex.core.retry import RetryPolicy, StallRule
from bulkflex.errors import UsageError
from bulkflex.manifest import manifest_hosts
from bulkflex.state import no_trace_if_rejected
from bulkflex.transfer import DownloadOptions, Summary, run_download
from bulkflex.transfer import events as ev

if TYPE_CHECKING:
    from tqdm import tqdm

_FAILURES_SHOWN = 50


def add_download_arguments(parser: argparse.ArgumentParser) -> None:
    """The engine's flags, shared with ``bulkflex get``."""
    defaults = DownloadOptions()
    group = parser.add_argument_group("download")
    group.add_argument(
        "--connections",
        type=positive_int,
        default=defaults.connections,
        help=f"simultaneous requests in all (default {defaults.connections})",
    )
    group.add_argument(
        "--per-host",
        type=positive_int,
        default=defaults.per_host,
        help=f"simultaneous requests to one host, across files (default {defaults.per_host})",
    )
    group.add_argument(
        "--connections-per-file",
        type=positive_int,
        default=defaults.connections_per_file,
        metavar="N",
        help="connections for one large file when its server honours Range "
        f"(default {defaults.connections_per_file})",
    )
    group.add_argument(
        "--split-min",
        type=size,
        default=defaults.split_min,
        metavar="SIZE",
        help="split files of at least SIZE over several connections (default 32M)",
    )
    group.add_argument(
        "--split-claim",
        type=size,
        default=defaults.split_claim,
        metavar="SIZE",
        help="the most one connection takes of a split file at a time: the connections work "
        "through the file in order, so its checksum keeps up (default 64M; at least 4M)",
    )
    group.add_argument(
        "--retries",
        type=positive_int,
        default=defaults.retry.max_attempts - 1,
        help="retries per file for transient errors (default %(default)s)",
    )
    group.add_argument(
        "--read-timeout",
        type=positive_float,
        default=defaults.read_timeout_s,
        metavar="S",
        help="abandon and retry a request silent for S seconds (default %(default)s)",
    )
    group.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=defaults.connect_timeout_s,
        metavar="S",
        help="TCP connect timeout (default %(default)s)",
    )
    group.add_argument(
        "--flush-bytes",
        type=size,
        default=defaults.flush_bytes,
        metavar="SIZE",
        help="sync and record progress every SIZE bytes per connection (default 64M)",
    )
    group.add_argument(
        "--flush-seconds",
        type=positive_float,
        default=defaults.flush_seconds,
        metavar="S",
        help="... or every S seconds, whichever comes first (default %(default)s)",
    )
    group.add_argument(
        "--processes",
        type=_processes,
        default=None,
        metavar="N",
        help="worker processes on this machine, sharing the connection caps; default auto: "
        "one per core (at most 4) for a new destination with 1000 entries or more, else 1. "
        "A destination keeps the layout of its first run: started with workers, it resumes "
        "with workers; started in one process, it resumes in one",
    )
    group.add_argument(
        "--no-server-digests",
        dest="server_digests",
        action="store_false",
        help="verify a file without a checksum in the manifest by its size only, even when its "
        "server announces a digest (Repr-Digest, Content-Digest, Digest): for a server whose "
        "digests are wrong",
    )
    group.add_argument(
        "--no-progress", action="store_true", help="no progress bar (for scripts and logs)"
    )
    group.add_argument(
        "--log-json",
        metavar="FILE",
        help="append one JSON event a line: start, retry, resumed, verified, failed, ...",
    )
    group.add_argument(
        "--uvloop",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="use uvloop when installed (default: yes if installed)",
    )
    add_token_arguments(parser)


def _processes(text: str) -> int | None:
    """``--processes``: a positive whole number, or ``auto`` (None)."""
    return None if text == "auto" else positive_int(text)


def options_from_args(args: argparse.Namespace) -> DownloadOptions:
    defaults = DownloadOptions()
    token_options = token_options_from_args(args)
    return replace(
        defaults,
        connections=args.connections,
        # one host can never get more than the global cap
        per_host=min(args.per_host, args.connections),
        connections_per_file=args.connections_per_file,
        split_min=args.split_min,
        split_claim=args.split_claim,
        retry=replace(defaults.retry or RetryPolicy(), max_attempts=args.retries + 1),
        read_timeout_s=args.read_timeout,
        connect_timeout_s=args.connect_timeout,
        stall=StallRule(),
        flush_bytes=args.flush_bytes,
        flush_seconds=args.flush_seconds,
        refresh_on_403=token_options.refresh_on_403,
        server_digests=args.server_digests,
    )


def credentials_for(token_options: TokenOptions, manifest: Path | str) -> AuthCredentials:
    """Token holder scoped to the manifest's hosts; its secrets are masked in every log line."""
    credentials = credentials_from_options(token_options, manifest_hosts(manifest))
    install_secret_filter(credentials.secret_filter)
    return credentials


def want_uvloop(flag: bool | None) -> bool:
    """``--uvloop``: must be installed; ``--no-uvloop``: never; default: when installed."""
    if flag is False:
        return False
    installed = importlib.util.find_spec("uvloop") is not None
    if flag and not installed:
        raise UsageError("--uvloop: uvloop is not installed (pip install 'bulkflex[fast]')")
    return installed


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "download",
        help="download every entry of a manifest (resumable)",
        description="Download every entry of MANIFEST into DEST. Run the same command again "
        "after any interruption: it resumes and re-fetches nothing already durable.",
    )
    parser.add_argument("manifest", type=Path, help="JSON Lines manifest (from `bulkflex plan`)")
    parser.add_argument("-d", "--dest", type=Path, required=True, help="destination folder")
    add_download_arguments(parser)
    parser.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run on a Dask cluster: a scheduler address (tcp://HOST:8786) or local:N "
        "(N worker processes here); DEST must be the same path on every worker",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return execute(
        args.manifest,
        args.dest,
        options_from_args(args),
        progress=not args.no_progress,
        log_json=args.log_json,
        credentials=credentials_for(token_options_from_args(args), args.manifest),
        use_uvloop=want_uvloop(args.uvloop),
        processes=args.processes,
        dask=args.dask,
    )


@contextmanager
def _signals_set(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C or SIGTERM sets ``stop`` (the job saves and returns); a second one interrupts at
    once (KeyboardInterrupt). Never raising on the first keeps a pipe read from being cut."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _workers(dest: Path | str, processes: int | None, manifest: Path | str) -> int:
    """Worker processes for this run (0: the one-process engine), see ``--processes``; says
    so when a request is not followed."""
    from bulkflex.distributed import use_processes

    workers, note = use_processes(dest, processes, manifest)
    if note:
        print(f"bulkflex: {note}", file=sys.stderr)
    return workers


class _Reporter:
    """Turns engine events into a tqdm bar and ``--log-json`` lines."""

    def __init__(self, progress: bool, log_json: IO[str] | None) -> None:
        self.show_bar = progress
        self.log = log_json
        self.bar: tqdm[Any] | None = None
        self.files_total = 0
        self.done = 0
        self.failed = 0
        self._last_postfix = 0.0

    def __call__(self, event: ev.Event) -> None:
        if self.log is not None and not isinstance(event, ev.Progress):
            record = ev.event_record(event)
            record["time"] = round(time.time(), 3)
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()
        if isinstance(event, ev.Started):
            self.files_total = event.files
            self.done = event.already_done
            if self.show_bar:
                from tqdm import tqdm  # here: 20 ms of imports a run without a bar does not pay

                self.bar = tqdm(
                    total=event.total_bytes,
                    initial=event.already_done_bytes + event.partial_bytes,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc="download",
                    dynamic_ncols=True,
                    file=sys.stderr,
                    smoothing=0.1,
                    mininterval=0.25,
                )
                self._postfix(force=True)
        elif isinstance(event, ev.Progress):
            if self.bar is not None:
                self.bar.update(event.nbytes)
        elif isinstance(event, ev.Verified):
            self.done += 1
            self._postfix()
        elif isinstance(event, ev.Failed):
            self.failed += 1
            self._postfix(force=True)
            if self.bar is not None:
                self.bar.write(f"bulkflex: failed: {event.path}: {event.reason}", file=sys.stderr)
        elif isinstance(event, ev.AuthPaused) and self.bar is not None:
            self.bar.write(
                f"bulkflex: token refused by {event.host}: pausing to renew it", file=sys.stderr
            )
        elif isinstance(event, ev.AuthResumed) and self.bar is not None:
            self.bar.write(f"bulkflex: new token for {event.host}: resuming", file=sys.stderr)
        elif isinstance(event, ev.Finished) and self.bar is not None:
            self._postfix(force=True)
            self.bar.close()

    def _postfix(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.bar is None or (not force and now - self._last_postfix < 0.25):
            return
        self._last_postfix = now
        text = f"{self.done}/{self.files_total} files"
        if self.failed:
            text += f", {self.failed} failed"
        self.bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def execute(
    manifest: Path | str,
    dest: Path | str,
    options: DownloadOptions,
    *,
    progress: bool,
    log_json: str | None,
    credentials: AuthCredentials | None,
    use_uvloop: bool = False,
    processes: int | None = 1,
    dask: str | None = None,
) -> int:
    """Run a download with progress output and a summary; returns the exit status.

    ``processes``: worker processes (None: automatic, see ``--processes``); ``dask``: a
    cluster address (``--dask``) to run on instead. Reused by ``bulkflex get`` and
    ``bulkflex demo``.
    """
    workers = 0 if dask else _workers(dest, processes, manifest)
    log_file = open(log_json, "a", encoding="utf-8") if log_json else None  # noqa: SIM115
    reporter = _Reporter(progress, log_file)
    try:
        with no_trace_if_rejected(dest):
            summary = _dispatch(
                manifest,
                dest,
                options,
                workers=workers,
                dask=dask,
                reporter=reporter,
                credentials=credentials,
                use_uvloop=use_uvloop,
            )
    finally:
        reporter.close()
        if log_file is not None:
            log_file.close()
    print_summary(summary, dest)
    if summary.interrupted:
        return _exit.INTERRUPTED
    return _exit.OK if summary.ok else _exit.FAILED


def _dispatch(
    manifest: Path | str,
    dest: Path | str,
    options: DownloadOptions,
    *,
    workers: int,
    dask: str | None,
    reporter: _Reporter,
    credentials: AuthCredentials | None,
    use_uvloop: bool,
) -> Summary:
    """One process, local worker processes, or a Dask cluster, as :func:`execute` chose."""
    if dask:
        from bulkflex.cli._dask import run_on_cluster  # the dask extra is only needed here

        return run_on_cluster(
            dask, manifest, dest, options, credentials=credentials, on_event=reporter
        )
    if workers:
        from bulkflex.distributed import download_in_processes

        stop = threading.Event()
        with _signals_set(stop):
            return download_in_processes(
                manifest,
                dest,
                workers,
                options,
                credentials=credentials,
                on_event=reporter,
                stop=stop,
                use_uvloop=use_uvloop,
            )
    return run_download(
        manifest, dest, options, on_event=reporter, credentials=credentials, use_uvloop=use_uvloop
    )


def print_summary(summary: Summary, dest: Path | str) -> None:
    rate = summary.bytes_downloaded / summary.seconds if summary.seconds > 0 else 0.0
    parts = [f"{summary.files_done} downloaded"]
    if summary.files_skipped:
        parts.append(f"{summary.files_skipped} already complete")
    parts.append(f"{summary.files_failed} failed")
    if summary.files_pending:
        parts.append(f"{summary.files_pending} pending")
    print(
        f"bulkflex: {summary.files_total} files: {', '.join(parts)}; "
        f"{human_bytes(summary.bytes_downloaded)} in {summary.seconds:.1f} s "
        f"({human_bytes(rate)}/s)"
    )
    for path, reason in summary.failures[:_FAILURES_SHOWN]:
        print(f"FAILED {path}: {reason}", file=sys.stderr)
    if len(summary.failures) > _FAILURES_SHOWN:
        print(
            f"... and {len(summary.failures) - _FAILURES_SHOWN} more: bulkflex status {dest}",
            file=sys.stderr,
        )
    if summary.interrupted:
        print(
            "bulkflex: interrupted; progress is saved, run the same command to finish",
            file=sys.stderr,
        )
    elif summary.files_failed:
        print("bulkflex: run the same command to retry the failed files", file=sys.stderr)
