"""A fake WhatsApp Cloud API (Graph API) server for end-to-end tests.

The bot is pointed at it with ``WHATSAPP_API_BASE=fake.base_url`` and sends
``POST {base}/{version}/{phone_number_id}/messages`` exactly as it would to
``https://graph.facebook.com``. The fake checks the request the way the Cloud
API does and answers with the Cloud API's own JSON, so the bot's error
classification is exercised against real shapes:

    {"error": {"message": "(#130429) Rate limit hit", "type": "OAuthException",
               "code": 130429,
               "error_data": {"messaging_product": "whatsapp", "details": "..."},
               "fbtrace_id": "..."}}

It also builds and signs inbound webhook deliveries (messages and statuses)
the way Meta sends them, to test the bot's webhook endpoint.

Tests steer it through plain attributes and methods: ``fail_next`` scripts
provider errors, ``failure_rate`` answers a share of requests with a transient
server error, ``delay`` slows every answer, ``set_invalid_number`` makes one
recipient undeliverable, and ``enforce_limits`` turns on the throughput
(130429) and pair rate (131056) limits.

Wire formats and sources (Meta's documentation and the public code named):
- Send request, response and mark-as-read bodies: Meta's Cloud API messages
  reference as used by david-lev/pywa (``pywa/api.py``) and Neurotech-HQ/heyoo.
- Error body (message, type, code, error_data.details, fbtrace_id; error_subcode
  absent since v16.0): Meta's error-codes page, mirrored at developers.aivo.co/engage
  and help.verloop.io.
- HTTP status per code: the same mirrors. They disagree for some throttling
  codes; this fake answers 130429 with 429 and 131056 with 400.
- 190 "Invalid OAuth access token - Cannot parse access token": Neurotech-HQ/heyoo
  issue #13. Unknown phone number id (GraphMethodException, code 100, subcode 33,
  HTTP 400): tawn33y/whatsapp-cloud-api issue #7, roughike/flutter_facebook_login #44.
- "(#100) Invalid parameter" with error_data.details: shridarpatil/frappe_whatsapp
  issue #43. 'Unexpected key "x" on param "y"': WhatsApp/WhatsApp-Nodejs-SDK issue #21.
  A "00"-prefixed recipient answered with (#100) Invalid parameter:
  gabrieldwight/Whatsapp-Business-Cloud-Api-Net issue #31.
- ``to`` is the number with country code, digits only, no "+" (Neurotech-HQ/heyoo issue #99).
- Text body at most 4096 characters; 80 messages/s per number by default;
  about one message per 6 s to the same user (131056).
- Webhook: X-Hub-Signature-256 = "sha256=" + hex HMAC-SHA256(app secret, raw body);
  payload shape from Meta's sample payloads:
  https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks

Run it standalone with ``python -m tests.fakes.whatsapp --port 8090``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import random
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

DEFAULT_TOKEN = "wa-test-token"
DEFAULT_PHONE_NUMBER_ID = "100100"
DEFAULT_API_VERSION = "v23.0"

TEXT_BODY_LIMIT = 4096
GRAPH_DOCS_URL = "https://developers.facebook.com/docs/graph-api"
ERROR_CODES_HREF = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"

# Digits only, country code first, no leading zero ("0033..." is refused by the
# real API), at most 15 digits (E.164).
RECIPIENT_PATTERN = re.compile(r"[1-9][0-9]{6,14}")

MEDIA_TYPES = ("image", "document", "audio", "video", "sticker")
MESSAGE_TYPES = (
    "text",
    "template",
    *MEDIA_TYPES,
    "interactive",
    "location",
    "contacts",
    "reaction",
)
TOP_LEVEL_FIELDS = frozenset(
    {
        "messaging_product",
        "recipient_type",
        "to",
        "type",
        "context",
        "biz_opaque_callback_data",
        "status",
        "message_id",
        "typing_indicator",
        *MESSAGE_TYPES,
    }
)

# code -> (HTTP status, title, details). Titles are the ones Meta shows in
# error.message as "(#code) title"; HTTP statuses as listed by the Meta mirrors
# (400 where no source gives one).
ERROR_DEFAULTS: dict[int, tuple[int, str, str]] = {
    0: (401, "AuthException", "We were unable to authenticate the app user."),
    1: (400, "An unknown error occurred", "Invalid request or possible server error."),
    2: (
        503,
        "An unexpected error has occurred. Please retry your request later.",
        "Temporary due to downtime or due to being overloaded.",
    ),
    3: (500, "Capability or permissions issue", "Capability or permissions issue."),
    4: (429, "Application request limit reached", "The app has reached its API call rate limit."),
    10: (
        403,
        "Application does not have permission for this action",
        "Permission is either not granted or has been removed.",
    ),
    100: (400, "Invalid parameter", "Invalid parameter"),
    190: (
        401,
        "Invalid OAuth access token - Cannot parse access token",
        "Your access token has expired or is invalid.",
    ),
    368: (
        403,
        "Temporarily blocked for policies violations",
        "The WhatsApp Business Account associated with the app has been restricted "
        "or disabled for violating a platform policy.",
    ),
    80007: (429, "Rate limit issues", "The WhatsApp Business Account has reached its rate limit."),
    130429: (
        429,
        "Rate limit hit",
        "Message failed to send because there were too many messages sent from this "
        "phone number in a short period of time",
    ),
    131000: (500, "Something went wrong", "Message failed to send due to an unknown error."),
    131008: (400, "Required parameter is missing", "Required parameter is missing."),
    131009: (400, "Parameter value is not valid", "Parameter value is not valid."),
    131016: (503, "Service unavailable", "A service is temporarily unavailable."),
    131026: (
        400,
        "Message undeliverable",
        "Unable to deliver message. Reasons can include: the recipient phone number is "
        "not a WhatsApp phone number; the recipient has not accepted the new Terms of "
        "Service and Privacy Policy; the recipient is using an old WhatsApp version.",
    ),
    131030: (
        400,
        "Recipient phone number not in allowed list",
        "Add recipient phone number to recipient list and try again.",
    ),
    131031: (403, "Account has been locked", "The business account has been locked."),
    131042: (400, "Business eligibility payment issue", "There was an error related to payment."),
    131047: (
        400,
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the "
        "customer last replied to this number.",
    ),
    131048: (
        429,
        "Spam rate limit hit",
        "Message failed to send because there are restrictions on how many messages "
        "can be sent from this phone number.",
    ),
    131049: (
        400,
        "This message was not delivered to maintain healthy ecosystem engagement.",
        "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
    ),
    131050: (
        400,
        "Unable to deliver the message. This recipient has chosen to stop receiving "
        "marketing messages on WhatsApp from your business.",
        "The recipient has stopped marketing messages from this business.",
    ),
    131051: (400, "Unsupported message type", "Unsupported message type."),
    131056: (
        400,
        "(Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this "
        "phone number to the same phone number in a short period of time.",
    ),
    131057: (400, "Account in maintenance mode", "Business Account is in maintenance mode."),
    132000: (
        400,
        "Number of parameters does not match the expected number of params",
        "The number of variable parameter values does not match the template.",
    ),
    132001: (
        400,
        "Template name does not exist in the translation",
        "The template does not exist in the specified language or is not approved.",
    ),
    133010: (400, "Account not registered", "The phone number is not registered."),
}

# Graph writes these codes' messages without the "(#code) " prefix.
UNPREFIXED_CODES = frozenset({1, 2, 190})


@dataclass
class SentMessage:
    """One message the fake accepted (answered 200 with a wamid)."""

    phone_number_id: str
    to: str
    type: str
    body: dict[str, Any]
    wamid: str
    at: float  # time.monotonic() when accepted


@dataclass
class RecordedRequest:
    """Every request the fake answered, whatever the outcome."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON when it parsed, else the raw text
    status: int
    response: Any
    at: float  # time.monotonic() when answered


