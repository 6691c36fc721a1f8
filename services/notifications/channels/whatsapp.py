"""The WhatsApp Cloud API channel: paced by construction, failing over between sender numbers.

Meta's limits are kept before a request is made (docs/architecture.md, principle 6): each sender
number's throughput (sleeping briefly through the shared RateLimiter), the (business, consumer)
pair rate (about one message per 6 s per recipient: refused at once as RATE_LIMITED, never
slept on), an optional daily cap per sender, and the portfolio's messaging limit on unique users
messaged outside their 24 h window. A provider answer is classified on Meta's error code
(classify.classify_whatsapp); a refusal that belongs to one sender number moves this send to the
next number: a rate limit just for now, a sender-level failure (131031, 133010, an unknown
phone-number id) takes the number down in `SenderHealth` until a probe (`probe`, the Graph
API's phone-number status) finds it working; the channel reports itself broken (its circuit
opens) only when no number is left. Wire format: `POST https://graph.facebook.com/v{N}/{PHONE_NUMBER_ID}/messages`,
https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from services.clock import Clock
from services.notifications.channels.base import ChannelName, Outgoing, Recipient, SendResult
from services.notifications.channels.whatsapp_limits import MessagingLimit
from services.notifications.classify import (
    classify_whatsapp,
    mask_phone_numbers,
    seconds_until_next_utc_midnight,
)
from services.notifications.failures import ChannelError, Failure, FailureClass
from services.notifications.pacing import RateLimiter, acquire
from services.sender_health import ProbeResult, SenderHealth, is_sender_failure

log = logging.getLogger(__name__)

PROVIDER = "whatsapp"
CUSTOMER_SERVICE_WINDOW = timedelta(hours=24)
MEDIA_TYPES = ("image", "document", "audio", "video", "sticker")
CAPTIONED = ("image", "document", "video")
_DIGITS = re.compile(r"[1-9][0-9]{6,14}")
# A phone number's `status` that means it cannot send now (Graph API phone-number node).
PROBE_BAD_STATUSES = frozenset({
    "BANNED", "DELETED", "DISCONNECTED", "MIGRATED", "OFFLINE", "PENDING", "RESTRICTED",
    "UNVERIFIED",
})
_DAY = 86_400.0


def wa_number(phone: str | None) -> str | None:
    """E.164 ("+33612345678") -> the Cloud API's `to` ("33612345678"); None if not a number."""
    if not phone:
        return None
    digits = re.sub(r"[\s().-]", "", phone).removeprefix("+")
    return digits if _DIGITS.fullmatch(digits) else None


def _refused(
    kind: FailureClass,
    code: str,
    text: str,
    *,
    retry_after: float | None = None,
    scope: str | None = None,
) -> ChannelError:
    return ChannelError(
        Failure(
            kind=kind,
            provider=PROVIDER,
            code=code,
            text=text,
            retry_after=retry_after,
            scope=scope,
        )
    )


