"""/profile: what we have on file to reach the person, and their say in it.

They share their phone with Telegram's contact button (only their own contact is accepted: a
number typed or forwarded could be anyone's), set or clear an e-mail address, put the channels in
the order they prefer and opt in again where they had opted out. Only the channels the settings
switch on and that can reach them are offered (`ContactView.offered`); a switched-on channel
they cannot be reached by yet comes with a word on how to add it. Private chats only, so a phone
number is never shown in a group. The rules live in services.contacts; this module only talks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from html import escape

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)
from aiogram.utils.i18n import gettext as _

from handlers.filters import magic
from handlers.keyboards import one_per_row
from services import contacts
from services.contacts import CHOOSABLE_CHANNELS, ContactView, Profiles
from services.masking import mask_phone
from services.users import UserView

log = logging.getLogger(__name__)


class ProfileStates(StatesGroup):
    phone = State()  # the contact keyboard is shown
    email = State()  # waiting for an address


class ProfileAction(CallbackData, prefix="pf"):
    action: str  # "show", "phone", "email", "clear", "order", "optin"
    channel: str = ""  # for "optin"


class OrderMove(CallbackData, prefix="pfo"):
    channel: str  # the channel to move up one place
    seen: str  # the order the screen showed (the channels offered), as indexes into
    # CHOOSABLE_CHANNELS: stale -> refused


def channel_label(name: str) -> str:
    # Brand names are not translated.
    labels = {"telegram": "Telegram", "whatsapp": "WhatsApp", "sms": "SMS", "email": _("E-mail")}
    return labels.get(name, name)


def encode_order(order: Sequence[str]) -> str:
    return "".join(str(CHOOSABLE_CHANNELS.index(c)) for c in order)


def decode_order(seen: str) -> list[str] | None:
    if not (seen.isascii() and seen.isdigit()) or any(
        int(d) >= len(CHOOSABLE_CHANNELS) for d in seen
    ):
        return None
    return [CHOOSABLE_CHANNELS[int(d)] for d in seen]


# ----------------------------------------------------------------------------------- screens


def _either(labels: Sequence[str]) -> str:
    if len(labels) == 1:
        return labels[0]
    return _("{first} or {second}").format(first=", ".join(labels[:-1]), second=labels[-1])


def _how_to_add(view: ContactView) -> list[str]:
    """A word for each switched-on channel what is on file cannot reach yet."""
    hints = []
    if view.phone_channels and not view.phone:
        hints.append(
            _("Share your phone number to be reached on {channels} too.").format(
                channels=_either([channel_label(c) for c in view.phone_channels])
            )
        )
    if view.email_on and not view.email:
        hints.append(_("Set an e-mail address to be reached by e-mail too."))
    return hints


def profile_text(view: ContactView) -> str:
    lines = ["<b>" + _("Your contact details") + "</b>"]
    # A detail is shown when a switched-on channel uses it, or when it is on file anyway.
    if view.phone_channels or view.phone:
        phone = mask_phone(view.phone) if view.phone else _("not shared yet")
        lines.append(_("Phone: {phone}").format(phone=phone))
    if view.email_on or view.email:
        email = escape(view.email) if view.email else _("not set")
        lines.append(_("E-mail: {email}").format(email=email))
    offered = view.offered
    if len(offered) > 1:
        lines.append(
            _("I try to reach you in this order: {order}").format(
                order=", ".join(channel_label(c) for c in offered)
            )
        )
    elif offered:
        lines.append(_("I reach you on {channel}.").format(channel=channel_label(offered[0])))
    opted_out = [channel_label(c) for c in offered if c in view.opt_outs]
    if opted_out:
        lines.append(_("You opted out of: {channels}").format(channels=", ".join(opted_out)))
    return "\n".join(lines + _how_to_add(view))


def profile_keyboard(view: ContactView) -> InlineKeyboardMarkup | None:
    buttons: list[tuple[str, CallbackData]] = []
    if view.phone_channels:
        buttons.append((_("Share my phone"), ProfileAction(action="phone")))
    if view.email_on:
        buttons.append((_("Set e-mail"), ProfileAction(action="email")))
    if view.email:  # even with e-mail off: what is on file can always be removed
        buttons.append((_("Clear e-mail"), ProfileAction(action="clear")))
    if len(view.offered) > 1:
        buttons.append((_("Channel order"), ProfileAction(action="order")))
    buttons += [
        (
            _("Opt in again: {channel}").format(channel=channel_label(channel)),
            ProfileAction(action="optin", channel=channel),
        )
        for channel in view.offered
        if channel in view.opt_outs
    ]
    return one_per_row(buttons) if buttons else None  # Telegram only, nothing to add


def order_text(view: ContactView) -> str:
    lines = ["<b>" + _("Channel order") + "</b>", _("I try these in order until one reaches you:")]
    for position, channel in enumerate(view.offered, start=1):
        line = f"{position}. {channel_label(channel)}"
        if channel in view.opt_outs:
            line += " " + _("(you opted out)")
        lines.append(line)
    lines.append(_("Tap a channel to move it up."))
    return "\n".join(lines)


def order_keyboard(view: ContactView) -> InlineKeyboardMarkup:
    seen = encode_order(view.offered)
    buttons: list[tuple[str, CallbackData]] = [
        (
            _("Move up: {channel}").format(channel=channel_label(channel)),
            OrderMove(channel=channel, seen=seen),
        )
        for channel in view.offered[1:]
    ]
    buttons.append((_("Back"), ProfileAction(action="show")))
    return one_per_row(buttons)


def contact_keyboard() -> ReplyKeyboardMarkup:
    return ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text=_("Share my phone number"), request_contact=True)]],
        resize_keyboard=True,
        one_time_keyboard=True,
    )


async def _show(query: CallbackQuery, text: str, markup: InlineKeyboardMarkup | None) -> None:
    """Redraw the screen the button was on, or send it anew when that message is out of reach."""
    if isinstance(query.message, Message):
        try:
            await query.message.edit_text(text, reply_markup=markup)
        except TelegramBadRequest as exc:
            # A double tap redraws the same screen; anything else is a real error.
            if "message is not modified" not in exc.message:
                raise
            log.debug("profile screen already up to date")
        return
    await query.bot.send_message(query.from_user.id, text, reply_markup=markup)  # type: ignore[union-attr]


async def _stale(query: CallbackQuery) -> None:
    await query.answer(_("This button is no longer valid."), show_alert=True)


async def _leave_profile_state(state: FSMContext) -> None:
    """Leave our own conversation states only; another feature's conversation is not ours."""
    if await state.get_state() in ProfileStates.__all_states_names__:
        await state.clear()


