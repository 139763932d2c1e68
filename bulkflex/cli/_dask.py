"""``bulkflex download MANIFEST -d DEST --dask ADDRESS``: the same download over a Dask cluster.

ADDRESS is a scheduler (``tcp://host:8786``) or ``local:N`` (N worker processes on this
machine). The output is the one-machine output (``download.execute`` prints it): one progress
bar, the summary, the exit codes. Imported only with ``--dask``: it needs the dask extra.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import FrameType

from bulkflex.auth import Credentials
from bulkflex.state import destination_lock
from bulkflex.transfer import DownloadOptions, Summary
from bulkflex.transfer import events as ev

#: Seconds to wait for a scheduler that does not answer: it either answers at once or is wrong.
CONNECT_TIMEOUT_S = 5.0


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the job like Ctrl-C does (progress saved, exit 130)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_on_cluster(
    address: str,
    manifest: Path | str,
    dest: Path | str,
    options: DownloadOptions,
    *,
    credentials: Credentials | None,
    on_event: ev.EventCallback,
) -> Summary:
    """Connect to ``address`` and run the job there (see ``download_on_cluster``)."""
    from bulkflex.distributed import connect, download_on_cluster  # needs the dask extra

    with _sigterm_as_interrupt(), connect(address, timeout_s=CONNECT_TIMEOUT_S) as client:
        # a local cluster writes this machine's DEST: it holds DEST's lock, as a run without
        # Dask does; a remote cluster's DEST may not be here at all (its shards have locks)
        here = destination_lock(dest) if address.startswith("local:") else nullcontext()
        with here:
            return download_on_cluster(
                manifest, dest, client, options, credentials=credentials, on_event=on_event
            )
