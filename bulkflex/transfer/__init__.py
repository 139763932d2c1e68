"""The download engine (I/O shell around :mod:`bulkflex.core`).

``download_async`` runs inside an existing event loop; :func:`run_download` owns one, turns
SIGINT/SIGTERM into a clean stop (progress saved, ``Summary.interrupted`` set) and uses uvloop
when it is installed and asked for.
"""

from __future__ import annotations

import signal
from pathlib import Path

import anyio

from bulkflex.transfer.engine import (
    Credentials,
    DownloadOptions,
    Summary,
    download_async,
    first_error,
)
from bulkflex.transfer.events import EventCallback

__all__ = ["Credentials", "DownloadOptions", "Summary", "download_async", "run_download"]


def run_download(
    manifest: str | Path,
    dest: str | Path,
    options: DownloadOptions | None = None,
    *,
    on_event: EventCallback | None = None,
    credentials: Credentials | None = None,
    use_uvloop: bool = False,
) -> Summary:
    """Blocking :func:`download_async` with clean handling of Ctrl-C and SIGTERM.

    On a signal every transfer saves its durable progress, the state is committed, and the
    returned summary has ``interrupted=True``; the same call later finishes the job.
    """
    result: list[Summary] = []

    async def main() -> None:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        stop.set()
                        return

            tg.start_soon(watch)
            summary = await download_async(
                manifest, dest, options, on_event=on_event, credentials=credentials, stop=stop
            )
            result.append(summary)
            tg.cancel_scope.cancel()

    backend_options = {"use_uvloop": True} if use_uvloop else {}
    try:
        anyio.run(main, backend="asyncio", backend_options=backend_options)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    return result[0]
