"""Inventory: the discrepancies reconciliation finds (services.inventory_reconciliation), each
with its proposed fix; Auto-fix applies the safe kinds, the rest take an admin's adjustment or
dismissal, with a reason. `Nav(section="inv", page=p)` is the list, `item=<ref>` a detail."""

from __future__ import annotations

from typing import Any

from aiogram import F, Router
from aiogram.types import CallbackQuery
from aiogram.utils.i18n import gettext as _

from handlers.admin.recovery import confirm
from handlers.admin.recovery.callbacks import Ask, Nav
from handlers.admin.recovery.screens import PAGE_SIZE, Screen, back, clamp, pager, show
from services.inventory_reconciliation import (
    AdjustmentRefused,
    Discrepancy,
    Fix,
    InventoryReconciliation,
    Kind,
    NotADiscrepancy,
    key_of,
)
from services.localization import N_

SECTION = "inv"

_KINDS = {
    Kind.NEGATIVE_STOCK: N_("negative stock"),
    Kind.LEDGER_MISMATCH: N_("stock differs from the ledger"),
    Kind.MISSING_REQUEST: N_("ledger line of a missing request"),
    Kind.CANCELLED_UNREVERSED: N_("cancelled request, parts not reversed"),
    Kind.PARTS_MISMATCH: N_("reversal differs from its issue"),
}

REASONS_FIX = (N_("Routine reconciliation"), N_("Stock count done"))
REASONS_ADJUST = (N_("Counted the shelf"), N_("Parts came back"), N_("Data entry error"))
REASONS_DISMISS = (N_("Checked: nothing to change"), N_("Old data, already settled"))


def _fix(d: Discrepancy) -> str:
    if d.fix is Fix.RECOMPUTE:
        return _("set stock on hand to the ledger's sum ({total})").format(total=d.ledger_sum)
    if d.fix is Fix.REVERSE:
        return _("write the missing reversal (+{count})").format(count=-(d.quantity or 0))
    return _("an admin's adjustment of {delta:+d}").format(delta=d.delta)


def _line(d: Discrepancy) -> str:
    mark = "🛠" if d.safe else "✋"
    return f"{mark} {d.sku}: {_(_KINDS[d.kind])}"


