"""Privacy on both engines: /mydata's document holds the person's data and nobody else's; the
erasure leaves none of their values in clear anywhere in the database (audit trail included)
while their requests keep their states; unsent notifications to them are cancelled; the
daily clean-up anonymizes a WhatsApp customer inactive for the retention period, and only
them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from database.base import Base
from database.engine import Database
from database.models import (
    DeliveryAttempt,
    ErrorGroup,
    ErrorOccurrence,
    InboundMessage,
    ManualTask,
    Notification,
    RelayMessage,
    RelayThread,
    ServiceRequest,
    TransactionLog,
    User,
    WorkflowTransition,
)
from services import contacts
from services.notifications import destinations, outbox
from services.privacy import (
    ERASED,
    OpenWork,
    OwnerCannotBeErased,
    Privacy,
    months_before,
)
from services.recovery_jobs import RecoveryJobsConfig, clean_up
from services.workflow.definition import State
from tests.integration.workflow_world import ADMIN_TELEGRAM_ID, World, build_world

ANN_NAME, ANN_HANDLE = "Annabelle Quixote", "annaq_x"
ANN_PHONE, ANN_EMAIL = "+33612345678", "annabelle.q@example.org"
BOB_NAME, BOB_HANDLE = "Roberto Fakename", "roberto_fk"
BOB_PHONE, BOB_EMAIL = "+33698765432", "roberto@example.net"
ADDRESS, WINDOW, DESCRIPTION = "12 rue des Lilas", "Monday morning", "The kitchen sink leaks"
ANN_SAYS, BOB_SAYS = "Ring twice at the blue door", "On my way with a spanner"
DISPUTE = "Still dripping behind the washer"
INBOUND = "Hello from the seaside villa"
OPERATORS = -1001234567890


@pytest.fixture
async def world(db: Database) -> World:
    return await build_world(db)


async def _name(world: World, who: str, name: str, handle: str, phone: str, email: str) -> int:
    user_id = world.people[who].id
    now = world.clock.now()

    async def work(session: Any) -> None:
        await session.execute(update(User).where(User.id == user_id)
                              .values(display_name=name, username=handle))
        await contacts.set_phone(session, user_id=user_id, phone=phone, now=now)
        await contacts.set_email(session, user_id=user_id, email=email, now=now)

    await world.db.run(work)
    return user_id


async def _finished_request(world: World) -> int:
    """Ann's request, done by Bob, disputed by Ann, confirmed by an admin: closed, with a
    history, messages both ways, notices to both and an alert to the admins."""
    ann, bob, ada = world.people["ann"], world.people["bob"], world.people["ada"]
    requests = world.requests
    view = await requests.open_request(
        ann, world.form(address=ADDRESS, time_window=WINDOW, description=DESCRIPTION))
    [offer] = [o for o in await requests.pending_offers(bob) if o.request.id == view.id]
    view = await requests.accept_offer(offer.id, bob)
    await requests.relay_message(view.id, ann, ANN_SAYS)
    await requests.relay_message(view.id, bob, BOB_SAYS)
    view = await requests.start(view.id, bob, view.version)
    view = await requests.complete(view.id, bob, view.version)
    view = await requests.dispute(view.id, ann, view.version, DISPUTE)
    view = await requests.resolve_dispute(view.id, ada, view.version, confirm=True,
                                          reason="Photos show it is fixed")
    return view.id


async def _whatsapp_traces(world: World, user_id: int) -> tuple[int, int]:
    """What a relayed WhatsApp customer leaves: an inbound message, a thread, a relay of it to
    the operators' chat (still waiting), a delivery attempt and a manual task naming them.
    Returns (the relay's notification id, a pending notification to them)."""
    now = world.clock.now()

    async def work(session: Any) -> tuple[int, int]:
        inbound = InboundMessage(
            wamid="wamid.ann.1", sender=ANN_PHONE.removeprefix("+"), phone_number_id="100100",
            profile_name=ANN_NAME, type="text", text=INBOUND,
            payload={"from": ANN_PHONE.removeprefix("+"), "text": {"body": INBOUND}},
            sent_at=now, received_at=now, status="done", next_attempt_at=now, user_id=user_id,
            processed_at=now)
        thread = RelayThread(chat_id=OPERATORS, user_id=user_id, channel="whatsapp",
                             created_at=now, updated_at=now)
        session.add_all([inbound, thread])
        await session.flush()
        relay = await outbox.enqueue(
            session, destination=destinations.telegram_chat(OPERATORS), kind="relay_text",
            idempotency_key="relay:wa:wamid.ann.1", now=now,
            text=f"{ANN_NAME} ({ANN_PHONE}) on WhatsApp:\n{INBOUND}")
        session.add(RelayMessage(thread_id=thread.id, notification_id=relay.id,
                                 inbound_message_id=inbound.id, created_at=now))
        pending = await outbox.enqueue(
            session, recipient_id=user_id, kind="test", idempotency_key="test:ann:pending",
            now=now, text=f"Dear {ANN_NAME}, your visit at {ADDRESS} is confirmed.")
        sent = await outbox.enqueue(
            session, recipient_id=user_id, kind="test", idempotency_key="test:ann:sent",
            now=now, text=f"Dear {ANN_NAME}, welcome.")
        session.add(DeliveryAttempt(notification_id=sent.id, channel="sms", address=ANN_PHONE,
                                    outcome="failed", at=now))
        session.add(ManualTask(notification_id=sent.id, user_id=user_id, kind="test",
                               text=f"Please contact {ANN_NAME}\nPhone: {ANN_PHONE}\n"
                                    f"E-mail: {ANN_EMAIL}", status="open", created_at=now))
        group = ErrorGroup(fingerprint="f" * 40, exception_type="ValueError", place="x:y",
                           category="data", severity="info", count=1, first_seen=now,
                           last_seen=now)
        session.add(group)
        await session.flush()
        session.add(ErrorOccurrence(code="ABCD1234", group_id=group.id, at=now, context={
            "update_type": "message", "telegram_user_id": 1001, "user_id": user_id,
            "chat_id": 1001}))
        # Someone else's, with a Telegram id past 2**31, as new accounts have: the erasure's
        # search through error contexts must not overflow on it (PostgreSQL's INTEGER).
        session.add(ErrorOccurrence(code="EFGH5678", group_id=group.id, at=now, context={
            "update_type": "message", "telegram_user_id": 7_000_000_001, "user_id": 999_999,
            "chat_id": 7_000_000_001}))
        return relay.id, pending.id

    return await world.db.run(work)


async def _everything(db: Database) -> str:
    """Every row of every table, as one lower-cased string to search."""
    rows: list[Any] = []
    async with db.transaction() as session:
        for table in Base.metadata.sorted_tables:
            for row in await session.execute(select(table)):
                rows.append([table.name, *row])
    return json.dumps(rows, default=str, ensure_ascii=False).lower()


async def _row(db: Database, model: Any, row_id: int) -> Any:
    return await db.read(lambda s: s.get(model, row_id))


# ------------------------------------------------------------------------------------ /mydata


async def test_mydata_holds_the_persons_data_and_nobody_elses(world: World) -> None:
    ann = await _name(world, "ann", ANN_NAME, ANN_HANDLE, ANN_PHONE, ANN_EMAIL)
    await _name(world, "bob", BOB_NAME, BOB_HANDLE, BOB_PHONE, BOB_EMAIL)
    request_id = await _finished_request(world)
    fifi = world.people["fifi"]
    await world.requests.open_request(
        fifi, world.form(address="3 impasse des Secrets", description="Fifi's own leak"))

    privacy = Privacy(world.db, world.clock, owner_ids=[ADMIN_TELEGRAM_ID])
    raw = await privacy.export(ann)
    document = json.loads(raw.decode("utf-8"))

    assert document["user"]["name"] == ANN_NAME and document["user"]["username"] == ANN_HANDLE
    assert document["contacts"]["phone"] == ANN_PHONE
    assert document["contacts"]["email"] == ANN_EMAIL
    [request] = document["requests"]
    assert request["id"] == request_id and request["state"] == "confirmed"
    assert (request["address"], request["description"]) == (ADDRESS, DESCRIPTION)
    assert [(m["direction"], m["text"]) for m in request["messages"]] == [
        ("sent", ANN_SAYS), ("received", BOB_SAYS)]
    assert [h["action"] for h in request["history"]][-2:] == ["dispute", "resolve_confirm"]
    assert request["history"][-2]["reason"] == DISPUTE
    # The admin's reason is theirs: she was told it, the document does not repeat it as hers.
    assert "reason" not in request["history"][-1]
    texts = [n["text"] for n in document["notifications"]]
    assert any(BOB_NAME in t for t in texts)  # she was shown who took her request
    assert any(n["kind"] == "service_request" for n in document["notifications"])
    # Newest first; contact values as the audit trail keeps them: masked.
    assert document["audit"][0]["operation"] == "contacts.set_email"
    assert document["audit"][0]["after"] == {"email": "a•••@e•••.org"}
    assert "truncated" not in document
    flat = raw.decode("utf-8").lower()
    for other in (BOB_PHONE, BOB_PHONE[1:], BOB_EMAIL, BOB_HANDLE, "impasse des secrets",
                  "fifi's own leak"):
        assert other.lower() not in flat, other


async def test_mydata_caps_long_lists_and_says_so(world: World) -> None:
    ann = world.people["ann"].id
    now = world.clock.now()

    async def many(session: Any) -> None:
        for n in range(7):
            await outbox.enqueue(session, recipient_id=ann, kind="test",
                                 idempotency_key=f"test:many:{n}", now=now, text=f"note {n}")

    await world.db.run(many)
    from services.privacy import export

    document = await world.db.read(lambda s: export(s, ann, now=now, limit=5))
    assert [n["text"] for n in document["notifications"]] == [f"note {n}" for n in (6, 5, 4, 3, 2)]
    assert document["truncated"] == {"notifications": {"shown": 5, "total": 7}}
    assert "newest" in document["note"]

    opened = [(await world.requests.open_request(world.people["ann"], world.form())).id
              for _ in range(3)]
    document = await world.db.read(lambda s: export(s, ann, now=now, limit=2))
    assert [r["id"] for r in document["requests"]] == opened[:0:-1]
    assert document["truncated"]["requests"] == {"shown": 2, "total": 3}


# ------------------------------------------------------------------------------------- erasure


async def test_erasure_leaves_no_value_of_theirs_anywhere_and_keeps_the_requests(
    world: World,
) -> None:
    ann = await _name(world, "ann", ANN_NAME, ANN_HANDLE, ANN_PHONE, ANN_EMAIL)
    await _name(world, "bob", BOB_NAME, BOB_HANDLE, BOB_PHONE, BOB_EMAIL)
    request_id = await _finished_request(world)
    relay_id, pending_id = await _whatsapp_traces(world, ann)
    before = await world.request_row(request_id)
    history = await world.transitions(request_id)
    everything = await _everything(world.db)
    for value in (ANN_NAME, ANN_PHONE, ADDRESS, DISPUTE, INBOUND, ANN_SAYS, BOB_SAYS):
        assert value.lower() in everything, value  # the test would prove nothing otherwise

    world.clock.advance(minutes=5)
    privacy = Privacy(world.db, world.clock, owner_ids=[ADMIN_TELEGRAM_ID])
    erasure = await privacy.forget(ann)
    assert not erasure.already

    everything = await _everything(world.db)
    for value in (ANN_NAME, "annabelle", ANN_HANDLE, ANN_PHONE, ANN_PHONE[1:], ANN_EMAIL,
                  ADDRESS, WINDOW, DESCRIPTION, ANN_SAYS, BOB_SAYS, DISPUTE, INBOUND,
                  "seaside"):
        assert value.lower() not in everything, value
    # Bob's own data is his: untouched.
    for value in (BOB_NAME, BOB_PHONE, BOB_EMAIL):
        assert value.lower() in everything, value

    user = await _row(world.db, User, ann)
    assert user.display_name == f"erased user #{ann}" and user.erased_at == world.clock.now()
    assert (user.telegram_id, user.phone, user.email, user.username) == (None,) * 4
    after = await world.request_row(request_id)
    assert (after.state, after.version, after.assignee_id, after.created_at,
            after.state_entered_at) == (before.state, before.version, before.assignee_id,
                                        before.created_at, before.state_entered_at)
    assert (after.address, after.description) == (ERASED, "")
    assert await world.transitions(request_id) == history
    # What was not sent yet never will be: cancelled, and blank.
    for notification_id in (pending_id, relay_id):
        row = await _row(world.db, Notification, notification_id)
        assert row.status == "cancelled" and row.payload == {"text": ERASED}
    occurrence = (await world.db.read(lambda s: s.scalars(
        select(ErrorOccurrence).where(ErrorOccurrence.code == "ABCD1234")))).one()
    assert occurrence.context == {"update_type": "message", "user_id": ann}
    other = (await world.db.read(lambda s: s.scalars(
        select(ErrorOccurrence).where(ErrorOccurrence.code == "EFGH5678")))).one()
    assert other.context["telegram_user_id"] == 7_000_000_001  # not theirs: kept
    task = (await world.db.read(lambda s: s.scalars(select(ManualTask)))).one()
    assert (task.text, task.status) == (ERASED, "closed")

    # The audit trail says who asked, and nothing of what was erased.
    erased = (await world.db.read(lambda s: s.scalars(
        select(TransactionLog).where(TransactionLog.operation == "user.erased")))).all()
    assert [(e.entity_id, e.actor_id, e.detail) for e in erased] == [
        (str(ann), ann, "asked by the person (/forget)")]

    # Twice is once.
    again = await privacy.forget(ann)
    assert again.already
    assert await _everything(world.db) == everything


async def test_open_work_and_owners_are_refused_and_nothing_changes(world: World) -> None:
    ann = await _name(world, "ann", ANN_NAME, ANN_HANDLE, ANN_PHONE, ANN_EMAIL)
    await world.requests.open_request(world.people["ann"], world.form(address=ADDRESS))
    privacy = Privacy(world.db, world.clock, owner_ids=[ADMIN_TELEGRAM_ID])

    with pytest.raises(OpenWork) as refused:
        await privacy.forget(ann)
    assert refused.value.params == {"count": 1}
    # The provider who holds the job cannot leave it without an address either.
    bob = world.people["bob"]
    [offer] = await world.requests.pending_offers(bob)
    await world.requests.accept_offer(offer.id, bob)
    with pytest.raises(OpenWork):
        await privacy.forget(bob.id)
    with pytest.raises(OwnerCannotBeErased):
        await privacy.forget(world.people["ada"].id)
    user = await _row(world.db, User, ann)
    assert (user.erased_at, user.display_name, user.phone) == (None, ANN_NAME, ANN_PHONE)
    assert ADDRESS.lower() in await _everything(world.db)


# ---------------------------------------------------------------------- the daily clean-up


async def _customer(world: World, phone: str, name: str, *, wrote_at: datetime) -> int:
    async def work(session: Any) -> int:
        user = User(telegram_id=None, phone=phone, display_name=name, language="en",
                    roles="requester", whatsapp_inbound_at=wrote_at, created_at=wrote_at,
                    updated_at=wrote_at)
        session.add(user)
        await session.flush()
        session.add(InboundMessage(
            wamid=f"wamid.{user.id}", sender=phone[1:], profile_name=name, type="text",
            text=f"hi from {name}", payload={}, sent_at=wrote_at, received_at=wrote_at,
            status="done", next_attempt_at=wrote_at, user_id=user.id, processed_at=wrote_at))
        return user.id

    return await world.db.run(work)


async def test_the_clean_up_anonymizes_inactive_whatsapp_customers_only(world: World) -> None:
    now = world.clock.now()
    year_ago = months_before(now, 12) - timedelta(days=1)
    idle = await _customer(world, "+33611111111", "Idle Ingrid", wrote_at=year_ago)
    chatty = await _customer(world, "+33622222222", "Chatty Charles", wrote_at=year_ago)
    # Quiet as long, but an answer went out to her last month: she is active.
    answered = await _customer(world, "+33633333333", "Answered Alice", wrote_at=year_ago)
    await world.db.run(lambda s: outbox.enqueue(
        s, recipient_id=answered, kind="test", idempotency_key="test:answered",
        now=now - timedelta(days=30), text="Your answer"))
    # Charles wrote again last week.
    await world.db.run(lambda s: s.execute(
        update(User).where(User.id == chatty)
        .values(whatsapp_inbound_at=now - timedelta(days=7), updated_at=now - timedelta(days=7))))

    done = await clean_up(world.db, now, RecoveryJobsConfig())
    assert done["customers_anonymized"] == 1
    everything = await _everything(world.db)
    assert "idle ingrid" not in everything and "33611111111" not in everything
    assert "chatty charles" in everything and "answered alice" in everything
    ingrid = await _row(world.db, User, idle)
    assert ingrid.display_name == f"erased user #{idle}" and ingrid.phone is None
    erased = (await world.db.read(lambda s: s.scalars(
        select(TransactionLog).where(TransactionLog.operation == "user.erased")))).one()
    assert (erased.entity_id, erased.actor_id) == (str(idle), None)
    assert "clean-up" in (erased.detail or "")

    assert (await clean_up(world.db, now, RecoveryJobsConfig()))["customers_anonymized"] == 0
    # Forty days on, with a one-month retention, the other two are inactive as well.
    later = now + timedelta(days=40)
    shorter = RecoveryJobsConfig(whatsapp_customer_retention_months=1)
    assert (await clean_up(world.db, later, shorter))["customers_anonymized"] == 2
    assert (await _row(world.db, User, chatty)).erased_at == later
    assert (await _row(world.db, User, answered)).erased_at == later


async def test_requests_of_an_anonymized_customer_keep_their_states(world: World) -> None:
    now = world.clock.now()
    customer = await _customer(world, "+33644444444", "Old Olga",
                               wrote_at=months_before(now, 13))
    view = await world.requests.open_request(
        await world.db.read(lambda s: _actor(s, customer)), world.form(address=ADDRESS))
    world.clock.advance(days=400)
    # Still open, untouched for a year: its address is still needed, so Olga is passed by.
    done = await clean_up(world.db, world.clock.now(), RecoveryJobsConfig())
    assert done["customers_anonymized"] == 0
    assert (await world.request_row(view.id)).address == ADDRESS

    # Once it is closed (cancelled a year ago), she is erased and the request stays.
    await world.db.run(lambda s: s.execute(
        update(ServiceRequest).where(ServiceRequest.id == view.id)
        .values(state=State.CANCELLED.value, updated_at=now)))
    done = await clean_up(world.db, world.clock.now(), RecoveryJobsConfig())
    assert done["customers_anonymized"] == 1
    row = await world.request_row(view.id)
    assert (row.state, row.address) == (State.CANCELLED.value, ERASED)
    assert await world.count(WorkflowTransition, WorkflowTransition.request_id == view.id) > 0
    assert await world.count(ServiceRequest) == 1


async def _actor(session: Any, user_id: int) -> Any:
    from services.users import UserView

    return UserView.of(await session.get_one(User, user_id))


def test_months_are_calendar_months() -> None:
    assert months_before(datetime(2026, 3, 31, 12, tzinfo=UTC), 1) == datetime(
        2026, 2, 28, 12, tzinfo=UTC)
    assert months_before(datetime(2026, 1, 15, tzinfo=UTC), 12) == datetime(
        2025, 1, 15, tzinfo=UTC)
    assert months_before(datetime(2026, 1, 15, tzinfo=UTC), 13) == datetime(
        2024, 12, 15, tzinfo=UTC)
