"""What was going on when an error happened: small, with no free text a person typed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ErrorContext:
    update_type: str | None = None  # message, callback_query, ... or "job", "web"
    update_id: int | None = None
    telegram_user_id: int | None = None
    user_id: int | None = None  # users.id, when the user could be read
    chat_id: int | None = None
    handler: str | None = None  # module:function of the handler that was running
    fsm_state: str | None = None
    request_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields that are set, as stored on the occurrence."""
        return {name: value for name, value in asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ErrorContext:
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        return cls(**known)
