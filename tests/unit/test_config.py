"""Settings are read from the environment, and a malformed value is one clear line."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("BOT_TOKEN", "ADMIN_IDS", "DATABASE_URL", "TELEGRAM_MODE", "WEBHOOK_SECRET",
                 "WEB_PORT", "TIMEZONE", "WHATSAPP_PHONE_NUMBER_IDS", "DEFAULT_LANGUAGE"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_match_the_contract() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite+aiosqlite:///data/bot.db"
    assert settings.telegram_mode == "polling"
    assert (settings.web_host, settings.web_port) == ("127.0.0.1", 8080)
    assert settings.default_language == "en" and settings.timezone == "UTC"
    assert settings.admin_ids == ()


def test_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_IDS", "11, 22,33")
    monkeypatch.setenv("WHATSAPP_PHONE_NUMBER_IDS", "100100,200200")
    settings = load_settings()
    assert settings.admin_ids == (11, 22, 33)
    assert settings.whatsapp_phone_number_ids == ("100100", "200200")


def test_dotenv_file_is_read(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("BOT_TOKEN=123:abc\nDEFAULT_LANGUAGE=fr\n")
    settings = load_settings()
    assert settings.bot_token == "123:abc" and settings.default_language == "fr"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("ADMIN_IDS", "abc", "ADMIN_IDS: expected comma-separated Telegram user ids, got 'abc'"),
        ("DATABASE_URL", "not a url", "DATABASE_URL: not a SQLAlchemy URL"),
        ("DATABASE_URL", "mysql://u@h/db", "DATABASE_URL: driver 'mysql' is not supported"),
        ("WEB_PORT", "http", "WEB_PORT: "),
        ("TIMEZONE", "Mars/Olympus", "TIMEZONE: unknown time zone 'Mars/Olympus'"),
        ("DEFAULT_LANGUAGE", "de", "DEFAULT_LANGUAGE: "),
    ],
)
def test_malformed_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_webhook_mode_needs_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_MODE", "webhook")
    with pytest.raises(ConfigError, match="WEBHOOK_SECRET"):
        load_settings()
    monkeypatch.setenv("WEBHOOK_SECRET", "has spaces!")
    with pytest.raises(ConfigError, match="WEBHOOK_SECRET: must be 1-256 characters"):
        load_settings()
    monkeypatch.setenv("WEBHOOK_SECRET", "s3cret_-OK")
    assert load_settings().webhook_secret == "s3cret_-OK"


def test_env_example_documents_every_setting_and_parses(tmp_path) -> None:
    import re
    from pathlib import Path

    from bot.config import Settings

    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z0-9_]+)=", example, re.MULTILINE))
    assert documented == {name.upper() for name in Settings.model_fields}
    (tmp_path / ".env").write_text(example)
    assert load_settings().database_url == "sqlite+aiosqlite:///data/bot.db"
