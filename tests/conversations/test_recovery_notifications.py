"""Failed notifications, channels, manual tasks and errors from /workflow_recovery, through the
production Dispatcher: a dead letter retried from the menu is delivered; filters, Retry all
with its count, Archive; pausing and resuming a channel; a manual task's contact masked until
revealed (audited) and closed with a typed note; error statistics and Resolve."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from database.models import (
    ChannelState,
    ErrorGroup,
    ManualTask,
    Notification,
    TransactionLog,
    User,
)
from services.notifications import outbox
from tests.conversations.conftest import StartConversation
from tests.conversations.harness import Conversation, Replies, buttons

ADMIN = 9000
ANN = 1001


async def _press(chat: Conversation, message: dict[str, Any], label: str) -> Replies:
    data = buttons(message)
    matches = [t for t in data if t == label or t.startswith(label)]
    assert matches, f"no button {label!r} in {list(data)}"
    return await chat.press(ADMIN, data[matches[0]], message_id=message["message_id"])


async def _screen(chat: Conversation, message: dict[str, Any], label: str) -> dict[str, Any]:
    return (await _press(chat, message, label)).messages[-1]


async def _menu(chat: Conversation) -> dict[str, Any]:
    return (await chat.send(ADMIN, "/workflow_recovery")).message("Workflow recovery")


async def _ann_id(chat: Conversation) -> int:
    async with chat.db.transaction() as session:
        return int(await session.scalar(select(User.id).where(User.telegram_id == ANN)))


async def _dead_letters(chat: Conversation, *kinds: str) -> list[int]:
    """Notifications to Ann that Telegram refuses (she blocked the bot) and that may not fall
    back: each becomes a dead letter. Ann unblocks the bot afterwards."""
    await chat.send(ANN, "/start", first_name="Ann")
    ann = await _ann_id(chat)
    chat.fake.block_user(ANN)
    ids = []
    for index, kind in enumerate(kinds):
        async with chat.db.transaction() as session:
            queued = await outbox.enqueue(
                session, recipient_id=ann, kind=kind, idempotency_key=f"test:{kind}:{index}",
                now=chat.clock.now(), text=f"Hello Ann, message {index}",
                channels=["telegram"], allow_fallback=False, manual=False,
            )
            ids.append(queued.id)
    await chat.deliver()
    chat.fake.unblock_user(ANN)
    async with chat.db.transaction() as session:
        statuses = list(await session.scalars(
            select(Notification.status).where(Notification.id.in_(ids))))
    assert statuses == ["failed"] * len(ids)
    return ids


async def _status(chat: Conversation, notification_id: int) -> str:
    async with chat.db.transaction() as session:
        return str(await session.scalar(
            select(Notification.status).where(Notification.id == notification_id)))


async def test_a_dead_letter_retried_from_the_menu_is_delivered(
    conversation: StartConversation,
) -> None:
    chat = await conversation(admin_ids=[ADMIN])
    [dead] = await _dead_letters(chat, "test.greeting")

    menu = await _menu(chat)
    listing = await _screen(chat, menu, "Failed notifications")
    assert "Failed notifications: 1 (filter: none)" in listing["text"]
    detail = await _screen(chat, listing, f"#{dead} test.greeting · telegram · permanent")
    assert f"Notification #{dead}: test.greeting" in detail["text"]
    assert "Attempts:" in detail["text"] and "telegram failed permanent" in detail["text"]
    asked = await _screen(chat, detail, "Retry")  # the third tap: the confirmation
    assert f"Send notification #{dead} (test.greeting) again" in asked["text"]
    assert await _status(chat, dead) == "failed"

    done = await _screen(chat, asked, "The contact details were fixed")
    assert "Sent again" in done["text"]
    delivered = await chat.deliver()
    assert [m["text"] for m in Replies(delivered).messages
            if m["chat"]["id"] == ANN] == ["Hello Ann, message 0"]
    assert await _status(chat, dead) == "sent"
    async with chat.db.transaction() as session:
        logged = await session.scalar(select(TransactionLog.detail).where(
            TransactionLog.operation == "notification.retry"))
    assert logged == "The contact details were fixed"


async def test_filter_retry_all_with_its_count_and_archive(
    conversation: StartConversation,
) -> None:
    chat = await conversation(admin_ids=[ADMIN])
    a1, a2, b = await _dead_letters(chat, "kind.a", "kind.a", "kind.b")
    menu = await _menu(chat)
    listing = await _screen(chat, menu, "Failed notifications")
    assert "Failed notifications: 3" in listing["text"]
    kinds = await _screen(chat, listing, "Kind…")
    assert {"kind.a (2)", "kind.b (1)", "Any", "« Back"} == set(buttons(kinds))
    filtered = await _screen(chat, kinds, "kind.a (2)")
    assert "Failed notifications: 2 (filter: kind kind.a)" in filtered["text"]
    asked = await _screen(chat, filtered, "Retry all 2")
    assert "Send all 2 failed notification(s) again (filter: kind kind.a)?" in asked["text"]
    done = await _screen(chat, asked, "Trying once more")
    assert "Sent 2 notification(s) again." in done["text"]
    assert [await _status(chat, i) for i in (a1, a2, b)] == ["pending", "pending", "failed"]

    cleared = await _screen(chat, done, "Clear the filter")
    detail = await _screen(chat, cleared, f"#{b} kind.b")
    asked = await _screen(chat, detail, "Archive")
    done = await _screen(chat, asked, "No longer relevant")
    assert "Archived." in done["text"] and "No longer a dead letter (now archived)" in done[
        "text"]
    assert await _status(chat, b) == "archived"


async def test_pause_and_resume_a_channel(conversation: StartConversation) -> None:
    chat = await conversation(admin_ids=[ADMIN])
    menu = await _menu(chat)
    channels = await _screen(chat, await _screen(chat, menu, "Failed notifications"),
                             "Channels")
    assert "telegram: running, circuit closed" in channels["text"]
    asked = await _screen(chat, channels, "Pause telegram")
    assert "Pause telegram?" in asked["text"]
    paused = await _screen(chat, asked, "Maintenance")
    assert "telegram paused." in paused["text"] and "telegram: paused" in paused["text"]
    async with chat.db.transaction() as session:
        assert (await session.get(ChannelState, "telegram")).paused is True
    resumed = await _screen(chat, paused, "Resume telegram")
    assert "telegram: running" in resumed["text"]
    async with chat.db.transaction() as session:
        state = await session.get(ChannelState, "telegram", populate_existing=True)
        assert state.paused is False


async def test_a_manual_task_is_masked_until_revealed_then_closed_with_a_note(
    conversation: StartConversation,
) -> None:
    chat = await conversation(admin_ids=[ADMIN])
    await chat.send(ANN, "/start", first_name="Ann")
    ann = await _ann_id(chat)
    async with chat.db.transaction() as session:
        session.add(ManualTask(
            user_id=ann, kind="request.assigned", status="open",
            text="Please contact Ann (user #1) about: request.assigned\nPhone: +33612345678\n"
                 "\nMessage:\nPaul will come tomorrow.",
            created_at=chat.clock.now()))
    menu = await _menu(chat)
    listing = await _screen(chat, menu, "Manual tasks")
    assert "Open manual tasks: 1" in listing["text"]
    task = await _screen(chat, listing, "#1 request.assigned")
    assert "+33612345678" not in task["text"] and "78" in task["text"]
    assert "Paul will come tomorrow." in task["text"]
    revealed = await _screen(chat, task, "Reveal the contact")
    assert "Phone: +33612345678" in revealed["text"]
    async with chat.db.transaction() as session:
        [look] = await session.scalars(select(TransactionLog).where(
            TransactionLog.operation == "manual_task.reveal"))
    assert look.entity_id == "1"

    asked = await _screen(chat, revealed, "Close with a note")
    await _screen(chat, asked, "Other…")
    typed = await chat.send(ADMIN, "Called her, all good")
    [edited] = typed.of("editMessageText")
    assert "Closed." in edited.result["text"]
    async with chat.db.transaction() as session:
        closed = await session.get(ManualTask, 1, populate_existing=True)
    assert (closed.status, closed.note) == ("closed", "Called her, all good")


async def test_error_statistics_and_resolve(conversation: StartConversation) -> None:
    chat = await conversation(admin_ids=[ADMIN])
    recorded = await chat.dp["error_recorder"].record(RuntimeError("the disk is on fire"))
    menu = await _menu(chat)
    errors = await _screen(chat, menu, "Errors")
    assert "1 hour: 1; severity: high 1; category: system 1" in errors["text"]
    assert "7 days: 1;" in errors["text"]
    group = await _screen(chat, errors, recorded.code)
    assert f"Support code {recorded.code}: RuntimeError" in group["text"]
    resolved = await _press(chat, group, "Resolve")
    assert "Marked resolved" in resolved.answer["text"]
    assert "No open high or critical error." in resolved.messages[-1]["text"]
    async with chat.db.transaction() as session:
        assert await session.scalar(select(ErrorGroup.resolved)) is True
