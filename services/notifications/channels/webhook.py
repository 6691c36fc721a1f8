"""The alert webhook: a notification addressed to "webhook:<name>" is POSTed as JSON to the URL
configured under that name ("webhook:alerts": ALERT_WEBHOOK_URL).

The body is what Slack-compatible incoming webhooks (Slack, Mattermost, Rocket.Chat, Discord's
/slack endpoint) accept: `text`, plus one attachment whose `fields` show the notification's
labelled values (severity, key, support code, link); the same values are repeated at the top
level under their own names for a receiver that reads JSON rather than shows it. Paced through
the shared RateLimiter (ALERT_WEBHOOK_RATE_PER_SECOND; Slack takes about one a second), failures
classified by classify.classify_webhook (never "broken": see there).
Wire format: https://api.slack.com/messaging/webhooks
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from services.notifications.channels.base import (
    ChannelName,
    Outgoing,
    Recipient,
    SendResult,
    render_text,
)
from services.notifications.classify import classify_webhook
from services.notifications.destinations import parse
from services.notifications.failures import ChannelError, Failure, FailureClass
from services.notifications.pacing import RateLimiter, acquire

PROVIDER = "webhook"
# Field name -> its title in the message, in this order.
FIELD_TITLES = {
    "severity": "Severity",
    "key": "Key",
    "support_code": "Support code",
    "link": "Link",
}
_COLORS = {"critical": "#d00000", "high": "#e85d04", "warning": "#ffba08", "info": "#3a86ff"}


def slack_body(text: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """The JSON an incoming webhook takes: the text, the fields as an attachment's fields, and
    the fields again at the top level."""
    shown = [
        {"title": FIELD_TITLES.get(name, name), "value": value, "short": name != "link"}
        for name, value in sorted(
            fields.items(), key=lambda item: list(FIELD_TITLES).index(item[0])
            if item[0] in FIELD_TITLES else len(FIELD_TITLES)
        )
    ]
    body: dict[str, Any] = {"text": text, **fields}
    if shown:
        attachment: dict[str, Any] = {"fallback": text, "fields": shown}
        color = _COLORS.get(fields.get("severity", ""))
        if color:
            attachment["color"] = color
        body["attachments"] = [attachment]
    return body


class WebhookChannel:
    name = ChannelName.WEBHOOK
    max_text_length = 3000  # Slack shows up to about 4,000 characters of a message's text

    def __init__(
        self,
        urls: Mapping[str, str | None],
        *,
        limiter: RateLimiter,
        rate_per_second: float = 1.0,
        timeout: float = 10.0,
        max_pacing_wait: float = 5.0,
    ) -> None:
        """`urls`: webhook name -> URL ({"alerts": ALERT_WEBHOOK_URL}); unset ones are off."""
        self.urls = {name: url for name, url in urls.items() if url}
        self.limiter = limiter
        self.rate_per_second = rate_per_second
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_pacing_wait = max_pacing_wait
        self._session: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.urls)

    def _url(self, recipient: Recipient) -> str | None:
        if not recipient.destination:
            return None
        try:
            destination = parse(recipient.destination)
        except ValueError:
            return None
        return self.urls.get(destination.target) if destination.kind == "webhook" else None

    def can_reach(self, recipient: Recipient) -> bool:
        return self._url(recipient) is not None

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def send(self, recipient: Recipient, message: Outgoing) -> SendResult:
        url = self._url(recipient)
        if url is None:
            raise ChannelError(Failure(FailureClass.PERMANENT, PROVIDER, "no_url",
                                       f"no webhook configured for {recipient.destination}"))
        text = render_text(message)
        fields = message.extra.get("fields") or {}
        waited = await acquire(
            self.limiter, f"webhook:{recipient.destination}", self.rate_per_second,
            max_wait=self.max_pacing_wait,
        )
        if waited < 0:
            raise ChannelError(Failure(
                FailureClass.RATE_LIMITED, PROVIDER, "throughput",
                f"webhook rate of {self.rate_per_second:g}/s in use",
                retry_after=-waited, scope="channel",
            ))
        try:
            async with self._get_session().post(url, json=slack_body(text, fields)) as response:
                status = response.status
                answer = (await response.text())[:500]
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ChannelError(classify_webhook(None, exc=exc)) from exc
        if 200 <= status < 300:
            # The URL is a secret: the address recorded is the destination's name.
            return SendResult(provider_message_id=None, address=recipient.destination)
        raise ChannelError(classify_webhook(status, answer, retry_after=retry_after))

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session
