"""Shared fixtures. Async tests run on asyncio (aiohttp needs it)."""

from __future__ import annotations

import signal

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_configure(config: pytest.Config) -> None:
    """Tests send SIGINT to the processes they start. A shell that runs a job in the background
    without job control starts it with SIGINT ignored, and an ignored signal stays ignored
    across fork and exec: every child would then ignore the test's Ctrl-C. Start from the
    default disposition, as a terminal would."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
