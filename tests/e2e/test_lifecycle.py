"""Starting, refusing to start, and stopping gracefully, as an operator sees it.

Each of these needs the bot as an OS process: a signal and the exit status, what the process
prints when its configuration is wrong, the web server a started process serves, and webhook
mode. What the bot says to people is tested in-process (tests/conversations/).
"""

from __future__ import annotations

import asyncio
import signal

import aiohttp

from tests.e2e.conftest import StartBot
from tests.e2e.harness import BotProcess
from tests.fakes.telegram import FakeTelegram

ANN = 1001


async def test_sigterm_lets_a_running_handler_finish_and_its_answer_is_sent(
    fake_telegram: FakeTelegram, start_bot: StartBot
) -> None:
    bot = await start_bot(E2E_SLOW_SECONDS="2")
    fake_telegram.message(ANN, "/slow")
    await fake_telegram.wait_for_text(ANN, "slow handler started")
    bot.signal(signal.SIGTERM)
    await bot.wait_for_line("no longer taking updates")
    fake_telegram.message(ANN, "/help")  # arrives after SIGTERM: must not be taken
    assert await bot.wait_exit() == 0
    texts = [m["text"] for m in fake_telegram.sent_messages(ANN)]
    assert texts == ["slow handler started", "slow handler finished"]


async def test_missing_token_is_one_clear_line_and_exit_2(db_url: str) -> None:
    process = BotProcess({"DATABASE_URL": db_url, "BOT_TOKEN": ""})
    await process.start()
    assert await process.wait_exit() == 2
    assert process.output == [
        "error: BOT_TOKEN is not set: put BOT_TOKEN=<token from @BotFather> in .env or the "
        "environment (see .env.example)"
    ]


async def test_token_refused_by_telegram_is_one_clear_line_and_exit_2(db_url: str) -> None:
    async with FakeTelegram(token="1:the-right-one") as fake:
        process = BotProcess(
            {"DATABASE_URL": db_url, "BOT_TOKEN": "1:a-wrong-token-value",
             "TELEGRAM_API_BASE": fake.base_url, "WEB_PORT": "0"}
        )
        await process.start()
        assert await process.wait_exit() == 2
    assert process.output[-1] == (
        "error: BOT_TOKEN was refused by Telegram (401 Unauthorized): copy the token again "
        "from @BotFather"
    )
    assert "Traceback" not in process.text
    assert "a-wrong-token-value" not in process.text


def _healthy(body: dict) -> bool:
    """ok; or degraded only because this machine answered slowly (the database part times the
    snapshot's reads on the real clock in a process; a loaded test machine is not a fault)."""
    slow = ["database: slow to answer (over 500 ms)"]
    return body["status"] == "ok" or (body["status"] == "degraded"
                                      and body.get("reasons") == slow)


async def test_health_endpoints_answer(fake_telegram: FakeTelegram, start_bot: StartBot) -> None:
    bot = await start_bot()
    async with aiohttp.ClientSession() as http:
        for path in ("/health/live", "/health/ready", "/health"):
            async with http.get(f"{bot.web_url}{path}") as response:
                assert response.status == 200, path
                body = await response.json()
                assert _healthy(body) if path == "/health" else body["status"] == "ok", body
        async with http.get(f"{bot.web_url}/metrics") as response:  # loopback: trusted
            assert response.status == 200
            assert "servicedesk_job_last_outcome" in await response.text()
    assert body["components"]["database"]["status"] in ("ok", "degraded")
    assert {"channels", "outbox", "workflows", "errors", "jobs", "inventory"} <= set(
        body["components"])


async def test_health_details_need_the_health_token_behind_a_proxy(
    fake_telegram: FakeTelegram, start_bot: StartBot
) -> None:
    """The running bot honours HEALTH_TOKEN: a caller from outside (through a proxy) sees the
    status and reasons only, the same caller with the token the parts; the token is never
    printed."""
    token = "e2e-health-token-0123456789"
    bot = await start_bot(HEALTH_TOKEN=token)
    outside = {"X-Forwarded-For": "203.0.113.9"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{bot.web_url}/health", headers=outside) as response:
            outside_body = await response.json()
            assert set(outside_body) == {"status", "reasons"} and _healthy(outside_body)
        trusted = {**outside, "Authorization": f"Bearer {token}"}
        async with http.get(f"{bot.web_url}/health", headers=trusted) as response:
            body = await response.json()
    assert "latency_ms" in body["components"]["database"]  # the parts, with the token only
    await bot.stop()
    assert token not in bot.text


async def test_webhook_mode_checks_the_secret(
    fake_telegram: FakeTelegram, start_bot: StartBot
) -> None:
    bot = await start_bot(TELEGRAM_MODE="webhook", WEBHOOK_SECRET="e2e_webhook-Secret")
    call = await fake_telegram.wait_for_call("setWebhook")
    assert call.params["url"] == f"{bot.web_url}/webhooks/telegram"
    assert call.params["secret_token"] == "e2e_webhook-Secret"

    update = {
        "update_id": 1,
        "message": {
            "message_id": 1, "date": 1_700_000_000, "text": "/help",
            "chat": {"id": ANN, "type": "private"},
            "from": {"id": ANN, "is_bot": False, "first_name": "Ann", "language_code": "en"},
            "entities": [{"type": "bot_command", "offset": 0, "length": 5}],
        },
    }
    url = f"{bot.web_url}/webhooks/telegram"
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}):
            async with http.post(url, json=update, headers=headers) as response:
                assert response.status == 401
        await asyncio.sleep(0.5)
        assert fake_telegram.sent_messages(ANN) == []
        good = {"X-Telegram-Bot-Api-Secret-Token": "e2e_webhook-Secret"}
        async with http.post(url, json=update, headers=good) as response:
            assert response.status == 200
    await fake_telegram.wait_for_text(ANN, "Here is what I can do")
