"""Every provider code the project knows lands in its class, decided by the code, not the status."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import aiosmtplib
import pytest
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import GetMe, SendMessage

from services.notifications.classify import (
    TWILIO_CODES,
    WHATSAPP_CODES,
    classify_smtp,
    classify_telegram,
    classify_twilio,
    classify_whatsapp,
    clean_text,
    mask_phone_numbers,
    seconds_until_next_utc_midnight,
)
from services.notifications.failures import FailureClass

T = FailureClass.TRANSIENT
R = FailureClass.RATE_LIMITED
P = FailureClass.PERMANENT
B = FailureClass.BROKEN
U = FailureClass.UNKNOWN

FULL_NUMBER = re.compile(r"\+?\d{8,15}")


def wa_error(code: int, message: str = "", details: str = "") -> dict:
    error: dict = {"message": message or f"(#{code}) Something", "type": "OAuthException"}
    error["code"] = code
    if details:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    error["fbtrace_id"] = "AbCdEf123"
    return {"error": error}


def tw_error(code: int, status: int = 400, message: str = "") -> dict:
    return {
        "code": code,
        "message": message or f"Twilio error {code}",
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


# ------------------------------------------------------------------------------- WhatsApp

WHATSAPP_TABLE = [
    # transient
    (1, T, None),
    (2, T, None),
    (131000, T, None),
    (131016, T, None),
    (131057, T, None),
    # rate limited, with where the limit applies
    (130429, R, "sender"),
    (131056, R, "recipient"),
    (4, R, "channel"),
    (80007, R, "sender"),
    # permanent
    (131026, P, None),
    (131047, P, None),
    (131050, P, None),
    (131030, P, None),
    (100, P, None),
    # broken
    (0, B, None),
    (190, B, None),
    (10, B, None),
    (368, B, None),
    (200, B, None),
    (299, B, None),
    # sender-level: broken for one sender number, the others take over
    (131031, B, "sender"),
    (133010, B, "sender"),
]


@pytest.mark.parametrize(("code", "kind", "scope"), WHATSAPP_TABLE)
@pytest.mark.parametrize("status", [400, 401, 429, 500, 503])
def test_whatsapp_code_decides_whatever_the_status(code, kind, scope, status):
    failure = classify_whatsapp(status, wa_error(code))
    assert failure.kind is kind
    assert failure.code == str(code)
    assert failure.provider == "whatsapp"
    assert failure.scope == scope
    if kind is R:
        assert failure.retry_after is not None and failure.retry_after > 0
    else:
        assert failure.retry_after is None


def test_an_unknown_phone_number_id_is_a_sender_level_failure():
    body = wa_error(100)
    body["error"]["error_subcode"] = 33
    failure = classify_whatsapp(400, body)
    assert (failure.kind, failure.scope) == (B, "sender")
    assert classify_whatsapp(400, wa_error(100)).kind is P


def test_whatsapp_examples_from_the_brief():
    assert classify_whatsapp(400, wa_error(131056)).kind is R
    assert classify_whatsapp(500, wa_error(131026)).kind is P
    assert classify_whatsapp(200, wa_error(190)).kind is B


def test_whatsapp_pair_rate_waits_the_recipient_interval():
    failure = classify_whatsapp(400, wa_error(131056), recipient_interval=12.0)
    assert (failure.kind, failure.scope, failure.retry_after) == (R, "recipient", 12.0)
    assert classify_whatsapp(400, wa_error(131056)).retry_after == 6.0


def test_whatsapp_opt_out_flagged_only_for_131050():
    assert classify_whatsapp(400, wa_error(131050)).opt_out is True
    for code, _, _ in WHATSAPP_TABLE:
        if code != 131050:
            assert classify_whatsapp(400, wa_error(code)).opt_out is False


@pytest.mark.parametrize("code", [999999, 131052, 12345, 2500])
@pytest.mark.parametrize("status", [400, 500, 503])
def test_whatsapp_unknown_codes_are_unknown(code, status):
    failure = classify_whatsapp(status, wa_error(code))
    assert failure.kind is U
    assert failure.code == str(code)


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (500, None, T),
        (502, {"unexpected": True}, T),
        (503, {}, T),
        (429, None, R),
        (401, None, B),
        (400, None, U),
        (None, None, U),
    ],
)
def test_whatsapp_status_decides_only_without_a_code(status, body, kind):
    assert classify_whatsapp(status, body).kind is kind


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError(),
        TimeoutError("read"),
        aiohttp.ClientConnectionError("refused"),
        aiohttp.ServerDisconnectedError(),
        ConnectionResetError(104, "reset"),
    ],
)
def test_whatsapp_network_errors_are_transient(exc):
    failure = classify_whatsapp(None, None, exc)
    assert failure.kind is T
    assert failure.code in ("timeout", "network")


def test_whatsapp_webhook_status_error_entry_is_classified_too():
    entry = {"code": 131026, "title": "Message undeliverable", "error_data": {"details": "x"}}
    assert classify_whatsapp(None, entry).kind is P
    statuses_errors = {"errors": [{"code": 131050, "title": "stopped marketing"}]}
    failure = classify_whatsapp(None, statuses_errors)
    assert failure.kind is P and failure.opt_out


def test_whatsapp_code_as_string_is_read():
    assert classify_whatsapp(400, {"error": {"code": "131056"}}).kind is R


def test_whatsapp_table_covers_every_code_named_in_the_brief():
    named = {1, 2, 131000, 131016, 131057, 130429, 131056, 4, 80007}
    named |= {131026, 131047, 131050, 131030, 100, 0, 190, 10, 368, 131031, 133010}
    assert named <= WHATSAPP_CODES.keys()


def test_whatsapp_text_has_no_phone_number_or_token():
    body = wa_error(
        100,
        "(#100) Invalid parameter",
        "Invalid parameter to: '33612345678'. Use +33612345678 with Bearer abc.def-ghi",
    )
    failure = classify_whatsapp(400, body)
    assert not FULL_NUMBER.search(failure.text), failure.text
    assert "+•••••••••78" in failure.text
    assert "abc.def-ghi" not in failure.text


# --------------------------------------------------------------------------------- Twilio

TWILIO_TABLE = [
    (30003, T, None),
    (30008, T, None),
    (30500, T, None),
    (20500, T, None),
    (63018, R, "channel"),
    (63038, R, "channel"),
    (21211, P, None),
    (21610, P, None),
    (21614, P, None),
    (30005, P, None),
    (30006, P, None),
    (63016, P, None),
    (20003, B, None),
    (63007, B, None),
]


@pytest.mark.parametrize(("code", "kind", "scope"), TWILIO_TABLE)
@pytest.mark.parametrize("status", [400, 401, 429, 500])
def test_twilio_code_decides_whatever_the_status(code, kind, scope, status):
    failure = classify_twilio(status, tw_error(code, status))
    assert failure.kind is kind
    assert failure.code == str(code)
    assert failure.provider == "twilio"
    assert failure.scope == scope
    assert failure.opt_out is (code == 21610)


def test_twilio_daily_limit_waits_until_next_utc_midnight():
    now = datetime(2026, 3, 14, 22, 30, tzinfo=UTC)
    failure = classify_twilio(429, tw_error(63038, 429), now=now)
    assert failure.kind is R
    assert failure.retry_after == 90 * 60


def test_twilio_status_callback_error_code_is_read():
    failure = classify_twilio(None, {"MessageStatus": "undelivered", "ErrorCode": "30005"})
    assert (failure.kind, failure.code) == (P, "30005")


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (500, None, T),
        (503, {"code": 99999, "message": "new"}, T),  # a server error with a code we don't know
        (400, {"code": 99999, "message": "new"}, U),
        (400, None, U),
    ],
)
def test_twilio_without_a_known_code(status, body, kind):
    assert classify_twilio(status, body).kind is kind


def test_twilio_network_errors_are_transient():
    assert classify_twilio(None, None, TimeoutError()).kind is T
    assert classify_twilio(None, None, aiohttp.ClientOSError(111, "refused")).kind is T


def test_twilio_text_has_no_phone_number():
    body = tw_error(21211, message="The 'To' number +15558675310 is not a valid phone number.")
    failure = classify_twilio(400, body)
    assert not FULL_NUMBER.search(failure.text)
    assert "+•••••••••10" in failure.text


def test_twilio_table_covers_every_code_named_in_the_brief():
    named = {30003, 30008, 30500, 63018, 63038, 21211, 21610, 21614, 30005, 30006, 63016}
    assert named | {20003, 63007} <= TWILIO_CODES.keys()


# ----------------------------------------------------------------------------------- SMTP


@pytest.mark.parametrize(
    ("exc", "kind", "code"),
    [
        (aiosmtplib.SMTPRecipientRefused(550, "No such user", "a@b.c"), P, "550"),
        (aiosmtplib.SMTPRecipientRefused(551, "User not local", "a@b.c"), P, "551"),
        (aiosmtplib.SMTPRecipientRefused(553, "Mailbox name invalid", "a@b.c"), P, "553"),
        (aiosmtplib.SMTPRecipientRefused(450, "Mailbox busy", "a@b.c"), T, "450"),
        (
            aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(550, "No such user", "a@b.c")]
            ),
            P,
            "550",
        ),
        (aiosmtplib.SMTPAuthenticationError(535, "Authentication failed"), B, "535"),
        (aiosmtplib.SMTPResponseException(421, "Service not available"), T, "421"),
        (aiosmtplib.SMTPDataError(451, "Try again later"), T, "451"),
        (aiosmtplib.SMTPDataError(554, "Rejected as spam"), P, "554"),
        (aiosmtplib.SMTPSenderRefused(553, "Sender not allowed", "bot@x.y"), B, "553"),
        (aiosmtplib.SMTPConnectError("Error connecting to 127.0.0.1 on port 1"), T, "network"),
        (aiosmtplib.SMTPConnectTimeoutError("Timed out connecting"), T, "timeout"),
        (aiosmtplib.SMTPReadTimeoutError("Timed out waiting"), T, "timeout"),
        (aiosmtplib.SMTPServerDisconnected("Unexpected EOF"), T, "network"),
        (ConnectionRefusedError(111, "Connection refused"), T, "network"),
        (aiosmtplib.SMTPNotSupported("STARTTLS extension not supported"), B, "unsupported"),
        (aiosmtplib.SMTPResponseException(599, "Odd"), U, "599"),
    ],
)
def test_smtp(exc, kind, code):
    failure = classify_smtp(exc)
    assert (failure.kind, failure.code, failure.provider) == (kind, code, "smtp")


# ------------------------------------------------------------------------------- Telegram

METHOD = SendMessage(chat_id=1001, text="hello")
GROUP_METHOD = SendMessage(chat_id=-1001234567890, text="hello")


@pytest.mark.parametrize(
    ("exc", "kind", "code"),
    [
        (TelegramForbiddenError(METHOD, "Forbidden: bot was blocked by the user"), P, "403"),
        (TelegramForbiddenError(METHOD, "Forbidden: bot was kicked from the group chat"), P, "403"),
        (TelegramForbiddenError(METHOD, "Forbidden: user is deactivated"), P, "403"),
        (TelegramBadRequest(METHOD, "Bad Request: chat not found"), P, "400"),
        (TelegramBadRequest(METHOD, "Bad Request: user not found"), P, "400"),
        (TelegramBadRequest(METHOD, "Bad Request: PEER_ID_INVALID"), P, "400"),
        (TelegramBadRequest(METHOD, "Bad Request: message is too long"), U, "400"),
        (TelegramBadRequest(METHOD, "Bad Request: can't parse entities: x"), U, "400"),
        (TelegramUnauthorizedError(METHOD, "Unauthorized"), B, "401"),
        (TelegramServerError(METHOD, "Internal Server Error"), T, "5xx"),
        (TelegramNetworkError(METHOD, "Request timeout error"), T, "timeout"),
        (TelegramNetworkError(METHOD, "ClientConnectorError: refused"), T, "network"),
        (TelegramEntityTooLarge(METHOD, "Request Entity Too Large"), P, "413"),
        (TimeoutError(), T, "timeout"),
        (ClientDecodeError("bad json", ValueError("x"), "<html>"), U, "decode"),
        (RuntimeError("surprise"), U, "error"),
    ],
)
def test_telegram(exc, kind, code):
    failure = classify_telegram(exc)
    assert (failure.kind, failure.code, failure.provider) == (kind, code, "telegram")
    assert failure.opt_out is False


def test_telegram_retry_after():
    failure = classify_telegram(TelegramRetryAfter(METHOD, "Too Many Requests: retry after 7", 7))
    assert (failure.kind, failure.retry_after, failure.code) == (R, 7.0, "429")
    assert failure.scope == "recipient"  # the pacing middleware blocks globally on evidence
    group = classify_telegram(TelegramRetryAfter(GROUP_METHOD, "Too Many Requests", 30))
    assert (group.scope, group.retry_after) == ("recipient", 30.0)
    no_chat = classify_telegram(TelegramRetryAfter(GetMe(), "Too Many Requests", 5))
    assert no_chat.scope == "channel"


def test_telegram_text_has_no_token():
    exc = TelegramNetworkError(
        METHOD, "ClientError: https://api.telegram.org/bot123456:AAFabcdefghijklmnopqrstuvwxyz0/x"
    )
    failure = classify_telegram(exc)
    assert "AAFabcdefghijklmnopqrstuvwxyz0" not in failure.text


# -------------------------------------------------------------------------------- helpers


def test_mask_phone_numbers_matches_the_log_format():
    # services.masking's one display format; a bare number only in a field that holds one.
    assert mask_phone_numbers("call +33612345678 now") == "call +•••••••••78 now"
    assert mask_phone_numbers("to=15551234567.") == "to=+•••••••••67."
    assert mask_phone_numbers("user 15551234567.") == "user 15551234567."
    assert mask_phone_numbers("code 131026") == "code 131026"
    assert mask_phone_numbers("wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5") == (
        "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5"
    )


def test_clean_text_is_short_and_single_line():
    text = clean_text("a\n b   c" + "x" * 1000)
    assert "\n" not in text and len(text) <= 300 and text.startswith("a b c")


def test_seconds_until_next_utc_midnight():
    assert seconds_until_next_utc_midnight(datetime(2026, 1, 1, 23, 59, 30, tzinfo=UTC)) == 30
    assert seconds_until_next_utc_midnight(datetime(2026, 1, 1, tzinfo=UTC)) == 86_400


def test_services_import_neither_aiogram_nor_the_bot():
    """Only the Telegram channel talks to aiogram; no service module imports bot/ or handlers/."""
    root = Path(__file__).resolve().parents[2] / "services" / "notifications"
    modules = [root / "classify.py"] + [
        root / "channels" / f"{name}.py"
        for name in ("whatsapp", "whatsapp_limits", "sms", "email", "manual", "telegram")
    ]
    for module in modules:
        imported: set[str] = set()
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert not imported & {"bot", "handlers", "middlewares"}, module.name
        if module.name != "telegram.py":
            assert "aiogram" not in imported, module.name
