"""With REDIS_URL set, the bot keeps its FSM state in Redis and still serves users."""

from __future__ import annotations

import pytest

from tests.conftest import TEST_REDIS_URL
from tests.e2e.conftest import StartBot
from tests.fakes.telegram import FakeTelegram


@pytest.mark.skipif(not TEST_REDIS_URL, reason="TEST_REDIS_URL is not set: Redis variant skipped")
async def test_bot_runs_with_redis_storage(
    fake_telegram: FakeTelegram, start_bot: StartBot
) -> None:
    bot = await start_bot(REDIS_URL=TEST_REDIS_URL)
    fake_telegram.message(1001, "/help", language_code="fr")
    await fake_telegram.wait_for_text(1001, "Voici ce que je sais faire")
    assert "FSM storage: Redis" in bot.text
