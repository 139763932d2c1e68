"""bulkflex.core.paths: catalog-supplied paths never leave the destination."""

from __future__ import annotations

import os
import posixpath

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bulkflex.core.paths import STATE_DIR, UnsafePath, path_from_url, safe_relative_path


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        ("a.nc", "a.nc"),
        ("dir/sub/a.nc", "dir/sub/a.nc"),
        ("./a.nc", "a.nc"),
        ("a/./b//c.nc", "a/b/c.nc"),
        ("a/.", "a"),
        ("..a/b..", "..a/b.."),
        ("...", "..."),
        ("a/.bulkflex/x", "a/.bulkflex/x"),  # only the top-level state folder is reserved
        ("console.txt", "console.txt"),
        ("C/x", "C/x"),
        ("ab:c", "ab:c"),
        ("Ünïcødé/ファイル.nc", "Ünïcødé/ファイル.nc"),
        ("x" * 255, "x" * 255),
    ],
)
def test_accepts_and_normalises_plain_relative_paths(candidate: str, expected: str) -> None:
    assert safe_relative_path(candidate) == expected


@pytest.mark.parametrize(
    ("candidate", "problem"),
    [
        ("", "path is empty"),
        (".", "path is empty"),
        ("./", "names a folder"),
        ("a/", "names a folder"),
        ("..", "escapes the destination"),
        ("../a", "escapes the destination"),
        ("a/../../b", "escapes the destination"),
        ("a/..", "escapes the destination"),
        ("a/b/../c", "escapes the destination"),  # even when it would stay inside
        ("/etc/passwd", "is absolute"),
        ("//server/share", "is absolute"),
        ("C:\\x", "backslash"),
        ("C:x", "drive letter"),
        ("c:/x", "drive letter"),
        ("./C:/x", "drive letter"),
        (".//d:x", "drive letter"),
        ("a\\..\\b", "backslash"),
        ("a\x00b", "NUL byte"),
        ("a\nb", "control character"),
        ("a\x7fb", "control character"),
        ("con", "reserved device name"),
        ("dir/NUL.txt", "reserved device name"),
        ("com1.tar.gz", "reserved device name"),
        ("LPT9", "reserved device name"),
        (STATE_DIR, "state folder"),
        (f"{STATE_DIR}/state.sqlite", "state folder"),
        (f"./{STATE_DIR}//x", "state folder"),
        ("x" * 256, "longer than 255 bytes"),
        ("é" * 128, "longer than 255 bytes"),  # 256 bytes in UTF-8
        ("/".join(["d" * 200] * 21), "longer than 4096"),
    ],
)
def test_refuses_unsafe_paths_with_a_reason(candidate: str, problem: str) -> None:
    with pytest.raises(UnsafePath, match=problem):
        safe_relative_path(candidate)


def test_refuses_non_strings() -> None:
    with pytest.raises(UnsafePath):
        safe_relative_path(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("candidate", ["\ud800.nc", "a/\udfff"])
def test_refuses_paths_the_file_system_cannot_encode(candidate: str) -> None:
    """A JSON manifest can carry lone surrogates (``"\\ud800"``); they have no file name."""
    with pytest.raises(UnsafePath):
        safe_relative_path(candidate)


_component = st.sampled_from(["a", "b.nc", ".", "..", "", "con", ".bulkflex", "C:", "x y"])


@given(
    st.lists(_component, max_size=6).map("/".join)
    | st.text(alphabet=st.sampled_from("ab./\\:\x00\n~é"), max_size=20)
    | st.text(max_size=30)
    | st.text(alphabet=st.characters(codec=None, categories=["Cs", "Ll"]), max_size=5)
)
@example("a/../../etc/passwd")
@example("./.bulkflex")
def test_whatever_is_accepted_stays_strictly_inside_the_destination(candidate: str) -> None:
    try:
        result = safe_relative_path(candidate)
    except UnsafePath:
        return
    dest = "/dest"
    joined = posixpath.normpath(posixpath.join(dest, result))
    assert joined.startswith(dest + "/"), result
    assert joined != dest + "/" + STATE_DIR and not joined.startswith(f"{dest}/{STATE_DIR}/")
    parts = result.split("/")
    assert all(part not in ("", ".", "..") for part in parts), result
    assert not result.startswith("/") and "\\" not in result and "\x00" not in result
    assert safe_relative_path(result) == result  # normalising is idempotent
    os.fsencode(result)  # the file system can name it


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://h/a/b/file.nc", "file.nc"),
        ("https://h/a/b/file.nc?token=x#frag", "file.nc"),
        ("https://h/a/b/", "b"),
        ("https://h/a/my%20file.nc", "my file.nc"),
        ("https://h", "download"),
        ("https://h/", "download"),
    ],
)
def test_path_from_url_takes_the_last_segment(url: str, expected: str) -> None:
    assert path_from_url(url) == expected
