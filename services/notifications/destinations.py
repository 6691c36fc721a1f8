"""Destinations: where a notification goes when it is not addressed to a user.

A destination is a short string, "<kind>:<target>", stored in `notifications.destination` in
place of a recipient. Its kind picks the one channel that delivers it (`CHANNELS`); there is no
fallback chain and never a manual task. Everything else is the same as for a user: the outbox
row, the dispatcher's claim, retries, pacing, the age budget and dead-lettering.

Kinds:
- "webhook:<name>": an incoming webhook configured by name, sent by the webhook channel
  (channels/webhook.py). "webhook:alerts" is ALERT_WEBHOOK_URL.
- "telegram_chat:<chat_id>[:<thread_id>]": a Telegram group or supergroup (the operators'
  chat), and a forum topic in it when a thread id is given; sent by the Telegram channel
  (`telegram_chat` makes one, `parse_telegram_chat` splits it).

A new kind adds its entry to `CHANNELS`, and its channel learns to reach
`Recipient.destination` of that kind in `can_reach` and `send` (`parse` splits the string).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.notifications.channels.base import ChannelName

MAX_LENGTH = 128  # notifications.destination

# kind -> the channel that delivers it.
CHANNELS: dict[str, ChannelName] = {
    "webhook": ChannelName.WEBHOOK,
    "telegram_chat": ChannelName.TELEGRAM,
}

ALERT_WEBHOOK = "webhook:alerts"


class InvalidDestination(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Destination:
    kind: str
    target: str  # what follows the first ":", as the kind defines it

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}"


def parse(destination: str) -> Destination:
    """"webhook:alerts" -> Destination("webhook", "alerts"); raises InvalidDestination for a
    string too long, without a target, or of a kind no channel delivers."""
    kind, colon, target = destination.partition(":")
    if not colon or not target or len(destination) > MAX_LENGTH:
        raise InvalidDestination(f"not a destination: {destination!r}")
    if kind not in CHANNELS:
        raise InvalidDestination(f"no channel delivers destinations of kind {kind!r}")
    return Destination(kind, target)


def channel_for(destination: str) -> ChannelName:
    """The channel that delivers `destination` (validated)."""
    return CHANNELS[parse(destination).kind]


def telegram_chat(chat_id: int, thread_id: int | None = None) -> str:
    """The destination of a Telegram chat (and forum topic): "telegram_chat:-100123[:7]"."""
    return f"telegram_chat:{chat_id}" + (f":{thread_id}" if thread_id is not None else "")


def parse_telegram_chat(destination: str) -> tuple[int, int | None]:
    """"telegram_chat:-100123:7" -> (-100123, 7); InvalidDestination when it is not one."""
    found = parse(destination)
    chat, _, thread = found.target.partition(":")
    try:
        if found.kind != "telegram_chat":
            raise ValueError(found.kind)
        return int(chat), int(thread) if thread else None
    except ValueError:
        raise InvalidDestination(f"not a Telegram chat: {destination!r}") from None
