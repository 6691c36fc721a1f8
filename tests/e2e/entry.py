"""`python -m tests.e2e.entry`: exactly `python main.py run`, plus handlers that exist only for
the tests (a slow one, a failing one). Production routers never contain these."""

from __future__ import annotations

import asyncio
import os
import sys

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

import main

test_router = Router(name="test-only")


@test_router.message(Command("slow"))
async def slow(message: Message) -> None:
    await message.answer("slow handler started")
    await asyncio.sleep(float(os.environ.get("E2E_SLOW_SECONDS", "2")))
    await message.answer("slow handler finished")


@test_router.message(Command("boom"))
async def boom(message: Message) -> None:
    raise RuntimeError("a handler failed on purpose")


if __name__ == "__main__":
    sys.exit(main.main(sys.argv[1:], extra_routers=[test_router]))
