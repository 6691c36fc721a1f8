"""The warehouse's side: /stock (every item, low stock marked) and receiving stock (/receive,
or the button under /stock): pick the item, send the quantity. The rules (who may, never below
zero, the ledger) live in services.inventory."""

from __future__ import annotations

from html import escape

from aiogram import F, Router
from aiogram.filters import Command, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import gettext as _

from handlers.filters import magic
from handlers.keyboards import one_per_row
from handlers.requests.screens import refusal, show
from services.inventory import Inventory, StockItemView
from services.users import UserView
from services.workflow import WorkflowError

LOW_MARK = "\u26a0\ufe0f"  # a warning sign


class ReceiveForm(StatesGroup):
    quantity = State()  # data: item


class ReceivePick(CallbackData, prefix="wrp"):
    """Receive stock of `item`; `item` 0: show the list of items to pick from."""

    item: int


def _is_warehouse(user: UserView) -> bool:
    return user.is_admin or "warehouse" in user.roles


def stock_text(items: list[StockItemView]) -> str:
    lines = ["<b>" + _("Stock on hand") + "</b>"]
    for item in items:
        mark = f"{LOW_MARK} " if item.low else ""
        lines.append(f"{mark}{escape(item.sku)} {escape(item.name)}: {item.on_hand} "
                     f"{escape(item.unit)}")
    if any(item.low for item in items):
        lines += ["", _("{mark} low stock: at or under its threshold").format(mark=LOW_MARK)]
    return "\n".join(lines)


async def stock(message: Message, inventory: Inventory, user: UserView) -> None:
    if not _is_warehouse(user):
        await message.answer(_("This is for the warehouse staff."))
        return
    items = await inventory.list_stock()
    if not items:
        await message.answer(_("There are no stock items yet."))
        return
    await message.answer(stock_text(items), reply_markup=one_per_row(
        [(_("Receive stock"), ReceivePick(item=0))]
    ))


async def receive_command(message: Message, inventory: Inventory, user: UserView) -> None:
    if not _is_warehouse(user):
        await message.answer(_("This is for the warehouse staff."))
        return
    await message.answer(**await _pick_screen(inventory))


async def _pick_screen(inventory: Inventory) -> dict[str, object]:
    items = await inventory.list_stock()
    if not items:
        return {"text": _("There are no stock items yet.")}
    return {
        "text": _("Which item did you receive?"),
        "reply_markup": one_per_row([
            (f"{i.sku} {i.name} ({i.on_hand} {i.unit})", ReceivePick(item=i.id))
            for i in items[:50]
        ]),
    }


async def receive_pick(
    query: CallbackQuery, callback_data: ReceivePick, inventory: Inventory, user: UserView,
    state: FSMContext,
) -> None:
    if not _is_warehouse(user):
        await query.answer(_("This is for the warehouse staff."), show_alert=True)
        return
    if not callback_data.item:
        await query.answer()
        screen = await _pick_screen(inventory)
        await query.bot.send_message(query.from_user.id, **screen)  # type: ignore[union-attr,arg-type]
        return
    try:
        item = await inventory.get(callback_data.item)
    except WorkflowError as exc:
        await query.answer(refusal(exc), show_alert=True)
        return
    await state.set_state(ReceiveForm.quantity)
    await state.set_data({"item": item.id})
    await query.answer()
    await show(query, _("How many {unit} of {name} arrived? Send a number, or /cancel.").format(
        unit=escape(item.unit), name=escape(item.name)))


async def quantity_typed(
    message: Message, state: FSMContext, inventory: Inventory, user: UserView
) -> None:
    text = (message.text or "").strip()
    if not text.isdigit() or int(text) <= 0:
        await message.answer(_("Please send a whole number above zero, or /cancel."))
        return
    item_id = int((await state.get_data())["item"])
    await state.clear()
    try:
        item = await inventory.receive(user, item_id, int(text))
    except WorkflowError as exc:
        await message.answer(refusal(exc))
        return
    await message.answer(
        _("Received {quantity} {unit} of {name}: {on_hand} on hand now.").format(
            quantity=int(text), unit=escape(item.unit), name=escape(item.name),
            on_hand=item.on_hand,
        )
    )


def setup() -> Router:
    router = Router(name="requests.warehouse")
    typed = magic(F.text, ~F.text.startswith("/"))
    router.message.register(stock, Command("stock"))
    router.message.register(receive_command, Command("receive"))
    router.message.register(quantity_typed, StateFilter(ReceiveForm.quantity), typed)
    router.callback_query.register(receive_pick, ReceivePick.filter())
    return router
