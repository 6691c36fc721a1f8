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

Media (issue 11): ``add_media`` (or an upload, ``POST /{version}/{phone_number_id}/media``,
multipart with ``messaging_product``, ``file`` and ``type``) stores a file; ``GET
/{version}/{media_id}`` answers its metadata with a download URL valid ``media_url_ttl``
seconds (5 minutes, as Meta's); the download needs the same bearer token (401 without it, 404
once the URL expired). ``file_size`` comes as a string or a number (``file_size_as_string``),
as Meta's examples disagree. Size limits per type follow Meta's supported media types.

Sender numbers: ``GET /{version}/{phone_number_id}?fields=...`` answers the number's ``status``,
``quality_rating`` and ``health_status.can_send_message``; ``break_number(id, code)`` makes
every send from that number fail with ``code`` (131031 locked, 133010 not registered) and its
probe answer the matching status, until ``heal_number(id)``.

Interactive sends: reply buttons (1-3, titles of at most 20 characters, unique) and lists
(1-10 rows in all, row and section titles of at most 24 characters, descriptions of 72, a list
button label of 20), a body text of at most 1024 characters, reply ids unique; other shapes
are refused with (#100) as Meta refuses them.

Inbound payloads for every message type in Meta's documented format: ``inbound_message`` (one
messages[] object; refuses shapes Meta never sends, e.g. a caption on audio, a text over 4096
characters) and ``make_inbound_webhook`` (the envelope with contacts[] and metadata).

Control over HTTP, like the fake Bot API's (for trying things by hand with curl):
``POST /_control/fail_next`` ``{"code", "count", "to", "phone_number_id", "http_status"}``,
``POST /_control/number`` ``{"phone_number_id", "broken_code"|null, "status",
"can_send_message"}``, ``POST /_control/failure_rate`` ``{"rate"}``, ``POST /_control/delay``
``{"seconds"}``, ``POST /_control/media`` ``{"data_base64", "mime_type"}`` -> ``{"id"}``,
``POST /_control/webhook`` ``{"url", "app_secret", "from", "type", ...fields}`` (a signed
inbound message delivered to the bot), ``GET /_control/sent``, ``GET /_control/requests``,
``POST /_control/reset``.

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

from tests.fakes.control import control_json

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

# Meta's supported media types and sizes (its "Supported Media Types" table, mirrored by AWS
# End User Messaging: docs.aws.amazon.com/social-messaging/latest/userguide/
# supported-media-types.html): MIME types per kind and the largest file in bytes.
MEDIA_LIMITS: dict[str, tuple[frozenset[str], int]] = {
    "audio": (frozenset({"audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg"}),
              16 * 1024 * 1024),
    "document": (frozenset({
        "text/plain", "application/pdf", "application/vnd.ms-excel", "application/msword",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    }), 100 * 1024 * 1024),
    "image": (frozenset({"image/jpeg", "image/png"}), 5 * 1024 * 1024),
    "sticker": (frozenset({"image/webp"}), 500 * 1024),
    "video": (frozenset({"video/mp4", "video/3gpp"}), 16 * 1024 * 1024),
}
MEDIA_URL_TTL = 300.0  # seconds a media URL stays valid (pywa: "valid for 5 minutes")
# Inbound message types Meta's webhooks carry (messages[].type).
INBOUND_TYPES = (
    "text", "image", "video", "audio", "document", "sticker", "location", "contacts",
    "interactive", "button", "reaction", "order", "system", "unsupported",
)
# What a number's probe answers when it is broken with a given code.
BROKEN_NUMBER_STATUS = {131031: ("RESTRICTED", "BLOCKED"), 133010: ("DISCONNECTED", "BLOCKED")}

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


