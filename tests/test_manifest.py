"""bulkflex.manifest: strict streaming reading, faithful writing, atomic replacement."""

from __future__ import annotations

import io
import json
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkflex import manifest
from bulkflex.errors import ManifestError, UsageError
from bulkflex.manifest import (
    ManifestEntry,
    ManifestWriter,
    _http_host,
    manifest_hosts,
    read_manifest,
    write_manifest,
)

SHA = "1220" + "ab" * 32


def line(**fields: Any) -> str:
    record = {"url": "https://data.example/a.nc", "path": "a.nc"} | fields
    return json.dumps({k: v for k, v in record.items() if v is not ...})


def test_reads_entries_with_line_numbers_skipping_blanks_and_comments() -> None:
    text = "\n".join(
        [
            "# made by hand",
            line(size=10, checksum=SHA, collection="C", item="I", asset="data", roles=["data"]),
            "",
            "   ",
            line(path="./dir//b.nc", size=None, checksum=None, mine={"k": [1, 2]}),
        ]
    )
    entries = list(read_manifest(io.StringIO(text)))
    assert [number for number, _ in entries] == [2, 5]
    first, second = entries[0][1], entries[1][1]
    assert (first.size, first.checksum, first.collection, first.roles) == (10, SHA, "C", ("data",))
    assert (second.path, second.size, second.checksum) == ("dir/b.nc", None, None)
    assert second.extra == {"mine": {"k": [1, 2]}}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not valid JSON"),
        ("[1]", "line is not a JSON object"),
        ('"a"', "line is not a JSON object"),
        (line(url=...), "missing 'url'"),
        (line(url=""), "missing 'url'"),
        (line(url=7), "missing 'url'"),
        (line(url="ftp://h/a"), "not an absolute http(s) URL"),
        (line(url="https:///a"), "not an absolute http(s) URL"),
        (line(url="/relative/a.nc"), "not an absolute http(s) URL"),
        (line(path=...), "missing 'path'"),
        (line(path=3), "missing 'path'"),
        (line(path="../a"), "unsafe path '../a': path escapes"),
        (line(path="a.nc.part"), "ends in .part"),
        (line(size=-1), "'size' must be"),
        (line(size=1.5), "'size' must be"),
        (line(size="10"), "'size' must be"),
        (line(size=True), "'size' must be"),
        (line(size=2**63), "'size' must be"),  # SQLite INTEGER cannot hold it
        (line(checksum=12), "'checksum' must be a multihash string"),
        (line(checksum="1220"), "bad checksum: "),
        (line(checksum=SHA.upper()), "bad checksum: multihash must be lowercase"),
        (line(collection=1), "'collection' must be a string"),
        (line(type=["a"]), "'type' must be a string"),
        (line(roles="data"), "'roles' must be a list of strings"),
        (line(roles=[1]), "'roles' must be a list of strings"),
    ],
)
def test_first_bad_line_raises_with_its_number(text: str, problem: str) -> None:
    good = line(path="ok.nc")
    source = io.StringIO(f"{good}\n# note\n{text}\n{good}\n")
    stream = read_manifest(source)
    assert next(stream)[0] == 1  # entries before the bad line are yielded first
    with pytest.raises(ManifestError) as caught:
        next(stream)
    assert caught.value.line == 3
    assert problem in caught.value.problem, caught.value.problem
    assert str(caught.value) == f"{caught.value.source}:3: {caught.value.problem}"


def test_largest_sqlite_size_is_accepted() -> None:
    entry = ManifestEntry.from_record(json.loads(line(size=2**63 - 1)))
    assert entry.size == 2**63 - 1


