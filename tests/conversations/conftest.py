"""Fixtures for in-process conversation tests (see harness.py): the fake Bot API in the test's
event loop, and `conversation(...)`, which starts the production Dispatcher on the test's
database (SQLite always, PostgreSQL when TEST_DATABASE_URL is set)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from services.clock import FakeClock
from tests.conversations.harness import Conversation, start_conversation
from tests.fakes.telegram import FakeTelegram

StartConversation = Callable[..., Awaitable[Conversation]]


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def clock() -> FakeClock:
    """The bot's clock: time moves only when a test advances it."""
    return FakeClock()


@pytest.fixture
async def conversation(
    fake_telegram: FakeTelegram, db_url: str, clock: FakeClock
) -> AsyncIterator[StartConversation]:
    """`await conversation(**settings)` starts a bot; every one started is closed at the end."""
    running: list[Conversation] = []

    async def start(**options: Any) -> Conversation:
        return await start_conversation(
            fake_telegram, db_url, clock=clock, running=running, **options
        )

    yield start
    for chat in running:
        await chat.close()