def list_screen(found: list[Discrepancy], page: int) -> Screen:
    if not found:
        screen = Screen(_("Inventory: stock and ledger agree. Nothing to reconcile."))
        screen.rows.append(back())
        return screen
    page = clamp(page, len(found))
    safe = sum(d.safe for d in found)
    shown = found[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
    lines = [_("Inventory: {count} discrepancies, {safe} fixable automatically (🛠); the others "
               "need an admin (✋).").format(count=len(found), safe=safe), ""]
    lines += [f"{_line(d)}\n   → {_fix(d)}" for d in shown]
    screen = Screen("\n".join(lines))
    for d in shown:
        screen.button(_line(d), Nav(section=SECTION, page=page, item=d.ref))
    if safe:
        # The count the admin saw is the version: if it moved, the question redraws.
        screen.button(_("Auto-fix the {count} safe ones").format(count=safe),
                      Ask(op="inv_fix", target=0, version=safe))
    if row := pager(page, len(found), lambda p: Nav(section=SECTION, page=p)):
        screen.rows.append(row)
    screen.rows.append(back())
    return screen


def detail_screen(d: Discrepancy, page: int) -> Screen:
    facts = [f"{d.sku} — {d.item_name}", _(_KINDS[d.kind])]
    if d.on_hand is not None:
        facts.append(_("On hand: {on_hand}; ledger sum: {total}").format(
            on_hand=d.on_hand, total=d.ledger_sum))
    if d.transaction_id is not None:
        facts.append(_("Ledger line #{line}, quantity {quantity:+d}").format(
            line=d.transaction_id, quantity=d.quantity or 0))
    if d.request_id is not None:
        facts.append(_("Request #{id}").format(id=d.request_id))
    facts.append(_("Proposed fix: {fix}").format(fix=_fix(d)))
    screen = Screen("\n".join(facts))
    if d.fix is Fix.ADJUST:
        if d.delta:
            screen.button(_("Adjust by {delta:+d}").format(delta=d.delta),
                          Ask(op="inv_adjust", target=d.ref, version=0))
        if d.kind in (Kind.MISSING_REQUEST, Kind.PARTS_MISMATCH):
            screen.button(_("Dismiss"), Ask(op="inv_dismiss", target=d.ref, version=0))
    screen.rows.append(back(Nav(section=SECTION, page=page)))
    return screen


async def open_inventory(
    query: CallbackQuery, callback_data: Nav, inventory_reconciliation: InventoryReconciliation
) -> None:
    if callback_data.item:
        try:
            found = await inventory_reconciliation.get(key_of(callback_data.item))
        except (NotADiscrepancy, IndexError, ValueError):
            screen = list_screen(await inventory_reconciliation.discrepancies(),
                                 callback_data.page)
            await show(query, screen, notice=_("This discrepancy is no longer there."))
            return
        await show(query, detail_screen(found, callback_data.page))
        return
    await show(query, list_screen(await inventory_reconciliation.discrepancies(),
                                  callback_data.page))


def _service(data: dict[str, Any]) -> InventoryReconciliation:
    service: InventoryReconciliation = data["inventory_reconciliation"]
    return service


async def _list_now(data: dict[str, Any]) -> Screen:
    return list_screen(await _service(data).discrepancies(), 0)


async def _fix_question(pending: confirm.Pending, data: dict[str, Any]) -> str | Screen:
    safe = sum(d.safe for d in await _service(data).discrepancies())
    if safe != pending.version or not safe:
        return await _list_now(data)
    return _("Fix the {count} safe discrepancies now (missing reversals written, stock on hand "
             "set to the ledger's sum)?").format(count=safe)


async def _fix_run(pending: confirm.Pending, reason: str, data: dict[str, Any]) -> Screen:
    report = await _service(data).reconcile(apply_safe=True, actor_id=data["user"].id,
                                            reason=reason)
    screen = await _list_now(data)
    screen.text = _("Fixed {count}.").format(count=len(report.fixed)) + "\n\n" + screen.text
    return screen


async def _target(pending: confirm.Pending, data: dict[str, Any]) -> Discrepancy | None:
    try:
        return await _service(data).get(key_of(pending.target))
    except (NotADiscrepancy, IndexError, ValueError):
        return None


async def _adjust_question(pending: confirm.Pending, data: dict[str, Any]) -> str | Screen:
    d = await _target(pending, data)
    if d is None or d.fix is not Fix.ADJUST or not d.delta:
        return await _list_now(data)
    return _("Adjust {sku} by {delta:+d} (a ledger line, then stock on hand set to the ledger's "
             "sum)?").format(sku=d.sku, delta=d.delta)


async def _adjust_run(pending: confirm.Pending, reason: str, data: dict[str, Any]) -> Screen:
    d = await _target(pending, data)
    if d is None:
        screen = await _list_now(data)
        screen.text = _("This discrepancy is no longer there.") + "\n\n" + screen.text
        return screen
    try:
        await _service(data).adjust(d.key, delta=d.delta, reason=reason, actor_id=data["user"].id)
        done = _("Adjusted {sku} by {delta:+d}.").format(sku=d.sku, delta=d.delta)
    except (NotADiscrepancy, AdjustmentRefused) as exc:
        done = _(exc.user_message)
    screen = await _list_now(data)
    screen.text = done + "\n\n" + screen.text
    return screen


async def _dismiss_question(pending: confirm.Pending, data: dict[str, Any]) -> str | Screen:
    d = await _target(pending, data)
    if d is None or d.kind not in (Kind.MISSING_REQUEST, Kind.PARTS_MISMATCH):
        return await _list_now(data)
    return _("Dismiss this discrepancy of {sku} without changing the stock?").format(sku=d.sku)


async def _dismiss_run(pending: confirm.Pending, reason: str, data: dict[str, Any]) -> Screen:
    d = await _target(pending, data)
    done = _("This discrepancy is no longer there.")
    if d is not None:
        try:
            await _service(data).dismiss(d.key, reason=reason, actor_id=data["user"].id)
            done = _("Dismissed.")
        except NotADiscrepancy:
            pass
    screen = await _list_now(data)
    screen.text = done + "\n\n" + screen.text
    return screen


def _back_to_list(pending: confirm.Pending) -> Nav:
    return Nav(section=SECTION)


def _back_to_detail(pending: confirm.Pending) -> Nav:
    return Nav(section=SECTION, item=pending.target)


def setup() -> Router:
    router = Router(name="recovery-inventory")
    router.callback_query.register(open_inventory, Nav.filter(F.section == SECTION))
    confirm.register(confirm.Destructive(
        op="inv_fix", reasons=REASONS_FIX, question=_fix_question, run=_fix_run,
        back=_back_to_list))
    confirm.register(confirm.Destructive(
        op="inv_adjust", reasons=REASONS_ADJUST, question=_adjust_question, run=_adjust_run,
        back=_back_to_detail))
    confirm.register(confirm.Destructive(
        op="inv_dismiss", reasons=REASONS_DISMISS, question=_dismiss_question,
        run=_dismiss_run, back=_back_to_detail))
    return router

