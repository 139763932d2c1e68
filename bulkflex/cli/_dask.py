"""``bulkflex download MANIFEST -d DEST --dask ADDRESS``: the same download over a Dask cluster.

ADDRESS is a scheduler (``tcp://host:8786``) or ``local:N`` (N worker processes on this
machine). The output is the one-machine output: one progress bar, the summary, the exit codes.
"""

from __future__ import annotations

import argparse

from bulkflex.auth import token_options_from_args
from bulkflex.cli import _exit
from bulkflex.cli.download import (
    _Reporter,
    credentials_for,
    options_from_args,
    print_summary,
    sigterm_as_interrupt,
)

#: Seconds to wait for a scheduler that does not answer: it either answers at once or is wrong.
CONNECT_TIMEOUT_S = 5.0


def run(args: argparse.Namespace) -> int:
    """The ``--dask`` branch of ``bulkflex download``; returns the exit status."""
    from bulkflex.distributed import connect, download_on_cluster  # needs the dask extra

    options = options_from_args(args)
    credentials = credentials_for(token_options_from_args(args), args.manifest)
    log_file = open(args.log_json, "a", encoding="utf-8") if args.log_json else None  # noqa: SIM115
    reporter = _Reporter(not args.no_progress, log_file)
    try:
        with sigterm_as_interrupt(), connect(args.dask, timeout_s=CONNECT_TIMEOUT_S) as client:
            summary = download_on_cluster(
                args.manifest,
                args.dest,
                client,
                options,
                credentials=credentials,
                on_event=reporter,
            )
    finally:
        reporter.close()
        if log_file is not None:
            log_file.close()
    print_summary(summary, args.dest)
    if summary.interrupted:
        return _exit.INTERRUPTED
    return _exit.OK if summary.ok else _exit.FAILED
