"""Personal data is kept only where it is needed, on both engines: the audit trail holds contact
values masked, and the address a message went to is blanked after
DELIVERY_ADDRESS_RETENTION_DAYS, dead letters included."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from database.engine import Database
from database.models import DeliveryAttempt, Notification, TransactionLog
from services import contacts
from services import scheduler as scheduler_module
from services.alerts import Alerts
from services.clock import FakeClock
from services.masking import mask_contact_fields, mask_email, mask_phone
from services.scheduler import Scheduler, register_core_jobs
from tests.support import make_user


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# ------------------------------------------------------------------------------ masking rules


def test_a_phone_keeps_only_its_last_two_digits() -> None:
    assert mask_phone("+33612345678") == "+•••••••••78"
    assert mask_phone("+1") == "+•"


def test_an_email_keeps_only_first_letters_and_top_level_domain() -> None:
    assert mask_email("ann.lee@example.com") == "a•••@e•••.com"
    assert mask_email("Ann@b.fr") == "A•••@b•••.fr"
    assert mask_email("no-at-sign") == "•••"


def test_masking_twice_changes_nothing() -> None:
    for value, mask in (("+33612345678", mask_phone), ("ann.lee@example.com", mask_email)):
        assert mask(mask(value)) == mask(value)


def test_only_contact_fields_are_masked() -> None:
    assert mask_contact_fields(
        {"email": "ann@example.com", "phone": None, "channel_order": "sms,email"}
    ) == {"email": "a•••@e•••.com", "phone": None, "channel_order": "sms,email"}
    assert mask_contact_fields(None) is None


# -------------------------------------------------------------------------------- audit trail


async def _trail(db: Database) -> str:
    async with db.transaction() as session:
        rows = (await session.scalars(select(TransactionLog).order_by(TransactionLog.id))).all()
    return json.dumps([[r.operation, r.before, r.after] for r in rows], ensure_ascii=False)


async def test_a_cleared_email_leaves_no_copy_in_clear_in_the_audit_trail(
    db: Database, clock
) -> None:
    ann = await make_user(db, clock)
    await db.run(lambda s: contacts.set_email(s, user_id=ann, email="ann.lee@example.com",
                                              now=clock.now()))
    await db.run(lambda s: contacts.clear_email(s, user_id=ann, now=clock.now()))

    trail = await _trail(db)
    assert "ann.lee" not in trail and "example.com" not in trail
    assert json.loads(trail) == [
        ["contacts.set_email", {"email": None}, {"email": "a•••@e•••.com"}],
        ["contacts.clear_email", {"email": "a•••@e•••.com"}, {"email": None}],
    ]


async def test_a_phone_change_is_audited_with_the_last_two_digits_only(
    db: Database, clock
) -> None:
    ann = await make_user(db, clock)
    await db.run(lambda s: contacts.set_phone(s, user_id=ann, phone="+33612345678",
                                              now=clock.now()))
    await db.run(lambda s: contacts.set_phone(s, user_id=ann, phone="+15551234599",
                                              now=clock.now()))

    trail = await _trail(db)
    assert "612345678" not in trail and "5551234599" not in trail
    assert json.loads(trail)[1] == [
        "contacts.set_phone", {"phone": "+•••••••••78"}, {"phone": "+•••••••••99"}
    ]


# ------------------------------------------------------------------- delivery address retention


async def _attempt(db: Database, notification_id: int, address: str, at: datetime) -> int:
    async def work(session) -> int:
        row = DeliveryAttempt(notification_id=notification_id, channel="email", address=address,
                              outcome="sent", at=at)
        session.add(row)
        await session.flush()
        return row.id

    return await db.run(work)


async def _notification(db: Database, user: int, key: str, status: str, at: datetime) -> int:
    async def work(session) -> int:
        row = Notification(
            recipient_id=user, kind="status", payload={"text": "hi"}, idempotency_key=key,
            channel_chain="email", channel="email", status=status, next_attempt_at=at,
            created_at=at, updated_at=at, failed_at=at if status != "sent" else None,
        )
        session.add(row)
        await session.flush()
        return row.id

    return await db.run(work)


async def _addresses(db: Database) -> dict[int, str | None]:
    async with db.transaction() as session:
        return dict((await session.execute(
            select(DeliveryAttempt.id, DeliveryAttempt.address)
        )).tuples().all())


def _scheduler(db: Database, clock: FakeClock, retention_days: int = 30) -> Scheduler:
    scheduler = Scheduler(
        db, clock, Alerts(admin_telegram_ids=(1,), window=timedelta(hours=1)), owner="host-a:1"
    )
    register_core_jobs(
        scheduler, db, dead_letter_retention=timedelta(days=30),
        delivery_address_retention=timedelta(days=retention_days),
    )
    return scheduler


async def test_delivery_addresses_are_blanked_after_the_retention_dead_letters_included(
    db: Database, clock
) -> None:
    start = clock.now()
    user = await make_user(db, clock, email="ann@example.com")
    sent = await _notification(db, user, "sent", "sent", start)
    dead = await _notification(db, user, "dead", "failed", start)
    archived = await _notification(db, user, "archived", "archived", start)
    old = [await _attempt(db, n, "ann@example.com", start) for n in (sent, dead, archived)]
    recent = await _attempt(db, sent, "ann@example.com", start + timedelta(days=20))
    scheduler = _scheduler(db, clock)

    clock.advance(days=29)
    first = await scheduler.run_job("blank_delivery_addresses")
    assert first is not None and first.outcome == "ok" and first.summary == "blanked 0"
    assert set((await _addresses(db)).values()) == {"ann@example.com"}

    clock.advance(days=2)  # 31 days after the old attempts, 11 after the recent one
    second = await scheduler.run_job("blank_delivery_addresses")

    assert second is not None and second.summary == "blanked 3"
    addresses = await _addresses(db)
    assert {i: addresses[i] for i in old} == dict.fromkeys(old)
    assert addresses[recent] == "ann@example.com"


async def test_the_address_sweep_works_in_batches_and_misses_none(
    db: Database, clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_module, "ADDRESS_BATCH", 3)
    start = clock.now()
    user = await make_user(db, clock)
    sent = await _notification(db, user, "sent", "sent", start)
    # Eight old attempts, several sharing an instant across a batch boundary, and a recent one.
    instants = [start, start, start + timedelta(hours=1), start + timedelta(hours=1),
                start + timedelta(hours=1), start + timedelta(hours=1), start + timedelta(hours=2),
                start + timedelta(hours=3)]
    old = [await _attempt(db, sent, "+33612345678", at) for at in instants]
    recent = await _attempt(db, sent, "+33612345678", start + timedelta(days=10))
    scheduler = _scheduler(db, clock, retention_days=7)

    clock.advance(days=8)
    run = await scheduler.run_job("blank_delivery_addresses")

    assert run is not None and run.summary == "blanked 8"
    addresses = await _addresses(db)
    assert [addresses[i] for i in old] == [None] * 8
    assert addresses[recent] == "+33612345678"


async def test_a_long_history_is_blanked_over_several_runs(
    db: Database, clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_module, "ADDRESS_BATCH", 2)
    monkeypatch.setattr(scheduler_module, "ADDRESS_BATCHES_PER_RUN", 2)
    start = clock.now()
    user = await make_user(db, clock)
    sent = await _notification(db, user, "sent", "sent", start)
    for i in range(6):
        await _attempt(db, sent, "1001", start + timedelta(minutes=i))
    scheduler = _scheduler(db, clock)

    clock.advance(days=31)
    first = await scheduler.run_job("blank_delivery_addresses")
    clock.advance(days=1)
    second = await scheduler.run_job("blank_delivery_addresses")

    assert first is not None and first.summary == "blanked 4, more left"
    assert second is not None and second.summary == "blanked 2"
    assert set((await _addresses(db)).values()) == {None}
