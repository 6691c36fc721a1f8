"""Process tests: the fake Bot API in this process, the bot in another one.

Only what needs a process lives here: start-up and configuration errors, signals and shutdown,
restarts, several processes, webhook mode, what the process prints. Conversations are tested
in-process (tests/conversations/), in milliseconds instead of a process start each.

Every test in this directory is marked `process` (a module's `pytestmark` would do it for that
module only; a conftest's does nothing), so `pytest -m "not process"` runs the fast tier alone.
Every bot process's output is checked for the bot token when it ends: it must never be printed,
even at DEBUG level.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from database.engine import Database
from tests.e2e.delivery import Providers, running_providers
from tests.e2e.harness import TOKEN, BotProcess, bot_env
from tests.fakes.telegram import FakeTelegram

HERE = Path(__file__).resolve().parent

StartBot = Callable[..., Awaitable[BotProcess]]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.process)


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def start_bot(fake_telegram: FakeTelegram, db_url: str) -> AsyncIterator[StartBot]:
    """Start bot processes on this test's database; all are stopped and checked at the end."""
    processes: list[BotProcess] = []

    async def start(*, ready: bool = True, args: tuple[str, ...] = ("run",), **env: str):
        process = BotProcess(bot_env(fake_telegram.base_url, db_url, **env), args=args)
        processes.append(process)
        await process.start()
        if ready:
            await process.wait_ready()
        return process

    yield start
    for process in processes:
        await process.stop()
        assert TOKEN not in process.text, "the bot token leaked into the process output"
        assert TOKEN.split(":")[1] not in process.text


@pytest.fixture
async def providers() -> AsyncIterator[Providers]:
    """Fake WhatsApp Cloud API and Twilio, and a real SMTP server, for the bot to deliver to."""
    async with running_providers() as running:
        yield running


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """The test's own connection to the database the bot process uses."""
    database = Database.from_url(db_url)
    yield database
    await database.dispose()