@dataclass
class StoredMedia:
    """A file the fake holds: uploaded by the bot, or added by a test as a customer's media."""

    id: str
    data: bytes
    mime_type: str
    sha256: str
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
        # Media
        self.media: dict[str, StoredMedia] = {}
        self.media_url_ttl = MEDIA_URL_TTL
        self.file_size_as_string = True
        self.downloads: list[str] = []  # media ids downloaded, in order
        self._download_tokens: dict[str, tuple[str, float]] = {}  # token -> (media id, expiry)
        # Sender numbers: id -> error code every send from it fails with (None: healthy)
        self.broken_numbers: dict[str, int] = {}
        self.number_status: dict[str, tuple[str, str]] = {}  # id -> (status, can_send_message)
        self.probes: list[str] = []  # phone-number ids probed, in order

    # ----------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeWhatsApp:
        app = web.Application()
        app.router.add_post("/{version}/{phone_number_id}/messages", self._handle_messages)
        app.router.add_post("/{version}/{phone_number_id}/media", self._handle_upload)
        app.router.add_get("/_media/{token}", self._handle_download)
        app.router.add_post("/_control/fail_next", self._control_fail_next)
        app.router.add_post("/_control/number", self._control_number)
        app.router.add_post("/_control/failure_rate", self._control_failure_rate)
        app.router.add_post("/_control/delay", self._control_delay)
        app.router.add_post("/_control/media", self._control_media)
        app.router.add_post("/_control/webhook", self._control_webhook)
        app.router.add_post("/_control/reset", self._control_reset)
        app.router.add_get("/_control/sent", self._control_sent)
        app.router.add_get("/_control/requests", self._control_requests)
        app.router.add_get("/{version}/{node_id}", self._handle_node)
        app.router.add_delete("/{version}/{node_id}", self._handle_delete_media)
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

    def add_media(self, data: bytes, mime_type: str, *, media_id: str | None = None) -> str:
        """Hold ``data`` as a customer's media (what an inbound image etc. refers to)."""
        self._counter += 1
        media_id = media_id or str(7_000_000_000_000 + self._counter)
        self.media[media_id] = StoredMedia(
            id=media_id, data=data, mime_type=mime_type,
            sha256=hashlib.sha256(data).hexdigest(),
        )
        return media_id

    def break_number(self, phone_number_id: str, code: int = 131031) -> None:
        """Every send from ``phone_number_id`` fails with ``code`` until ``heal_number``; its
        probe says why (131031: RESTRICTED, 133010: DISCONNECTED; both BLOCKED)."""
        self.broken_numbers[phone_number_id] = code
        self.number_status[phone_number_id] = BROKEN_NUMBER_STATUS.get(
            code, ("CONNECTED", "BLOCKED")
        )

    def heal_number(self, phone_number_id: str) -> None:
        self.broken_numbers.pop(phone_number_id, None)
        self.number_status.pop(phone_number_id, None)

    def reset(self) -> None:
        """Forget everything sent, scripted and counted; keep the settings."""
        self.broken_numbers.clear()
        self.number_status.clear()
        self.probes.clear()
        self.downloads.clear()
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

    def make_inbound_webhook(
        self,
        messages: list[dict[str, Any]],
        *,
        names: dict[str, str] | None = None,
        phone_number_id: str | None = None,
    ) -> dict[str, Any]:
        """A "messages" webhook carrying ``messages`` (built by ``inbound_message``), with a
        contacts[] entry (profile name, wa_id) per sender, as Meta sends it."""
        senders = list(dict.fromkeys(m["from"] for m in messages))
        value = {
            "messaging_product": "whatsapp",
            "metadata": self._metadata(phone_number_id),
            "contacts": [{"profile": {"name": (names or {}).get(s, "Customer")}, "wa_id": s}
                         for s in senders],
            "messages": messages,
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

        broken = self.broken_numbers.get(phone_number_id)
        if broken is not None:
            return self._refuse(request, payload, self._coded_refusal(broken))

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

    # ------------------------------------------------- media and phone numbers

    async def _handle_node(self, request: web.Request) -> web.Response:
        """GET /{version}/{id}: a media object's metadata, or a phone number's status."""
        node_id = request.match_info["node_id"]
        try:
            self._check_token(request)
            self._check_version(request)
            if node_id in self.phone_number_ids:
                return self._answer(request, None, 200, self._number_node(node_id))
            media = self.media.get(node_id)
            if media is None:
                raise self._unknown_object(node_id, "get")
        except _Refusal as refusal:
            return self._refuse(request, None, refusal)
        token = f"{self._random.getrandbits(96):024x}"
        self._download_tokens[token] = (media.id, time.monotonic() + self.media_url_ttl)
        size: int | str = len(media.data)
        body = {
            "messaging_product": "whatsapp",
            "url": f"{self.base_url}/_media/{token}?mid={media.id}&ext=1&hash=x",
            "mime_type": media.mime_type,
            "sha256": media.sha256,
            "file_size": str(size) if self.file_size_as_string else size,
            "id": media.id,
        }
        return self._answer(request, None, 200, body)

    def _number_node(self, phone_number_id: str) -> dict[str, Any]:
        self.probes.append(phone_number_id)
        status, can_send = self.number_status.get(phone_number_id, ("CONNECTED", "AVAILABLE"))
        return {
            "id": phone_number_id,
            "display_phone_number": self.display_phone_number,
            "verified_name": "Fake Business",
            "quality_rating": "GREEN" if can_send == "AVAILABLE" else "RED",
            "status": status,
            "health_status": {
                "can_send_message": can_send,
                "entities": [{"entity_type": "PHONE_NUMBER", "id": phone_number_id,
                              "can_send_message": can_send}],
            },
        }

    async def _handle_download(self, request: web.Request) -> web.Response:
        """The lookaside URL: the bytes, for the same bearer token, until the URL expires."""
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer "):] if header.startswith("Bearer ") else ""
        if not token or not hmac.compare_digest(token.encode(), self.token.encode()):
            return web.Response(status=401, text="Unauthorized")
        found = self._download_tokens.get(request.match_info["token"])
        if found is None or found[1] < time.monotonic() or found[0] not in self.media:
            return web.Response(status=404, text="URL expired or unknown")
        media = self.media[found[0]]
        self.downloads.append(media.id)
        return web.Response(body=media.data, content_type=media.mime_type)

    async def _handle_upload(self, request: web.Request) -> web.Response:
        """POST /{version}/{phone_number_id}/media, multipart: messaging_product, file, type."""
        try:
            self._check_token(request)
            self._check_path(request)
            if not request.content_type.startswith("multipart/"):
                raise _invalid("Upload media with a multipart/form-data body.")
            fields: dict[str, str] = {}
            data: bytes | None = None
            file_type = ""
            reader = await request.multipart()
            async for part in reader:
                if part.name == "file":
                    file_type = part.headers.get("Content-Type", "")
                    data = await part.read(decode=False)
                elif part.name:
                    fields[part.name] = await part.text()
            if fields.get("messaging_product") != "whatsapp":
                raise _required("messaging_product")
            if data is None:
                raise _required("file")
            mime = fields.get("type") or file_type
            kind = next((k for k, (types, _) in MEDIA_LIMITS.items() if mime in types), None)
            if kind is None:
                raise _invalid(f"Param file must be a file with one of the supported types; "
                               f"got {mime!r}.")
            if len(data) > MEDIA_LIMITS[kind][1]:
                raise _invalid(f"Param file is too large for {kind}: {len(data)} bytes.")
        except _Refusal as refusal:
            return self._refuse(request, None, refusal)
        media_id = self.add_media(data, mime)
        self.media[media_id].phone_number_id = request.match_info["phone_number_id"]
        return self._answer(request, {"upload": mime}, 200, {"id": media_id})

    async def _handle_delete_media(self, request: web.Request) -> web.Response:
        try:
            self._check_token(request)
            self._check_version(request)
            if self.media.pop(request.match_info["node_id"], None) is None:
                raise self._unknown_object(request.match_info["node_id"], "delete")
        except _Refusal as refusal:
            return self._refuse(request, None, refusal)
        return self._answer(request, None, 200, {"success": True})

    def _check_version(self, request: web.Request) -> None:
        if request.match_info["version"] != self.api_version:
            raise _Refusal(400, f"Unknown path components: {request.path}", code=2500)

    def _unknown_object(self, node_id: str, verb: str) -> _Refusal:
        return _Refusal(
            400,
            f"Unsupported {verb} request. Object with ID '{node_id}' does not exist, cannot be "
            "loaded due to missing permissions, or does not support this operation. Please "
            f"read the Graph API documentation at {GRAPH_DOCS_URL}",
            code=100, error_type="GraphMethodException", subcode=33,
        )

    # ---------------------------------------------------------- control (HTTP)

    async def _control_fail_next(self, request: web.Request) -> web.Response:
        data = await control_json(request)
        try:
            self.fail_next(
                code=int(data["code"]), count=int(data.get("count", 1)), to=data.get("to"),
                phone_number_id=data.get("phone_number_id"),
                http_status=int(data["http_status"]) if data.get("http_status") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=f"bad fail_next: {exc}") from exc
        return web.json_response({"ok": True})

    async def _control_number(self, request: web.Request) -> web.Response:
        data = await control_json(request)
        number = str(data.get("phone_number_id") or self.phone_number_ids[0])
        code = data.get("broken_code")
        if code is None:
            self.heal_number(number)
        else:
            self.break_number(number, int(code))
        if data.get("status") or data.get("can_send_message"):
            current = self.number_status.get(number, ("CONNECTED", "AVAILABLE"))
            self.number_status[number] = (str(data.get("status") or current[0]),
                                          str(data.get("can_send_message") or current[1]))
        return web.json_response({"ok": True, "node": self._number_node(number)})

    async def _control_failure_rate(self, request: web.Request) -> web.Response:
        self.failure_rate = float((await control_json(request)).get("rate", 0.0))
        return web.json_response({"ok": True})

    async def _control_delay(self, request: web.Request) -> web.Response:
        self.delay = float((await control_json(request)).get("seconds", 0.0))
        return web.json_response({"ok": True})

    async def _control_media(self, request: web.Request) -> web.Response:
        data = await control_json(request)
        try:
            raw = base64.b64decode(str(data["data_base64"]), validate=True)
        except (KeyError, ValueError) as exc:
            raise web.HTTPBadRequest(text=f"data_base64 expected: {exc}") from exc
        return web.json_response({"id": self.add_media(raw, str(data.get("mime_type") or
                                                                "image/jpeg"))})

    async def _control_webhook(self, request: web.Request) -> web.Response:
        data = await control_json(request)
        try:
            url, secret = str(data.pop("url")), str(data.pop("app_secret"))
            sender, kind = str(data.pop("from")), str(data.pop("type", "text"))
            name = str(data.pop("name", "Customer"))
            message = inbound_message(kind, sender, **data)
        except (KeyError, TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=f"bad webhook request: {exc}") from exc
        payload = self.make_inbound_webhook([message], names={sender: name})
        status, text = await self.deliver(url, payload, app_secret=secret)
        return web.json_response({"status": status, "body": text, "wamid": message["id"]})

    async def _control_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _control_sent(self, request: web.Request) -> web.Response:
        return web.json_response([
            {"phone_number_id": m.phone_number_id, "to": m.to, "type": m.type, "body": m.body,
             "wamid": m.wamid} for m in self.sent
        ])

    async def _control_requests(self, request: web.Request) -> web.Response:
        return web.json_response([
            {"method": r.method, "path": r.path, "status": r.status, "response": r.response}
            for r in self.requests
        ])

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
            self._check_interactive(content)
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

    def _check_interactive(self, content: dict[str, Any]) -> None:
        """Reply buttons and lists as Meta checks them: a body, 1-3 buttons or 1-10 rows,
        unique ids, titles of at most 20 (buttons) or 24 (rows, sections) characters."""
        for key in ("type", "action"):
            if key not in content:
                raise _required(f"interactive['{key}']")
        kind, action = content["type"], content["action"]
        if kind not in ("button", "list", "cta_url", "flow", "product", "product_list"):
            raise _invalid(f"Param interactive['type'] is invalid: {kind!r}")
        if kind not in ("button", "list"):
            return
        text = (content.get("body") or {}).get("text") if isinstance(content.get("body"),
                                                                     dict) else None
        if not isinstance(text, str) or not text:
            raise _required("interactive['body']['text']")
        if len(text) > 1024:
            raise _invalid("Param interactive['body']['text'] must be at most 1024 characters.")
        if not isinstance(action, dict):
            raise _invalid("Param interactive['action'] must be a JSON object.")
        ids: list[str] = []
        if kind == "button":
            buttons = action.get("buttons")
            if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
                raise _invalid("Param interactive['action']['buttons'] must have 1 to 3 items.")
            titles = []
            for button in buttons:
                reply = button.get("reply") if isinstance(button, dict) else None
                if button.get("type") != "reply" or not isinstance(reply, dict):
                    raise _required("interactive['action']['buttons'][]['reply']")
                title = reply.get("title")
                if not isinstance(title, str) or not 1 <= len(title) <= 20:
                    raise _invalid("Button title length invalid. Min length: 1, max: 20.")
                titles.append(title)
                ids.append(str(reply.get("id") or ""))
            if len(set(titles)) != len(titles):
                raise _invalid("Button titles must be unique.")
        else:
            label = action.get("button")
            if not isinstance(label, str) or not 1 <= len(label) <= 20:
                raise _invalid("Param interactive['action']['button'] must be 1-20 characters.")
            sections = action.get("sections")
            if not isinstance(sections, list) or not 1 <= len(sections) <= 10:
                raise _invalid("Param interactive['action']['sections'] must have 1-10 items.")
            rows = []
            for section in sections:
                if not isinstance(section, dict) or not isinstance(section.get("rows"), list):
                    raise _required("interactive['action']['sections'][]['rows']")
                title = section.get("title")
                if (len(sections) > 1 and not title) or (title and len(title) > 24):
                    raise _invalid("Section title must be 1-24 characters.")
                rows.extend(section["rows"])
            if not 1 <= len(rows) <= 10:
                raise _invalid("A list message has 1 to 10 rows in all.")
            for row in rows:
                title = row.get("title") if isinstance(row, dict) else None
                if not isinstance(title, str) or not 1 <= len(title) <= 24:
                    raise _invalid("Row title length invalid. Min length: 1, max: 24.")
                if len(str(row.get("description") or "")) > 72:
                    raise _invalid("Row description must be at most 72 characters.")
                ids.append(str(row.get("id") or ""))
        if any(not i or len(i) > 200 for i in ids) or len(set(ids)) != len(ids):
            raise _invalid("Reply ids must be unique, 1 to 200 characters.")

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


_wamid_counter = 0


def new_inbound_wamid(from_phone: str) -> str:
    """A wamid as Meta writes them: "wamid." and base64 of the sender and a unique part."""
    global _wamid_counter
    _wamid_counter += 1
    raw = f"{from_phone}:{_wamid_counter}:{random.getrandbits(64):016X}".encode()
    return "wamid." + base64.b64encode(raw).decode().rstrip("=")


def _media_object(kind: str, fields: dict[str, Any], wamid: str) -> dict[str, Any]:
    digest = hashlib.sha256(wamid.encode("utf-8", "surrogatepass")).hexdigest()
    media_id = fields.pop("media_id", None) or str(10**15 + int(digest[:13], 16))
    mime = fields.pop("mime_type", None) or next(iter(sorted(MEDIA_LIMITS[kind][0])))
    if mime not in MEDIA_LIMITS[kind][0]:
        raise ValueError(f"{kind} cannot be {mime!r}")
    content: dict[str, Any] = {
        "id": media_id,
        "mime_type": mime,
        "sha256": fields.pop("sha256", None) or base64.b64encode(
            hashlib.sha256(media_id.encode()).digest()).decode(),
    }
    caption = fields.pop("caption", None)
    if caption is not None:
        if kind not in ("image", "video", "document"):
            raise ValueError(f"Meta sends no caption on {kind}")
        content["caption"] = caption
    if kind == "document":
        content["filename"] = fields.pop("filename", None) or "document.pdf"
    if kind == "audio":
        content["voice"] = bool(fields.pop("voice", False))
    if kind == "sticker":
        content["animated"] = bool(fields.pop("animated", False))
    return content


def inbound_message(
    kind: str,
    from_phone: str,
    *,
    wamid: str | None = None,
    timestamp: int | None = None,
    context: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """One messages[] object of kind ``kind`` from ``from_phone``, in Meta's documented format.

    Fields by kind: text (``text``), image/video/audio/document/sticker (``media_id``,
    ``mime_type``, ``caption`` for image/video/document, ``filename``, ``voice``,
    ``animated``), location (``latitude``, ``longitude``, ``name``, ``address``), contacts
    (``contacts``: a list of Meta contact cards, or ``name`` and ``phone``), interactive
    (``reply_type`` "button_reply"/"list_reply", ``reply_id``, ``title``, ``description``),
    button (``text``, ``payload``), reaction (``message_id``, ``emoji``), order, system,
    unsupported. Shapes Meta never sends raise ValueError.
    """
    if kind not in INBOUND_TYPES:
        raise ValueError(f"unknown inbound message type {kind!r}")
    if not isinstance(from_phone, str) or not RECIPIENT_PATTERN.fullmatch(from_phone):
        raise ValueError("from must be digits with the country code, no '+'")
    message: dict[str, Any] = {
        "from": from_phone,
        "id": wamid or new_inbound_wamid(from_phone),
        "timestamp": str(timestamp if timestamp is not None else int(time.time())),
        "type": kind,
    }
    if context is not None:
        message["context"] = context
    if kind == "text":
        body = fields.pop("text", "")
        if not isinstance(body, str) or not body or len(body) > TEXT_BODY_LIMIT:
            raise ValueError(f"a text is 1 to {TEXT_BODY_LIMIT} characters")
        message["text"] = {"body": body}
    elif kind in MEDIA_LIMITS:
        message[kind] = _media_object(kind, fields, message["id"])
    elif kind == "location":
        latitude, longitude = float(fields.pop("latitude")), float(fields.pop("longitude"))
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise ValueError("latitude or longitude out of range")
        location: dict[str, Any] = {"latitude": latitude, "longitude": longitude}
        for key in ("name", "address", "url"):
            if fields.get(key) is not None:
                location[key] = fields.pop(key)
        message["location"] = location
    elif kind == "contacts":
        cards = fields.pop("contacts", None)
        if cards is None:
            name, phone = str(fields.pop("name", "Ann Example")), fields.pop("phone", None)
            cards = [{"name": {"formatted_name": name, "first_name": name.split()[0]},
                      "phones": [{"phone": phone, "type": "CELL"}] if phone else []}]
        if not isinstance(cards, list) or not cards:
            raise ValueError("contacts is a non-empty list of cards")
        message["contacts"] = cards
    elif kind == "interactive":
        reply_type = fields.pop("reply_type", "button_reply")
        if reply_type not in ("button_reply", "list_reply"):
            raise ValueError("interactive replies are button_reply or list_reply")
        title = str(fields.pop("title", "Yes"))
        if not title or len(title) > (20 if reply_type == "button_reply" else 24):
            raise ValueError("reply title too long for Meta")
        reply: dict[str, Any] = {"id": str(fields.pop("reply_id", "1")), "title": title}
        if reply_type == "list_reply" and fields.get("description") is not None:
            reply["description"] = fields.pop("description")
        message["interactive"] = {"type": reply_type, reply_type: reply}
    elif kind == "button":
        text = str(fields.pop("text", "Stop promotions"))
        message["button"] = {"text": text, "payload": str(fields.pop("payload", text))}
    elif kind == "reaction":
        target = fields.pop("message_id", None)
        if not target:
            raise ValueError("a reaction names the message it reacts to")
        message["reaction"] = {"message_id": target, "emoji": fields.pop("emoji", "👍")}
    elif kind == "order":
        message["order"] = {"catalog_id": str(fields.pop("catalog_id", "1")),
                            "product_items": fields.pop("product_items", [
                                {"product_retailer_id": "sku-1", "quantity": 1,
                                 "item_price": 10, "currency": "EUR"}])}
    elif kind == "system":
        message["system"] = {"body": str(fields.pop("body", "User changed number")),
                             "type": "user_changed_number",
                             "new_wa_id": str(fields.pop("new_wa_id", from_phone))}
    elif kind == "unsupported":
        message["errors"] = [webhook_error(131051)]
    if fields:
        raise ValueError(f"unexpected fields for {kind}: {sorted(fields)}")
    return message


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
