"""The dispatcher's error handler: what fails before the error middleware runs (aiogram's own
FSM middleware reading its storage, say) is reported the same way (middlewares/errors.py):
recorded under a support code and answered in the person's language."""

from __future__ import annotations

from typing import Any

from aiogram import Router
from aiogram.types import ErrorEvent

from middlewares.errors import ErrorReporter


async def on_error(event: ErrorEvent, error_reporter: ErrorReporter, **data: Any) -> bool:
    await error_reporter.report(event.exception, event.update, data)
    return True


def setup() -> Router:
    router = Router(name="errors")
    router.errors.register(on_error)
    return router
