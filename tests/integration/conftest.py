"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.webhook_app import Edge, start_edge


@pytest.fixture
async def edge(db_url: str) -> AsyncIterator[Edge]:
    started, bot = await start_edge(db_url)
    yield started
    await started.client.close()
    await bot.session.close()
    await started.db.dispose()
