"""What a button on a notification stands for, in the domain's words.

A service that wants an admin to be able to act from a message (an alert's "Retry failed")
attaches an `Action` to it; it never writes callback data. How an action becomes callback data
and back is defined once, beside the handler that decodes it (`handlers/buttons.py`), and the
Telegram channel is handed that packing function when the bot is put together. Targets are ids,
so every action fits Telegram's 64 bytes of callback data whatever the data behind it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class ActionName(enum.StrEnum):
    # Send again every dead letter of the same kind as notification `target`.
    RETRY_DEAD_LETTERS_LIKE = "retry_dead_letters_like"
    # Show error occurrence `target` (its support code, context and group) to the admin.
    OPEN_ERROR = "open_error"
    # Service requests (services/workflow): a job offer's answers, target the offer id ...
    OFFER_ACCEPT = "offer_accept"
    OFFER_DECLINE = "offer_decline"
    # ... and "show me this request" (with fresh, versioned buttons), target the request id.
    REQUEST_OPEN = "request_open"
    # Relay (issue 11): show customer `target`'s full number to an operator or admin.
    REVEAL_NUMBER = "reveal_number"
    # /workflow_recovery (issue 12): open the Stuck workflows screen (target: a request, or 0
    # for the list), the button on the stuck-workflow digest.
    OPEN_STUCK = "open_stuck"


@dataclass(frozen=True, slots=True)
class Action:
    name: ActionName
    target: int

    def as_payload(self, text: str) -> dict[str, Any]:
        """The button as stored in a notification's payload (JSON)."""
        return {"text": text, "action": self.name.value, "target": self.target}

    @classmethod
    def from_payload(cls, button: dict[str, Any]) -> Action:
        """Raises ValueError for a button whose action this version does not know."""
        return cls(ActionName(button["action"]), int(button["target"]))
