"""A fake Twilio Programmable Messaging API (SMS) server for end-to-end tests.

The bot's SMS channel is pointed at it with ``TWILIO_API_BASE=fake.base_url``
and sends ``POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`` with
HTTP Basic auth (AccountSid:AuthToken) and form fields ``To``, ``From`` (or
``MessagingServiceSid``), ``Body``, ``MediaUrl``, ``StatusCallback``. The fake
checks the request the way Twilio does and answers with Twilio's JSON: the
Message resource (201) or an error body

    {"code": 21211, "message": "...", "more_info": "https://www.twilio.com/docs/errors/21211",
     "status": 400}

Delivery failures such as 30003 (unreachable) or 30005 (unknown handset) never
come back from the create call: Twilio accepts the message and reports the
failure later in a status callback. ``send_status_callback`` posts such a
callback, signed with ``X-Twilio-Signature`` as Twilio does, and ``fail_next``
with a 30xxx code schedules one automatically.

Wire formats and sources (Twilio's documentation and the public code named):
- Endpoint, form fields, StatusCallback parameters (MessageSid, MessageStatus,
  ErrorCode): twilio/twilio-go ``rest/api/v2010/docs/AccountsMessagesApi.md``.
- Message resource fields, RFC 2822 dates, initial status "queued" (or
  "accepted" with a Messaging Service): twilio.com/docs/messaging/api/message-resource
  and twilio.com/docs/messaging/guides/outbound-message-status-in-status-callbacks.
- Error bodies and messages: 21604 (twilio/twilio-php #609), 21602 (twilio-php #255),
  21606 (twilio-php #638), 21617 (twilio-node #327), 21211 (twilio-php #665),
  21603 (twilio/starter-python #5), 20003 "Authenticate" with HTTP 401
  (twilio-python #42, twilio-video-app-react #841).
- X-Twilio-Signature = base64(HMAC-SHA1(auth token, URL + each POST parameter
  sorted by name as name+value)): https://www.twilio.com/docs/usage/webhooks/webhooks-security;
  test vector from that page's example.

Run it standalone with ``python -m tests.fakes.twilio --port 8091``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import math
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
from aiohttp import web

API_VERSION = "2010-04-01"
DEFAULT_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
DEFAULT_AUTH_TOKEN = "twilio-test-token"
DEFAULT_FROM = "+15005550006"

BODY_LIMIT = 1600
E164_PATTERN = re.compile(r"\+[1-9][0-9]{1,14}")
CHANNEL_PREFIX = "whatsapp:"

# code -> (HTTP status, message). Messages may use {to} and {from_}.
ERROR_DEFAULTS: dict[int, tuple[int, str]] = {
    20003: (401, "Authenticate"),
    20404: (404, "The requested resource was not found"),
    20429: (429, "Too Many Requests"),
    20500: (500, "An internal server error has occurred"),
    21211: (400, "The 'To' number {to} is not a valid phone number."),
    21408: (
        400,
        "Permission to send an SMS has not been enabled for the region indicated by "
        "the 'To' number: {to}.",
    ),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number is required."),
    21604: (400, "A 'To' phone number is required."),
    21606: (
        400,
        "The From phone number {from_} is not a valid, SMS-capable inbound phone number "
        "or short code for your account.",
    ),
    21608: (
        400,
        "The number {to} is unverified. Trial accounts cannot send messages to unverified numbers.",
    ),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21612: (
        400,
        "The 'To' phone number: {to}, is not currently reachable using the 'From' "
        "phone number: {from_} via SMS.",
    ),
    21614: (400, "'To' number is not a valid mobile number"),
    21617: (400, "The concatenated message body exceeds the 1600 character limit."),
    21635: (400, "'To' number cannot be a landline"),
}

# Codes Twilio reports only in a status callback, never from the create call.
# A scripted one leads to an accepted message and then a callback with this status.
ASYNC_FAILURE_STATUS = "undelivered"

# GSM 03.38 basic character set (one septet each) and its extension table
# (two septets each). Anything else makes the message UCS-2.
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = "\f^{}\\[~]|€"


@dataclass
class SentSms:
    """One message the fake accepted (answered 201)."""

    to: str
    from_: str | None
    body: str
    sid: str
    status_callback: str | None
    at: float  # time.monotonic() when accepted
    messaging_service_sid: str | None = None
    media_urls: list[str] = field(default_factory=list)
    status: str = "queued"
    error_code: int | None = None
    resource: dict[str, Any] = field(default_factory=dict)


@dataclass
class RecordedRequest:
    """Every request the fake answered, whatever the outcome."""

    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]
    status: int
    response: Any
    at: float  # time.monotonic() when answered


@dataclass
class CallbackAttempt:
    """One status callback the fake posted to the bot."""

    url: str
    params: dict[str, str]
    signature: str
    status: int
    response: str


@dataclass
class ScriptedFailure:
    code: int
    http_status: int
    message: str | None
    remaining: int
    to: str | None = None


class _Refusal(Exception):
    """A refused request, answered as a Twilio error body."""

    def __init__(self, code: int, *, to: str = "", from_: str = "", message: str | None = None):
        http_status, template = ERROR_DEFAULTS.get(code, (400, "Error {code}"))
        text = message if message is not None else template.format(to=to, from_=from_, code=code)
        super().__init__(text)
        self.code = code
        self.http_status = http_status
        self.message = text


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The X-Twilio-Signature Twilio sends for a form POST of ``params`` to ``url``."""
    data = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def error_body(code: int, message: str, http_status: int) -> dict[str, Any]:
    """Twilio's JSON error body."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": http_status,
    }


def count_segments(body: str) -> int:
    """How many SMS segments Twilio bills for ``body`` (GSM-7 or UCS-2)."""
    if not body:
        return 1
    if all(char in GSM_BASIC or char in GSM_EXTENSION for char in body):
        septets = sum(2 if char in GSM_EXTENSION else 1 for char in body)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    code_units = len(body.encode("utf-16-le")) // 2
    return 1 if code_units <= 70 else math.ceil(code_units / 67)


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(login, password) from an "Authorization: Basic ..." value, or None."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("latin-1")
    except ValueError:  # binascii.Error is a ValueError
        return None
    login, colon, password = decoded.partition(":")
    if not colon:
        return None
    return login, password


def _strip_channel(address: str) -> str:
    return address.removeprefix(CHANNEL_PREFIX)


class FakeTwilio:
    """A loopback Twilio Messages API; see the module docstring."""

    def __init__(
        self,
        *,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        from_numbers: tuple[str, ...] = (DEFAULT_FROM,),
        seed: int = 0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.from_numbers = tuple(from_numbers)
        # Share of valid sends answered 500 with code 20500.
        self.failure_rate = 0.0
        # Seconds to wait before answering any request.
        self.delay = 0.0
        # Seconds between accepting a message and posting a scripted 30xxx callback.
        self.callback_delay = 0.05

        self.sent: list[SentSms] = []
        self.requests: list[RecordedRequest] = []
        self.callbacks: list[CallbackAttempt] = []

        self._random = random.Random(seed)
        self._scripted: list[ScriptedFailure] = []
        self._opted_out: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # ----------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeTwilio:
        app = web.Application()
        messages = f"/{API_VERSION}/Accounts/{{account_sid}}/Messages"
        app.router.add_post(messages + ".json", self._handle_create)
        app.router.add_get(messages + "/{message_sid}.json", self._handle_fetch)
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
            raise RuntimeError("FakeTwilio is not started")
        return self._base_url

    @property
    def messages_url(self) -> str:
        """The URL the bot posts messages to."""
        return f"{self.base_url}/{API_VERSION}/Accounts/{self.account_sid}/Messages.json"

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTwilio:
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
        count: int = 1,
        to: str | None = None,
    ) -> None:
        """Answer the next ``count`` valid sends (to ``to`` when given) with ``code``.

        ``http_status`` and ``message`` default to Twilio's for that code (400
        for codes this fake does not know). A 30xxx code is a delivery failure:
        the send is accepted (201) and a status callback "undelivered" with
        that ErrorCode follows after ``callback_delay`` seconds.
        """
        default_status = ERROR_DEFAULTS.get(code, (400, ""))[0]
        self._scripted.append(
            ScriptedFailure(
                code=code,
                http_status=http_status if http_status is not None else default_status,
                message=message,
                remaining=count,
                to=to,
            )
        )

    def set_opted_out(self, to: str) -> None:
        """Sends to ``to`` fail with 21610 (the recipient replied STOP)."""
        self._opted_out.add(to)

    def reset(self) -> None:
        """Forget everything sent, scripted and recorded; keep the settings."""
        self.sent.clear()
        self.requests.clear()
        self.callbacks.clear()
        self._scripted.clear()
        self._opted_out.clear()

    def message(self, sid: str) -> SentSms:
        """The accepted message with this sid."""
        for sms in self.sent:
            if sms.sid == sid:
                return sms
        raise KeyError(sid)

    async def wait_for_sent(
        self,
        predicate: Callable[[SentSms], bool] | None = None,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[SentSms]:
        """Wait until ``count`` accepted messages match ``predicate``; return them."""
        deadline = time.monotonic() + timeout
        while True:
            matching = [m for m in self.sent if predicate is None or predicate(m)]
            if len(matching) >= count:
                return matching[:count]
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"expected {count} matching SMS within {timeout}s, got {len(matching)}; "
                    f"all sent: {[(m.to, m.body[:30]) for m in self.sent]}"
                )
            await asyncio.sleep(0.01)

    async def send_status_callback(
        self,
        sid: str,
        status: str,
        error_code: int | None = None,
        *,
        url: str | None = None,
    ) -> tuple[int, str]:
        """POST a status callback for message ``sid`` as Twilio does; return
        (status, body). Goes to the message's StatusCallback unless ``url`` is given."""
        sms = self.message(sid)
        target = url or sms.status_callback
        if not target:
            raise ValueError(f"message {sid} has no StatusCallback URL")
        sms.status = status
        sms.error_code = error_code
        params = {
            "ApiVersion": API_VERSION,
            "AccountSid": self.account_sid,
            "MessageSid": sms.sid,
            "SmsSid": sms.sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "To": sms.to,
        }
        if sms.from_ is not None:
            params["From"] = sms.from_
        if sms.messaging_service_sid is not None:
            params["MessagingServiceSid"] = sms.messaging_service_sid
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        signature = twilio_signature(self.auth_token, target, params)
        headers = {"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(target, data=params, headers=headers) as response,
        ):
            text = await response.text()
        self.callbacks.append(CallbackAttempt(target, params, signature, response.status, text))
        return response.status, text

    # ------------------------------------------------------------- handlers

    async def _handle_create(self, request: web.Request) -> web.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        form = await request.post()
        fields = {name: str(value) for name, value in form.items()}
        media_urls = [str(value) for value in form.getall("MediaUrl", [])]
        try:
            self._check_auth(request)
            sms = self._check_message(fields, media_urls)
        except _Refusal as refusal:
            return self._refuse(request, fields, refusal)

        scripted = self._take_scripted(sms.to)
        if scripted is not None and not 30000 <= scripted.code < 31000:
            refusal = _Refusal(scripted.code, to=sms.to, from_=sms.from_ or "")
            refusal.http_status = scripted.http_status
            if scripted.message is not None:
                refusal.message = scripted.message
            return self._refuse(request, fields, refusal)
        if self.failure_rate and self._random.random() < self.failure_rate:
            return self._refuse(request, fields, _Refusal(20500))
        if sms.to in self._opted_out:
            return self._refuse(request, fields, _Refusal(21610, to=sms.to))

        sms.resource = self._resource(sms)
        self.sent.append(sms)
        if scripted is not None:
            self._schedule_failure_callback(sms, scripted.code)
        return self._answer(request, fields, 201, sms.resource)

    async def _handle_fetch(self, request: web.Request) -> web.Response:
        try:
            self._check_auth(request)
            sms = self.message(request.match_info["message_sid"])
        except _Refusal as refusal:
            return self._refuse(request, {}, refusal)
        except KeyError:
            return self._refuse(request, {}, _Refusal(20404))
        return self._answer(request, {}, 200, self._resource(sms))

    def _check_auth(self, request: web.Request) -> None:
        credentials = basic_credentials(request.headers.get("Authorization", ""))
        if credentials is None:
            raise _Refusal(20003)
        login, password = credentials
        user_ok = hmac.compare_digest(login.encode(), self.account_sid.encode())
        token_ok = hmac.compare_digest(password.encode(), self.auth_token.encode())
        if not (user_ok and token_ok):
            raise _Refusal(20003)
        if request.match_info["account_sid"] != self.account_sid:
            raise _Refusal(20404)

    def _check_message(self, fields: dict[str, str], media_urls: list[str]) -> SentSms:
        to = fields.get("To", "")
        from_ = fields.get("From") or None
        service_sid = fields.get("MessagingServiceSid") or None
        body = fields.get("Body", "")
        if not to:
            raise _Refusal(21604)
        if not E164_PATTERN.fullmatch(_strip_channel(to)):
            raise _Refusal(21211, to=to)
        if from_ is None and service_sid is None:
            raise _Refusal(21603)
        if from_ is not None and _strip_channel(from_) not in self.from_numbers:
            raise _Refusal(21606, from_=from_)
        if not body and not media_urls:
            raise _Refusal(21602)
        if len(body) > BODY_LIMIT:
            raise _Refusal(21617)
        return SentSms(
            to=to,
            from_=from_,
            body=body,
            sid=self._new_sid(),
            status_callback=fields.get("StatusCallback") or None,
            at=time.monotonic(),
            messaging_service_sid=service_sid,
            media_urls=media_urls,
            # A Messaging Service picks the sender later; the message starts "accepted".
            status="queued" if from_ is not None else "accepted",
        )

    def _take_scripted(self, to: str) -> ScriptedFailure | None:
        for failure in self._scripted:
            if failure.to is not None and failure.to != to:
                continue
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._scripted.remove(failure)
            return failure
        return None

    def _schedule_failure_callback(self, sms: SentSms, code: int) -> None:
        if not sms.status_callback:
            sms.status = ASYNC_FAILURE_STATUS
            sms.error_code = code
            return

        async def report_later() -> None:
            await asyncio.sleep(self.callback_delay)
            try:
                await self.send_status_callback(sms.sid, ASYNC_FAILURE_STATUS, code)
            except (aiohttp.ClientError, OSError) as error:
                # The bot was not listening; keep a trace instead of a lost task error.
                attempt = CallbackAttempt(sms.status_callback or "", {}, "", 0, repr(error))
                self.callbacks.append(attempt)

        task = asyncio.get_running_loop().create_task(report_later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -------------------------------------------------------------- answers

    def _resource(self, sms: SentSms) -> dict[str, Any]:
        now = format_datetime(datetime.now(UTC))
        created = sms.resource.get("date_created", now)
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sms.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": sms.body,
            "date_created": created,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": sms.error_code,
            "error_message": None,
            "from": sms.from_,
            "messaging_service_sid": sms.messaging_service_sid,
            "num_media": str(len(sms.media_urls)),
            # With a Messaging Service the sender, hence the encoding, is not chosen yet.
            "num_segments": str(count_segments(sms.body)) if sms.from_ is not None else "0",
            "price": None,
            "price_unit": "USD",
            "sid": sms.sid,
            "status": sms.status,
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": sms.to,
            "uri": f"{uri}.json",
        }

    def _refuse(
        self, request: web.Request, fields: dict[str, str], refusal: _Refusal
    ) -> web.Response:
        body = error_body(refusal.code, refusal.message, refusal.http_status)
        headers = {}
        if refusal.code == 20003:
            body["detail"] = "Your AccountSid or AuthToken was incorrect."
            headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        return self._answer(request, fields, refusal.http_status, body, headers)

    def _answer(
        self,
        request: web.Request,
        fields: dict[str, str],
        status: int,
        response: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                headers=dict(request.headers),
                form=fields,
                status=status,
                response=response,
                at=time.monotonic(),
            )
        )
        return web.json_response(response, status=status, headers=headers)

    def _new_sid(self) -> str:
        return f"SM{self._random.getrandbits(128):032x}"


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the fake Twilio Messages API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEFAULT_AUTH_TOKEN)
    parser.add_argument(
        "--from", dest="from_numbers", action="append", help="a sender (repeatable)"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeTwilio(
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        from_numbers=tuple(args.from_numbers or [DEFAULT_FROM]),
    )
    await fake.start(args.host, args.port)
    try:
        print(fake.base_url, flush=True)
        await asyncio.Event().wait()
    finally:
        await fake.stop()


if __name__ == "__main__":
    main()
