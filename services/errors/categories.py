"""What kind of failure an error is, and the base of the errors services raise on purpose."""

from __future__ import annotations

import enum
from typing import Any, ClassVar

from services.alerts import Severity
from services.localization import N_


class ErrorCategory(enum.StrEnum):
    TRANSIENT = "transient"  # try again in a moment: a timeout, the database away
    DATA = "data"  # what was stored or sent does not fit (a constraint, a malformed value)
    BUSINESS_LOGIC = "business_logic"  # a rule said no: the user can do something about it
    SYSTEM = "system"  # a bug or a broken part: we are on it
    INVENTORY = "inventory"  # stock missing or inconsistent
    NOTIFICATION = "notification"  # a message could not be sent
    EXTERNAL_AUTH = "external_auth"  # a provider refused our credentials


class DomainError(Exception):
    """A business rule refused what was asked. Raised by services on purpose; it carries its
    category, severity and the message its user should read (an `N_`-marked msgid, formatted
    with `params` after translation), so the error handler needs no rule of its own for it.

    Subclasses set the class attributes; an instance may override `user_message`::

        class OutOfStock(DomainError):
            category = ErrorCategory.INVENTORY
            user_message = N_("{part} is out of stock.")

        raise OutOfStock("part 12 at 0", part="Filter")
    """

    category: ClassVar[ErrorCategory] = ErrorCategory.BUSINESS_LOGIC
    severity: ClassVar[Severity] = Severity.INFO
    user_message: str = N_("This cannot be done right now.")

    def __init__(self, *args: Any, user_message: str | None = None, **params: Any) -> None:
        super().__init__(*args)
        if user_message is not None:
            self.user_message = user_message
        self.params: dict[str, Any] = params
