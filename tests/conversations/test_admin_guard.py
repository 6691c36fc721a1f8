"""The admin guard and the "Retry failed" button of a dead-letter alert.

A button can be forwarded and its callback data replayed by anyone, so rights are checked on
the server for every press: a non-admin is refused politely, in their language, the attempt is
logged (who, what) and nothing changes; an admin's press sends every dead letter of that kind
again; a button whose notification is gone says so.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from sqlalchemy import select

from database.engine import Database
from database.models import Notification, User
from handlers.buttons import RetryDeadLettersLike
from services.alerts import Alerts
from services.clock import FakeClock
from services.notifications import outbox
from services.notifications.channels.base import ChannelName
from services.notifications.dispatcher import Dispatcher, DispatcherConfig
from services.notifications.failures import FailureClass
from tests.conversations.conftest import StartConversation
from tests.conversations.harness import Conversation
from tests.support import ScriptedChannel, failure, make_user

ADMIN = 9000
BOB = 1002
CUSTOMER = 1003
ALERT_MESSAGE_ID = 1  # the admin's alert message the button was on
REFUSED = "Only admins can do this."


async def _dead_letters(chat: Conversation, *kinds: str) -> list[int]:
    """One failed notification per kind: enqueued by the outbox, then refused for good by the
    only channel it may use (as tests/integration/test_outbox.py does)."""
    db, clock = chat.db, chat.clock
    recipient = await make_user(db, clock, telegram_id=CUSTOMER)
    ids = []
    for i, kind in enumerate(kinds):
        enqueued = await db.run(
            lambda s, kind=kind, i=i: outbox.enqueue(
                s, recipient_id=recipient, kind=kind, idempotency_key=f"dead-{i}",
                text="Your request #12 was updated.", channels=["telegram"],
                allow_fallback=False, now=clock.now(),
            )
        )
        ids.append(enqueued.id)
    telegram = ScriptedChannel(ChannelName.TELEGRAM, reach="telegram_id")
    telegram.fail(*[failure(FailureClass.PERMANENT, "403")] * len(kinds))
    dispatcher = Dispatcher(
        db, {ChannelName.TELEGRAM: telegram}, clock,
        Alerts(admin_telegram_ids=[], window=timedelta(hours=1)),
        DispatcherConfig(send_retry_wait=0, workers=1, batch_size=100), owner="test",
    )
    await dispatcher.run_once()
    assert [await _status(db, nid) for nid in ids] == ["failed"] * len(kinds)
    return ids


async def _status(db: Database, notification_id: int) -> str:
    async with db.transaction() as session:
        return (await session.get_one(Notification, notification_id)).status


async def _user_id(db: Database, telegram_id: int) -> int:
    async with db.transaction() as session:
        return (await session.scalars(select(User.id).where(User.telegram_id == telegram_id))).one()


def _retry(notification_id: int) -> str:
    return RetryDeadLettersLike(target=notification_id).pack()


@pytest.mark.parametrize(
    ("language", "refusal"),
    [("en", REFUSED), ("fr", "Seuls les administrateurs peuvent faire cela.")],
)
async def test_non_admin_replaying_a_retry_button_is_refused_logged_and_changes_nothing(
    conversation: StartConversation,
    caplog: pytest.LogCaptureFixture,
    language: str,
    refusal: str,
) -> None:
    chat = await conversation(admin_ids=(ADMIN,))
    [nid] = await _dead_letters(chat, "request.update")
    caplog.set_level(logging.INFO, logger="middlewares.admin")

    # Bob got hold of the admin's alert button (forwarded, or its data replayed).
    replies = await chat.press(
        BOB, _retry(nid), message_id=ALERT_MESSAGE_ID, chat_id=ADMIN, language_code=language
    )
    assert replies.answer["text"] == refusal
    assert replies.answer["show_alert"] is True
    assert replies.messages == []
    assert await _status(chat.db, nid) == "failed"

    bob = await _user_id(chat.db, BOB)
    [record] = [r for r in caplog.records if r.name == "middlewares.admin"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"refused button {_retry(nid)!r} from user {bob}: not an admin"
    )


async def test_admin_retries_every_dead_letter_of_the_kind(
    conversation: StartConversation, clock: FakeClock
) -> None:
    chat = await conversation(admin_ids=(ADMIN,))
    first, second, other = await _dead_letters(
        chat, "request.update", "request.update", "invoice.ready"
    )
    clock.advance(60)

    replies = await chat.press(ADMIN, _retry(first), message_id=ALERT_MESSAGE_ID)
    assert replies.answer["text"] == (
        "Sending 2 failed notification(s) of kind request.update again."
    )
    assert replies.answer["show_alert"] is True
    assert [await _status(chat.db, n) for n in (first, second)] == ["pending", "pending"]
    assert await _status(chat.db, other) == "failed"  # another kind is left alone

    # Pressed twice (a double tap): nothing left to send again, and it says so.
    replies = await chat.press(ADMIN, _retry(first), message_id=ALERT_MESSAGE_ID)
    assert replies.answer["text"] == (
        "Nothing to retry: no failed notification of kind request.update is left."
    )


async def test_retry_button_of_a_notification_that_does_not_exist_is_no_longer_valid(
    conversation: StartConversation,
) -> None:
    chat = await conversation(admin_ids=(ADMIN,))
    [nid] = await _dead_letters(chat, "request.update")

    replies = await chat.press(ADMIN, _retry(nid + 1000), message_id=ALERT_MESSAGE_ID)
    assert replies.answer["text"] == "This button is no longer valid."
    assert replies.answer["show_alert"] is True
    assert await _status(chat.db, nid) == "failed"


async def test_an_alert_button_sent_before_buttons_were_actions_still_retries_its_kind(
    conversation: StartConversation,
) -> None:
    """Alerts already in an admin's chat carry "nf:retry:<kind>": pressing one still works,
    and a non-admin replaying it is refused like any admin button."""
    chat = await conversation(admin_ids=(ADMIN,))
    first, other = await _dead_letters(chat, "request.update", "invoice.ready")

    refused = await chat.press(BOB, "nf:retry:request.update", message_id=ALERT_MESSAGE_ID,
                               chat_id=ADMIN)
    assert refused.answer["text"] == REFUSED
    assert await _status(chat.db, first) == "failed"

    replies = await chat.press(ADMIN, "nf:retry:request.update", message_id=ALERT_MESSAGE_ID)
    assert replies.answer["text"] == (
        "Sending 1 failed notification(s) of kind request.update again."
    )
    assert await _status(chat.db, first) == "pending"
    assert await _status(chat.db, other) == "failed"


def test_every_admin_handler_in_the_production_dispatcher_is_behind_the_guard(
    db: Database,
) -> None:
    """Walk the routers the bot really builds: any handler defined in handlers/admin, on any
    kind of event, has the admin guard among the middlewares it runs through."""
    from bot.app import build_dispatcher
    from middlewares.admin import AdminGuard
    from tests.conversations.harness import ExplicitSettings

    settings = ExplicitSettings(bot_token="1:x", database_url="sqlite+aiosqlite:///:memory:")
    dp, _ = build_dispatcher(settings, db, FakeClock())
    checked = 0
    for router in dp.chain_tail:
        for name, observer in router.observers.items():
            for handler in observer.handlers:
                if not handler.callback.__module__.startswith("handlers.admin"):
                    continue
                checked += 1
                guards = [m for m in observer._resolve_middlewares() if isinstance(m, AdminGuard)]
                assert guards, f"{handler.callback.__qualname__} ({name}) is not guarded"
    assert checked >= 2
