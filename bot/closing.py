"""Closing a process's parts one after another, each even if one before it failed."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger(__name__)

Step = tuple[str, Callable[[], Awaitable[object]]]


async def close_all(steps: Sequence[Step]) -> None:
    """Run each (name, close) in order; a failure is logged with its traceback and the next
    part is still closed (a database outage at shutdown must not leave Redis or the Telegram
    session open)."""
    for name, close in steps:
        try:
            await close()
        except Exception:
            log.exception("could not stop the %s cleanly", name)
