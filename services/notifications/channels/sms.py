"""The SMS fallback through Twilio's Messages API, paced per sender number.

One form-encoded `POST .../Accounts/{sid}/Messages.json` with HTTP Basic auth per message; the
sender's rate (`TWILIO_RATE_PER_SECOND`, 1/s for a long code) is kept by sleeping briefly through
the shared RateLimiter. Failures are classified on Twilio's error code (classify.classify_twilio);
delivery failures (30xxx) arrive later in the StatusCallback, whose URL carries `?ref=` and the
notification's id (receipts.apply_receipt's `reference`). Wire format: Twilio's Messages
API, `POST https://api.twilio.com/2010-04-01/Accounts/{AccountSid}/Messages.json`
(https://www.twilio.com/docs/messaging/api/message-resource).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import aiohttp

from services.clock import Clock
from services.notifications.channels.base import (
    ChannelName,
    Outgoing,
    Recipient,
    SendResult,
    render_text,
)
from services.notifications.classify import classify_twilio
from services.notifications.failures import ChannelError, Failure, FailureClass
from services.notifications.pacing import RateLimiter, acquire

PROVIDER = "twilio"
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def e164(phone: str | None) -> str | None:
    """The number as Twilio wants it ("+33612345678"); None if it is not one."""
    if not phone:
        return None
    number = re.sub(r"[\s().-]", "", phone)
    if not number.startswith("+"):
        number = "+" + number
    return number if _E164.fullmatch(number) else None


def _refused(kind: FailureClass, code: str, text: str, **extra: Any) -> ChannelError:
    return ChannelError(Failure(kind=kind, provider=PROVIDER, code=code, text=text, **extra))


class SmsChannel:
    name = ChannelName.SMS
    max_text_length = 1600

    def __init__(
        self,
        *,
        account_sid: str | None,
        auth_token: str | None,
        from_number: str | None,
        limiter: RateLimiter,
        clock: Clock,
        api_base: str = "https://api.twilio.com",
        rate_per_second: float = 1.0,
        status_callback_url: str | None = None,
        timeout: float = 15.0,
        max_pacing_wait: float = 5.0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.from_number = from_number
        self.limiter = limiter
        self.clock = clock
        self.api_base = api_base.rstrip("/")
        self.rate_per_second = rate_per_second
        self.status_callback_url = status_callback_url
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_pacing_wait = max_pacing_wait
        self._session: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.account_sid and self.auth_token and self.from_number)

    def can_reach(self, recipient: Recipient) -> bool:
        return bool(recipient.phone)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def send(self, recipient: Recipient, message: Outgoing) -> SendResult:
        if not self.enabled:
            raise _refused(FailureClass.BROKEN, "not_configured", "Twilio is not configured")
        to = e164(recipient.phone)
        if to is None:
            raise _refused(FailureClass.PERMANENT, "invalid_number", "not an E.164 number")
        body = render_text(message)
        if not body:
            raise _refused(FailureClass.PERMANENT, "empty", "nothing to send")
        form = {"To": to, "From": str(self.from_number), "Body": body}
        if self.status_callback_url:
            # The notification's id rides along, signed by Twilio with the rest of the URL, so
            # a receipt arriving before the send is recorded still finds its notification.
            joiner = "&" if "?" in self.status_callback_url else "?"
            form["StatusCallback"] = (
                f"{self.status_callback_url}{joiner}ref={message.notification_id}"
            )

        waited = await acquire(
            self.limiter,
            f"twilio:from:{self.from_number}",
            self.rate_per_second,
            max_wait=self.max_pacing_wait,
        )
        if waited < 0:
            raise _refused(
                FailureClass.RATE_LIMITED,
                "throughput",
                f"sender throughput of {self.rate_per_second:g}/s in use",
                retry_after=-waited,
                scope="sender",
            )

        url = f"{self.api_base}/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        auth = aiohttp.encode_basic_auth(str(self.account_sid), str(self.auth_token))
        headers = {"Authorization": auth}
        try:
            async with self._get_session().post(url, data=form, headers=headers) as response:
                status = response.status
                try:
                    answer = await response.json(content_type=None)
                except ValueError:  # not JSON: a proxy's error page
                    answer = None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ChannelError(classify_twilio(None, None, exc)) from exc
        if 200 <= status < 300:  # accepted; even without a readable sid, never send it again
            sid = answer.get("sid") if isinstance(answer, Mapping) else None
            return SendResult(
                provider_message_id=str(sid) if sid else None,
                sender=self.from_number,
                address=to,
            )
        raise ChannelError(
            classify_twilio(
                status, answer if isinstance(answer, Mapping) else None, now=self.clock.now()
            )
        )

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session