# ---------------------------------------------------------------------------------- handlers


async def show_profile(
    message: Message, user: UserView, profiles: Profiles, state: FSMContext
) -> None:
    await _leave_profile_state(state)
    view = await profiles.show(user.id)
    await message.answer(profile_text(view), reply_markup=profile_keyboard(view))


async def cancel(message: Message, state: FSMContext) -> None:
    await state.clear()
    await message.answer(_("Cancelled: nothing was changed."), reply_markup=ReplyKeyboardRemove())


async def contact_shared(
    message: Message, user: UserView, profiles: Profiles, state: FSMContext
) -> None:
    contact = message.contact
    assert contact is not None and message.from_user is not None  # the filter and private chat
    if contact.user_id != message.from_user.id:
        # Someone else's card (or one with no Telegram account): it proves nothing about them.
        await message.answer(
            _(
                "I can only save your own phone number. Please tap the \u201cShare my phone "
                "number\u201d button instead of sending a contact."
            )
        )
        return
    try:
        view = await profiles.set_phone(user.id, contact.phone_number)
    except contacts.PhoneTaken:
        text = _(
            "This phone number is already on another account. If it is yours, please contact "
            "support."
        )
    except contacts.InvalidPhone:
        text = _("I cannot use this phone number: it is not a valid international number.")
    else:
        await state.clear()
        await message.answer(
            _("Thank you! Your phone number is saved."), reply_markup=ReplyKeyboardRemove()
        )
        await message.answer(profile_text(view), reply_markup=profile_keyboard(view))
        return
    await _leave_profile_state(state)
    await message.answer(text, reply_markup=ReplyKeyboardRemove())


async def phone_typed(message: Message) -> None:
    """A typed number could be anyone's: only the contact button proves it is theirs."""
    await message.answer(
        _("Please tap the \u201cShare my phone number\u201d button below, or send /cancel."),
        reply_markup=contact_keyboard(),
    )


