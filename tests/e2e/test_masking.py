"""What the process prints and what it stores never hold a secret, a phone number or an e-mail
address: the bot runs as an OS process at LOG_LEVEL=DEBUG (text and JSON lines), with a known
token, a phone number written with and without "+", and an e-mail address sent through failing
handlers, a contact card and a failing button; then its whole output and the rows of
error_groups, error_occurrences, alerts, job_runs and the alerts' notifications are searched
for them."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import text

from database.engine import Database
from tests.e2e.conftest import StartBot
from tests.e2e.harness import TOKEN
from tests.fakes.telegram import FakeTelegram

ANN = 1001
ADMIN = 9001
PHONE_PLUS = "+33 6 12 34 56 78"
PHONE_BARE = "33612345678"
EMAIL = "ann.lee@example.com"
SMTP_PASSWORD = "pw5"  # a short secret: masked as an exact value
# What must never appear, in any form it was given in.
FORBIDDEN = [
    TOKEN, TOKEN.split(":")[1], PHONE_PLUS, PHONE_BARE, "612345678", "6 12 34 56", EMAIL,
    "ann.lee@", SMTP_PASSWORD,
]
TABLES = ("error_groups", "error_occurrences", "alerts", "job_runs")


def _leaks(haystack: str) -> list[str]:
    return [value for value in FORBIDDEN if value in haystack]


async def _rows(db: Database, table: str, where: str = "") -> str:
    async with db.engine.connect() as connection:
        rows = (await connection.execute(text(f"SELECT * FROM {table} {where}"))).all()
    return "\n".join(json.dumps([str(v) for v in row], ensure_ascii=False) for row in rows)


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_nothing_secret_is_printed_or_stored_at_debug(
    fake_telegram: FakeTelegram, start_bot: StartBot, db: Database, log_format: str
) -> None:
    bot = await start_bot(
        LOG_LEVEL="DEBUG", LOG_FORMAT=log_format, ADMIN_IDS=str(ADMIN),
        SMTP_PASSWORD=SMTP_PASSWORD,
    )
    # A failing handler whose error quotes everything (a system error: admins are alerted).
    fake_telegram.message(
        ANN,
        f'/fail system {{"from": "{PHONE_BARE}", "to": "{PHONE_PLUS}", "email": "{EMAIL}", '
        f'"token": "{TOKEN}", "password": "{SMTP_PASSWORD}"}} {PHONE_PLUS} %2B{PHONE_BARE}',
    )
    await fake_telegram.wait_for_text(ANN, "Support code")
    # Telegram's contact card carries the number without "+".
    fake_telegram.message(ANN, "", contact={"phone_number": PHONE_BARE})
    await fake_telegram.wait_for_text(ANN, "phone number is saved")
    # A failing button whose data holds the number (a bare one only in a field known to hold
    # one: elsewhere a run of digits is an id), and an error quoting the e-mail address.
    answered = await fake_telegram.wait_for_text(ANN, "Support code")
    fake_telegram.callback(ANN, f"fail:wa_id={PHONE_BARE} +{PHONE_BARE}",
                           message_id=answered["message_id"])
    await fake_telegram.wait_for_call("answerCallbackQuery")
    fake_telegram.message(ANN, f"/fail {EMAIL}")
    await fake_telegram.wait_for_text(ANN, "Support code")
    await bot.stop()

    assert re.search(r"\+•+78", bot.text), "the masked number should be in the log"
    assert _leaks(bot.text) == [], bot.text
    if log_format == "json":
        lines = [line for line in bot.output if line.startswith("{")]
        assert lines and all(json.loads(line)["level"] for line in lines)
        assert any("update_id" in json.loads(line) for line in lines)
    for table in TABLES:
        stored = await _rows(db, table)
        assert _leaks(stored) == [], (table, stored)
    stored = await _rows(db, "notifications", "WHERE kind = 'alert'")
    assert stored and _leaks(stored) == [], stored
    assert await _rows(db, "error_occurrences"), "the failures were recorded"


async def test_a_malformed_telegram_api_base_is_reported_without_the_token(db_url: str) -> None:
    """The Bot API URL holds the token; aiohttp's error quotes the URL it could not use."""
    from tests.e2e.harness import BotProcess

    process = BotProcess({"DATABASE_URL": db_url, "BOT_TOKEN": TOKEN,
                          "TELEGRAM_API_BASE": "127.0.0.1:9", "WEB_PORT": "0"})
    await process.start()
    assert await process.wait_exit() == 2
    assert process.output[-1].startswith("error: cannot reach the Telegram Bot API")
    assert "bot[REDACTED]/getMe" in process.output[-1]
    assert _leaks(process.text) == [], process.text
