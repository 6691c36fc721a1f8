"""/workflow_recovery -> Inventory through the production Dispatcher: seeded discrepancies are
listed with their fixes; Auto-fix (confirmed, with a reason) fixes the safe ones; an admin's
adjustment with a typed reason closes an unsafe one; a non-admin's replayed buttons change
nothing."""

from __future__ import annotations

from sqlalchemy import select

from database.models import InventoryItem, InventoryReconciliationLog
from handlers.admin.recovery.callbacks import Ask, Nav, Why
from tests.conversations.conftest import StartConversation
from tests.conversations.harness import Conversation, buttons
from tests.integration.test_reconciliation import _seed

ADMIN = 4242  # the seeded admin
ANN = 1001


async def _stock(chat: Conversation) -> dict[str, int]:
    rows = await chat.db.read(lambda s: s.execute(select(InventoryItem.sku,
                                                         InventoryItem.on_hand)))
    return dict(rows.all())  # type: ignore[arg-type]


async def _log(chat: Conversation) -> list[tuple[str, str | None]]:
    rows = await chat.db.read(lambda s: s.execute(
        select(InventoryReconciliationLog.action, InventoryReconciliationLog.reason)
        .order_by(InventoryReconciliationLog.id)))
    return [tuple(r) for r in rows]  # type: ignore[misc]


async def _open_inventory(chat: Conversation) -> dict:  # type: ignore[type-arg]
    menu = (await chat.send(ADMIN, "/workflow_recovery")).message("Workflow recovery")
    opened = await chat.press(ADMIN, buttons(menu)["Inventory"], message_id=menu["message_id"])
    return opened.messages[-1]


async def test_an_admin_auto_fixes_the_safe_ones_and_adjusts_the_rest(
    conversation: StartConversation,
) -> None:
    chat = await conversation(admin_ids=[ADMIN])
    await _seed(chat.db, chat.clock)
    screen = await _open_inventory(chat)
    mid = screen["message_id"]
    assert "6 discrepancies, 3 fixable automatically" in screen["text"]
    assert "NEGLEDGER: negative stock" in screen["text"]

    asked = await chat.press(ADMIN, buttons(screen)["Auto-fix the 3 safe ones"], message_id=mid)
    question = asked.messages[-1]
    assert "Fix the 3 safe discrepancies now" in question["text"]
    done = await chat.press(ADMIN, buttons(question)["Routine reconciliation"], message_id=mid)
    after = done.messages[-1]
    assert after["text"].startswith("Fixed 3.") and "3 discrepancies, 0 fixable" in after["text"]
    stock = await _stock(chat)
    assert stock["MISMATCH"] == 7 and stock["CANCELLED"] == 5 and stock["NEGSTOCK"] == 3
    assert ("auto_fixed", "Routine reconciliation") in await _log(chat)

    detail = (await chat.press(ADMIN, buttons(after)["✋ NEGLEDGER: negative stock"],
                               message_id=mid)).messages[-1]
    assert "On hand: -2; ledger sum: -2" in detail["text"]
    question = (await chat.press(ADMIN, buttons(detail)["Adjust by +2"],
                                 message_id=mid)).messages[-1]
    typing = (await chat.press(ADMIN, buttons(question)["Other…"], message_id=mid)).messages[-1]
    assert "Type the reason" in typing["text"]
    await chat.send(ADMIN, "shelf counted: empty")
    edited = chat.fake.calls[-1]
    assert edited.method.lower() == "editmessagetext"
    assert edited.params["text"].startswith("Adjusted NEGLEDGER by +2.")
    assert (await _stock(chat))["NEGLEDGER"] == 0
    assert ("adjusted", "shelf counted: empty") in await _log(chat)

    # The same button again, on the stale screen: the discrepancy is gone, nothing happens.
    stale = await chat.press(ADMIN, buttons(detail)["Adjust by +2"], message_id=mid)
    assert stale.answer["text"] == "This changed in the meantime; here it is now."
    assert (await _stock(chat))["NEGLEDGER"] == 0


async def test_a_non_admins_replayed_buttons_change_nothing(
    conversation: StartConversation,
) -> None:
    chat = await conversation(admin_ids=[ADMIN])
    await _seed(chat.db, chat.clock)
    await chat.send(ANN, "/start")
    before, log = await _stock(chat), await _log(chat)
    for data in (Nav(section="inv").pack(), Ask(op="inv_fix", target=0, version=3).pack(),
                 Why(target=0, reason=0).pack()):
        refused = await chat.press(ANN, data, message_id=1)
        assert refused.answer["text"] == "Only admins can do this."
    assert await _stock(chat) == before and await _log(chat) == log
