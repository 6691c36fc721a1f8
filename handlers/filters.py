"""Filters that run in the event loop.

aiogram runs a plain callable filter, including a bare magic filter (`F.text`), in a worker
thread (`asyncio.to_thread`): on an update that crosses several of them the thread hops cost
more than the checks. Wrapped in a `Filter`, the same rule is checked in place.
"""

from __future__ import annotations

from typing import Any

from aiogram.filters import Filter
from aiogram.types import TelegramObject
from magic_filter import MagicFilter


class Magic(Filter):
    def __init__(self, rule: MagicFilter) -> None:
        self.rule = rule

    async def __call__(self, event: TelegramObject) -> bool:
        return bool(self.rule.resolve(event))

    def __str__(self) -> str:
        return f"Magic({self.rule!r})"


def magic(rule: MagicFilter, *more: MagicFilter) -> Any:
    """`magic(F.text, ~F.text.startswith("/"))`: all rules must hold, checked in the loop."""
    combined = rule
    for other in more:
        combined = combined & other
    return Magic(combined)
