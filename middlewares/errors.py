"""The enhanced error handler: an error no handler dealt with is classified, recorded under a
support code (services.errors), and the person is told, in their language, what kind of
trouble it is and which code to quote. The update is always answered: a pressed button gets its
callback answer even when the handler behind it failed.

`ErrorMiddleware` (outer, on every update, just inside the in-flight counter) catches what the
middlewares after it and the handlers raise; the dispatcher's error handler
(handlers/errors.py) hands `ErrorReporter` what fails before it (aiogram's FSM middleware
reading its storage while the database is away). Both end in `ErrorReporter.report`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.dispatcher.event.bases import CancelHandler, SkipHandler
from aiogram.exceptions import TelegramAPIError
from aiogram.types import Chat, TelegramObject, Update
from aiogram.types import User as TelegramUser
from aiogram.utils.i18n import I18n

from middlewares.user import LanguageCache
from services.alerts import Severity
from services.errors import SUPPORT_CODE, USER_MESSAGES, ErrorContext, ErrorRecorder, Recorded
from services.errors.fingerprint import handler as handler_of
from services.users import UserView, guess_language

log = logging.getLogger(__name__)

CALLBACK_ANSWER_LIMIT = 200  # characters Telegram shows in a callback answer


class ErrorReporter:
    def __init__(
        self, recorder: ErrorRecorder, i18n: I18n, default_language: str,
        languages: LanguageCache | None = None,
    ) -> None:
        self.recorder = recorder
        self.i18n = i18n
        self.default_language = default_language
        self.languages = languages or LanguageCache()

    async def report(self, exc: Exception, update: Update, data: dict[str, Any]) -> Recorded:
        """Record `exc`, log it with its code, and tell the person behind `update`."""
        from_user: TelegramUser | None = data.get("event_from_user")
        chat: Chat | None = data.get("event_chat")
        user: UserView | None = data.get("user")
        context = ErrorContext(
            update_type=update.event_type,
            update_id=update.update_id,
            telegram_user_id=from_user.id if from_user else None,
            user_id=user.id if user else None,
            chat_id=chat.id if chat else None,
            handler=handler_of(exc),
            fsm_state=data.get("raw_state"),
            request_id=data.get("request_id"),
        )
        recorded = await self.recorder.record(exc, context)
        c = recorded.classification
        quiet = c.severity == Severity.INFO
        log.log(
            logging.INFO if quiet else logging.ERROR,
            "unhandled error in update %s (support code %s): %s [%s, %s, %s]",
            update.update_id, recorded.code, type(exc).__name__, c.category.value,
            c.severity.value, "stored" if recorded.stored else "spooled",
            exc_info=None if quiet else exc, extra={"support_code": recorded.code},
        )
        await self._answer(update, data.get("bot"), chat,
                           self.text(recorded, self._language(user, from_user)))
        return recorded

    def _language(self, user: UserView | None, from_user: TelegramUser | None) -> str:
        """Their chosen language; when their profile cannot be read (the database is away),
        the one last seen for them, else the one Telegram reports for them."""
        if user is not None:
            return user.language
        if from_user is None:
            return self.default_language
        return self.languages.get(from_user.id) or guess_language(
            from_user.language_code, self.default_language
        )

    def text(self, recorded: Recorded, language: str) -> str:
        """The category's (or the business rule's) message and the support code."""
        c = recorded.classification
        locale = language if language in self.i18n.available_locales else self.i18n.default_locale
        try:
            message = self.i18n.gettext(c.user_message, locale=locale).format(**c.params)
        except (KeyError, IndexError, ValueError):
            log.error("the message of %s does not fit its parameters", c.user_message)
            message = self.i18n.gettext(USER_MESSAGES[c.category], locale=locale)
        code = self.i18n.gettext(SUPPORT_CODE, locale=locale).format(code=recorded.code)
        return f"{message}\n{code}"

    @staticmethod
    async def _answer(update: Update, bot: Bot | None, chat: Chat | None, text: str) -> None:
        if bot is None:
            return
        query = update.callback_query
        try:
            if query is not None:
                fits = len(text) <= CALLBACK_ANSWER_LIMIT
                try:
                    await bot.answer_callback_query(
                        query.id, text=text if fits else None, show_alert=fits
                    )
                except TelegramAPIError as exc:  # too old to answer: the chat still hears
                    log.warning("could not answer the callback query: %s", exc)
                    fits = False
                if fits:
                    return
            if chat is not None:
                await bot.send_message(chat.id, text, parse_mode=None)
        except TelegramAPIError as exc:
            log.warning("could not tell the user about the error: %s", exc)


class ErrorMiddleware(BaseMiddleware):
    """Outer middleware on every update: nothing raised below it goes unrecorded or
    unanswered. After an update that went well, occurrences spooled during a database outage
    are written."""

    def __init__(self, reporter: ErrorReporter) -> None:
        self.reporter = reporter

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        try:
            result = await handler(event, data)
        except (SkipHandler, CancelHandler):
            raise
        except Exception as exc:
            if not isinstance(event, Update):
                raise
            await self.reporter.report(exc, event, data)
            return None
        if self.reporter.recorder.spooled and "user" in data:  # the database answered
            await self.reporter.recorder.flush()
        return result
