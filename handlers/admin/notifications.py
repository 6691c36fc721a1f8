"""The buttons on delivery alerts: "Retry failed" sends a kind's dead letters again."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import CallbackQuery
from aiogram.utils.i18n import gettext as _

from handlers.buttons import LegacyRetryDeadLetters, RetryDeadLettersLike
from services.notifications.dead_letters import DeadLetters, RetryResult
from services.users import UserView


async def retry_failed(
    query: CallbackQuery,
    callback_data: RetryDeadLettersLike,
    user: UserView,
    dead_letters: DeadLetters,
) -> None:
    result = await dead_letters.retry_like(callback_data.target, actor_id=user.id)
    await _answer(query, result)


async def retry_failed_legacy(
    query: CallbackQuery,
    callback_data: LegacyRetryDeadLetters,
    user: UserView,
    dead_letters: DeadLetters,
) -> None:
    result = await dead_letters.retry_kind(callback_data.kind, actor_id=user.id)
    await _answer(query, result)


async def _answer(query: CallbackQuery, result: RetryResult) -> None:
    if result.count:
        text = _("Sending {count} failed notification(s) of kind {kind} again.")
    elif result.kind is not None:
        text = _("Nothing to retry: no failed notification of kind {kind} is left.")
    else:
        text = _("This button is no longer valid.")
    await query.answer(text.format(count=result.count, kind=result.kind), show_alert=True)


def setup() -> Router:
    router = Router(name="admin-notifications")
    router.callback_query.register(retry_failed, RetryDeadLettersLike.filter())
    router.callback_query.register(
        retry_failed_legacy, LegacyRetryDeadLetters.filter(F.action == "retry")
    )
    return router
