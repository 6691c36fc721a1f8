"""What went wrong with a send, in the terms that decide what happens next."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FailureClass(enum.StrEnum):
    TRANSIENT = "transient"  # retry: quickly in the call, then on the persisted schedule
    RATE_LIMITED = "rate_limited"  # wait as told; not a failed attempt
    PERMANENT = "permanent"  # this channel cannot reach this recipient: next channel
    BROKEN = "broken"  # the channel itself is broken (token, account): open its circuit
    UNKNOWN = "unknown"  # a code we do not know: transient with a small budget, logged


@dataclass(frozen=True, slots=True)
class Failure:
    kind: FailureClass
    provider: str  # telegram | whatsapp | twilio | smtp
    code: str  # the provider's own error code ("403", "131026", "21610", "550", "timeout")
    text: str  # a short description, never containing secrets or full phone numbers
    retry_after: float | None = None  # seconds, when the provider said (or its docs say)
    # Where a rate limit applies: "recipient", "sender" or "channel"; None when not rate limited.
    scope: str | None = None
    # The recipient asked not to be contacted on this channel (STOP, 21610, 131050).
    opt_out: bool = False

    def __post_init__(self) -> None:
        # Code and text come from providers and are stored: PostgreSQL text cannot hold NUL,
        # and a row that cannot be written would have its whole batch sent again.
        if "\x00" in self.code or "\x00" in self.text:
            object.__setattr__(self, "code", self.code.replace("\x00", ""))
            object.__setattr__(self, "text", self.text.replace("\x00", "\ufffd"))


class ChannelError(Exception):
    """Raised by a channel's send; carries the classified failure."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.provider} {failure.code}: {failure.text}")
        self.failure = failure