def test_reads_files_by_name_and_reports_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(line() + "\n" + "not json\n", encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        list(read_manifest(path))
    assert str(caught.value).startswith(f"{path}:2: not valid JSON")


def test_non_utf8_file_is_a_manifest_error(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(line().encode() + b"\n" + b'{"url": "\xff"}\n')
    with pytest.raises(ManifestError, match="not UTF-8"):
        list(read_manifest(path))


def test_missing_file_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    absent = tmp_path / "absent.jsonl"
    with pytest.raises(UsageError) as caught:
        list(read_manifest(absent))
    assert str(caught.value) == f"cannot read {absent}: No such file or directory"
    assert caught.value.exit_code == 2


def test_to_json_keeps_unknown_fields_and_never_lets_them_override() -> None:
    entry = ManifestEntry(
        url="https://h/a.nc",
        path="é/a.nc",
        size=None,
        checksum=None,
        roles=(),
        extra={"note": "ünïcode", "nested": {"a": [1, None]}},
    )
    text = entry.to_json()
    assert "\n" not in text and "é" in text  # one line, UTF-8 rather than escapes
    record = json.loads(text)
    assert record == {
        "url": "https://h/a.nc",
        "path": "é/a.nc",
        "size": None,
        "checksum": None,
        "note": "ünïcode",
        "nested": {"a": [1, None]},
    }
    assert ManifestEntry.from_record(record) == entry
    assert ManifestEntry.from_record(record).extra == entry.extra


_names = st.text(alphabet="abcxyz019_-.", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..") and not s.endswith(".part")
)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=5,
)
_known = {"url", "path", "size", "checksum", "collection", "item", "asset", "type", "roles"}


@st.composite
def entries(draw: st.DrawFn) -> ManifestEntry:
    folders = draw(st.lists(_names, max_size=2))
    return ManifestEntry(
        url="https://h.example/" + draw(_names),
        path="/".join([*folders, draw(_names.filter(lambda s: s != ".bulkflex"))]),
        size=draw(st.none() | st.integers(min_value=0, max_value=2**63 - 1)),
        checksum=draw(
            st.none() | st.binary(min_size=32, max_size=32).map(lambda d: "1220" + d.hex())
        ),
        collection=draw(st.none() | st.text(max_size=6)),
        item=draw(st.none() | st.text(max_size=6)),
        asset=draw(st.none() | st.text(max_size=6)),
        type=draw(st.none() | st.text(max_size=6)),
        roles=tuple(draw(st.lists(st.text(max_size=4), max_size=3))),
        extra=draw(
            st.dictionaries(
                st.text(max_size=6).filter(lambda k: k not in _known), _json_values, max_size=3
            )
        ),
    )


@given(entries())
def test_every_entry_round_trips_through_a_line(entry: ManifestEntry) -> None:
    again = ManifestEntry.from_record(json.loads(entry.to_json()))
    assert again == entry
    assert again.extra == entry.extra


@settings(max_examples=30, deadline=None)
@given(st.lists(entries(), max_size=5))
def test_written_manifests_read_back_identically(
    tmp_path_factory: pytest.TempPathFactory, items: list[ManifestEntry]
) -> None:
    path = tmp_path_factory.mktemp("m") / "m.jsonl"
    assert write_manifest(path, items) == len(items)
    assert [entry for _, entry in read_manifest(path)] == items
    assert [number for number, _ in read_manifest(path)] == list(range(1, len(items) + 1))


def test_writer_is_atomic_on_error(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "m.jsonl"
    first = ManifestEntry(url="https://h/a", path="a")
    write_manifest(path, [first])
    before = path.read_bytes()
    with pytest.raises(RuntimeError), ManifestWriter(path) as writer:
        writer.write(ManifestEntry(url="https://h/b", path="b"))
        raise RuntimeError("planner crashed")
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.jsonl"]  # no temporary left
    with ManifestWriter(path) as writer:
        writer.write(first)
        writer.write(ManifestEntry(url="https://h/b", path="b"))
    assert writer.count == 2
    assert [e.path for _, e in read_manifest(path)] == ["a", "b"]


def _urlsplit_host(url: str) -> str | None:
    parts = urlsplit(url)
    return parts.hostname if parts.scheme in ("http", "https") and parts.hostname else None


def _host_or_error(find: Callable[[str], str | None], url: str) -> tuple[str, str | None]:
    try:
        return "host", find(url)
    except ValueError:
        return "error", None


# the characters urlsplit treats specially, around a few real starts
_url_texts = st.builds(
    operator.add,
    st.sampled_from(["", "http://", "https://", "HTTP://", " http:", "ftp://", "http:/"]),
    st.text(alphabet="hx1:/?#@[]%.\t\n -", max_size=16),
)


@settings(max_examples=2000)
@given(_url_texts, st.text(alphabet="/?#a:[", max_size=6))
def test_host_lookup_agrees_with_urlsplit_whatever_came_first(url: str, tail: str) -> None:
    # the lookup keeps answers per scheme://authority prefix: a URL sharing another's prefix
    # must get the answer urlsplit gives for the URL itself
    expected = _host_or_error(_urlsplit_host, url)
    _host_or_error(_http_host, url + tail)
    assert _host_or_error(_http_host, url) == expected
    manifest._HOSTS.clear()
    assert _host_or_error(_http_host, url) == expected


def test_hosts_scan_skips_a_line_whose_url_does_not_parse(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    lines = [
        {"url": "http://[::1/a", "path": "a"},  # urlsplit raises: the engine reports the line
        {"url": "https://data.example/b", "path": "b"},
        {"url": "ftp://other.example/c", "path": "c"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    assert manifest_hosts(path) == {"data.example"}
