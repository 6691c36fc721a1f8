"""Secrets, phone numbers and e-mail addresses never reach the logs or stored texts unmasked:
one module (services.masking), one display format, linear on any input."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest

from bot.config import SECRET_SETTINGS, Settings
from bot.logs import RedactingFormatter, Redactor, log_context
from services import masking
from services.masking import TEXT_LIMIT, TRUNCATED, configure_secrets, mask_text
from services.notifications.classify import clean_text
from services.scheduler import short_error


@pytest.fixture(autouse=True)
def _no_configured_secrets() -> Iterator[None]:
    configure_secrets([])
    yield
    configure_secrets([])


# ------------------------------------------------------------------------------ phone numbers


@pytest.mark.parametrize(
    "text",
    [
        "call +33612345678 now",
        "call +33 6 12 34 56 78 now",
        "call +33.6.12.34.56.78 now",
        "call +33-6-12-34-56-78 now",
        "to=%2B33612345678&x=1",
        "to=%2b33612345678&x=1",
    ],
)
def test_phone_numbers_keep_only_the_last_two_digits_in_one_format(text: str) -> None:
    masked = mask_text(text)
    assert "+•••••••••78" in masked
    assert not re.search(r"\d{3}", masked.replace("%2", "")), masked


def test_the_same_format_everywhere() -> None:
    """Logs, /profile (mask_phone), delivery attempts (classify) and the scheduler agree."""
    assert masking.mask_phone("+33612345678") == "+•••••••••78"
    assert masking.mask_phone("+33 6 12 34 56 78") == "+•••••••••78"
    assert mask_text("+33612345678") == "+•••••••••78"
    assert clean_text("to +33612345678") == "to +•••••••••78"
    assert short_error(RuntimeError("to +33612345678")) == "to +•••••••••78"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"wa_id": "33612345678"}', '{"wa_id": "+•••••••••78"}'),
        ("{'from': '15551234567'}", "{'from': '+•••••••••67'}"),
        ('"to":"33612345678"', '"to":"+•••••••••78"'),
        ("To=33612345678&From=15005550006", "To=+•••••••••78&From=+•••••••••06"),
        ('{"recipient_id": "33612345678"}', '{"recipient_id": "+•••••••••78"}'),
    ],
)
def test_bare_numbers_are_masked_in_fields_known_to_hold_one(text: str, expected: str) -> None:
    assert mask_text(text) == expected


def test_telegram_ids_chat_ids_and_timestamps_stay_readable() -> None:
    text = 'user 123456789 chat -1001234567890 at 1700000000 {"chat_id": 5551234567, "id": 42}'
    assert mask_text(text) == text
    assert mask_text("wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5") == "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5"
    assert mask_text("order +1234567890123456789") == "order +1234567890123456789"  # 19 digits


# ------------------------------------------------------------------------------ e-mail, URLs


def test_email_keeps_first_letter_and_domain_ending() -> None:
    assert mask_text("from ann.lee@example.com.") == "from a•••@e•••.com."
    assert mask_text("x@y and ann@localhost") == "x@y and ann@localhost"


def test_url_passwords_bot_tokens_bearer_and_secret_keys() -> None:
    assert mask_text("postgresql+asyncpg://bob:s3cr3t@db:5432/app") == (
        "postgresql+asyncpg://bob:[REDACTED]@db:5432/app"
    )
    assert mask_text("redis://:pw@localhost:6379/0") == "redis://:[REDACTED]@localhost:6379/0"
    url = "https://api.telegram.org/bot987654:AAFabcdefghijklmnopqrstuvwxyz012345/x"
    assert mask_text(url) == "https://api.telegram.org/bot[REDACTED]/x"
    assert mask_text("Authorization: Bearer EAAGxyz.abc") == "Authorization: Bearer [REDACTED]"
    assert mask_text("GET /x?access_token=EAAG123&y=1") == "GET /x?access_token=[REDACTED]&y=1"
    assert mask_text('{"password": "hunter2"}') == '{"password": "[REDACTED]"}'
    # A configuration error names the setting: that is no secret.
    assert mask_text("WEBHOOK_SECRET: must be 1-256 characters") == (
        "WEBHOOK_SECRET: must be 1-256 characters"
    )


# ------------------------------------------------------------------------------ secrets


def test_configured_secrets_are_masked_however_short() -> None:
    configure_secrets(["xyz12", "a-much-longer-secret-value", None])
    assert mask_text("key xyz12, other xyz123") == "key [REDACTED], other xyz123"
    assert mask_text("inside:a-much-longer-secret-value!") == "inside:[REDACTED]!"


def test_secrets_with_quotes_or_backslashes_do_not_slip_through_json() -> None:
    secret = 'pa"ss\\word'
    configure_secrets([secret])
    formatter = RedactingFormatter(json_lines=True)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token %s", (secret,), None)
    line = formatter.format(record)
    assert secret not in line and json.dumps(secret)[1:-1] not in line
    assert json.loads(line)["message"] == "token [REDACTED]"
    # Already encoded by someone else (a JSON body logged as text): masked as well.
    assert mask_text(json.dumps({"v": secret})) == '{"v": "[REDACTED]"}'


def test_every_setting_named_like_a_secret_is_marked_secret() -> None:
    named = {n for n in Settings.model_fields if re.search(r"token|secret|password|_key$", n)}
    assert named <= set(SECRET_SETTINGS), named - set(SECRET_SETTINGS)


def test_settings_secret_values_include_url_passwords() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        bot_token="123456:AAEsecret-token-value-abcdefghijklmno",
        database_url="postgresql+asyncpg://app:p%40ss@db/app",
        redis_url="redis://:r3dis@localhost:6379/0",
        smtp_password="abc",
    )
    values = settings.secret_values()
    assert {"123456:AAEsecret-token-value-abcdefghijklmno", "p@ss", "r3dis", "abc"} <= set(values)


# ------------------------------------------------------------------------------ log records


def test_secrets_are_replaced_everywhere_in_a_record_including_tracebacks() -> None:
    token = "123456:AAE-very-secret-token"
    formatter = RedactingFormatter(Redactor([token, None, "short"]))
    try:
        raise ValueError(f"POST https://api.telegram.org/bot{token}/sendMessage failed")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "url was %s for +33612345678", (token,),
            sys.exc_info(),
        )
    text = formatter.format(record)
    assert token not in text
    assert "[REDACTED]" in text
    assert "+33612345678" not in text and "+•••••••••78" in text


def test_a_line_carries_update_masked_user_and_support_code() -> None:
    formatter = RedactingFormatter(json_lines=True)
    record = logging.LogRecord("bot.x", logging.ERROR, __file__, 1, "failed", (), None)
    with log_context(update_id=77, user_id=123456789):
        record.support_code = "K7M2Q9XA"
        payload = json.loads(formatter.format(record))
    assert payload["level"] == "ERROR" and payload["logger"] == "bot.x"
    assert payload["update_id"] == 77
    assert payload["user_id"] == "•••789"
    assert payload["support_code"] == "K7M2Q9XA"
    text = RedactingFormatter().format(record)
    assert "ERROR bot.x" in text and "123456789" not in text


# ------------------------------------------------------------------------------ cost


ADVERSARIAL = [
    "1" * 100_000,  # digits: quadratic before (16 KB took 0.7 s)
    "+1" * 50_000,
    "+1 " * 40_000,
    "%2B1" * 30_000,
    "a" * 100_000 + "@",
    "a@" * 50_000,
    "a." * 50_000,
    "://a:" * 30_000,
    "token=" * 20_000,
    '"to": ' * 20_000,
    "bearer " * 20_000,
    "1234567:" * 20_000,
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=lambda t: repr(t[:8]))
def test_large_adversarial_input_is_cut_before_any_pattern_runs(text: str) -> None:
    masked = mask_text(text)
    assert masked.endswith(TRUNCATED)
    # What follows the cut was never looked at: each mask at most doubles what it replaced.
    assert len(masked) < 2 * TEXT_LIMIT


def test_no_pattern_nests_a_repetition_inside_another() -> None:
    """What keeps every pattern linear: a quantified group never holds a quantifier, so a
    failed match cannot backtrack through combinations (a bounded candidate is checked in
    Python instead)."""
    nested = re.compile(r"\((?:[^()\\]|\\.)*[*+?}](?:[^()\\]|\\.)*\)[*+?{]")
    for _, pattern, _ in masking._PATTERNS:
        source = pattern.pattern
        # Lookarounds are not repeated; a character class is one atom.
        atoms = re.sub(r"\[(?:[^\]\\]|\\.)*\]", "C", source)
        atoms = re.sub(r"\(\?<?[=!](?:[^()\\]|\\.)*\)", "", atoms)
        assert not nested.search(atoms), source


def test_a_cut_falls_on_a_space_so_no_value_is_left_half_visible() -> None:
    text = "x" * (TEXT_LIMIT - 10) + " +33612345678 tail"
    masked = mask_text(text)
    assert "+336" not in masked and "3361" not in masked