class WhatsAppChannel:
    name = ChannelName.WHATSAPP
    max_text_length = 4096

    def __init__(
        self,
        *,
        token: str | None,
        phone_number_ids: Sequence[str],
        limiter: RateLimiter,
        clock: Clock,
        api_base: str = "https://graph.facebook.com",
        api_version: str = "v23.0",
        rate_per_second: float = 80.0,
        recipient_interval: float = 6.0,
        daily_cap_per_sender: int = 0,
        messaging_limit: MessagingLimit | None = None,
        require_template_outside_window: bool = True,
        timeout: float = 15.0,
        max_pacing_wait: float = 2.0,
        health: SenderHealth | None = None,
    ) -> None:
        self.token = token
        self.phone_number_ids = tuple(p for p in phone_number_ids if p)
        self.limiter = limiter
        self.clock = clock
        self.api_base = api_base.rstrip("/")
        self.api_version = api_version.strip("/")
        self.rate_per_second = rate_per_second
        self.recipient_interval = recipient_interval
        self.daily_cap_per_sender = daily_cap_per_sender
        self.messaging_limit = messaging_limit
        # Free-form text outside the 24 h window is accepted with a wamid but never delivered
        # (131047); refusing it here sends the notification down the chain instead.
        self.require_template_outside_window = require_template_outside_window
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_pacing_wait = max_pacing_wait
        # None: every configured number is tried in order, none is ever taken down.
        self.health = health
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ Channel protocol

    @property
    def enabled(self) -> bool:
        return bool(self.token) and bool(self.phone_number_ids)

    def can_reach(self, recipient: Recipient) -> bool:
        return bool(recipient.phone)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def send(self, recipient: Recipient, message: Outgoing) -> SendResult:
        if not self.enabled:
            raise _refused(FailureClass.BROKEN, "not_configured", "WhatsApp is not configured")
        to = wa_number(recipient.phone)
        if to is None:
            raise _refused(FailureClass.PERMANENT, "invalid_number", "not an E.164 number")
        now = self.clock.now()
        outside_window = self.outside_window(recipient, now)
        if outside_window and self.require_template_outside_window and not message.template:
            raise _refused(
                FailureClass.PERMANENT,
                "131047",
                "outside the 24 h customer-service window: only a template can be sent",
            )
        payload = self.payload(to, message)

        if self.recipient_interval > 0:
            wait = await self.limiter.try_acquire(
                self._recipient_key(to), rate=1, per=self.recipient_interval
            )
            if wait > 0:
                raise _refused(
                    FailureClass.RATE_LIMITED,
                    "recipient_interval",
                    f"one message per {self.recipient_interval:g} s to the same recipient",
                    retry_after=wait,
                    scope="recipient",
                )
        if outside_window and self.messaging_limit is not None:
            wait = await self.messaging_limit.admit(f"+{to}", now)
            if wait > 0:
                raise _refused(
                    FailureClass.RATE_LIMITED,
                    "messaging_limit",
                    "messaging limit reached: unique users outside the window in 24 h",
                    retry_after=wait,
                    scope="channel",
                )

        refusals: list[Failure] = []
        senders = (
            await self.health.usable() if self.health is not None else self.phone_number_ids
        )
        for sender in senders:
            refusal = await self._take_sender_budget(sender, now)
            if refusal is not None:
                refusals.append(refusal)
                continue
            try:
                wamid = await self._post(sender, payload)
            except ChannelError as error:
                failure = error.failure
                if is_sender_failure(failure):
                    if self.health is not None:
                        await self.health.mark_down(sender, failure)
                    log.warning("WhatsApp sender %s refused (%s): trying the next number",
                                sender, failure.code)
                    refusals.append(failure)
                    continue
                if self.health is not None and failure.kind in (
                    FailureClass.TRANSIENT, FailureClass.UNKNOWN
                ):
                    await self.health.record_failure(sender, failure)
                if failure.kind is FailureClass.RATE_LIMITED and failure.scope == "sender":
                    await self.limiter.block(self._sender_key(sender), failure.retry_after or 1.0)
                    log.warning(
                        "WhatsApp sender %s rate limited (%s): trying the next number",
                        sender,
                        failure.code,
                    )
                    refusals.append(failure)
                    continue
                if failure.kind is FailureClass.RATE_LIMITED and failure.scope == "recipient":
                    await self.limiter.block(self._recipient_key(to), failure.retry_after or 1.0)
                raise
            if self.health is not None:
                await self.health.record_success(sender)
            return SendResult(provider_message_id=wamid, sender=sender, address=f"+{to}")
        raise ChannelError(self._all_senders_refused(refusals, now))

    async def probe(self, sender: str) -> ProbeResult:
        """Ask the Graph API whether `sender` can send: `GET /{phone-number-id}?fields=status,
        health_status` (CONNECTED and not BLOCKED is good; LIMITED is good but degraded)."""
        url = f"{self.api_base}/{self.api_version}/{sender}"
        headers = {"Authorization": f"Bearer {self.token}"}
        params = {"fields": "status,quality_rating,health_status"}
        try:
            async with self._get_session().get(url, params=params, headers=headers) as response:
                status = response.status
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return ProbeResult(ok=False, detail=type(exc).__name__)
        if not 200 <= status < 300 or not isinstance(body, Mapping):
            failure = classify_whatsapp(status, body if isinstance(body, Mapping) else None)
            return ProbeResult(ok=False, detail=f"HTTP {status} {failure.code}")
        number_status = str(body.get("status") or "").upper()
        health = body.get("health_status")
        can_send = (
            str(health.get("can_send_message") or "").upper() if isinstance(health, Mapping)
            else ""
        )
        if number_status in PROBE_BAD_STATUSES or can_send == "BLOCKED":
            return ProbeResult(ok=False, detail=f"{number_status or '?'} {can_send}".strip())
        return ProbeResult(ok=True, limited=can_send == "LIMITED" or number_status == "FLAGGED",
                           detail=f"{number_status} {can_send}".strip())

    # --------------------------------------------------------------------------- helpers

    @staticmethod
    def outside_window(recipient: Recipient, now: datetime) -> bool:
        """True when the recipient has not written on WhatsApp in the last 24 h."""
        inbound = recipient.whatsapp_inbound_at
        if not isinstance(inbound, datetime):
            return True
        if inbound.tzinfo is None:
            inbound = inbound.replace(tzinfo=UTC)
        return now - inbound >= CUSTOMER_SERVICE_WINDOW

    @staticmethod
    def payload(to: str, message: Outgoing) -> dict[str, Any]:
        """The JSON body of `POST /{phone-number-id}/messages` for one message."""
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            # Echoed in status webhooks: ties Meta's statuses back to the notification.
            "biz_opaque_callback_data": message.idempotency_key[:512],
        }
        if message.template:
            template = message.template
            content: dict[str, Any] = {
                "name": str(template["name"]),
                "language": {"code": str(template.get("language") or "en")},
            }
            params = [str(p) for p in template.get("params") or ()]
            if params:
                content["components"] = [
                    {"type": "body", "parameters": [{"type": "text", "text": p} for p in params]}
                ]
            body.update(type="template", template=content)
        elif message.media and message.media.get("type") == "interactive":
            # Reply buttons or a list (the WhatsApp desk), carried as the media of its kind:
            # {"type": "interactive", "interactive": <the Cloud API's object>, "caption": text}.
            interactive = message.media.get("interactive")
            if not isinstance(interactive, Mapping) or not interactive.get("type"):
                raise _refused(FailureClass.PERMANENT, "interactive", "no interactive content")
            body.update(type="interactive", interactive=dict(interactive))
        elif message.media:
            media = message.media
            kind = str(media.get("type") or "document")
            if kind not in MEDIA_TYPES:
                raise _refused(
                    FailureClass.PERMANENT, "media_type", f"unsupported media type {kind!r}"
                )
            # By id when uploaded first (an operator's photo, `POST /{id}/media`), else by link.
            content = {"id": str(media["id"])} if media.get("id") else {
                "link": str(media["source"])}
            if media.get("caption") and kind in CAPTIONED:
                content["caption"] = str(media["caption"])
            if kind == "document" and media.get("filename"):
                content["filename"] = str(media["filename"])
            body.update(type=kind, **{kind: content})
        elif message.text:
            body.update(type="text", text={"preview_url": False, "body": message.text})
        else:
            raise _refused(FailureClass.PERMANENT, "empty", "nothing to send")
        return body

    def _sender_key(self, sender: str) -> str:
        return f"wa:sender:{sender}"

    def _recipient_key(self, to: str) -> str:
        return f"wa:recipient:{to}"

    async def _take_sender_budget(self, sender: str, now: datetime) -> Failure | None:
        """Take this sender's daily-cap and throughput slots; a Failure when it has none."""
        if self.daily_cap_per_sender > 0:
            # One slot per 24 h with a burst of `cap`, on a key of its own per UTC day: exactly
            # `cap` sends per sender per calendar day, shared by every process using the limiter.
            key = f"wa:daily:{sender}:{now.astimezone(UTC).date().isoformat()}"
            wait = await self.limiter.try_acquire(
                key, rate=1, per=_DAY, burst=self.daily_cap_per_sender
            )
            if wait > 0:
                return Failure(
                    kind=FailureClass.RATE_LIMITED,
                    provider=PROVIDER,
                    code="daily_cap",
                    text=f"daily cap of {self.daily_cap_per_sender} reached",
                    retry_after=seconds_until_next_utc_midnight(now),
                    scope="sender",
                )
        waited = await acquire(
            self.limiter,
            self._sender_key(sender),
            self.rate_per_second,
            max_wait=self.max_pacing_wait,
        )
        if waited < 0:
            return Failure(
                kind=FailureClass.RATE_LIMITED,
                provider=PROVIDER,
                code="throughput",
                text=f"sender throughput of {self.rate_per_second:g}/s in use",
                retry_after=-waited,
                scope="sender",
            )
        return None

    def _all_senders_refused(self, refusals: list[Failure], now: datetime) -> Failure:
        limited = [f for f in refusals if not is_sender_failure(f)]
        if not limited:
            # Every number is down (or none is left to try): now the channel itself is broken.
            last = refusals[-1] if refusals else None
            return Failure(
                kind=FailureClass.BROKEN,
                provider=PROVIDER,
                code=last.code if last else "no_sender",
                text="no WhatsApp sender number is usable"
                + (f" (last: {last.text})" if last else ""),
                scope="channel",
            )
        refusals = limited
        if refusals and all(f.code == "daily_cap" for f in refusals):
            return Failure(
                kind=FailureClass.RATE_LIMITED,
                provider=PROVIDER,
                code="daily_cap",
                text="every sender number reached its daily cap",
                retry_after=seconds_until_next_utc_midnight(now),
                scope="channel",
            )
        soonest = min(refusals, key=lambda f: f.retry_after or 1.0)
        return Failure(
            kind=FailureClass.RATE_LIMITED,
            provider=PROVIDER,
            code=soonest.code,
            text=f"every sender number is rate limited or capped (last: {soonest.text})",
            retry_after=soonest.retry_after or 1.0,
            scope="channel",
        )

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def _post(self, sender: str, payload: Mapping[str, Any]) -> str | None:
        url = f"{self.api_base}/{self.api_version}/{sender}/messages"
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async with self._get_session().post(url, json=payload, headers=headers) as response:
                status = response.status
                try:
                    body = await response.json(content_type=None)
                except ValueError:  # not JSON: a proxy's error page
                    body = None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ChannelError(classify_whatsapp(None, None, exc)) from exc
        if 200 <= status < 300:
            return self._wamid(body)
        failure = classify_whatsapp(
            status,
            body if isinstance(body, Mapping) else None,
            recipient_interval=self.recipient_interval,
        )
        raise ChannelError(failure)

    @staticmethod
    def _wamid(body: Any) -> str | None:
        messages = body.get("messages") if isinstance(body, Mapping) else None
        if isinstance(messages, list) and messages and isinstance(messages[0], Mapping):
            wamid = messages[0].get("id")
            if isinstance(wamid, str) and wamid:
                return wamid
        # Accepted without an id: sent all the same; retrying would send it twice.
        log.warning(
            "WhatsApp accepted a message without a wamid: %s", mask_phone_numbers(str(body))
        )
        return None
