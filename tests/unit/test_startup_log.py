"""The start-up log's lines, from the settings: what runs where, which channels are off for
lack of which settings, and never a password."""

from __future__ import annotations

from bot.delivery import channels_on, missing_channel_settings
from bot.startup_log import startup_lines
from services.masking import mask_url
from tests.conversations.harness import ExplicitSettings

TOKEN = "1:fake"


def _lines(**values: object) -> list[str]:
    settings = ExplicitSettings(bot_token=TOKEN, **values)
    return startup_lines(
        settings, revision="0015", head="0015", listening="http://127.0.0.1:8080",
        public_base_url=settings.public_base_url or "http://127.0.0.1:8080",
    )


def test_defaults_say_sqlite_database_storage_polling_and_what_each_channel_lacks() -> None:
    assert _lines() == [
        "database: sqlite+aiosqlite:///data/bot.db, schema revision 0015 (the newest)",
        "FSM storage: the database (table fsm_states); REDIS_URL is not set",
        "Telegram updates: polling (Bot API at https://api.telegram.org)",
        "delivery channels on: telegram, manual; off: whatsapp (set WHATSAPP_TOKEN, "
        "WHATSAPP_PHONE_NUMBER_IDS); sms (set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, "
        "TWILIO_FROM); email (set SMTP_HOST, SMTP_FROM); webhook (set ALERT_WEBHOOK_URL)",
        "web server listening on http://127.0.0.1:8080 (public base URL http://127.0.0.1:8080)",
    ]


def test_passwords_in_database_and_redis_urls_are_masked() -> None:
    lines = _lines(
        database_url="postgresql+asyncpg://bot:db-pass-123@db.internal:5432/desk",
        redis_url="redis://default:redis-pass-456@cache.internal:6379/0",
        telegram_mode="webhook", webhook_secret="hook-secret",
        public_base_url="https://desk.example.com",
    )
    text = "\n".join(lines)
    assert "db-pass-123" not in text and "redis-pass-456" not in text
    assert lines[0] == (
        "database: postgresql+asyncpg://bot:[REDACTED]@db.internal:5432/desk, "
        "schema revision 0015 (the newest)"
    )
    assert lines[1] == "FSM storage: Redis at redis://default:[REDACTED]@cache.internal:6379/0"
    assert lines[2] == (
        "Telegram updates: webhook, posted by Telegram to "
        "https://desk.example.com/webhooks/telegram (Bot API at https://api.telegram.org)"
    )
    assert lines[-1].endswith("(public base URL https://desk.example.com)")


def test_a_schema_behind_the_code_says_so() -> None:
    settings = ExplicitSettings(bot_token=TOKEN)
    [database, *_] = startup_lines(
        settings, revision="0013", head="0015", listening="http://h:1", public_base_url="x"
    )
    assert database.endswith("schema revision 0013 (the newest is 0015)")


def test_channels_switched_on_by_their_settings() -> None:
    settings = ExplicitSettings(
        bot_token=TOKEN, smtp_host="mail.example.com", smtp_from="desk@example.com",
        twilio_account_sid="AC1", twilio_auth_token="t", twilio_api_base="http://127.0.0.1:9",
    )
    assert channels_on(settings) == ("telegram", "email", "manual")
    assert missing_channel_settings(settings)["sms"] == ("TWILIO_FROM",)
    lines = startup_lines(settings, revision="1", head="1", listening="l", public_base_url="p")
    assert "delivery channels on: telegram, email, manual; off: whatsapp" in lines[3]
    assert "sms (set TWILIO_FROM)" in lines[3]


def test_a_process_that_does_not_dispatch_says_so() -> None:
    lines = _lines(dispatcher_enabled=False)
    assert lines[3].endswith("; this process does not send them (DISPATCHER_ENABLED is false)")


def test_mask_url_hides_only_the_password() -> None:
    assert mask_url("postgresql+asyncpg://bot:p%40ss@db:5432/bot") == (
        "postgresql+asyncpg://bot:[REDACTED]@db:5432/bot"
    )
    assert mask_url("redis://:secret@127.0.0.1:6379/0") == "redis://:[REDACTED]@127.0.0.1:6379/0"
    assert mask_url("sqlite+aiosqlite:///data/bot.db") == "sqlite+aiosqlite:///data/bot.db"
    assert mask_url("postgresql+asyncpg://postgres@127.0.0.1/test") == (
        "postgresql+asyncpg://postgres@127.0.0.1/test"
    )
    assert mask_url(None) is None
