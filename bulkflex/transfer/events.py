"""Progress events the engine emits; the CLI turns them into a progress bar and ``--log-json``.

Events are frozen values with no secrets: paths are manifest paths, URLs never appear.
``on_event`` callbacks run on the event loop and must return quickly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Protocol

__all__ = [
    "AuthPaused",
    "AuthResumed",
    "Event",
    "EventCallback",
    "Failed",
    "FileStarted",
    "Finished",
    "Progress",
    "Restarted",
    "Resumed",
    "Retrying",
    "Started",
    "Verified",
    "event_fields",
    "event_record",
]


@dataclass(frozen=True, slots=True)
class Event:
    pass


@dataclass(frozen=True, slots=True)
class Started(Event):
    """The run begins. ``total_bytes`` is None when some sizes are unknown."""

    files: int
    total_bytes: int | None
    already_done: int
    already_done_bytes: int
    partial_bytes: int


@dataclass(frozen=True, slots=True)
class FileStarted(Event):
    path: str
    size: int | None


@dataclass(frozen=True, slots=True)
class Progress(Event):
    """``nbytes`` more bytes of ``path`` arrived (negative when bytes were discarded)."""

    path: str
    nbytes: int


@dataclass(frozen=True, slots=True)
class Resumed(Event):
    """A transfer continues from ``offset`` durable bytes."""

    path: str
    offset: int


@dataclass(frozen=True, slots=True)
class Restarted(Event):
    """Bytes on disk were discarded and the file starts again from 0."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class Retrying(Event):
    path: str
    attempt: int
    delay_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class Verified(Event):
    """The file passed its size (and checksum, when known) and is in place under its name.

    ``checksum`` names the algorithm; ``checksum_from`` where the expected value came from:
    ``"manifest"``, or the server's header (``"Repr-Digest"``, ``"Content-Digest"``,
    ``"Digest"``) when the manifest had none.
    """

    path: str
    size: int
    checksum: str | None
    checksum_from: str | None = None


@dataclass(frozen=True, slots=True)
class Failed(Event):
    path: str
    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class AuthPaused(Event):
    """A 401 closed the gate for ``host``: no new request starts until the token is renewed."""

    host: str


@dataclass(frozen=True, slots=True)
class AuthResumed(Event):
    host: str


class _Totals(Protocol):
    @property
    def files_done(self) -> int: ...
    @property
    def files_failed(self) -> int: ...
    @property
    def files_skipped(self) -> int: ...
    @property
    def bytes_downloaded(self) -> int: ...
    @property
    def seconds(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Finished(Event):
    files_done: int
    files_failed: int
    files_skipped: int
    bytes_downloaded: int
    seconds: float

    @classmethod
    def of(cls, summary: _Totals) -> Finished:
        """The event for a run's (or a cluster job's) summary."""
        return cls(
            summary.files_done,
            summary.files_failed,
            summary.files_skipped,
            summary.bytes_downloaded,
            summary.seconds,
        )


EventCallback = Callable[[Event], None]

_NAMES = {
    Started: "start",
    FileStarted: "file-start",
    Progress: "progress",
    Resumed: "resumed",
    Restarted: "restarted",
    Retrying: "retry",
    Verified: "verified",
    Failed: "failed",
    AuthPaused: "auth-paused",
    AuthResumed: "auth-resumed",
    Finished: "finished",
}


_FIELD_NAMES: dict[type[Event], tuple[str, ...]] = {}


def event_fields(event: Event) -> dict[str, Any]:
    """The event's fields by name. Every field is a plain value (str, int, float, None), so
    unlike ``dataclasses.asdict``, which copies recursively, this just reads them: 0.6 us an
    event against 5.4 us, for the two to three events a file that worker processes forward."""
    cls = type(event)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(field.name for field in fields(cls))
    return {name: getattr(event, name) for name in names}


def event_record(event: Event) -> dict[str, Any]:
    """A JSON-ready dict: ``{"event": "retry", "path": ..., ...}``."""
    return {"event": _NAMES.get(type(event), type(event).__name__.lower()), **event_fields(event)}
