"""The confirmation every destructive action goes through: the admin presses the action's
button (`Ask`), maybe picks what it needs (`Choose`), then gives a reason, a preset one or
"Other" typed as a message; only then does the action run, once.

A section registers each of its actions with `register(Destructive(...))`. What is pending
is kept in the admin's FSM data (callback data is too small for it), with the screen's
message, so the outcome replaces the confirmation in place even after a typed reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from aiogram import F, Router
from aiogram.filters import StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import gettext as _

from handlers.admin.recovery.callbacks import Ask, Choose, Why
from handlers.admin.recovery.screens import Screen, back, button, show, show_at

log = logging.getLogger(__name__)

MAX_REASON = 500
_KEY = "recovery_pending"


class RecoveryInput(StatesGroup):
    reason = State()


@dataclass(frozen=True, slots=True)
class Pending:
    op: str
    target: int
    version: int
    chat_id: int
    message_id: int
    arg: int | None = None  # what `Destructive.choices` picked


@dataclass(frozen=True, slots=True)
class Destructive:
    """One destructive action. `question` returns the text asking for confirmation, or a
    Screen to show instead (the target is gone, or moved on: the screen as it is now);
    `run` does it with the reason and returns the screen to show after; `back` is where
    Cancel goes; `choices`, when set, lists (label, value) to pick from before the reason.
    Each gets the pending action and the handler's data (services, `user`, `settings`...)."""

    op: str
    reasons: tuple[str, ...]  # msgids of the preset reasons; the English text is stored
    question: Callable[[Pending, dict[str, Any]], Awaitable[str | Screen]]
    run: Callable[[Pending, str, dict[str, Any]], Awaitable[Screen]]
    back: Callable[[Pending], CallbackData]
    choices: Callable[[Pending, dict[str, Any]], Awaitable[list[tuple[str, int]]]] | None = None


_OPS: dict[str, Destructive] = {}


def register(action: Destructive) -> Destructive:
    """Make `Ask(op=action.op, ...)` buttons work (once per op; a rebuilt router re-registers
    the same action)."""
    _OPS[action.op] = action
    return action


async def _load(state: FSMContext) -> Pending | None:
    raw = (await state.get_data()).get(_KEY)
    return Pending(**raw) if isinstance(raw, dict) else None


async def _save(state: FSMContext, pending: Pending | None) -> None:
    await state.update_data({_KEY: asdict(pending) if pending is not None else None})


def _reason_screen(action: Destructive, pending: Pending, question: str) -> Screen:
    screen = Screen(question + "\n\n" + _("Why? Pick a reason, or Other to type one."))
    for index, reason in enumerate(action.reasons):
        screen.button(_(reason), Why(target=pending.target, reason=index))
    screen.button(_("Other…"), Why(target=pending.target, reason=-1))
    screen.rows.append([button(_("Cancel"), action.back(pending))])
    return screen


async def _ask_reason(
    event: CallbackQuery, action: Destructive, pending: Pending, data: dict[str, Any]
) -> None:
    asked = await action.question(pending, data)
    if isinstance(asked, Screen):
        await _save(data["state"], None)
        await show(event, asked, notice=_("This changed in the meantime; here it is now."))
        return
    await _save(data["state"], pending)
    if action.choices is not None and pending.arg is None:
        options = await action.choices(pending, data)
        screen = Screen(asked + "\n\n" + (_("Pick one:") if options else _("Nobody to pick.")))
        for label, value in options:
            screen.button(label, Choose(target=pending.target, value=value))
        screen.rows.append(back(action.back(pending)))
        await show(event, screen)
        return
    await show(event, _reason_screen(action, pending, asked))



async def ask(query: CallbackQuery, callback_data: Ask, **data: Any) -> None:
    action = _OPS.get(callback_data.op)
    if action is None or query.message is None:
        await query.answer(_("This button is no longer valid."), show_alert=True)
        return
    pending = Pending(callback_data.op, callback_data.target, callback_data.version,
                      query.message.chat.id, query.message.message_id)
    await data["state"].set_state(None)
    await _ask_reason(query, action, pending, data)


async def _current(state: FSMContext, target: int) -> tuple[Pending, Destructive] | None:
    pending = await _load(state)
    if pending is None or pending.target != target or pending.op not in _OPS:
        return None
    return pending, _OPS[pending.op]


async def choose(query: CallbackQuery, callback_data: Choose, **data: Any) -> None:
    found = await _current(data["state"], callback_data.target)
    if found is None:
        await query.answer(_("This button is no longer valid."), show_alert=True)
        return
    pending, action = found
    await _ask_reason(query, action, replace(pending, arg=callback_data.value), data)


async def why(query: CallbackQuery, callback_data: Why, **data: Any) -> None:
    state: FSMContext = data["state"]
    found = await _current(state, callback_data.target)
    if found is None or callback_data.reason >= len(found[1].reasons):
        await query.answer(_("This button is no longer valid."), show_alert=True)
        return
    pending, action = found
    if callback_data.reason < 0:
        await state.set_state(RecoveryInput.reason)
        screen = Screen(_("Type the reason in a message (at most {count} characters).")
                        .format(count=MAX_REASON))
        screen.rows.append([button(_("Cancel"), action.back(pending))])
        await show(query, screen)
        return
    await _save(state, None)
    screen = await action.run(pending, action.reasons[callback_data.reason], data)
    await show(query, screen)


async def typed_reason(message: Message, **data: Any) -> None:
    state: FSMContext = data["state"]
    pending = await _load(state)
    await state.set_state(None)
    if pending is None or pending.op not in _OPS:
        await message.answer(_("Nothing is waiting for a reason any more."))
        return
    reason = (message.text or "").strip()[:MAX_REASON]
    await _save(state, None)
    screen = await _OPS[pending.op].run(pending, reason, data)
    if message.bot is not None:
        await show_at(message.bot, pending.chat_id, pending.message_id, screen)


def setup() -> Router:
    router = Router(name="recovery-confirm")
    router.callback_query.register(ask, Ask.filter())
    router.callback_query.register(choose, Choose.filter())
    router.callback_query.register(why, Why.filter())
    router.message.register(
        typed_reason, StateFilter(RecoveryInput.reason), F.text, ~F.text.startswith("/")
    )
    return router
