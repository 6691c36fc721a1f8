"""The start-up log of a real start (`bot.app.start`, as `python main.py run` does), in-process
against the fake Bot API, on SQLite and PostgreSQL (and Redis when TEST_REDIS_URL is set): it
names the database and its schema revision, the FSM storage, the update mode, the channels on
and off, and where the web app listens; a password in DATABASE_URL or REDIS_URL never shows."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.engine import make_url

from bot.app import shutdown, start
from bot.logs import RedactingFormatter, Redactor
from database.migrate import head_revision
from tests.conftest import TEST_REDIS_URL
from tests.conversations.harness import ExplicitSettings
from tests.fakes.telegram import TEST_TOKEN, FakeTelegram

DB_PASSWORD = "db-pass-f00d"
REDIS_PASSWORD = "redis-pass-c0ffee"


async def _startup_log(caplog: pytest.LogCaptureFixture, **values: object) -> list[str]:
    """Start the bot with these settings, stop it; the start-up lines as logged (unmasked by
    any formatter: the lines must mask their passwords themselves)."""
    caplog.set_level(logging.INFO)
    async with FakeTelegram() as fake:
        settings = ExplicitSettings(
            bot_token=TEST_TOKEN, telegram_api_base=fake.base_url, web_port=0, **values
        )
        app = await start(settings)
        await shutdown(app, None)
    printed = RedactingFormatter(Redactor(settings.secret_values()))
    for record in caplog.records:  # and what the process would print, through its formatter
        assert DB_PASSWORD not in printed.format(record)
        assert REDIS_PASSWORD not in printed.format(record)
    return [r.getMessage() for r in caplog.records if r.name == "bot.startup"]


async def test_startup_log_says_what_the_bot_runs_on(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = make_url(db_url)
    if url.drivername.startswith("postgresql"):  # the test server trusts any password
        db_url = url.set(password=DB_PASSWORD).render_as_string(hide_password=False)
    lines = await _startup_log(
        caplog, database_url=db_url,
        smtp_host="127.0.0.1", smtp_from="desk@example.com",  # e-mail on, the rest off
    )
    assert DB_PASSWORD not in caplog.text

    database, storage, updates, channels, web = lines
    shown_url = db_url.replace(DB_PASSWORD, "[REDACTED]")
    assert database == f"database: {shown_url}, schema revision {head_revision()} (the newest)"
    assert storage == "FSM storage: the database (table fsm_states); REDIS_URL is not set"
    assert updates.startswith("Telegram updates: polling (Bot API at http://127.0.0.1:")
    assert channels == (
        "delivery channels on: telegram, email, manual; off: whatsapp (set WHATSAPP_TOKEN, "
        "WHATSAPP_PHONE_NUMBER_IDS); sms (set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, "
        "TWILIO_FROM); webhook (set ALERT_WEBHOOK_URL)"
    )
    address = web.removeprefix("web server listening on ").split()[0]
    assert address.startswith("http://127.0.0.1:") and not address.endswith(":0")
    assert web.endswith(f"(public base URL {address})")


@pytest.mark.skipif(not TEST_REDIS_URL, reason="TEST_REDIS_URL is not set: Redis variant skipped")
async def test_startup_log_names_redis_with_its_password_masked(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Redis without a password configured accepts the default user with any password.
    redis = make_url(str(TEST_REDIS_URL)).set(username="default", password=REDIS_PASSWORD)
    redis_url = redis.render_as_string(hide_password=False)
    lines = await _startup_log(caplog, database_url=db_url, redis_url=redis_url)
    assert REDIS_PASSWORD not in caplog.text
    assert lines[1] == (
        f"FSM storage: Redis at {redis_url.replace(REDIS_PASSWORD, '[REDACTED]')}"
    )
