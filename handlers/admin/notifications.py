"""The buttons on delivery alerts: "Retry failed" sends a kind's dead letters again."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery
from aiogram.utils.i18n import gettext as _

from database.engine import Database
from database.models import Role
from services.clock import Clock
from services.notifications import outbox
from services.users import UserView

router = Router(name="admin-notifications")


class DeadLetterAction(CallbackData, prefix="nf"):
    """Packed by the dispatcher's dead-letter alert as "nf:retry:<kind>"."""

    action: str
    kind: str


@router.callback_query(DeadLetterAction.filter(F.action == "retry"))
async def retry_failed(
    query: CallbackQuery,
    callback_data: DeadLetterAction,
    user: UserView,
    db: Database,
    clock: Clock,
) -> None:
    if Role.ADMIN not in user.roles:
        await query.answer(_("Only admins can do this."), show_alert=True)
        return
    kind = callback_data.kind
    count = await db.run(
        lambda s: outbox.retry_all_failed(s, now=clock.now(), kind=kind, actor_id=user.id)
    )
    if count:
        text = _("Sending {count} failed notification(s) of kind {kind} again.")
    else:
        text = _("Nothing to retry: no failed notification of kind {kind} is left.")
    await query.answer(text.format(count=count, kind=kind), show_alert=True)
