"""`python -m tests.e2e.entry`: exactly `python main.py run`, plus handlers that exist only for
the tests (a slow one, a failing one). Production routers never contain these; the in-process
conversation tests add the same ones (tests/conversations/harness.py)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message

import main
from services.alerts import Severity
from services.errors import DomainError, ErrorCategory
from services.notifications.failures import ChannelError, Failure, FailureClass


async def slow(message: Message) -> None:
    await message.answer("slow handler started")
    await asyncio.sleep(float(os.environ.get("E2E_SLOW_SECONDS", "2")))
    await message.answer("slow handler finished")


async def boom(message: Message) -> None:
    raise RuntimeError("a handler failed on purpose")


class OutOfStockOnPurpose(DomainError):
    category = ErrorCategory.INVENTORY
    severity = Severity.WARNING


def failure_of(category: str) -> Exception:
    """An exception of each error category, as the code that raises it in production would."""
    if category == "transient":
        return TimeoutError("the upstream took too long")
    if category == "data":
        try:
            json.loads("{not json")
        except json.JSONDecodeError as exc:
            return exc
    if category == "business_logic":
        return DomainError("request 12 is already closed")
    if category == "inventory":
        return OutOfStockOnPurpose("filter F-12: 0 left")
    if category == "notification":
        return ChannelError(Failure(FailureClass.PERMANENT, "telegram", "403", "bot was blocked"))
    if category == "external_auth":
        return ChannelError(Failure(FailureClass.BROKEN, "whatsapp", "190", "token expired"))
    return RuntimeError(f"a handler failed on purpose ({category})")


async def fail(message: Message, command: CommandObject) -> None:
    """/fail CATEGORY: fails with an error of that category."""
    raise failure_of((command.args or "system").strip())


async def fail_button(query: CallbackQuery) -> None:
    """A button "fail:CATEGORY" whose handler fails before answering."""
    raise failure_of((query.data or "").split(":", 1)[-1])


def routers_for_tests() -> list[Router]:
    """Fresh test-only routers, tried before the production ones."""
    router = Router(name="test-only")
    router.message.register(slow, Command("slow"))
    router.message.register(boom, Command("boom"))
    router.message.register(fail, Command("fail"))
    router.callback_query.register(fail_button, F.data.startswith("fail:"))
    return [router]


if __name__ == "__main__":
    sys.exit(main.main(sys.argv[1:], extra_routers=routers_for_tests()))
