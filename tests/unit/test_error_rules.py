"""The rules table: an exception and its context -> category, severity and user message; and the
fingerprint that groups occurrences (exception type + place + category)."""

from __future__ import annotations

import json

import pytest
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramUnauthorizedError,
)
from aiogram.methods import AnswerCallbackQuery, GetMe
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.sql import text

from database.engine import ConnectionLost
from services.alerts import Severity
from services.errors import USER_MESSAGES, DomainError, ErrorCategory, ErrorContext, classify
from services.errors.fingerprint import exception_type, fingerprint, place
from services.localization import N_
from services.notifications.failures import ChannelError, Failure, FailureClass

C = ErrorCategory


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:  # noqa: BLE001 - handed back to the test that made it
        return caught


class Closed(DomainError):
    user_message = N_("This cannot be done right now.")


class OutOfStock(DomainError):
    category = ErrorCategory.INVENTORY
    severity = Severity.HIGH


CASES = [
    (TelegramUnauthorizedError(GetMe(), "Unauthorized"), C.EXTERNAL_AUTH, Severity.CRITICAL),
    (ChannelError(Failure(FailureClass.BROKEN, "whatsapp", "190", "expired")), C.EXTERNAL_AUTH,
     Severity.HIGH),
    (ConnectionLost("reset"), C.TRANSIENT, Severity.HIGH),
    (IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")), C.DATA, Severity.WARNING),
    (json.JSONDecodeError("Expecting value", "{", 1), C.DATA, Severity.WARNING),
    (TelegramNetworkError(GetMe(), "timeout"), C.TRANSIENT, Severity.WARNING),
    (TelegramForbiddenError(GetMe(), "bot was blocked by the user"), C.NOTIFICATION,
     Severity.INFO),
    (TelegramBadRequest(GetMe(), "message is not modified"), C.NOTIFICATION, Severity.WARNING),
    (ChannelError(Failure(FailureClass.PERMANENT, "telegram", "403", "blocked")), C.NOTIFICATION,
     Severity.WARNING),
    (TimeoutError(), C.TRANSIENT, Severity.WARNING),
    (Closed("request 12 is closed"), C.BUSINESS_LOGIC, Severity.INFO),
    (OutOfStock("filter: 0 left"), C.INVENTORY, Severity.HIGH),
    (RecursionError(), C.SYSTEM, Severity.CRITICAL),
    (KeyError("status"), C.SYSTEM, Severity.HIGH),
]


@pytest.mark.parametrize(("exc", "category", "severity"), CASES,
                         ids=[type(c[0]).__name__ for c in CASES])
def test_the_table_classifies(exc: Exception, category: ErrorCategory, severity: Severity) -> None:
    c = classify(_raised(exc))
    assert (c.category, c.severity) == (category, severity)


def test_a_domain_error_brings_its_own_message_and_parameters() -> None:
    c = classify(Closed("x", user_message=N_("Request #{id} is closed."), id=12))
    assert (c.user_message, c.params) == ("Request #{id} is closed.", {"id": 12})
    # without a message of its own, its category's
    assert classify(OutOfStock("x")).user_message == USER_MESSAGES[C.INVENTORY]


def test_a_button_pressed_too_late_is_transient_and_quiet() -> None:
    exc = TelegramBadRequest(AnswerCallbackQuery(callback_query_id="1"), "query is too old")
    c = classify(exc, ErrorContext(update_type="callback_query"))
    assert (c.category, c.severity) == (C.TRANSIENT, Severity.INFO)
    assert classify(exc, ErrorContext(update_type="message")).category == C.NOTIFICATION


async def test_a_refused_database_connection_is_transient() -> None:
    """asyncpg raises a bare OSError for a refused connect: the traceback says where it came
    from."""
    engine = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except OSError as exc:
        c = classify(exc)
    finally:
        await engine.dispose()
    assert (c.category, c.severity, c.rule) == (C.TRANSIENT, Severity.HIGH, "database unreachable")
    assert classify(_raised(OSError("disk full"))).category == C.SYSTEM  # not the database


def _fail_here(message: str = "x") -> BaseException:
    try:
        raise RuntimeError(message)
    except RuntimeError as exc:
        return exc


def _fail_there() -> BaseException:
    try:
        raise RuntimeError("x")
    except RuntimeError as exc:
        return exc


def test_the_fingerprint_is_type_place_and_category() -> None:
    one, two, other = _fail_here(), _fail_here("another message"), _fail_there()
    assert place(one) == "tests.unit.test_error_rules:_fail_here"
    key = fingerprint(exception_type(one), place(one), C.SYSTEM)
    assert key == fingerprint(exception_type(two), place(two), C.SYSTEM)  # message aside
    assert key != fingerprint(exception_type(one), place(one), C.DATA)
    assert key != fingerprint(exception_type(other), place(other), C.SYSTEM)
    assert key != fingerprint("ValueError", place(one), C.SYSTEM)
    assert len(key) == 40
