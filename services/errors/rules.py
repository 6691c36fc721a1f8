"""Exception (+ context) -> category, severity and the message its user reads, in one table.

The table is read top to bottom; the first rule that matches decides. Business-rule errors
(`DomainError`) carry their own category, severity and message, so they need no rule here.
Services do not import aiogram, so Telegram's exceptions are recognised by their class names
along the MRO (as services/notifications/classify.py does).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from pydantic import ValidationError
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError

from database.engine import ConnectionLost, is_transient
from services.alerts import Severity
from services.errors.categories import DomainError, ErrorCategory
from services.errors.context import ErrorContext
from services.localization import N_
from services.notifications.failures import ChannelError, FailureClass

Category = ErrorCategory

# What a person reads for each category; the support code is added on a line of its own.
USER_MESSAGES: dict[ErrorCategory, str] = {
    Category.TRANSIENT: N_("Something went wrong for a moment. Please try again in a minute."),
    Category.DATA: N_(
        "Something in this request could not be processed. Please check it and try again."
    ),
    Category.BUSINESS_LOGIC: N_("This cannot be done right now."),
    Category.SYSTEM: N_("Something went wrong on our side and we are on it."),
    Category.INVENTORY: N_(
        "There is a problem with the stock for this. An admin has been told and will sort it out."
    ),
    Category.NOTIFICATION: N_(
        "We could not send a message just now; we will keep trying."
    ),
    Category.EXTERNAL_AUTH: N_(
        "A service we rely on is not available right now. An admin has been told; please try "
        "again later."
    ),
}
SUPPORT_CODE = N_("Support code: {code}")


@dataclass(frozen=True, slots=True)
class Classification:
    category: ErrorCategory
    severity: Severity
    user_message: str  # an N_-marked msgid
    params: dict[str, Any] = field(default_factory=dict)
    rule: str = ""


Match = Callable[[BaseException, ErrorContext], bool]


def _aiogram(*names: str) -> Match:
    def match(exc: BaseException, _context: ErrorContext) -> bool:
        return any(
            cls.__name__ in names
            for cls in type(exc).__mro__
            if cls.__module__.split(".", 1)[0] == "aiogram"
        )

    return match


def _instance(*types: type[BaseException]) -> Match:
    return lambda exc, _context: isinstance(exc, types)


def _channel(*kinds: FailureClass) -> Match:
    return lambda exc, _context: isinstance(exc, ChannelError) and exc.failure.kind in kinds


def _http_status(*statuses: int) -> Match:
    return lambda exc, _context: (
        isinstance(exc, aiohttp.ClientResponseError) and exc.status in statuses
    )


_DATABASE_MODULES = ("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3", "database")


def _raised_by_the_database(exc: BaseException) -> bool:
    """Raised in the database layer: a refused connect comes out of asyncpg as a bare OSError,
    so the traceback is read, not only the type."""
    if type(exc).__module__.split(".", 1)[0] in _DATABASE_MODULES:
        return True
    tb = exc.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.split(".", 1)[0] in ("sqlalchemy", "asyncpg", "aiosqlite"):
            return True
        tb = tb.tb_next
    return False


def database_unreachable(exc: BaseException, _context: ErrorContext | None = None) -> bool:
    """The database could not be reached (refused, reset, closed connection)."""
    if isinstance(exc, ConnectionLost | InterfaceError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OSError) and _raised_by_the_database(exc)


def _database_busy(exc: BaseException, _context: ErrorContext) -> bool:
    return is_transient(exc)


def _stale_button(exc: BaseException, context: ErrorContext) -> bool:
    return (
        context.update_type == "callback_query"
        and _aiogram("TelegramBadRequest")(exc, context)
        and "query is too old" in str(exc)
    )


T, D, S = Category.TRANSIENT, Category.DATA, Category.SYSTEM
N, A = Category.NOTIFICATION, Category.EXTERNAL_AUTH
INFO, WARNING, HIGH, CRITICAL = Severity.INFO, Severity.WARNING, Severity.HIGH, Severity.CRITICAL

# name, match, category, severity (first match wins; DomainError is handled before the table)
RULES: tuple[tuple[str, Match, ErrorCategory, Severity], ...] = (
    # credentials refused: nothing works until an admin fixes the setting
    ("telegram token refused", _aiogram("TelegramUnauthorizedError"), A, CRITICAL),
    ("channel broken", _channel(FailureClass.BROKEN), A, HIGH),
    ("http 401/403", _http_status(401, 403), A, HIGH),
    # the database away: the bot answers, the occurrence waits in the spool
    ("database unreachable", database_unreachable, T, HIGH),
    ("database busy", _database_busy, T, WARNING),
    # what was stored or received does not fit
    ("constraint violated", _instance(IntegrityError, DataError), D, WARNING),
    ("malformed value", _instance(ValidationError, UnicodeError, json.JSONDecodeError), D, WARNING),
    # Telegram and other senders
    ("button pressed too late", _stale_button, T, INFO),
    ("telegram flood control", _aiogram("TelegramRetryAfter"), T, WARNING),
    ("telegram unreachable", _aiogram("TelegramNetworkError", "TelegramServerError"), T, WARNING),
    ("telegram refused the user", _aiogram("TelegramForbiddenError"), N, INFO),
    ("telegram refused a message", _aiogram("TelegramBadRequest", "TelegramAPIError"), N, WARNING),
    ("send failed", _instance(ChannelError), N, WARNING),
    ("network", _instance(TimeoutError, aiohttp.ClientError, ConnectionError), T, WARNING),
    # the process itself in trouble
    ("out of memory or recursion", _instance(MemoryError, RecursionError), S, CRITICAL),
    ("anything else", lambda _exc, _context: True, S, HIGH),
)


def classify(exc: BaseException, context: ErrorContext | None = None) -> Classification:
    """The category, severity and user message of `exc`."""
    context = context or ErrorContext()
    if isinstance(exc, DomainError):
        message = exc.user_message
        if message == DomainError.user_message:  # no message of its own: the category's
            message = USER_MESSAGES[exc.category]
        return Classification(exc.category, exc.severity, message, dict(exc.params), "domain")
    for name, match, category, severity in RULES:
        if match(exc, context):
            return Classification(category, severity, USER_MESSAGES[category], rule=name)
    raise AssertionError("unreachable: the last rule matches everything")
