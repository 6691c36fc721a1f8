"""Secrets and phone numbers never reach the logs unmasked."""

from __future__ import annotations

import logging

from bot.logs import RedactingFormatter, Redactor, mask_phone_numbers


def test_phone_numbers_keep_country_code_and_last_two_digits() -> None:
    assert mask_phone_numbers("call +33612345678 now") == "call +33*******78 now"
    assert mask_phone_numbers("+15551234567") == "+15*******67"


def test_non_phone_numbers_are_left_alone() -> None:
    # Telegram ids, update ids, amounts: no leading '+', not a phone number.
    assert mask_phone_numbers("user 123456789 paid 1500") == "user 123456789 paid 1500"


def test_secrets_are_replaced_everywhere_in_a_record_including_tracebacks() -> None:
    token = "123456:AAE-very-secret-token"
    formatter = RedactingFormatter(Redactor([token, None, "short"]))
    try:
        raise ValueError(f"POST https://api.telegram.org/bot{token}/sendMessage failed")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "url was %s for +33612345678", (token,),
            sys.exc_info(),
        )
    text = formatter.format(record)
    assert token not in text
    assert "[REDACTED]" in text
    assert "+33612345678" not in text


def test_json_lines_are_masked_too() -> None:
    formatter = RedactingFormatter(Redactor(["topsecret-value"]), json_lines=True)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", ("topsecret-value",), None)
    assert "topsecret-value" not in formatter.format(record)
