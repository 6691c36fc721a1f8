"""Provider webhooks on the bot's web app: WhatsApp Cloud API (verification, statuses, inbound
messages) and Twilio status callbacks.

Promises:
- Nothing is read as data before its signature is checked on the raw body, with a constant-time
  comparison: WhatsApp's X-Hub-Signature-256 (HMAC-SHA256 of the body with the app secret) and
  Twilio's X-Twilio-Signature (HMAC-SHA1 of the URL Twilio called and the sorted POST params with
  the auth token), both by one preamble (`Webhooks._signed_body`). A missing signature is answered
  401, a wrong one 403; a provider whose secret is not configured is answered 503 (and logged
  once), so nothing unverified is ever applied.
- Bad input never causes a 500: too large -> 413; not JSON, not UTF-8, or not the shape Meta
  sends -> 400 with a short JSON error. In every refusal nothing was changed.
- A verified delivery is applied in one unit of work (services.notifications.receipts), then
  answered 200. Every change is idempotent, so a delivery Meta retries changes nothing more. A
  receipt for a message the dispatcher is still recording is answered 503 so Meta sends it again.
- Bodies, phone numbers and secrets are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from aiohttp import web
from multidict import MultiDict
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.delivery import TWILIO_STATUS_PATH
from database.engine import Database
from services.alerts import Alerts
from services.clock import Clock
from services.notifications import receipts
from services.notifications.classify import classify_twilio, classify_whatsapp
from services.notifications.failures import Failure

log = logging.getLogger(__name__)

WHATSAPP_PATH = "/webhooks/whatsapp"

# Meta's payloads are small, but third-party guides give 3 MB as their maximum: refusing a real
# batch would make Meta retry it for 7 days, so the limit sits just above that.
WHATSAPP_MAX_BODY = 3 * 1024 * 1024 + 64 * 1024
# A status callback is a short form; anything near this is not Twilio.
TWILIO_MAX_BODY = 64 * 1024
MAX_ID_LENGTH = 512
MAX_CHALLENGE_LENGTH = 256

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

BaseUrl = str | Callable[[], str]
AlertsSource = Alerts | Callable[[], Alerts | None] | None


class MalformedWebhook(ValueError):
    """The body is not what the provider sends; the message is short and safe to return."""


class _TooLarge(Exception):
    pass


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """One statuses[] entry of a WhatsApp webhook."""

    wamid: str
    status: str
    at: datetime | None
    failure: Failure | None
    reference: str | None  # biz_opaque_callback_data: the idempotency key the send carried


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One messages[] entry of a WhatsApp webhook."""

    phone: str  # "from": digits, country code first, no '+'
    wamid: str
    text: str | None
    at: datetime | None


# ------------------------------------------------------------------------------------ parsing


