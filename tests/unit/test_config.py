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


_CHANNELS = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM", "TWILIO_API_BASE",
             "PUBLIC_BASE_URL", "WHATSAPP_TOKEN", "WHATSAPP_PHONE_NUMBER_IDS",
             "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN", "HEALTH_TOKEN")


def _twilio(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _CHANNELS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC0123")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "twilio-auth-token")
    monkeypatch.setenv("TWILIO_FROM", "+15005550006")


def test_twilio_without_a_public_base_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _twilio(monkeypatch)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("PUBLIC_BASE_URL is not set but Twilio SMS is (TWILIO_ACCOUNT_SID)")
    assert "\n" not in message
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://desk.example.com")
    assert load_settings().public_base_url == "https://desk.example.com"


def test_twilio_api_on_this_machine_needs_no_public_base_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A Twilio fake on loopback (the end-to-end tests) calls back the address it was given.
    _twilio(monkeypatch)
    monkeypatch.setenv("TWILIO_API_BASE", "http://127.0.0.1:8089")
    assert load_settings().public_base_url is None


def test_whatsapp_without_the_app_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _CHANNELS:
        monkeypatch.delenv(name, raising=False)
    for configured in ({"WHATSAPP_TOKEN": "wa-token", "WHATSAPP_PHONE_NUMBER_IDS": "100100"},
                       {"WHATSAPP_VERIFY_TOKEN": "wa-verify"}):
        with monkeypatch.context() as env:
            for name, value in configured.items():
                env.setenv(name, value)
            with pytest.raises(ConfigError) as info:
                load_settings()
            message = str(info.value)
            assert message.startswith("WHATSAPP_APP_SECRET is not set but WhatsApp is"), message
            assert "\n" not in message
            env.setenv("WHATSAPP_APP_SECRET", "wa-app-secret")
            assert load_settings().whatsapp_app_secret == "wa-app-secret"


def test_settings_that_cannot_work_stop_main_with_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from main import EXIT_CONFIG, main

    _twilio(monkeypatch)
    assert main(["migrate"]) == EXIT_CONFIG == 2
    err = capsys.readouterr().err
    assert err.startswith("error: PUBLIC_BASE_URL is not set") and err.count("\n") == 1


def test_health_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEALTH_TOKEN", raising=False)
    monkeypatch.delenv("HEALTH_CACHE_SECONDS", raising=False)
    settings = load_settings()
    assert (settings.health_cache_seconds, settings.health_token) == (5.0, None)
    monkeypatch.setenv("HEALTH_TOKEN", "short")
    with pytest.raises(ConfigError, match="HEALTH_TOKEN: must be 16-256 visible ASCII"):
        load_settings()
    monkeypatch.setenv("HEALTH_TOKEN", "a-long-enough-health-token")
    monkeypatch.setenv("HEALTH_CACHE_SECONDS", "-1")
    with pytest.raises(ConfigError, match="HEALTH_CACHE_SECONDS: "):
        load_settings()
    monkeypatch.setenv("HEALTH_CACHE_SECONDS", "2.5")
    settings = load_settings()
    assert (settings.health_cache_seconds, settings.health_token) == (
        2.5, "a-long-enough-health-token"
    )
