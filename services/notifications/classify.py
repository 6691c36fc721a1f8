"""Providers' error codes -> FailureClass, in one table-like module (docs/architecture.md,
principle 5).

The decision is made on the provider's own error code, never on the HTTP status alone: the same
code arrives with different statuses (Meta's mirrors list 131056 as 429 and as 400), and the
status only decides when the provider gave no code at all. Every Failure.text is masked
(services.masking: secrets, phone numbers, e-mail addresses) before it leaves this module,
because it is stored in the database and shown to admins.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import aiosmtplib

from services.masking import mask_text
from services.notifications.failures import Failure, FailureClass

T = FailureClass.TRANSIENT
R = FailureClass.RATE_LIMITED
P = FailureClass.PERMANENT
B = FailureClass.BROKEN

# --------------------------------------------------------------------------- WhatsApp Cloud API
# Sources: Meta's error codes (as mirrored in david-lev/pywa pywa/errors.py),
#   https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes
# and Meta's throughput page (130429 / 131057; the pair rate limit 131056 is about one message
# per 6 s to the same user), https://developers.facebook.com/docs/whatsapp/throughput
# code -> (class, rate-limit scope, retry_after seconds or None)
WHATSAPP_CODES: dict[int, tuple[FailureClass, str | None, float | None]] = {
    # transient: Meta says try again
    1: (T, None, None),  # API unknown
    2: (T, None, None),  # API service: downtime or overload
    131000: (T, None, None),  # "Something went wrong"
    131016: (T, None, None),  # service temporarily unavailable
    131057: (T, None, None),  # account in maintenance mode (throughput upgrade, <= 1 min)
    133016: (T, None, None),  # too many register/deregister attempts
    # rate limited: wait as told, then retry
    130429: (R, "sender", 1.0),  # Cloud API throughput of this number (measured per second)
    131056: (R, "recipient", None),  # (business, consumer) pair rate: retry_after = interval
    80007: (R, "sender", 60.0),  # the WABA of this number reached its rate limit
    4: (R, "channel", 60.0),  # the app (the token) reached its API call rate limit
    131048: (R, "sender", 3600.0),  # spam rate limit on this number: not a quick retry
    131064: (R, "channel", 3600.0),  # messaging limit lowered for template violations
    # permanent: this channel cannot reach this recipient (with this message): next channel
    100: (P, None, None),  # invalid parameter (for a send: usually the number)
    131008: (P, None, None),  # required parameter missing
    131009: (P, None, None),  # parameter value not valid
    131026: (P, None, None),  # undeliverable: not on WhatsApp, ToS not accepted, old client
    131030: (P, None, None),  # recipient not on the test number's allowed list
    131047: (P, None, None),  # re-engagement: outside the 24 h window, a template is needed
    131049: (P, None, None),  # per-user marketing limit ("healthy ecosystem"): wait >= 24 h
    131050: (P, None, None),  # the user stopped marketing messages (opt-out, flagged below)
    131051: (P, None, None),  # unsupported message type
    130497: (P, None, None),  # business restricted from messaging users in that country
    132000: (P, None, None),  # template parameter count mismatch
    132001: (P, None, None),  # template missing in that language / not approved
    132005: (P, None, None),  # hydrated template text too long
    132007: (P, None, None),  # template format-character policy violated
    132008: (P, None, None),  # template parameter format invalid
    132012: (P, None, None),  # template parameter format mismatch
    132015: (P, None, None),  # template paused (low quality)
    132016: (P, None, None),  # template disabled
    # broken: the channel itself (token, account, number registration): open its circuit
    0: (B, None, None),  # AuthException
    3: (B, None, None),  # capability or permissions issue
    10: (B, None, None),  # permission denied
    190: (B, None, None),  # access token expired or invalid
    368: (B, None, None),  # temporarily blocked for policy violations
    131042: (B, None, None),  # business payment issue
    # sender-level: broken for one sender number only (scope "sender"): that number is taken
    # down and the send moves to the next healthy one (services/sender_health.py); the
    # channel's circuit opens only when no number is left
    131031: (B, "sender", None),  # account (this number) locked
    133010: (B, "sender", None),  # phone number not registered on the Cloud API
}
# (#100) with subcode 33: the phone-number id does not exist or is not ours: that sender only.
WHATSAPP_UNKNOWN_SENDER_SUBCODE = 33
WHATSAPP_BROKEN_RANGE = range(200, 300)  # 200-299: permission not granted or removed
WHATSAPP_OPT_OUT_CODES = frozenset({131050})

# ------------------------------------------------------------------------------ Twilio (SMS)
# Source: Twilio's error pages, https://www.twilio.com/docs/api/errors/NNNNN for each code, and
# the fake's error table (tests/fakes/twilio.py) for 20003/20404/20429/20500/21606.
# 30xxx codes normally arrive in a status callback (ErrorCode), the others from the create call.
TWILIO_CODES: dict[int, tuple[FailureClass, str | None, float | None]] = {
    # transient
    20500: (T, None, None),  # Twilio internal server error
    30003: (T, None, None),  # unreachable handset (off, no signal)
    30008: (T, None, None),  # unknown error: resend
    30500: (T, None, None),  # Twilio internal error: "try sending the message again"
    # rate limited
    20429: (R, "channel", 1.0),  # too many requests (API concurrency)
    14107: (R, "recipient", 30.0),  # loop guard: > 30 replies between two numbers in 30 s
    63017: (R, "channel", 1.0),  # > 2,000 mps combined
    63018: (R, "channel", 1.0),  # channel rate limit (includes the WhatsApp messaging limit)
    63038: (R, "channel", None),  # account daily message limit: until the day resets
    # permanent
    21211: (P, None, None),  # invalid 'To' number
    21408: (P, None, None),  # region of 'To' not enabled for this account
    21608: (P, None, None),  # unverified number (trial account)
    21610: (P, None, None),  # 'To' unsubscribed (STOP): opt-out, flagged below
    21612: (P, None, None),  # 'To' not reachable from this 'From' via SMS
    21614: (P, None, None),  # 'To' is not a mobile number
    21635: (P, None, None),  # 'To' is a landline
    30004: (P, None, None),  # message blocked (blocklist, DND, filtering)
    30005: (P, None, None),  # unknown destination handset
    30006: (P, None, None),  # landline or unreachable carrier: "do not retry"
    30007: (P, None, None),  # filtered as spam/policy
    63016: (P, None, None),  # outside the WhatsApp window: template needed
    # broken
    20003: (B, None, None),  # authentication failed (Account SID / Auth Token)
    20404: (B, None, None),  # account (or resource) not found: wrong Account SID
    21606: (B, None, None),  # 'From' is not an SMS-capable number of this account
    63007: (B, None, None),  # no channel with that 'From'
}
TWILIO_OPT_OUT_CODES = frozenset({21610})

# --------------------------------------------------------------------------------------- SMTP
# RFC 5321 reply codes: 4yz transient, 5yz permanent; 530/534/535/538 (RFC 4954) are ours to fix.
SMTP_AUTH_CODES = frozenset({530, 534, 535, 538})
SMTP_PERMANENT_CODES = frozenset({550, 551, 552, 553, 554, 555})

# ------------------------------------------------------------------------------------ Telegram
# Source: aiogram's mapping of Bot API errors to exceptions (check_response in
# https://github.com/aiogram/aiogram/blob/dev-3.x/aiogram/client/session/base.py); aiogram 3 has
# no per-description classes, so 400s are told apart by their description.
TELEGRAM_PERMANENT_BAD_REQUESTS = (
    "chat not found",
    "user not found",
    "peer_id_invalid",
    "user_is_deactivated",
    "chat_write_forbidden",
    "have no rights to send",
    "not enough rights",
    "group chat was upgraded",
    "bot was kicked",
    "bot is not a member",
)

# asyncio.TimeoutError is TimeoutError since Python 3.11; aiohttp and sockets raise the others.
_NETWORK_ERRORS = (TimeoutError, aiohttp.ClientError, OSError)


# ----------------------------------------------------------------------------------- cleaning

_TEXT_LIMIT = 300


def mask_phone_numbers(text: str) -> str:
    """Text with its phone numbers (and every other masked value) masked: services.masking's
    rules, the one display format (+•••••••••78)."""
    return mask_text(text)


def clean_text(text: str) -> str:
    """Text safe to store and show: secrets, phone numbers and e-mail addresses masked
    (services.masking), on one line, short."""
    text = mask_text(" ".join(text.split()), limit=4 * _TEXT_LIMIT)
    if len(text) > _TEXT_LIMIT:
        text = text[: _TEXT_LIMIT - 1] + "…"
    return text


def seconds_until_next_utc_midnight(now: datetime) -> float:
    """Seconds from `now` to the next 00:00 UTC (a full day at midnight itself)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    now = now.astimezone(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


def _failure(
    kind: FailureClass,
    provider: str,
    code: str,
    text: str,
    *,
    retry_after: float | None = None,
    scope: str | None = None,
    opt_out: bool = False,
) -> Failure:
    return Failure(
        kind=kind,
        provider=provider,
        code=code,
        text=clean_text(text) or code,
        retry_after=retry_after,
        scope=scope,
        opt_out=opt_out,
    )


def _network_failure(provider: str, exc: BaseException) -> Failure:
    if isinstance(exc, TimeoutError):
        return _failure(T, provider, "timeout", f"timed out ({type(exc).__name__})")
    return _failure(T, provider, "network", f"{type(exc).__name__}: {exc}")


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


# ----------------------------------------------------------------------------------- Telegram


def _aiogram_kinds(exc: BaseException) -> frozenset[str]:
    """The names of the aiogram exception classes `exc` is an instance of (empty if none).

    Services do not import aiogram (only the Telegram channel does), so its exceptions are
    recognised by their class names along the MRO: aiogram.exceptions, as mapped in
    aiogram-anchors.md section 4.
    """
    return frozenset(
        cls.__name__ for cls in type(exc).__mro__ if cls.__module__.split(".", 1)[0] == "aiogram"
    )


def _telegram_scope(exc: BaseException) -> str:
    """ "recipient" for a send to a chat, "channel" for anything else.

    The Bot API does not say which limit a 429 is about. Every send passes through the pacing
    middleware (bot/telegram_pacing.py, policy in pacing_telegram.py), which blocks the chat on
    a 429 and the bot's global budget too when two chats get one close together; so the outbox
    only holds back this recipient and lets the middleware hold back everything when the
    evidence says so.
    """
    chat_id = getattr(getattr(exc, "method", None), "chat_id", None)
    return "channel" if chat_id is None else "recipient"


def classify_telegram(exc: BaseException) -> Failure:
    """An aiogram exception (or a timeout) raised by a Bot API call -> Failure."""
    provider = "telegram"
    kinds = _aiogram_kinds(exc)
    message = str(getattr(exc, "message", "") or type(exc).__name__)
    if "TelegramRetryAfter" in kinds:
        retry_after = float(getattr(exc, "retry_after", 1) or 1)
        return _failure(
            R,
            provider,
            "429",
            f"flood control: retry in {retry_after:g} s",
            retry_after=retry_after,
            scope=_telegram_scope(exc),
        )
    if "TelegramUnauthorizedError" in kinds:
        return _failure(B, provider, "401", f"unauthorized: {message}")
    if "TelegramForbiddenError" in kinds:
        # blocked by the user, kicked from the group, user deactivated, can't initiate...
        return _failure(P, provider, "403", message)
    if "TelegramMigrateToChat" in kinds:
        return _failure(P, provider, "400", f"group migrated to supergroup: {message}")
    if "TelegramEntityTooLarge" in kinds:  # a subclass of TelegramNetworkError
        return _failure(P, provider, "413", f"file too large: {message}")
    if "TelegramServerError" in kinds:
        return _failure(T, provider, "5xx", message)
    if "TelegramNetworkError" in kinds:
        code = "timeout" if "timeout" in message.lower() else "network"
        return _failure(T, provider, code, message)
    if "TelegramBadRequest" in kinds:
        lowered = message.lower()
        if any(marker in lowered for marker in TELEGRAM_PERMANENT_BAD_REQUESTS):
            return _failure(P, provider, "400", message)
        # Too long, can't parse entities, bad file URL...: a bug in what we sent, not the
        # recipient's fault. Unknown: retried on a small budget and logged.
        return _failure(FailureClass.UNKNOWN, provider, "400", message)
    if "TelegramNotFound" in kinds:
        return _failure(FailureClass.UNKNOWN, provider, "404", message)
    if "TelegramConflictError" in kinds:
        return _failure(FailureClass.UNKNOWN, provider, "409", message)
    if "TelegramAPIError" in kinds:
        return _failure(FailureClass.UNKNOWN, provider, "error", message)
    if isinstance(exc, _NETWORK_ERRORS):
        return _network_failure(provider, exc)
    if "ClientDecodeError" in kinds:  # a garbled answer
        return _failure(FailureClass.UNKNOWN, provider, "decode", "undecodable answer")
    return _failure(FailureClass.UNKNOWN, provider, "error", type(exc).__name__)


# ----------------------------------------------------------------------------------- WhatsApp


def _whatsapp_error(body: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The error object: {"error": {...}} from a send, or a bare statuses[].errors[] entry."""
    if not isinstance(body, Mapping):
        return None
    error = body.get("error")
    if isinstance(error, Mapping):
        return error
    if "code" in body:
        return body
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        return errors[0]
    return None


def classify_whatsapp(
    http_status: int | None,
    body: Mapping[str, Any] | None,
    exc: BaseException | None = None,
    *,
    recipient_interval: float = 6.0,
) -> Failure:
    """A Cloud API answer (status and parsed JSON body) or a network error -> Failure.

    `body` may be a send's error answer ({"error": {...}}) or one `statuses[].errors[]` entry of
    a webhook. `recipient_interval` is the wait after a pair rate limit (131056).
    """
    provider = "whatsapp"
    if exc is not None:
        if isinstance(exc, _NETWORK_ERRORS):
            return _network_failure(provider, exc)
        return _failure(FailureClass.UNKNOWN, provider, "error", type(exc).__name__)
    error = _whatsapp_error(body)
    code = _as_int(error.get("code")) if error is not None else None
    if error is not None and code is not None:
        details = error.get("error_data")
        detail = details.get("details") if isinstance(details, Mapping) else None
        message = str(error.get("message") or error.get("title") or "")
        text = f"{message}: {detail}" if detail and detail not in message else message
        entry = WHATSAPP_CODES.get(code)
        if code == 100 and _as_int(error.get("error_subcode")) == WHATSAPP_UNKNOWN_SENDER_SUBCODE:
            entry = (B, "sender", None)
        if entry is None and code in WHATSAPP_BROKEN_RANGE:
            entry = (B, None, None)
        if entry is None:
            return _failure(FailureClass.UNKNOWN, provider, str(code), text)
        kind, scope, retry_after = entry
        if code == 131056:
            retry_after = recipient_interval if recipient_interval > 0 else 6.0
        return _failure(
            kind,
            provider,
            str(code),
            text,
            retry_after=retry_after,
            scope=scope,
            opt_out=code in WHATSAPP_OPT_OUT_CODES,
        )
    return _by_status(provider, http_status)


def _by_status(provider: str, http_status: int | None) -> Failure:
    """Only when the provider gave no code: the HTTP status is all there is."""
    if http_status is None:
        return _failure(FailureClass.UNKNOWN, provider, "no_answer", "no answer and no error")
    code = str(http_status)
    if http_status >= 500:
        return _failure(T, provider, code, f"HTTP {http_status} without an error code")
    if http_status == 429:
        return _failure(R, provider, code, "HTTP 429", retry_after=1.0, scope="channel")
    if http_status in (401, 403):
        return _failure(B, provider, code, f"HTTP {http_status} without an error code")
    if http_status in (408,):
        return _failure(T, provider, code, "HTTP 408 request timeout")
    return _failure(FailureClass.UNKNOWN, provider, code, f"HTTP {http_status} without a code")


# ------------------------------------------------------------------------------------- Twilio


def classify_twilio(
    http_status: int | None,
    body: Mapping[str, Any] | None,
    exc: BaseException | None = None,
    *,
    now: datetime | None = None,
) -> Failure:
    """A Twilio answer (status and JSON body, or a status callback's ErrorCode) -> Failure.

    `body` is the error body ({"code": 21211, "message": ..., "status": 400}); a status callback's
    form may be passed too ({"ErrorCode": "30005", ...}). `now` (UTC) dates the daily reset of
    63038; the caller passes its clock's time.
    """
    provider = "twilio"
    if exc is not None:
        if isinstance(exc, _NETWORK_ERRORS):
            return _network_failure(provider, exc)
        return _failure(FailureClass.UNKNOWN, provider, "error", type(exc).__name__)
    code: int | None = None
    message = ""
    if isinstance(body, Mapping):
        for key in ("code", "ErrorCode", "error_code"):
            code = _as_int(body.get(key))
            if code is not None:
                break
        message = str(body.get("message") or body.get("ErrorMessage") or "")
    if code is None:
        return _by_status(provider, http_status)
    entry = TWILIO_CODES.get(code)
    text = message or f"Twilio error {code}"
    if entry is None:
        if http_status is not None and http_status >= 500:
            return _failure(T, provider, str(code), text)  # a server error with a new code
        return _failure(FailureClass.UNKNOWN, provider, str(code), text)
    kind, scope, retry_after = entry
    if code == 63038:
        retry_after = seconds_until_next_utc_midnight(now or datetime.now(UTC))
    return _failure(
        kind,
        provider,
        str(code),
        text,
        retry_after=retry_after,
        scope=scope,
        opt_out=code in TWILIO_OPT_OUT_CODES,
    )


# --------------------------------------------------------------------------------------- SMTP


def classify_smtp(exc: BaseException) -> Failure:
    """An aiosmtplib (or socket) exception -> Failure."""
    provider = "smtp"
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        if exc.recipients:
            return classify_smtp(exc.recipients[0])
        return _failure(P, provider, "rcpt", "all recipients refused")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        code = exc.code
        text = f"{code} {exc.message}"
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError) or code in SMTP_AUTH_CODES:
            return _failure(B, provider, str(code), text)
        if 400 <= code < 500:
            return _failure(T, provider, str(code), text)
        if isinstance(exc, aiosmtplib.SMTPSenderRefused | aiosmtplib.SMTPHeloError):
            return _failure(B, provider, str(code), text)  # our From or our host name
        if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
            return _failure(T, provider, str(code), text)  # the server would not talk now
        if isinstance(exc, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError):
            return _failure(P, provider, str(code), text)
        if code in SMTP_PERMANENT_CODES:
            return _failure(P, provider, str(code), text)
        return _failure(FailureClass.UNKNOWN, provider, str(code), text)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return _failure(B, provider, "unsupported", str(exc))  # e.g. STARTTLS required, absent
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | aiosmtplib.SMTPConnectError):
        return _network_failure(provider, exc)
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | TimeoutError | OSError):
        return _network_failure(provider, exc)
    return _failure(FailureClass.UNKNOWN, provider, "error", type(exc).__name__)


# ------------------------------------------------------------------------ alert webhook (Slack)
# Source: Slack's incoming webhooks, https://api.slack.com/messaging/webhooks#handling_errors
# (400 invalid_payload, 403 action_prohibited, 404 channel_not_found / no_service, 410
# channel_is_archived, 429 rate limited with Retry-After, 500 rollup_error). Never BROKEN: a
# broken channel raises an alert, and the webhook's failures must not alert about themselves;
# a permanent failure dead-letters the copy, which is logged loudly (dead_letters).


def classify_webhook(
    http_status: int | None,
    body: str = "",
    exc: BaseException | None = None,
    *,
    retry_after: str | None = None,
) -> Failure:
    """An incoming webhook's answer (status, body text, Retry-After header) or error -> Failure."""
    provider = "webhook"
    if exc is not None:
        if isinstance(exc, _NETWORK_ERRORS):
            return _network_failure(provider, exc)
        return _failure(FailureClass.UNKNOWN, provider, "error", type(exc).__name__)
    code = str(http_status)
    text = f"HTTP {http_status}: {body}" if body else f"HTTP {http_status}"
    if http_status is None:
        return _failure(FailureClass.UNKNOWN, provider, "no_answer", "no answer")
    if http_status == 429:
        wait = _as_int(retry_after)
        return _failure(R, provider, code, text, retry_after=float(wait) if wait else 1.0,
                        scope="channel")
    if http_status >= 500 or http_status == 408:
        return _failure(T, provider, code, text)
    return _failure(P, provider, code, text)