async def email_typed(
    message: Message, user: UserView, profiles: Profiles, state: FSMContext
) -> None:
    try:
        view = await profiles.set_email(user.id, message.text or "")
    except contacts.InvalidEmail:
        # The state is kept: their next message is another try.
        await message.answer(
            _(
                "That does not look like an e-mail address (for example: name@example.com). "
                "Please try again, or send /cancel."
            )
        )
        return
    await state.clear()
    await message.answer(
        _("Your e-mail address is saved.") + "\n\n" + profile_text(view),
        reply_markup=profile_keyboard(view),
    )


async def back_to_profile(query: CallbackQuery, user: UserView, profiles: Profiles) -> None:
    view = await profiles.show(user.id)
    await query.answer()
    await _show(query, profile_text(view), profile_keyboard(view))


async def ask_phone(query: CallbackQuery, state: FSMContext) -> None:
    await state.set_state(ProfileStates.phone)
    await query.answer()
    await query.bot.send_message(  # type: ignore[union-attr]
        query.from_user.id,
        _(
            "Tap the button below to share your phone number. I only accept your own number. "
            "Send /cancel to stop."
        ),
        reply_markup=contact_keyboard(),
    )


async def ask_email(query: CallbackQuery, state: FSMContext) -> None:
    await state.set_state(ProfileStates.email)
    await query.answer()
    await query.bot.send_message(  # type: ignore[union-attr]
        query.from_user.id,
        _("Send me your e-mail address, or /cancel to leave it as it is."),
    )


async def clear_email(query: CallbackQuery, user: UserView, profiles: Profiles) -> None:
    view = await profiles.clear_email(user.id)
    await query.answer(_("E-mail address removed."))
    await _show(query, profile_text(view), profile_keyboard(view))


async def show_order(query: CallbackQuery, user: UserView, profiles: Profiles) -> None:
    view = await profiles.show(user.id)
    await query.answer()
    await _show(query, order_text(view), order_keyboard(view))


async def opt_in(
    query: CallbackQuery, callback_data: ProfileAction, user: UserView, profiles: Profiles
) -> None:
    try:
        view = await profiles.opt_in(user.id, callback_data.channel)
    except (contacts.UnknownChannel, contacts.NotOptedOut):
        await _stale(query)  # forged, or pressed twice: they were not opted out of it
        return
    label = channel_label(callback_data.channel)
    await query.answer(_("I will use {channel} again.").format(channel=label))
    await _show(query, profile_text(view), profile_keyboard(view))


async def move_up(
    query: CallbackQuery, callback_data: OrderMove, user: UserView, profiles: Profiles
) -> None:
    seen = decode_order(callback_data.seen)
    if seen is None:
        await _stale(query)
        return
    try:
        view = await profiles.move_channel_up(user.id, callback_data.channel, seen)
    except (contacts.StaleChannelOrder, contacts.InvalidChannelOrder):
        await _stale(query)
        return
    await query.answer()
    await _show(query, order_text(view), order_keyboard(view))


async def unknown_action(query: CallbackQuery) -> None:
    """Forged data under our prefix: say so, change nothing."""
    await _stale(query)


def setup() -> Router:
    router = Router(name="profile")
    # Private chats only, so a phone number is never shown in a group.
    router.message.filter(magic(F.chat.type == ChatType.PRIVATE))
    typed = magic(F.text, ~F.text.startswith("/"))
    messages = router.message
    messages.register(show_profile, Command("profile"))
    messages.register(cancel, StateFilter(ProfileStates), Command("cancel"))
    messages.register(contact_shared, StateFilter(None, ProfileStates), magic(F.contact))
    messages.register(phone_typed, StateFilter(ProfileStates.phone), typed)
    messages.register(email_typed, StateFilter(ProfileStates.email), typed)
    buttons = router.callback_query
    buttons.register(back_to_profile, ProfileAction.filter(F.action == "show"))
    buttons.register(ask_phone, ProfileAction.filter(F.action == "phone"))
    buttons.register(ask_email, ProfileAction.filter(F.action == "email"))
    buttons.register(clear_email, ProfileAction.filter(F.action == "clear"))
    buttons.register(show_order, ProfileAction.filter(F.action == "order"))
    buttons.register(opt_in, ProfileAction.filter(F.action == "optin"))
    buttons.register(move_up, OrderMove.filter())
    buttons.register(unknown_action, ProfileAction.filter())
    return router