@dataclass
class ScriptedFailure:
    code: int
    http_status: int
    message: str
    details: str
    remaining: int
    to: str | None = None
    phone_number_id: str | None = None


class _Refusal(Exception):
    """A refused request, answered as a Graph error."""

    def __init__(
        self,
        http_status: int,
        message: str,
        details: str | None = None,
        *,
        code: int = 100,
        error_type: str = "OAuthException",
        subcode: int | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.message = message
        self.details = details
        self.code = code
        self.error_type = error_type
        self.subcode = subcode
        self.extra: dict[str, Any] = {}


def sign(body: bytes, app_secret: str) -> str:
    """The X-Hub-Signature-256 value Meta sends for ``body``: "sha256=<hex>"."""
    digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def graph_error_message(code: int) -> str:
    """The error.message Meta writes for a code: "(#code) title"."""
    title = ERROR_DEFAULTS.get(code, (400, "Unknown error", ""))[1]
    if code in UNPREFIXED_CODES:
        return title
    return f"(#{code}) {title}"


def _required(name: str) -> _Refusal:
    text = f"The parameter {name} is required."
    return _Refusal(400, f"(#100) {text}", text)


def _invalid(details: str) -> _Refusal:
    return _Refusal(400, "(#100) Invalid parameter", details)


def _unexpected_key(key: str, param: str) -> _Refusal:
    text = f'Unexpected key "{key}" on param "{param}".'
    return _Refusal(400, f"(#100) {text}", text)


class FakeWhatsApp:
    """A loopback WhatsApp Cloud API; see the module docstring."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        phone_number_ids: tuple[str, ...] = (DEFAULT_PHONE_NUMBER_ID,),
        api_version: str = DEFAULT_API_VERSION,
        per_sender_rate: float = 80.0,
        per_recipient_interval: float = 0.0,
        enforce_limits: bool = False,
        seed: int = 0,
    ) -> None:
        self.token = token
        self.phone_number_ids = tuple(phone_number_ids)
        self.api_version = api_version
        self.per_sender_rate = per_sender_rate
        self.per_recipient_interval = per_recipient_interval
        self.enforce_limits = enforce_limits
        # Share of valid sends answered with a transient error (code 2, HTTP 503).
        self.failure_rate = 0.0
        # Seconds to wait before answering any request.
        self.delay = 0.0
        # Used in webhook payloads built by make_*_webhook.
        self.waba_id = "102290129340398"
        self.display_phone_number = "15550783881"

        self.sent: list[SentMessage] = []
        self.read_receipts: list[str] = []
        self.requests: list[RecordedRequest] = []
        self.count_rate_limited = 0

        self._random = random.Random(seed)
        self._counter = 0
        self._scripted: list[ScriptedFailure] = []
        self._invalid_numbers: set[str] = set()
        self._recent_sends: dict[str, deque[float]] = {}
        self._last_send_to: dict[tuple[str, str], float] = {}
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # ----------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeWhatsApp:
        app = web.Application()
        app.router.add_post("/{version}/{phone_number_id}/messages", self._handle_messages)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown_path)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self._base_url = f"http://{bound_host}:{bound_port}"
        return self

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("FakeWhatsApp is not started")
        return self._base_url

    def messages_url(self, phone_number_id: str | None = None) -> str:
        """The URL the bot posts messages to for ``phone_number_id``."""
        number_id = phone_number_id or self.phone_number_ids[0]
        return f"{self.base_url}/{self.api_version}/{number_id}/messages"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeWhatsApp:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -------------------------------------------------------- test controls

    def fail_next(
        self,
        *,
        code: int,
        http_status: int | None = None,
        message: str | None = None,
        details: str | None = None,
        count: int = 1,
        to: str | None = None,
        phone_number_id: str | None = None,
    ) -> None:
        """Answer the next ``count`` valid sends (to ``to`` / from
        ``phone_number_id`` when given) with error ``code``.

        ``http_status``, ``message`` and ``details`` default to what the Cloud
        API uses for that code (HTTP 400 for codes it does not know).
        """
        default_status, _, default_details = ERROR_DEFAULTS.get(code, (400, "", ""))
        self._scripted.append(
            ScriptedFailure(
                code=code,
                http_status=http_status if http_status is not None else default_status,
                message=message if message is not None else graph_error_message(code),
                details=details if details is not None else default_details,
                remaining=count,
                to=to,
                phone_number_id=phone_number_id,
            )
        )

    def set_invalid_number(self, to: str) -> None:
        """Sends to ``to`` fail with 131026 (not a WhatsApp user)."""
        self._invalid_numbers.add(to)

    def reset(self) -> None:
        """Forget everything sent, scripted and counted; keep the settings."""
        self.sent.clear()
        self.read_receipts.clear()
        self.requests.clear()
        self.count_rate_limited = 0
        self._scripted.clear()
        self._invalid_numbers.clear()
        self._recent_sends.clear()
        self._last_send_to.clear()

    async def wait_for_sent(
        self,
        predicate: Callable[[SentMessage], bool] | None = None,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[SentMessage]:
        """Wait until ``count`` accepted messages match ``predicate``; return them."""
        deadline = time.monotonic() + timeout
        while True:
            matching = [m for m in self.sent if predicate is None or predicate(m)]
            if len(matching) >= count:
                return matching[:count]
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"expected {count} matching WhatsApp message(s) within {timeout}s, "
                    f"got {len(matching)}; all sent: {[(m.to, m.type) for m in self.sent]}"
                )
            await asyncio.sleep(0.01)

    # ------------------------------------------------------ inbound webhooks

    def make_message_webhook(
        self,
        from_phone: str,
        text: str,
        *,
        wamid: str | None = None,
        name: str = "Customer",
        phone_number_id: str | None = None,
        timestamp: int | None = None,
    ) -> dict[str, Any]:
        """A "messages" webhook payload carrying one inbound text message."""
        message = {
            "from": from_phone,
            "id": wamid or self._new_wamid(from_phone),
            "timestamp": str(timestamp if timestamp is not None else int(time.time())),
            "type": "text",
            "text": {"body": text},
        }
        value = {
            "messaging_product": "whatsapp",
            "metadata": self._metadata(phone_number_id),
            "contacts": [{"profile": {"name": name}, "wa_id": from_phone}],
            "messages": [message],
        }
        return self._envelope(value)

    def make_status_webhook(
        self,
        wamid: str,
        status: str,
        recipient: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        phone_number_id: str | None = None,
        timestamp: int | None = None,
    ) -> dict[str, Any]:
        """A "messages" webhook payload carrying one status: sent, delivered,
        read or failed. A failed status without ``errors`` carries 131026."""
        if status not in ("sent", "delivered", "read", "failed"):
            raise ValueError(f"unknown WhatsApp status {status!r}")
        when = timestamp if timestamp is not None else int(time.time())
        entry: dict[str, Any] = {
            "id": wamid,
            "status": status,
            "timestamp": str(when),
            "recipient_id": recipient,
        }
        if status in ("sent", "delivered"):
            conversation: dict[str, Any] = {
                "id": hashlib.sha256(recipient.encode()).hexdigest()[:32],
                "origin": {"type": "service"},
            }
            if status == "sent":
                conversation["expiration_timestamp"] = str(when + 24 * 3600)
            entry["conversation"] = conversation
            entry["pricing"] = {"billable": True, "pricing_model": "CBP", "category": "service"}
        if status == "failed":
            entry["errors"] = errors if errors is not None else [webhook_error(131026)]
        elif errors is not None:
            entry["errors"] = errors
        value = {
            "messaging_product": "whatsapp",
            "metadata": self._metadata(phone_number_id),
            "statuses": [entry],
        }
        return self._envelope(value)

    sign = staticmethod(sign)

    async def deliver(
        self,
        url: str,
        payload: dict[str, Any],
        *,
        app_secret: str,
        signature: str | None = None,
    ) -> tuple[int, str]:
        """POST ``payload`` to the bot's webhook as Meta does; return (status, body).

        The body is signed with ``app_secret`` unless ``signature`` is given;
        ``signature=""`` sends no X-Hub-Signature-256 header at all.
        """
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "facebookexternalua"}
        if signature is None:
            headers["X-Hub-Signature-256"] = sign(body, app_secret)
        elif signature:
            headers["X-Hub-Signature-256"] = signature
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=body, headers=headers) as response,
        ):
            return response.status, await response.text()

    async def verify_webhook(
        self, url: str, *, verify_token: str, challenge: str = "1158201444"
    ) -> tuple[int, str]:
        """Send Meta's GET verification request; return (status, body)."""
        params = {
            "hub.mode": "subscribe",
            "hub.challenge": challenge,
            "hub.verify_token": verify_token,
        }
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, params=params) as response,
        ):
            return response.status, await response.text()

    def _metadata(self, phone_number_id: str | None) -> dict[str, str]:
        return {
            "display_phone_number": self.display_phone_number,
            "phone_number_id": phone_number_id or self.phone_number_ids[0],
        }

    def _envelope(self, value: dict[str, Any]) -> dict[str, Any]:
        return {
            "object": "whatsapp_business_account",
            "entry": [{"id": self.waba_id, "changes": [{"value": value, "field": "messages"}]}],
        }

    # ------------------------------------------------------------- handlers

    async def _handle_unknown_path(self, request: web.Request) -> web.Response:
        raw = await request.read()
        refusal = _Refusal(400, f"Unknown path components: {request.path}", code=2500, details=None)
        return self._refuse(request, raw.decode(errors="replace"), refusal)

    async def _handle_messages(self, request: web.Request) -> web.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        try:
            self._check_token(request)
            self._check_path(request)
            payload = self._check_body(body)
        except _Refusal as refusal:
            return self._refuse(request, body, refusal)

        if payload.get("status") is not None:
            self.read_receipts.append(payload["message_id"])
            return self._answer(request, body, 200, {"success": True})
        return self._send(request, payload)

    def _send(self, request: web.Request, payload: dict[str, Any]) -> web.Response:
        phone_number_id = request.match_info["phone_number_id"]
        to = payload["to"]

        scripted = self._take_scripted(to, phone_number_id)
        if scripted is not None:
            refusal = _Refusal(
                scripted.http_status, scripted.message, scripted.details, code=scripted.code
            )
            return self._refuse(request, payload, refusal)

        if self.failure_rate and self._random.random() < self.failure_rate:
            refusal = self._coded_refusal(2)
            refusal.extra["is_transient"] = True
            return self._refuse(request, payload, refusal)

        if to in self._invalid_numbers:
            return self._refuse(request, payload, self._coded_refusal(131026))

        now = time.monotonic()
        if self.enforce_limits:
            limited = self._check_limits(phone_number_id, to, now)
            if limited is not None:
                self.count_rate_limited += 1
                return self._refuse(request, payload, self._coded_refusal(limited))

        self._sends_in_last_second(phone_number_id, now).append(now)
        self._last_send_to[(phone_number_id, to)] = now
        wamid = self._new_wamid(to)
        message_type = payload.get("type", "text")
        self.sent.append(
            SentMessage(
                phone_number_id=phone_number_id,
                to=to,
                type=message_type,
                body=payload,
                wamid=wamid,
                at=now,
            )
        )
        response = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": wamid}],
        }
        return self._answer(request, payload, 200, response)

    def _check_limits(self, phone_number_id: str, to: str, now: float) -> int | None:
        """130429 or 131056 when this send would break a limit, else None."""
        if len(self._sends_in_last_second(phone_number_id, now)) >= self.per_sender_rate:
            return 130429
        last = self._last_send_to.get((phone_number_id, to))
        if (
            self.per_recipient_interval > 0
            and last is not None
            and now - last < self.per_recipient_interval
        ):
            return 131056
        return None

    def _sends_in_last_second(self, phone_number_id: str, now: float) -> deque[float]:
        """Acceptance times of this sender's messages within the last second."""
        recent = self._recent_sends.setdefault(phone_number_id, deque())
        while recent and now - recent[0] >= 1.0:
            recent.popleft()
        return recent

    def _take_scripted(self, to: str, phone_number_id: str) -> ScriptedFailure | None:
        for failure in self._scripted:
            if failure.to is not None and failure.to != to:
                continue
            if failure.phone_number_id is not None and failure.phone_number_id != phone_number_id:
                continue
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._scripted.remove(failure)
            return failure
        return None

    # ----------------------------------------------------------- validation

    def _check_token(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer ") :] if header.startswith("Bearer ") else None
        token = token or request.query.get("access_token")
        if token is None or not hmac.compare_digest(token.encode(), self.token.encode()):
            raise self._coded_refusal(190)

    def _check_path(self, request: web.Request) -> None:
        version = request.match_info["version"]
        phone_number_id = request.match_info["phone_number_id"]
        if version != self.api_version:
            raise _Refusal(400, f"Unknown path components: {request.path}", code=2500)
        if phone_number_id not in self.phone_number_ids:
            raise _Refusal(
                400,
                f"Unsupported post request. Object with ID '{phone_number_id}' does not "
                "exist, cannot be loaded due to missing permissions, or does not support "
                f"this operation. Please read the Graph API documentation at {GRAPH_DOCS_URL}",
                code=100,
                error_type="GraphMethodException",
                subcode=33,
            )

    def _check_body(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _invalid("The request body must be a JSON object.")
        for key in body:
            if key not in TOP_LEVEL_FIELDS:
                raise _invalid(f'Unexpected key "{key}"')
        if "messaging_product" not in body:
            raise _required("messaging_product")
        if body["messaging_product"] != "whatsapp":
            raise _invalid(
                f"Param messaging_product must be one of {{WHATSAPP}} - got "
                f'"{body["messaging_product"]}".'
            )
        if "status" in body:
            self._check_mark_as_read(body)
        else:
            self._check_message(body)
        return body

    def _check_mark_as_read(self, body: dict[str, Any]) -> None:
        if body["status"] != "read":
            raise _invalid(f'Param status must be one of {{READ}} - got "{body["status"]}".')
        if not isinstance(body.get("message_id"), str) or not body["message_id"]:
            raise _required("message_id")

    def _check_message(self, body: dict[str, Any]) -> None:
        to = body.get("to")
        if to is None or to == "":
            raise _required("to")
        if not isinstance(to, str) or not RECIPIENT_PATTERN.fullmatch(to):
            raise _invalid(
                f"Invalid parameter to: {to!r}. Use the phone number with country code, "
                "digits only, without '+' or leading zeros."
            )
        recipient_type = body.get("recipient_type", "individual")
        if recipient_type not in ("individual", "group"):
            raise _invalid(
                f"Param recipient_type must be one of {{INDIVIDUAL, GROUP}} - got "
                f'"{recipient_type}".'
            )
        message_type = body.get("type", "text")  # the API defaults type to text
        if message_type not in MESSAGE_TYPES:
            choices = ", ".join(t.upper() for t in sorted(MESSAGE_TYPES))
            raise _invalid(f'Param type must be one of {{{choices}}} - got "{message_type}".')
        content = body.get(message_type)
        if content is None:
            raise _required(message_type)
        if message_type == "contacts":
            if not isinstance(content, list) or not content:
                raise _invalid("Param contacts must be a non-empty array.")
        elif not isinstance(content, dict):
            raise _invalid(f"Param {message_type} must be a JSON object.")
        if message_type == "text":
            self._check_text(content)
        elif message_type == "template":
            self._check_template(content)
        elif message_type in MEDIA_TYPES:
            if not content.get("link") and not content.get("id"):
                raise _required(f"{message_type}['link'] or {message_type}['id']")
        elif message_type == "interactive":
            for key in ("type", "action"):
                if key not in content:
                    raise _required(f"interactive['{key}']")
        elif message_type == "location":
            for key in ("latitude", "longitude"):
                if key not in content:
                    raise _required(f"location['{key}']")
        elif message_type == "reaction":
            for key in ("message_id", "emoji"):
                if key not in content:
                    raise _required(f"reaction['{key}']")
        context = body.get("context")
        if context is not None and (not isinstance(context, dict) or "message_id" not in context):
            raise _required("context['message_id']")

    def _check_text(self, text: dict[str, Any]) -> None:
        for key in text:
            if key not in ("body", "preview_url"):
                raise _unexpected_key(key, "text")
        body = text.get("body")
        if not isinstance(body, str) or not body:
            raise _required("text['body']")
        if len(body) > TEXT_BODY_LIMIT:
            raise _invalid(f"Param text['body'] must be at most {TEXT_BODY_LIMIT} characters long.")

    def _check_template(self, template: dict[str, Any]) -> None:
        if not isinstance(template.get("name"), str) or not template["name"]:
            raise _required("template['name']")
        language = template.get("language")
        if not isinstance(language, dict):
            raise _required("template['language']")
        for key in language:
            if key not in ("code", "policy"):
                raise _unexpected_key(key, "template['language']")
        if not isinstance(language.get("code"), str) or not language["code"]:
            raise _required("template['language']['code']")
        components = template.get("components")
        if components is None:
            return
        if not isinstance(components, list):
            raise _invalid("Param template['components'] must be an array.")
        for index, component in enumerate(components):
            if not isinstance(component, dict) or "type" not in component:
                raise _required(f"template['components'][{index}]['type']")

    # -------------------------------------------------------------- answers

    def _coded_refusal(self, code: int) -> _Refusal:
        http_status, _, details = ERROR_DEFAULTS[code]
        return _Refusal(http_status, graph_error_message(code), details, code=code)

    def _refuse(self, request: web.Request, body: Any, refusal: _Refusal) -> web.Response:
        error: dict[str, Any] = {
            "message": refusal.message,
            "type": refusal.error_type,
            "code": refusal.code,
        }
        if refusal.details is not None:
            error["error_data"] = {"messaging_product": "whatsapp", "details": refusal.details}
        if refusal.subcode is not None:
            error["error_subcode"] = refusal.subcode
        error.update(refusal.extra)
        error["fbtrace_id"] = self._new_trace_id()
        headers = {}
        if refusal.http_status == 401:
            headers["WWW-Authenticate"] = (
                f'OAuth "Facebook Platform" "invalid_token" "{refusal.message}"'
            )
        return self._answer(request, body, refusal.http_status, {"error": error}, headers)

    def _answer(
        self,
        request: web.Request,
        body: Any,
        status: int,
        response: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                headers=dict(request.headers),
                body=body,
                status=status,
                response=response,
                at=time.monotonic(),
            )
        )
        return web.json_response(response, status=status, headers=headers)

    def _new_wamid(self, to: str) -> str:
        self._counter += 1
        raw = f"{to}:{self._counter}:{self._random.getrandbits(64):016X}".encode()
        return "wamid." + base64.b64encode(raw).decode().rstrip("=")

    def _new_trace_id(self) -> str:
        raw = self._random.getrandbits(128).to_bytes(16, "big")
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def webhook_error(code: int, *, details: str | None = None) -> dict[str, Any]:
    """One entry of statuses[].errors as Meta sends it for ``code``."""
    _, title, default_details = ERROR_DEFAULTS.get(code, (400, "Unknown error", ""))
    return {
        "code": code,
        "title": title,
        "message": title,
        "error_data": {"details": details if details is not None else default_details},
        "href": ERROR_CODES_HREF,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the fake WhatsApp Cloud API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--api-version", default=DEFAULT_API_VERSION)
    parser.add_argument(
        "--phone-number-id", action="append", help="a sender id (repeatable; default 100100)"
    )
    parser.add_argument("--enforce-limits", action="store_true")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_on(args))


async def _serve_on(args: argparse.Namespace) -> None:
    fake = FakeWhatsApp(
        token=args.token,
        phone_number_ids=tuple(args.phone_number_id or [DEFAULT_PHONE_NUMBER_ID]),
        api_version=args.api_version,
        enforce_limits=args.enforce_limits,
    )
    await fake.start(args.host, args.port)
    try:
        print(fake.base_url, flush=True)
        await asyncio.Event().wait()
    finally:
        await fake.stop()


if __name__ == "__main__":
    main()
