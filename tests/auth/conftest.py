"""Fixtures for the token tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tokenserver import TokenEndpoint, serve_token_endpoint


@pytest.fixture
async def token_endpoint() -> AsyncIterator[TokenEndpoint]:
    """A real OIDC token endpoint on 127.0.0.1 (see :class:`tokenserver.TokenEndpoint`)."""
    async with serve_token_endpoint() as endpoint:
        yield endpoint
