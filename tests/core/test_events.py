"""Events as plain fields: what worker processes forward to their job and ``--log-json`` writes.

``event_fields`` reads the fields without copying. It is only right while every field holds a
plain value; an event that gained a nested or mutable field would make it differ from
``dataclasses.asdict``, which is what these tests compare it with, for every event class.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from bulkflex.transfer import events as ev

SAMPLES: list[ev.Event] = [
    ev.Started(files=3, total_bytes=None, already_done=1, already_done_bytes=10, partial_bytes=0),
    ev.FileStarted("a/b.bin", 1024),
    ev.Progress("a/b.bin", 512),
    ev.Resumed("a/b.bin", 256),
    ev.Restarted("a/b.bin", "the file changed on the server"),
    ev.Retrying("a/b.bin", 2, 1.5, "HTTP 503"),
    ev.Verified("a/b.bin", 1024, "sha2-256"),
    ev.Failed("a/b.bin", "not-found", "HTTP 404"),
    ev.AuthPaused("127.0.0.1"),
    ev.AuthResumed("127.0.0.1"),
    ev.Finished(files_done=2, files_failed=1, files_skipped=0, bytes_downloaded=9, seconds=0.5),
]


def event_classes() -> set[type[ev.Event]]:
    return {
        cls
        for name in ev.__all__
        if isinstance(cls := getattr(ev, name), type)
        and issubclass(cls, ev.Event)
        and cls is not ev.Event
    }


def test_the_samples_cover_every_event_class() -> None:
    assert {type(event) for event in SAMPLES} == event_classes()


@pytest.mark.parametrize("event", SAMPLES, ids=lambda event: type(event).__name__)
def test_event_fields_equal_asdict_and_rebuild_the_event(event: ev.Event) -> None:
    fields: dict[str, Any] = ev.event_fields(event)
    assert fields == dataclasses.asdict(event)
    assert type(event)(**fields) == event  # what the job does with a forwarded event
    record = ev.event_record(event)
    assert json.loads(json.dumps(record)) == record
