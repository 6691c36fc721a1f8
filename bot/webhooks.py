"""Provider webhooks on the bot's web app: WhatsApp Cloud API (verification, statuses, inbound
messages) and Twilio status callbacks.

Promises:
- Nothing is read as data before its signature is checked on the raw body, with a constant-time
  comparison of bytes: WhatsApp's X-Hub-Signature-256 (HMAC-SHA256 of the body with the app
  secret) and Twilio's X-Twilio-Signature (HMAC-SHA1 of the URL Twilio called and the sorted POST
  params with the auth token), both by one preamble (`Webhooks._signed_body`); Telegram's
  X-Telegram-Bot-Api-Secret-Token by `TelegramWebhook`. A missing signature is answered 401, a
  wrong one 403 (Telegram: 401); a provider whose secret is not configured is answered 503 (and
  logged once), so nothing unverified is ever applied.
- Bounded work per request: the signature header and the declared Content-Length are checked
  before a byte of the body is read (401, 413), a body is read up to its limit (413) and within
  WEBHOOK_READ_TIMEOUT_SECONDS (408), and a refusal before the body was read closes the
  connection instead of draining it. Telegram updates are handled at most
  MAX_CONCURRENT_UPDATES at once: beyond that a request waits for a slot (503 if none frees up
  within the read timeout, and Telegram sends it again).
- Bad input never causes a 500, signed or not: not JSON, not UTF-8, or not the shape the
  provider sends -> 400 with a short JSON error. Every string kept from a body is checked at the
  edge for its length and characters (no lone surrogates, no NUL, identifiers in printable
  ASCII, numbers of a bounded number of ASCII digits), so nothing malformed reaches int() or the
  database. One malformed statuses[] or messages[] entry (or entry[], changes[]) of Meta's batch
  is skipped and counted in one log line; the others are applied. A body with malformed entries
  and nothing usable is refused (400). In every refusal nothing was changed.
- Refusals are logged at a bounded rate (`RefusalLog`): the first of a kind at once, then one
  line a minute with how many more there were, never a line per request.
- Inbound messages (messages[]) are stored (services.whatsapp_inbound.InboundStore: INSERT ...
  ON CONFLICT DO NOTHING on the wamid, concurrent requests' messages committed together) before
  the 200, and processed afterwards by the inbound worker, so the answer stays fast and a crash
  after it loses nothing; a redelivery is stored once. A store that fails is answered 503.
- Statuses are applied in one unit of work (services.notifications.receipts), then answered
  200. Every change is idempotent, so a delivery Meta retries changes nothing more. A
  receipt for a message the dispatcher is still sending (no row has its message id yet, but its
  reference names a notification being sent: WhatsApp's biz_opaque_callback_data, Twilio's
  StatusCallback `?ref=`) is stored and applied once the send is recorded, and answered 200
  like the rest: a 503 would make Meta send the whole batch again, messages included. Twilio
  signs the URL it called, query included, so the reference is verified with the body.
- Bodies, phone numbers and secrets are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from aiogram import Bot, Dispatcher
from aiogram.methods import TelegramMethod
from aiogram.types import Update
from aiohttp import web
from multidict import MultiDict
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.delivery import TWILIO_STATUS_PATH
from database.engine import Database
from services import whatsapp_inbound
from services.alerts import Alerts
from services.clock import Clock
from services.notifications import receipts
from services.notifications.classify import classify_twilio, classify_whatsapp
from services.notifications.failures import Failure
from services.refusal_log import RefusalLog
from services.whatsapp_inbound import Received

log = logging.getLogger(__name__)

WHATSAPP_PATH = "/webhooks/whatsapp"

# Meta's payloads are small, but third-party guides give 3 MB as their maximum: refusing a real
# batch would make Meta retry it for 7 days, so the limit sits just above that.
WHATSAPP_MAX_BODY = 3 * 1024 * 1024 + 64 * 1024
# A status callback is a short form; anything near this is not Twilio.
TWILIO_MAX_BODY = 64 * 1024
# A Telegram update is a message of at most 4096 characters and its metadata.
TELEGRAM_MAX_BODY = 1024 * 1024
MAX_ID_LENGTH = 512
MAX_CHALLENGE_LENGTH = 256
MAX_SIGNATURE_LENGTH = 256
# Meta's text messages are at most 4096 characters; error texts are cut to this.
MAX_TEXT_LENGTH = 65536
MAX_ERROR_TEXT_LENGTH = 1024
DEFAULT_READ_TIMEOUT = 10.0
DEFAULT_MAX_CONCURRENT_UPDATES = 100
TELEGRAM_PATH = "/webhooks/telegram"
TELEGRAM_SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"

# Identifiers (wamids, SIDs, statuses) are printable ASCII; numbers a few ASCII digits, so int()
# never meets 5,000 digits (Python refuses more than 4,300) or a digit of another script.
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")
_TOKEN = re.compile(r"[A-Za-z_-]{1,32}")
_DIGITS = re.compile(r"[0-9]{1,12}")
_PHONE = re.compile(r"\+?[0-9]{1,32}")
_TWILIO_SID = re.compile(r"[A-Za-z0-9]{1,64}")
_TWILIO_CODE = re.compile(r"[0-9]{1,9}")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

BaseUrl = str | Callable[[], str]
AlertsSource = Alerts | Callable[[], Alerts | None] | None


class MalformedWebhook(ValueError):
    """The body is not what the provider sends; the message is short and safe to return."""


class _TooLarge(Exception):
    pass


class _HugeNumber:
    """A JSON number of more digits than any field holds: kept as a marker no field accepts, so
    it spoils only its own entry instead of the whole body."""

    __slots__ = ()


def _json_int(text: str) -> int | _HugeNumber:
    return int(text) if len(text) <= 18 else _HugeNumber()


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """One statuses[] entry of a WhatsApp webhook."""

    wamid: str
    status: str
    at: datetime | None
    failure: Failure | None
    reference: str | None  # biz_opaque_callback_data: the idempotency key the send carried


# One messages[] entry of a WhatsApp webhook, as the inbound store takes it.
InboundMessage = Received


@dataclass(slots=True)
class WhatsAppBatch:
    """What one webhook body holds: the entries that can be applied, and why others could not."""

    statuses: list[StatusUpdate] = field(default_factory=list)
    messages: list[InboundMessage] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one short reason per malformed entry


# ------------------------------------------------------------------------------------ parsing


def parse_timestamp(value: Any) -> datetime | None:
    """Epoch seconds (a string of ASCII digits, as Meta sends, or an int) -> UTC; None if
    unusable (a string of 5,000 digits included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not _DIGITS.fullmatch(value):
            return None
        value = int(value)
    if isinstance(value, int) and 0 < value < 10**11:
        return datetime.fromtimestamp(value, UTC)
    return None


def storable(value: str) -> bool:
    """True when `value` can be stored by both engines: valid UTF-8 (no lone surrogate, which
    JSON's "\\ud800" yields) and no NUL (PostgreSQL text refuses it)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def _short_text(value: Any, limit: int = MAX_ERROR_TEXT_LENGTH) -> str | None:
    """A provider's free text (error title, message), made storable and cut to `limit`."""
    if not isinstance(value, str):
        return None
    value = value[:limit]
    if storable(value):
        return value
    cleaned = value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
    return cleaned


def _list(container: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = container.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedWebhook(f"{where}.{key} is not a list")
    return value


def _identifier(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if (
        not isinstance(value, str)
        or len(value) > MAX_ID_LENGTH
        or not _PRINTABLE_ASCII.fullmatch(value)
    ):
        raise MalformedWebhook(f"{where}.{key} is missing or not printable ASCII")
    return value


def _status_failure(entry: Mapping[str, Any]) -> Failure | None:
    errors = entry.get("errors")
    first = errors[0] if isinstance(errors, list) and errors else None
    if not isinstance(first, Mapping) or "code" not in first:
        return None
    code = first.get("code")
    if isinstance(code, str) and _DIGITS.fullmatch(code.strip()):
        code = int(code.strip())
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code < 10**9:
        raise MalformedWebhook("statuses[].errors[].code is not a number")
    # Only the fields classification reads, each checked here rather than trusted there.
    details = first.get("error_data")
    error: dict[str, Any] = {
        "code": code,
        "title": _short_text(first.get("title")),
        "message": _short_text(first.get("message")),
    }
    if isinstance(details, Mapping):
        error["error_data"] = {"details": _short_text(details.get("details"))}
    return classify_whatsapp(None, error)


def _inbound_text(message: Mapping[str, Any]) -> str | None:
    kind = message.get("type")
    # A typed text, a template's quick-reply button (e.g. "Stop promotions"), or the title of
    # an interactive button or list row the customer tapped.
    content = message.get(kind) if kind in ("text", "button", "interactive") else None
    if not isinstance(content, Mapping):
        return None
    if kind == "interactive":
        reply = content.get(content.get("type")) if isinstance(content.get("type"), str) else None
        content = reply if isinstance(reply, Mapping) else {}
    value = content.get({"text": "body", "button": "text"}.get(kind, "title"))
    if not isinstance(value, str):
        return None
    if len(value) > MAX_TEXT_LENGTH:
        raise MalformedWebhook("messages[] text is too long")
    # A NUL or a lone surrogate cannot be stored: cleaned, rather than losing the message.
    return value if storable(value) else _short_text(value, MAX_TEXT_LENGTH)


def _read_status(batch: WhatsAppBatch, status: Any) -> None:
    if not isinstance(status, Mapping):
        raise MalformedWebhook("statuses[] is not an object")
    reference = status.get("biz_opaque_callback_data")
    if isinstance(reference, str) and (len(reference) > MAX_ID_LENGTH or not storable(reference)):
        raise MalformedWebhook("statuses[].biz_opaque_callback_data is too long or not text")
    wamid = _identifier(status, "id", "statuses[]")
    state = status.get("status")
    if not isinstance(state, str) or not _TOKEN.fullmatch(state):
        raise MalformedWebhook("statuses[].status is missing or not a word")
    batch.statuses.append(
        StatusUpdate(
            wamid=wamid,
            status=state,
            at=parse_timestamp(status.get("timestamp")),
            failure=_status_failure(status),
            reference=reference if isinstance(reference, str) else None,
        )
    )


@dataclass(frozen=True, slots=True)
class _ChangeContext:
    """What a change says about its messages besides the messages: the business number they
    were sent to, and the senders' profile names (contacts[], by wa_id)."""

    phone_number_id: str | None = None
    names: Mapping[str, str] = field(default_factory=dict)


def _change_context(value: Mapping[str, Any]) -> _ChangeContext:
    metadata = value.get("metadata")
    number_id = metadata.get("phone_number_id") if isinstance(metadata, Mapping) else None
    if not isinstance(number_id, str) or not _PRINTABLE_ASCII.fullmatch(number_id or " "):
        number_id = None
    names: dict[str, str] = {}
    listed = value.get("contacts")
    for contact in listed if isinstance(listed, list) else ():
        if not isinstance(contact, Mapping):
            continue
        wa_id, profile = contact.get("wa_id"), contact.get("profile")
        name = profile.get("name") if isinstance(profile, Mapping) else None
        if isinstance(wa_id, str) and isinstance(name, str) and name:
            names[wa_id] = name
    return _ChangeContext(number_id, names)


def _message_type(message: Mapping[str, Any]) -> str:
    kind = message.get("type")
    return kind if isinstance(kind, str) and _TOKEN.fullmatch(kind) else "unknown"


def _read_message(
    batch: WhatsAppBatch, message: Any, context: _ChangeContext = _ChangeContext()
) -> None:
    if not isinstance(message, Mapping):
        raise MalformedWebhook("messages[] is not an object")
    wamid = _identifier(message, "id", "messages[]")
    phone = message.get("from")
    if not isinstance(phone, str) or not phone:
        log.info("inbound WhatsApp message without a phone number: skipped")
        return
    if not _PHONE.fullmatch(phone):
        raise MalformedWebhook("messages[].from is not a phone number")
    batch.messages.append(
        InboundMessage(
            phone=phone,
            wamid=wamid,
            text=_inbound_text(message),
            at=parse_timestamp(message.get("timestamp")),
            type=_message_type(message),
            profile_name=context.names.get(phone),
            phone_number_id=context.phone_number_id,
            payload=message,
        )
    )


def _read_change(batch: WhatsAppBatch, change: Any) -> None:
    if not isinstance(change, Mapping):
        raise MalformedWebhook("changes[] is not an object")
    if change.get("field", "messages") != "messages":
        return
    value = change.get("value")
    if not isinstance(value, Mapping):
        raise MalformedWebhook("changes[].value is not an object")
    context = _change_context(value)

    def read_message(batch: WhatsAppBatch, message: Any) -> None:
        _read_message(batch, message, context)

    for key, read in (("statuses", _read_status), ("messages", read_message)):
        try:
            items = _list(value, key, "value")
        except MalformedWebhook as exc:
            batch.skipped.append(str(exc))
            continue
        for item in items:
            _skipping(batch, read, item)
    try:
        errors = _list(value, "errors", "value")
    except MalformedWebhook as exc:
        batch.skipped.append(str(exc))
        errors = []
    for error in errors:
        code = error.get("code") if isinstance(error, Mapping) else None
        log.warning("WhatsApp webhook reports an error, code %s",
                    code if isinstance(code, int) else "?")


def _read_entry(batch: WhatsAppBatch, entry: Any) -> None:
    if not isinstance(entry, Mapping):
        raise MalformedWebhook("entry[] is not an object")
    for change in _list(entry, "changes", "entry[]"):
        _skipping(batch, _read_change, change)


def _skipping(
    batch: WhatsAppBatch, read: Callable[[WhatsAppBatch, Any], None], item: Any
) -> None:
    """Read one entry into `batch`; a malformed one adds nothing and is noted as skipped."""
    try:
        read(batch, item)
    except MalformedWebhook as exc:
        batch.skipped.append(str(exc))


def read_whatsapp(payload: Any) -> WhatsAppBatch:
    """A webhook payload -> its statuses and inbound messages, each entry checked on its own: a
    malformed one is skipped (its reason kept in `skipped`), the others kept. MalformedWebhook
    only when the body itself is not Meta's shape (not an object, "entry" not a list).

    Changes of other fields (template or account updates) are skipped, as are messages without a
    phone number in "from"; value.errors (app-level errors) are logged by code.
    """
    if not isinstance(payload, Mapping):
        raise MalformedWebhook("the body is not a JSON object")
    batch = WhatsAppBatch()
    for entry in _list(payload, "entry", "body"):
        _skipping(batch, _read_entry, entry)
    return batch


def parse_whatsapp(payload: Any) -> tuple[list[StatusUpdate], list[InboundMessage]]:
    """Strict `read_whatsapp`: MalformedWebhook when any entry is malformed."""
    batch = read_whatsapp(payload)
    if batch.skipped:
        raise MalformedWebhook(batch.skipped[0])
    return batch.statuses, batch.messages


# ------------------------------------------------------------------------------- signatures


def whatsapp_signature(app_secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value Meta sends for `body`."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def twilio_signature(auth_token: str, url: str, params: MultiDict[str]) -> str:
    """base64(HMAC-SHA1(auth token, URL + each param name+value, sorted)), as Twilio signs."""
    data = url
    for name in sorted(set(params.keys())):
        for value in sorted(set(params.getall(name))):
            data += name + value
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _url_variants(url: str) -> list[str]:
    """The URL as given, and with the scheme's default port added or removed.

    Twilio may sign https://host/path as configured or with ":443"; its own validators try both.
    """
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    variants = [url]
    if default is None or parts.hostname is None:
        return variants
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    if parts.port is None:
        variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}")))
    elif parts.port == default:
        variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}")))
    return variants


def _same(received: str, expected: str) -> bool:
    """Constant-time comparison of the bytes of a header (or query) value and a secret.

    On bytes, because hmac.compare_digest refuses str with non-ASCII characters (a TypeError, so
    a 500, for a forged header). aiohttp decodes header bytes that are not UTF-8 with
    surrogateescape, which gives them back; anything else cannot be the secret.
    """
    try:
        raw = received.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(raw, expected.encode("utf-8"))


# ---------------------------------------------------------------------------------- handlers


def _error(status: int, message: str, *, close: bool = False) -> web.Response:
    """A short JSON error. `close`: the body was not read to its end, so the connection is
    closed rather than drained (aiohttp would otherwise read and discard it for up to 10 s)."""
    response = web.json_response({"error": message}, status=status)
    if close:
        response.force_close()
    return response


async def _read_limited(request: web.Request, limit: int) -> bytes:
    """The raw body, refusing more than `limit` bytes without reading them all."""
    if request.content_length is not None and request.content_length > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_body(request: web.Request, limit: int, timeout: float) -> bytes | web.Response:
    """The raw body, or the refusal: 413 over `limit` (announced or not), 408 when it has not
    all arrived within `timeout` seconds (a body that trickles in holds nothing for long)."""
    if request.content_length is not None and request.content_length > limit:
        return _error(413, "body too large", close=True)
    try:
        async with asyncio.timeout(timeout):
            return await _read_limited(request, limit)
    except _TooLarge:
        return _error(413, "body too large", close=True)
    except TimeoutError:
        return _error(408, "body not received in time", close=True)


_READ_REFUSALS = {413: "body too large", 408: "body not received in time"}


class _Warned:
    """Logs a configuration problem once per process, not once per request."""

    def __init__(self) -> None:
        self._said: set[str] = set()

    def warn(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            log.warning(message)


@dataclass(frozen=True, slots=True)
class _Signing:
    """How one provider signs its calls: what the shared preamble needs to check one."""

    name: str  # opens every log line about a refused call
    header: str
    max_body: int
    secret_setting: str
    unset_consequence: str  # appended to the warning logged when the secret is not set


_WHATSAPP = _Signing(
    name="WhatsApp webhook",
    header="X-Hub-Signature-256",
    max_body=WHATSAPP_MAX_BODY,
    secret_setting="WHATSAPP_APP_SECRET",
    unset_consequence=", so no delivery can be verified (Meta will retry until it is)",
)
_TWILIO = _Signing(
    name="Twilio status callback",
    header="X-Twilio-Signature",
    max_body=TWILIO_MAX_BODY,
    secret_setting="TWILIO_AUTH_TOKEN",
    unset_consequence="",
)

# (secret, raw body) -> the signatures a genuine call may carry; MalformedWebhook when the body
# cannot even be read far enough to compute them (Twilio signs the decoded form fields).
_ExpectedSignatures = Callable[[str, bytes], list[str]]


@dataclass
class Webhooks:
    db: Database
    clock: Clock
    whatsapp_app_secret: str | None
    whatsapp_verify_token: str | None
    twilio_auth_token: str | None
    public_base_url: BaseUrl
    alerts: AlertsSource = None
    read_timeout: float = DEFAULT_READ_TIMEOUT
    refusals: RefusalLog = field(default_factory=lambda: RefusalLog(log))
    # Called once inbound messages are stored: wakes the inbound worker of this process.
    on_inbound: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        self._warned = _Warned()
        self._inbound_store = whatsapp_inbound.InboundStore(self.db)

    def _alerts(self) -> Alerts | None:
        if self.alerts is None or isinstance(self.alerts, Alerts):
            return self.alerts
        return self.alerts()

    def _base_url(self) -> str:
        base = self.public_base_url if isinstance(self.public_base_url, str) else (
            self.public_base_url()
        )
        return base.rstrip("/")

    async def _signed_body(
        self,
        request: web.Request,
        signing: _Signing,
        secret: str | None,
        expected: _ExpectedSignatures,
    ) -> bytes | web.Response:
        """The raw body once its signature checked out, or the refusal to answer with.

        In this order: secret not configured -> 503 (logged once); no signature header -> 401,
        a header that cannot be a signature -> 403, a declared length over the limit -> 413,
        all three before a byte of the body is read; then the body, read up to the limit (413)
        within the read timeout (408); body unreadable for signing -> 400; wrong signature ->
        403.
        """
        if not secret:
            self._warned.warn(
                signing.secret_setting,
                f"{signing.name} refused: {signing.secret_setting} is not set"
                f"{signing.unset_consequence}",
            )
            return _error(503, "webhook not configured", close=True)
        signature = request.headers.get(signing.header, "").strip()
        if not signature:
            self.refusals.refused(signing.name, f"no {signing.header}")
            return _error(401, "missing signature", close=True)
        if len(signature) > MAX_SIGNATURE_LENGTH or not signature.isascii():
            self.refusals.refused(signing.name, f"wrong {signing.header}")
            return _error(403, "wrong signature", close=True)
        body = await _read_body(request, signing.max_body, self.read_timeout)
        if isinstance(body, web.Response):
            self.refusals.refused(signing.name, _READ_REFUSALS[body.status])
            return body
        try:
            candidates = expected(secret, body)
        except MalformedWebhook as exc:
            self.refusals.refused(signing.name, "unreadable body", f" ({exc})")
            return _error(400, str(exc))
        if not any(_same(signature, candidate) for candidate in candidates):
            self.refusals.refused(signing.name, f"wrong {signing.header}")
            return _error(403, "wrong signature")
        return body

    # --- WhatsApp ---------------------------------------------------------------------------

    async def whatsapp_verify(self, request: web.Request) -> web.Response:
        """Meta's GET: answer the challenge when the verify token matches."""
        if not self.whatsapp_verify_token:
            self._warned.warn(
                "verify_token",
                "WhatsApp webhook verification refused: WHATSAPP_VERIFY_TOKEN is not set",
            )
            return _error(403, "verification refused")
        query = request.query
        token = query.get("hub.verify_token", "")
        if query.get("hub.mode") != "subscribe" or not _same(token, self.whatsapp_verify_token):
            self.refusals.refused("WhatsApp webhook verification", "wrong mode or verify token")
            return _error(403, "verification refused")
        challenge = query.get("hub.challenge", "")
        if not challenge or len(challenge) > MAX_CHALLENGE_LENGTH:
            return _error(400, "missing or oversized hub.challenge")
        log.info("WhatsApp webhook verified")
        return web.Response(text=challenge, content_type="text/plain")

    async def whatsapp_receive(self, request: web.Request) -> web.Response:
        """Meta's POST: verify the signature, then apply statuses and messages in one unit."""
        body = await self._signed_body(
            request, _WHATSAPP, self.whatsapp_app_secret,
            lambda secret, body: [whatsapp_signature(secret, body)],
        )
        if isinstance(body, web.Response):
            return body
        try:
            batch = read_whatsapp(_json(body))
        except MalformedWebhook as exc:
            self.refusals.refused(_WHATSAPP.name, "not Meta's shape", f" ({exc})")
            return _error(400, str(exc))
        statuses, messages = batch.statuses, batch.messages
        if batch.skipped:
            if not statuses and not messages:
                self.refusals.refused(_WHATSAPP.name, "nothing usable",
                                      f" ({len(batch.skipped)} malformed entries: "
                                      f"{batch.skipped[0]})")
                return _error(400, batch.skipped[0])
            # Signed, so from Meta: one line per body, not per entry.
            log.warning("WhatsApp webhook: skipped %d malformed entries (first: %s); "
                        "applying the others", len(batch.skipped), batch.skipped[0])

        alerts = self._alerts()

        async def work(session: AsyncSession) -> Counter[str]:
            now = self.clock.now()
            outcomes: Counter[str] = Counter()
            for s in statuses:
                outcome = await receipts.apply_receipt(
                    session, provider="whatsapp", provider_message_id=s.wamid, status=s.status,
                    at=s.at or now, failure=s.failure, now=now, reference=s.reference,
                    alerts=alerts,
                )
                outcomes[outcome.value] += 1
            return outcomes

        outcomes: Counter[str] = Counter()
        if messages:
            # Stored before the 200 and processed by the inbound worker: a redelivery is stored
            # once (unique wamid), and nothing is lost if the process dies now.
            try:
                stored = await self._inbound_store.store(messages, self.clock.now())
            except Exception:  # the database's or its driver's: Meta sends it again
                log.exception("WhatsApp webhook: could not store its messages; Meta will retry")
                return _error(503, "try again later")
            outcomes["inbound stored"] += stored
            if len(messages) > stored:
                outcomes["inbound already stored"] += len(messages) - stored
            if stored and self.on_inbound is not None:
                self.on_inbound()
        try:
            if statuses:
                outcomes += await self.db.run(work)
        except SQLAlchemyError:
            log.exception("WhatsApp webhook: could not apply it; Meta will retry")
            return _error(503, "try again later")
        if outcomes:
            log.info("WhatsApp webhook applied: %s", _summary(outcomes))
        return web.json_response({"status": "ok"})

    # --- Twilio -----------------------------------------------------------------------------

    async def twilio_status(self, request: web.Request) -> web.Response:
        """A Twilio status callback: verify, then apply MessageStatus to the SMS it is about."""
        url = self._base_url() + request.raw_path

        def expected(token: str, body: bytes) -> list[str]:
            form = _form(body)
            return [twilio_signature(token, u, form) for u in _url_variants(url)]

        body = await self._signed_body(request, _TWILIO, self.twilio_auth_token, expected)
        if isinstance(body, web.Response):
            return body
        form = _form(body)  # decoded once already while checking the signature, so it decodes
        sid = form.get("MessageSid") or form.get("SmsSid") or ""
        status = form.get("MessageStatus") or form.get("SmsStatus") or ""
        if not _TWILIO_SID.fullmatch(sid) or not _TOKEN.fullmatch(status):
            self.refusals.refused(_TWILIO.name, "no usable MessageSid or MessageStatus")
            return _error(400, "MessageSid and MessageStatus are required")
        error_code = (form.get("ErrorCode") or "").strip()
        if error_code and not _TWILIO_CODE.fullmatch(error_code):
            self.refusals.refused(_TWILIO.name, "ErrorCode is not a number")
            return _error(400, "ErrorCode is not a number")
        error_message = _short_text(form.get("ErrorMessage")) or ""
        # The notification's id, put in the StatusCallback URL by the SMS channel and signed
        # with it (the URL checked above is the one called, query included).
        ref = request.query.get("ref", "")
        reference = ref if _DIGITS.fullmatch(ref) else None

        alerts = self._alerts()

        async def work(session: AsyncSession) -> receipts.ReceiptOutcome:
            now = self.clock.now()
            failure = (
                classify_twilio(None, {"ErrorCode": error_code, "ErrorMessage": error_message},
                                now=now)
                if error_code
                else None
            )
            return await receipts.apply_receipt(
                session, provider="twilio", provider_message_id=sid, status=status, at=now,
                failure=failure, now=now, reference=reference, alerts=alerts,
            )

        try:
            outcome = await self.db.run(work)
        except SQLAlchemyError:
            log.exception("Twilio status callback: could not apply it")
            return _error(503, "try again later")
        log.info("Twilio status callback %s%s: %s", status[:16],
                 f" ({error_code[:8]})" if error_code else "", outcome.value)
        return web.Response(text=EMPTY_TWIML, content_type="text/xml")


def _form(body: bytes) -> MultiDict[str]:
    """A form-encoded body -> its fields; MalformedWebhook when it is not UTF-8."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedWebhook("the body is not UTF-8 form data") from None
    return MultiDict(parse_qsl(text, keep_blank_values=True, strict_parsing=False))


def _json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_int=_json_int)
    except UnicodeDecodeError:
        raise MalformedWebhook("the body is not UTF-8") from None
    except RecursionError:
        raise MalformedWebhook("the body is nested too deeply") from None
    except ValueError:
        raise MalformedWebhook("the body is not JSON") from None


def _summary(outcomes: Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items()))


def register_webhooks(
    app: web.Application,
    *,
    db: Database,
    clock: Clock,
    whatsapp_app_secret: str | None,
    whatsapp_verify_token: str | None,
    twilio_auth_token: str | None,
    public_base_url: BaseUrl,
    alerts: AlertsSource = None,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    on_inbound: Callable[[], None] | None = None,
) -> Webhooks:
    """Add GET/POST /webhooks/whatsapp and POST /webhooks/twilio/status to `app`.

    `public_base_url` (or a function returning it, when the port is known only once the server
    is bound) is where Twilio reaches the app: the signed URL is it plus the path and query.
    `alerts` (or a function returning it) tells the admins about dead letters. A body not
    received within `read_timeout` seconds is refused (408). `on_inbound` is called after inbound
    messages were stored (the inbound worker's wake-up).
    """
    hooks = Webhooks(
        db=db,
        clock=clock,
        whatsapp_app_secret=whatsapp_app_secret,
        whatsapp_verify_token=whatsapp_verify_token,
        twilio_auth_token=twilio_auth_token,
        public_base_url=public_base_url,
        alerts=alerts,
        read_timeout=read_timeout,
        on_inbound=on_inbound,
    )
    app.router.add_get(WHATSAPP_PATH, hooks.whatsapp_verify, allow_head=False)
    app.router.add_post(WHATSAPP_PATH, hooks.whatsapp_receive)
    app.router.add_post(TWILIO_STATUS_PATH, hooks.twilio_status)
    return hooks



# ------------------------------------------------------------------------- Telegram webhook


class TelegramWebhook:
    """POST /webhooks/telegram in webhook mode, in place of aiogram's SimpleRequestHandler.

    The secret token is compared as bytes in constant time (aiogram compares str, which raises
    for a non-ASCII header: a 500 per request); a missing or wrong one is answered 401 before
    the body is read. The body is read with the same bounds as the provider webhooks, must be an
    Update (else 400), and is then handled in the background, like aiogram's
    handle_in_background, but at most `max_concurrent_updates` at once: a request that finds
    every slot taken waits for one (Telegram holds its request and sends no more than its
    max_connections at once), and is answered 503 if none frees up within the read timeout.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        bot: Bot,
        *,
        secret: str,
        max_concurrent_updates: int = DEFAULT_MAX_CONCURRENT_UPDATES,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        refusals: RefusalLog | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.bot = bot
        self._secret = secret
        self._read_timeout = read_timeout
        self._slots = asyncio.Semaphore(max_concurrent_updates)
        self._refusals = refusals or RefusalLog(log)
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, request: web.Request) -> web.Response:
        name = "Telegram webhook"
        if not self._secret or not _same(
            request.headers.get(TELEGRAM_SECRET_HEADER, ""), self._secret
        ):
            self._refusals.refused(name, f"missing or wrong {TELEGRAM_SECRET_HEADER}")
            response = web.Response(text="Unauthorized", status=401)
            response.force_close()
            return response
        body = await _read_body(request, TELEGRAM_MAX_BODY, self._read_timeout)
        if isinstance(body, web.Response):
            self._refusals.refused(name, _READ_REFUSALS[body.status])
            return body
        try:
            update = Update.model_validate(_json(body), context={"bot": self.bot})
        except (MalformedWebhook, ValidationError):
            self._refusals.refused(name, "the body is not an Update")
            return _error(400, "the body is not an Update")
        try:
            async with asyncio.timeout(self._read_timeout):
                await self._slots.acquire()
        except TimeoutError:
            self._refusals.refused(name, "every handler slot busy")
            return _error(503, "busy; send again later")
        task = asyncio.create_task(self._handle_update(update))
        self._tasks.add(task)  # a task nobody references may be collected mid-run
        task.add_done_callback(self._tasks.discard)
        return web.json_response({})

    async def _handle_update(self, update: Update) -> None:
        try:
            result = await self.dispatcher.feed_update(self.bot, update)
            if isinstance(result, TelegramMethod):
                await self.dispatcher.silent_call_request(self.bot, result)
        except Exception:
            log.exception("Telegram update %s: handling failed", update.update_id)
        finally:
            self._slots.release()


def register_telegram_webhook(
    app: web.Application,
    dispatcher: Dispatcher,
    bot: Bot,
    *,
    secret: str,
    max_concurrent_updates: int = DEFAULT_MAX_CONCURRENT_UPDATES,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
) -> TelegramWebhook:
    """Add POST /webhooks/telegram to `app`.

    The route only: aiogram's register() would also close the bot's session when the web server
    stops, which at shutdown comes before handlers and deliveries have finished.
    """
    webhook = TelegramWebhook(
        dispatcher, bot, secret=secret, max_concurrent_updates=max_concurrent_updates,
        read_timeout=read_timeout,
    )
    app.router.add_post(TELEGRAM_PATH, webhook.handle)
    return webhook
