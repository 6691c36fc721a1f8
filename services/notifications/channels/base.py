"""The interface every channel implements, what it is given to send, and its plain-text form."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol


class ChannelName(enum.StrEnum):
    TELEGRAM = "telegram"
    WHATSAPP = "whatsapp"
    SMS = "sms"
    EMAIL = "email"
    MANUAL = "manual"
    # Not a person's channel: it delivers to destinations (notifications.destinations).
    WEBHOOK = "webhook"


DEFAULT_ORDER = (
    ChannelName.TELEGRAM,
    ChannelName.WHATSAPP,
    ChannelName.SMS,
    ChannelName.EMAIL,
    ChannelName.MANUAL,
)


@dataclass(frozen=True, slots=True)
class Recipient:
    """A snapshot of the person's contact data, taken when the notification is sent; or, for a
    notification addressed to a destination that is not a user, that destination ("<kind>:
    <target>", services.notifications.destinations) with `user_id` None."""

    user_id: int | None
    display_name: str = ""
    language: str = "en"
    telegram_id: int | None = None
    phone: str | None = None  # E.164 with '+'
    email: str | None = None
    # When the recipient last wrote on WhatsApp (the 24 h customer-service window), UTC.
    whatsapp_inbound_at: Any = None
    destination: str | None = None

    @property
    def key(self) -> int | str | None:
        """Who this is, for keeping one addressee's messages in order: the destination, or
        else the user."""
        return self.destination if self.destination is not None else self.user_id


@dataclass(slots=True)
class Outgoing:
    """One part of a notification, ready for a channel; channels only read it.

    Not frozen: a frozen dataclass takes several times longer to build, and the dispatcher
    builds one for every message it sends. Exactly one of `text`, `template` or `media` is
    set. `template` is
    {"name": str, "language": str, "params": list[str]}; `media` is
    {"type": "image"|"document"|"audio"|"video", "source": url, "caption": str | None}.
    """

    notification_id: int
    kind: str
    idempotency_key: str
    text: str | None = None
    template: dict[str, Any] | None = None
    media: dict[str, Any] | None = None
    subject: str | None = None  # e-mail subject
    part: int = 0  # which part of a split text this is (0-based)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)  # not frozen, as Outgoing: one per message sent
class SendResult:
    provider_message_id: str | None
    sender: str | None = None  # the sender used: bot id, phone-number id, from number, address
    address: str | None = None  # where it went: chat id, number, e-mail address


def render_text(message: Outgoing) -> str:
    """Plain text for a channel without templates or media: text, "name: params", caption + URL."""
    if message.text:
        return message.text
    if message.template:
        params = ", ".join(str(p) for p in message.template.get("params") or ())
        name = str(message.template.get("name") or "")
        return f"{name}: {params}" if params else name
    if message.media:
        caption = str(message.media.get("caption") or "")
        source = str(message.media.get("source") or "")
        return f"{caption}\n{source}".strip()
    return ""


class Channel(Protocol):
    name: ChannelName
    # Longest text one message may carry; longer texts are split before `send`.
    max_text_length: int

    @property
    def enabled(self) -> bool:
        """False when the channel's settings are missing: it is off, not an error."""
        ...

    def can_reach(self, recipient: Recipient) -> bool:
        """Whether the recipient has the contact data this channel needs."""
        ...

    async def send(self, recipient: Recipient, message: Outgoing) -> SendResult:
        """Send one message. Raises failures.ChannelError with a classified Failure."""
        ...

    async def close(self) -> None: ...