def parse_timestamp(value: Any) -> datetime | None:
    """Epoch seconds (a string of digits, as Meta sends, or an int) -> UTC; None if unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and 0 < value < 10**11:
        return datetime.fromtimestamp(value, UTC)
    return None


def _list(container: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = container.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedWebhook(f"{where}.{key} is not a list")
    return value


def _identifier(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise MalformedWebhook(f"{where}.{key} is missing or not a string")
    return value


def _status_failure(entry: Mapping[str, Any]) -> Failure | None:
    errors = entry.get("errors")
    first = errors[0] if isinstance(errors, list) and errors else None
    if isinstance(first, Mapping) and "code" in first:
        return classify_whatsapp(None, first)
    return None


def _inbound_text(message: Mapping[str, Any]) -> str | None:
    kind = message.get("type")
    # A typed text, or a template's quick-reply button (e.g. "Stop promotions").
    content = message.get(kind) if kind in ("text", "button") else None
    if not isinstance(content, Mapping):
        return None
    value = content.get("body" if kind == "text" else "text")
    return value if isinstance(value, str) else None


def parse_whatsapp(payload: Any) -> tuple[list[StatusUpdate], list[InboundMessage]]:
    """A webhook payload -> its statuses and inbound messages; MalformedWebhook on a bad shape.

    Changes of other fields (template or account updates) are skipped, as are messages without a
    phone number in "from"; value.errors (app-level errors) are logged by code.
    """
    if not isinstance(payload, Mapping):
        raise MalformedWebhook("the body is not a JSON object")
    statuses: list[StatusUpdate] = []
    messages: list[InboundMessage] = []
    for entry in _list(payload, "entry", "body"):
        if not isinstance(entry, Mapping):
            raise MalformedWebhook("entry[] is not an object")
        for change in _list(entry, "changes", "entry[]"):
            if not isinstance(change, Mapping):
                raise MalformedWebhook("changes[] is not an object")
            if change.get("field", "messages") != "messages":
                continue
            value = change.get("value")
            if not isinstance(value, Mapping):
                raise MalformedWebhook("changes[].value is not an object")
            for status in _list(value, "statuses", "value"):
                if not isinstance(status, Mapping):
                    raise MalformedWebhook("statuses[] is not an object")
                reference = status.get("biz_opaque_callback_data")
                statuses.append(
                    StatusUpdate(
                        wamid=_identifier(status, "id", "statuses[]"),
                        status=_identifier(status, "status", "statuses[]"),
                        at=parse_timestamp(status.get("timestamp")),
                        failure=_status_failure(status),
                        reference=reference if isinstance(reference, str) else None,
                    )
                )
            for message in _list(value, "messages", "value"):
                if not isinstance(message, Mapping):
                    raise MalformedWebhook("messages[] is not an object")
                wamid = _identifier(message, "id", "messages[]")
                phone = message.get("from")
                if not isinstance(phone, str) or not phone:
                    log.info("inbound WhatsApp message without a phone number: skipped")
                    continue
                messages.append(
                    InboundMessage(
                        phone=phone[:32],
                        wamid=wamid,
                        text=_inbound_text(message),
                        at=parse_timestamp(message.get("timestamp")),
                    )
                )
            for error in _list(value, "errors", "value"):
                code = error.get("code") if isinstance(error, Mapping) else None
                log.warning("WhatsApp webhook reports an error, code %s", str(code)[:16])
    return statuses, messages


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
    return hmac.compare_digest(
        received.encode("utf-8", "replace"), expected.encode("utf-8", "replace")
    )


# ---------------------------------------------------------------------------------- handlers


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


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

    def __post_init__(self) -> None:
        self._warned = _Warned()

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

        In this order: secret not configured -> 503 (logged once); body over the limit -> 413;
        no signature header -> 401; body unreadable for signing -> 400; wrong signature -> 403.
        """
        if not secret:
            self._warned.warn(
                signing.secret_setting,
                f"{signing.name} refused: {signing.secret_setting} is not set"
                f"{signing.unset_consequence}",
            )
            return _error(503, "webhook not configured")
        try:
            body = await _read_limited(request, signing.max_body)
        except _TooLarge:
            log.warning("%s refused: body over %d bytes", signing.name, signing.max_body)
            return _error(413, "body too large")
        signature = request.headers.get(signing.header)
        if not signature:
            log.warning("%s refused: no %s", signing.name, signing.header)
            return _error(401, "missing signature")
        try:
            candidates = expected(secret, body)
        except MalformedWebhook as exc:
            log.warning("%s refused: %s", signing.name, exc)
            return _error(400, str(exc))
        if not any(_same(signature.strip(), candidate) for candidate in candidates):
            log.warning("%s refused: wrong %s", signing.name, signing.header)
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
            log.warning("WhatsApp webhook verification refused: wrong mode or verify token")
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
            payload = _json(body)
            statuses, messages = parse_whatsapp(payload)
        except MalformedWebhook as exc:
            log.warning("WhatsApp webhook refused: %s", exc)
            return _error(400, str(exc))

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
            for m in messages:
                await receipts.record_inbound_whatsapp(
                    session, phone=m.phone, wamid=m.wamid, text=m.text, at=m.at or now, now=now,
                )
                outcomes["inbound"] += 1
            return outcomes

        try:
            outcomes = await self.db.run(work)
        except SQLAlchemyError:
            log.exception("WhatsApp webhook: could not apply it; Meta will retry")
            return _error(503, "try again later")
        if outcomes:
            log.info("WhatsApp webhook applied: %s", _summary(outcomes))
        if outcomes[receipts.ReceiptOutcome.IN_FLIGHT.value]:
            # Everything else was applied, and applying it again changes nothing.
            return _error(503, "a message is still being recorded; send again later")
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
        if not sid or not status or len(sid) > MAX_ID_LENGTH or len(status) > 32:
            log.warning("Twilio status callback refused: no MessageSid or MessageStatus")
            return _error(400, "MessageSid and MessageStatus are required")
        error_code = (form.get("ErrorCode") or "").strip()

        alerts = self._alerts()

        async def work(session: AsyncSession) -> receipts.ReceiptOutcome:
            now = self.clock.now()
            failure = (
                classify_twilio(None, {"ErrorCode": error_code,
                                       "ErrorMessage": form.get("ErrorMessage", "")}, now=now)
                if error_code
                else None
            )
            return await receipts.apply_receipt(
                session, provider="twilio", provider_message_id=sid, status=status, at=now,
                failure=failure, now=now, alerts=alerts,
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
        return json.loads(body)
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
) -> Webhooks:
    """Add GET/POST /webhooks/whatsapp and POST /webhooks/twilio/status to `app`.

    `public_base_url` (or a function returning it, when the port is known only once the server
    is bound) is where Twilio reaches the app: the signed URL is it plus the path and query.
    `alerts` (or a function returning it) tells the admins about dead letters.
    """
    hooks = Webhooks(
        db=db,
        clock=clock,
        whatsapp_app_secret=whatsapp_app_secret,
        whatsapp_verify_token=whatsapp_verify_token,
        twilio_auth_token=twilio_auth_token,
        public_base_url=public_base_url,
        alerts=alerts,
    )
    app.router.add_get(WHATSAPP_PATH, hooks.whatsapp_verify, allow_head=False)
    app.router.add_post(WHATSAPP_PATH, hooks.whatsapp_receive)
    app.router.add_post(TWILIO_STATUS_PATH, hooks.twilio_status)
    return hooks
