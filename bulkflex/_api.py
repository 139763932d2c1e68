"""The blocking one-call entry points behind ``bulkflex.download`` (``bulkflex.plan`` lives in
:mod:`bulkflex.stac`)."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bulkflex.auth import Credentials, TokenOptions, credentials_from_options
from bulkflex.manifest import manifest_hosts
from bulkflex.state import no_trace_if_rejected
from bulkflex.transfer import DownloadOptions, Summary, run_download
from bulkflex.transfer.events import EventCallback

if TYPE_CHECKING:
    import distributed

log = logging.getLogger("bulkflex")


def download(
    manifest: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    client: distributed.Client | None = None,
    token: TokenOptions | None = None,
    credentials: Credentials | None = None,
    on_event: EventCallback | None = None,
    processes: int | None = 1,
    **options: Any,
) -> Summary:
    """Download every entry of ``manifest`` into ``dest``; resume whatever an earlier run left.

    Args:
        manifest: a JSON Lines manifest (see :func:`bulkflex.plan`).
        dest: destination folder; its state lives in ``dest/.bulkflex/``.
        client: a ``distributed.Client``: shard the manifest over its workers (``dest`` must be
            the same path on all of them). Without it, this machine downloads.
        token: where bearer tokens come from (``TokenOptions(token_file=...)`` etc.); the
            token is scoped to the manifest's hosts. By default ``$MAAP_TOKEN`` when set.
        credentials: a ready token holder, instead of ``token``.
        on_event: called with progress events (``bulkflex.transfer.events``).
        processes: worker processes on this machine, or None for the command line's
            automatic choice (see ``--processes``; a destination keeps the layout of its
            first run). Ignored with ``client``.
        **options: fields of :class:`~bulkflex.transfer.DownloadOptions`
            (``connections=``, ``per_host=``, ``connections_per_file=``, ``flush_bytes=`` ...).

    Returns:
        The run's :class:`~bulkflex.transfer.Summary`; failed entries are listed there, not
        raised.

    Raises:
        ManifestError, DestinationError, AuthError: as the CLI's exit codes 2, 4 and 3.
    """
    manifest, dest = os.fspath(manifest), os.fspath(dest)
    settings = replace(DownloadOptions(), **options)
    if credentials is None:
        credentials = credentials_from_options(
            token or TokenOptions(prompt=False), manifest_hosts(manifest), interactive=False
        )
    if token is not None and token.refresh_on_403:
        settings = replace(settings, refresh_on_403=True)
    with no_trace_if_rejected(dest):
        return _dispatch(manifest, dest, client, processes, settings, credentials, on_event)


def _dispatch(
    manifest: str,
    dest: str,
    client: distributed.Client | None,
    processes: int | None,
    settings: DownloadOptions,
    credentials: Credentials,
    on_event: EventCallback | None,
) -> Summary:
    if client is not None:
        from bulkflex.distributed import download_on_cluster

        return download_on_cluster(
            manifest, dest, client, settings, credentials=credentials, on_event=on_event
        )
    from bulkflex.distributed import download_in_processes, use_processes

    workers, note = use_processes(dest, processes, manifest)
    if note:
        log.warning("%s", note)
    if workers:
        return download_in_processes(
            manifest, dest, workers, settings, credentials=credentials, on_event=on_event
        )
    return run_download(manifest, dest, settings, on_event=on_event, credentials=credentials)
