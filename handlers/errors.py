"""The last line of defence: an error no handler dealt with is logged with a support code, and the
user is told, in their language, that something went wrong and which code to quote."""

from __future__ import annotations

import logging
import secrets

from aiogram import Router
from aiogram.exceptions import TelegramAPIError
from aiogram.types import ErrorEvent
from aiogram.utils.i18n import gettext as _

log = logging.getLogger(__name__)


def new_support_code() -> str:
    """Short, unambiguous, easy to read out on the phone."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(8))


async def on_error(event: ErrorEvent) -> bool:
    code = new_support_code()
    update = event.update
    log.error(
        "unhandled error in update %s (support code %s): %s",
        update.update_id,
        code,
        type(event.exception).__name__,
        exc_info=event.exception,
    )
    text = _("Something went wrong on our side and we have been told. Support code: {code}").format(
        code=code
    )
    try:
        if update.callback_query is not None:
            await update.callback_query.answer(text, show_alert=True)
        elif update.message is not None:
            await update.message.answer(text)
    except TelegramAPIError as exc:
        log.warning("could not tell the user about error %s: %s", code, exc)
    return True


def setup() -> Router:
    router = Router(name="errors")
    router.errors.register(on_error)
    return router
