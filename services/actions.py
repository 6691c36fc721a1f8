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
