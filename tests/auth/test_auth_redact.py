"""Redaction: tokens never reach a log line, its args, or exception text."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from bulkflex.auth import MASK, SecretFilter, install_secret_filter, redact

TOKEN = "tok-5f2c8e1d9a7b4c3e"
OLD_TOKEN = "tok-old-0a1b2c3d4e5f"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, SecretFilter]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("bulkflex.test_auth_redact")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    secrets = SecretFilter([OLD_TOKEN])
    secrets.add(TOKEN)
    install_secret_filter(secrets, ["bulkflex.test_auth_redact"])
    try:
        yield logger, stream, secrets
    finally:
        logger.handlers.clear()
        logger.propagate = True


def test_filter_masks_message_and_args(
    captured: tuple[logging.Logger, io.StringIO, SecretFilter],
) -> None:
    logger, stream, _ = captured
    logger.info("sending %s to %s", {"Authorization": f"Bearer {TOKEN}"}, "host")
    logger.debug(f"literal {OLD_TOKEN} in the template")  # noqa: G004 (the point of the test)
    logger.warning("args as a dict: %(t)s", {"t": TOKEN})
    text = stream.getvalue()
    assert TOKEN not in text
    assert OLD_TOKEN not in text
    assert text.count(MASK) == 3
    assert "to host" in text


def test_filter_masks_exception_text_and_stack(
    captured: tuple[logging.Logger, io.StringIO, SecretFilter],
) -> None:
    logger, stream, _ = captured
    try:
        raise RuntimeError(f"server echoed {TOKEN}")
    except RuntimeError:
        logger.exception("failed with %s", TOKEN, stack_info=True)
    text = stream.getvalue()
    assert "RuntimeError: server echoed ***" in text
    assert "Stack (most recent call last)" in text
    assert TOKEN not in text


def test_filter_on_handler_sees_child_logger_records(
    captured: tuple[logging.Logger, io.StringIO, SecretFilter],
) -> None:
    logger, stream, _ = captured
    child = logging.getLogger("bulkflex.test_auth_redact.child")
    child.error("child says %s", TOKEN)
    assert stream.getvalue() == "ERROR bulkflex.test_auth_redact.child: child says ***\n"
    assert logger.handlers[0].filters


def test_filter_learns_new_secrets_after_install(
    captured: tuple[logging.Logger, io.StringIO, SecretFilter],
) -> None:
    logger, stream, secrets = captured
    secrets.add("rotated-later-1234")
    secrets.add("")  # ignored
    logger.info("now %s", "rotated-later-1234")
    assert "rotated-later-1234" not in stream.getvalue()


def test_filter_survives_bad_format_args(
    captured: tuple[logging.Logger, io.StringIO, SecretFilter],
) -> None:
    logger, stream, _ = captured
    logger.info("two %s %s but one arg " + TOKEN, "x")  # noqa: G003
    assert TOKEN not in stream.getvalue()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
        ("needs a bearer token, Bearer tokens", "needs a bearer token, Bearer tokens"),
        ("basic dXNlcjpwYXNzMQ==, then", "basic ***, then"),
        ("jwt eyJhbGciOi.eyJleHAiOjF9.sig here", "jwt *** here"),
        (
            "grant_type=refresh_token&refresh_token=r3fr3sh&client_secret=s3cr3t",
            "grant_type=refresh_token&refresh_token=***&client_secret=***",
        ),
        (
            '{"access_token": "abc", "expires_in": 300}',
            '{"access_token": "***", "expires_in": 300}',
        ),
        ("url?token=abc&x=1", "url?token=***&x=1"),
        ("", ""),
        ("nothing secret", "nothing secret"),
    ],
)
def test_redact_masks_secret_shapes(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_known_secrets_longest_first_and_skips_tiny_ones() -> None:
    assert redact("abcdef and abc", ["abc", "abcdef"]) == "*** and ***"
    assert redact("a b ab", ["a", "ab"]) == "a b ab"  # too short to mask safely
