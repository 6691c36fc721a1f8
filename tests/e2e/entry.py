"""`python -m tests.e2e.entry`: exactly `python main.py run`, plus handlers that exist only for
the tests (a slow one, a failing one). Production routers never contain these; the in-process
conversation tests add the same ones (tests/conversations/harness.py)."""

from __future__ import annotations

import asyncio
import os
import sys

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

import main


async def slow(message: Message) -> None:
    await message.answer("slow handler started")
    await asyncio.sleep(float(os.environ.get("E2E_SLOW_SECONDS", "2")))
    await message.answer("slow handler finished")


async def boom(message: Message) -> None:
    raise RuntimeError("a handler failed on purpose")


def routers_for_tests() -> list[Router]:
    """Fresh test-only routers, tried before the production ones."""
    router = Router(name="test-only")
    router.message.register(slow, Command("slow"))
    router.message.register(boom, Command("boom"))
    return [router]


if __name__ == "__main__":
    sys.exit(main.main(sys.argv[1:], extra_routers=routers_for_tests()))
