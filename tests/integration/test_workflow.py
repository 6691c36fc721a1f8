"""The service-request workflow through its services, on both engines: what each party is told
(the outbox) and what the database holds (state, version, history, audit, stock)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from database.engine import Database
from database.models import InventoryTransaction, Offer, Role, WorkflowTransition
from services.scheduler import Scheduler
from services.workflow import Action, State
from services.workflow.errors import (
    InvalidTransition,
    NobodyToMessage,
    NotAllowed,
    OfferClosed,
    OfferTaken,
    OutOfStock,
    ReasonRequired,
    StaleVersion,
)
from services.workflow.jobs import register_workflow_jobs
from services.workflow.views import Viewer
from tests.integration.workflow_world import World, build_world


@pytest.fixture
async def world(db: Database) -> World:
    return await build_world(db)


async def _offer_of(world: World, request_id: int, name: str) -> Offer:
    provider_id = world.providers[name].id
    rows = await world.db.read(lambda s: s.scalars(
        select(Offer).where(Offer.request_id == request_id, Offer.provider_id == provider_id)
        .order_by(Offer.id.desc())
    ))
    return list(rows)[0]


async def test_a_request_goes_from_offer_to_confirmation_with_every_party_told(
    world: World,
) -> None:
    ann, bob = world.people["ann"], world.people["bob"]
    opened = await world.requests.open_request(ann, world.form())
    assert opened.state is State.OFFERED and opened.matching_tier == "exact"

    offer = await _offer_of(world, opened.id, "bob")
    [offer_message] = await world.notifications("bob", "job_offer")
    assert "Plumbing in North" in offer_message.payload["text"]
    assert "The kitchen sink leaks" in offer_message.payload["text"]
    assert "12 rue des Lilas" not in offer_message.payload["text"]  # the address once accepted
    assert [b["action"] for b in offer_message.payload["buttons"]] == [
        "offer_accept", "offer_decline"]
    assert {b["target"] for b in offer_message.payload["buttons"]} == {offer.id}

    assigned = await world.requests.accept_offer(offer.id, bob)
    assert assigned.state is State.ASSIGNED and assigned.assignee_name == "Bob"
    assert assigned.address == "12 rue des Lilas"
    assert any("Bob will take care of your request" in t for t in await world.texts("ann"))
    # eve had the same offer: it is withdrawn and she is told.
    assert (await _offer_of(world, opened.id, "eve")).status == "withdrawn"

    started = await world.requests.start(opened.id, bob, assigned.version)
    parts = await world.requests.record_parts(
        opened.id, bob, [(world.items["PIPE-15"], 3), (world.items["VALVE-1"], 1)]
    )
    assert [(p.sku, p.quantity) for p in parts] == [("PIPE-15", -3), ("VALVE-1", -1)]
    stock = {i.sku: i.on_hand for i in await world.inventory.list_stock()}
    assert stock == {"PIPE-15": 7, "VALVE-1": 4}

    completed = await world.requests.complete(opened.id, bob, started.version)
    assert completed.state is State.COMPLETED
    assert any("Bob has completed your request" in t for t in await world.texts("ann"))

    confirmed = await world.requests.confirm(opened.id, world.people["ann"], completed.version)
    assert confirmed.state is State.CONFIRMED and confirmed.acting_role is None
    assert any("The requester confirmed request" in t for t in await world.texts("bob"))

    assert await world.transitions(opened.id) == [
        ("submit", "new", "matching"), ("offer", "matching", "offered"),
        ("accept", "offered", "assigned"), ("start", "assigned", "in_progress"),
        ("complete", "in_progress", "completed"), ("confirm", "completed", "confirmed"),
    ]
    history = await world.requests.history(opened.id)
    assert [t.action for t in history.transitions][-1] == "confirm"
    assert len(history.parts) == 2
    operations = await world.audit_operations(opened.id)
    assert operations[0] == "request.open" and operations[-1] == "request.confirm"
    assert confirmed.version == 7  # one bump per transition


async def test_a_stale_version_is_refused_with_the_request_as_it_is_now(world: World) -> None:
    ann, bob = world.people["ann"], world.people["bob"]
    opened = await world.requests.open_request(ann, world.form())
    assigned = await world.requests.accept_offer((await _offer_of(world, opened.id, "bob")).id,
                                                 bob)
    await world.requests.start(opened.id, bob, assigned.version)

    with pytest.raises(StaleVersion) as refused:
        await world.requests.cancel(opened.id, ann, assigned.version)  # drawn before the start
    assert refused.value.current.state is State.IN_PROGRESS
    assert refused.value.current.version == assigned.version + 1
    row = await world.request_row(opened.id)
    assert row.state == "in_progress" and row.version == assigned.version + 1
    assert await world.count(WorkflowTransition, WorkflowTransition.action == "cancel") == 0


async def test_a_transition_the_state_or_the_actor_does_not_allow_changes_nothing(
    world: World,
) -> None:
    ann, bob, eve = world.people["ann"], world.people["bob"], world.people["eve"]
    opened = await world.requests.open_request(ann, world.form())
    assigned = await world.requests.accept_offer((await _offer_of(world, opened.id, "bob")).id,
                                                 bob)
    with pytest.raises(InvalidTransition) as wrong_state:
        await world.requests.complete(opened.id, bob, assigned.version)
    assert wrong_state.value.current.state is State.ASSIGNED
    with pytest.raises(NotAllowed):
        await world.requests.start(opened.id, eve, assigned.version)  # not her job
    with pytest.raises(NotAllowed):
        await world.requests.start(opened.id, ann, assigned.version)  # the requester
    with pytest.raises(NotAllowed):  # recovery is for admins
        await world.requests.transition(opened.id, Action.FORCE_NEXT, ann, assigned.version,
                                        "because")
    with pytest.raises(ReasonRequired):
        await world.requests.transition(opened.id, Action.FORCE_NEXT, world.people["ada"],
                                        assigned.version)
    row = await world.request_row(opened.id)
    assert row.state == "assigned" and row.version == assigned.version


async def test_two_providers_accepting_at_once_make_one_assignment(world: World) -> None:
    opened = await world.requests.open_request(world.people["ann"], world.form())
    bob_offer = await _offer_of(world, opened.id, "bob")
    eve_offer = await _offer_of(world, opened.id, "eve")
    outcomes = await asyncio.gather(
        world.requests.accept_offer(bob_offer.id, world.people["bob"]),
        world.requests.accept_offer(eve_offer.id, world.people["eve"]),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert isinstance(losers[0], OfferTaken)
    assert "already been taken" in losers[0].render("en")
    row = await world.request_row(opened.id)
    assert row.state == "assigned" and row.assignee_id == winners[0].assignee_provider_id
    assert await world.count(WorkflowTransition, WorkflowTransition.action == "accept") == 1


async def test_nobody_in_the_area_uses_the_broad_tier_and_records_it(world: World) -> None:
    opened = await world.requests.open_request(
        world.people["ann"], world.form(area="south", photos=("AgAD-leak-1", "AgAD-leak-2")))
    assert opened.state is State.OFFERED and opened.matching_tier == "broad"
    assert (await world.request_row(opened.id)).matching_tier == "broad"
    # South's neighbour is the centre: carl is offered the job, nobody in the north is.
    offers = await world.db.read(lambda s: s.scalars(
        select(Offer.provider_id).where(Offer.request_id == opened.id)))
    assert list(offers) == [world.providers["carl"].id]
    assert len(await world.notifications("carl", "job_offer")) == 1
    # The photos go with the offer, on Telegram only (they are Telegram file ids).
    photos = await world.notifications("carl", "job_offer_photo")
    assert [(p.payload["media"]["source"], p.channel_chain) for p in photos] == [
        ("AgAD-leak-1", "telegram"), ("AgAD-leak-2", "telegram")]


async def test_nobody_at_all_escalates_tells_the_requester_and_alerts_admins_once(
    world: World,
) -> None:
    await world.requests.set_availability(world.people["dora"], False)
    opened = await world.requests.open_request(
        world.people["ann"], world.form(service="electricity")
    )
    assert opened.state is State.ESCALATED and opened.matching_tier is None
    # Her /new screen tells her at once (the view says ESCALATED): no message on top.
    assert await world.texts("ann") == []
    [alert] = await world.notifications("ada", "alert")
    assert f"Request #{opened.id}" in alert.payload["text"]

    # An operator or an admin matches it again once someone is back: a new round.
    await world.requests.set_availability(world.people["dora"], True)
    rematched = await world.requests.rematch(opened.id, world.people["ada"], opened.version)
    assert rematched.state is State.OFFERED and rematched.matching_tier == "broad"
    assert len(await world.notifications("ada", "alert")) == 1  # nothing new to alert


async def test_an_urgent_request_reaches_on_call_providers_and_alerts_admins(
    world: World,
) -> None:
    await world.requests.set_availability(world.people["dora"], False)
    opened = await world.requests.open_request(
        world.people["ann"], world.form(service="electricity", urgent=True)
    )
    assert opened.state is State.OFFERED and opened.matching_tier == "emergency"
    [offer] = await world.notifications("dora", "job_offer")
    assert offer.payload["text"].startswith("URGENT")
    [alert] = await world.notifications("ada", "alert")
    assert f"#{opened.id}" in alert.payload["text"]


async def test_declined_offers_move_on_to_the_next_candidates_then_escalate(db: Database) -> None:
    world = await build_world(db, offer_candidates=1)
    opened = await world.requests.open_request(world.people["ann"], world.form())
    first = await _offer_of(world, opened.id, "bob")  # equal load, never assigned: by id
    assert first.status == "pending"
    await world.requests.decline_offer(first.id, world.people["bob"])
    second = await _offer_of(world, opened.id, "eve")
    await world.requests.decline_offer(second.id, world.people["eve"])
    third = await _offer_of(world, opened.id, "carl")  # the neighbouring area
    assert (await world.request_row(opened.id)).matching_tier == "broad"
    with pytest.raises(OfferClosed):
        await world.requests.decline_offer(second.id, world.people["eve"])
    await world.requests.decline_offer(third.id, world.people["carl"])
    row = await world.request_row(opened.id)
    assert row.state == "escalated"
    assert len(await world.notifications("ada", "alert")) == 1
    assert any("could not find a provider for your request" in t
               for t in await world.texts("ann"))


async def test_an_expired_offer_goes_to_the_next_candidate(db: Database) -> None:
    world = await build_world(db, offer_candidates=1)
    opened = await world.requests.open_request(world.people["ann"], world.form())
    assert await world.requests.expire_offers() == 0  # not due yet
    world.clock.advance(minutes=31)
    assert await world.requests.expire_offers() == 1
    assert (await _offer_of(world, opened.id, "bob")).status == "expired"
    eve_offer = await _offer_of(world, opened.id, "eve")
    assert eve_offer.status == "pending"
    assert len(await world.notifications("eve", "job_offer")) == 1
    with pytest.raises(OfferClosed):  # too late for bob
        await world.requests.accept_offer((await _offer_of(world, opened.id, "bob")).id,
                                          world.people["bob"])
    assigned = await world.requests.accept_offer(eve_offer.id, world.people["eve"])
    assert assigned.assignee_name == "Eve"


async def test_cancelling_after_parts_were_issued_writes_reversals(world: World) -> None:
    ann, bob = world.people["ann"], world.people["bob"]
    opened = await world.requests.open_request(ann, world.form())
    assigned = await world.requests.accept_offer((await _offer_of(world, opened.id, "bob")).id,
                                                 bob)
    started = await world.requests.start(opened.id, bob, assigned.version)
    await world.requests.record_parts(opened.id, bob, [(world.items["PIPE-15"], 4)])
    with pytest.raises(OutOfStock):  # all or nothing: the pipe is not issued either
        await world.requests.record_parts(
            opened.id, bob, [(world.items["PIPE-15"], 1), (world.items["VALVE-1"], 99)]
        )
    cancelled = await world.requests.cancel(opened.id, ann, started.version, "changed my mind")
    assert cancelled.state is State.CANCELLED
    lines = await world.db.read(lambda s: s.execute(
        select(InventoryTransaction.kind, InventoryTransaction.quantity)
        .where(InventoryTransaction.request_id == opened.id).order_by(InventoryTransaction.id)
    ))
    assert [tuple(r) for r in lines] == [("issue", -4), ("reversal", 4)]
    stock = {i.sku: i.on_hand for i in await world.inventory.list_stock()}
    assert stock == {"PIPE-15": 10, "VALVE-1": 5}
    assert any(f"Request #{opened.id} was cancelled" in t for t in await world.texts("bob"))
    with pytest.raises(InvalidTransition):
        await world.requests.cancel(opened.id, ann, cancelled.version)


async def test_a_completed_request_cannot_be_cancelled(world: World) -> None:
    ann, bob = world.people["ann"], world.people["bob"]
    opened = await world.requests.open_request(ann, world.form())
    view = await world.requests.accept_offer((await _offer_of(world, opened.id, "bob")).id, bob)
    view = await world.requests.start(opened.id, bob, view.version)
    view = await world.requests.complete(opened.id, bob, view.version)
    with pytest.raises(InvalidTransition):
        await world.requests.cancel(opened.id, ann, view.version)
    with pytest.raises(InvalidTransition):
        await world.requests.cancel(opened.id, world.people["ada"], view.version, "admin")


async def test_a_dispute_is_resolved_by_an_admin(world: World) -> None:
    ann, bob, ada = world.people["ann"], world.people["bob"], world.people["ada"]
    opened = await world.requests.open_request(ann, world.form())
    view = await world.requests.accept_offer((await _offer_of(world, opened.id, "bob")).id, bob)
    view = await world.requests.start(opened.id, bob, view.version)
    view = await world.requests.complete(opened.id, bob, view.version)
    with pytest.raises(ReasonRequired):
        await world.requests.dispute(opened.id, ann, view.version, " ")
    view = await world.requests.dispute(opened.id, ann, view.version, "still leaking")
    assert view.state is State.DISPUTED and view.acting_role.value == "admin"
    assert any("disputed request" in t and "still leaking" in t
               for t in await world.texts("bob"))
    assert any("still leaking" in n.payload["text"]
               for n in await world.notifications("ada", "alert"))
    with pytest.raises(NotAllowed):
        await world.requests.resolve_dispute(opened.id, ann, view.version, confirm=True,
                                             reason="me")
    view = await world.requests.resolve_dispute(
        opened.id, ada, view.version, confirm=False, reason="the provider goes back")
    assert view.state is State.IN_PROGRESS
    view = await world.requests.complete(opened.id, bob, view.version)
    view = await world.requests.dispute(opened.id, ann, view.version, "again")
    view = await world.requests.resolve_dispute(
        opened.id, ada, view.version, confirm=True, reason="photos show it fixed")
    assert view.state is State.CONFIRMED
    assert any("the work is confirmed" in t for t in await world.texts("ann"))


async def test_messages_are_relayed_both_ways_and_kept(world: World) -> None:
    ann, bob = world.people["ann"], world.people["bob"]
    opened = await world.requests.open_request(ann, world.form())
    with pytest.raises(NobodyToMessage):
        await world.requests.relay_message(opened.id, ann, "hello?")
    await world.requests.accept_offer((await _offer_of(world, opened.id, "bob")).id, bob)
    await world.requests.relay_message(opened.id, ann, "The door code is 1234")
    await world.requests.relay_message(opened.id, bob, "On my way")
    with pytest.raises(NotAllowed):
        await world.requests.relay_message(opened.id, world.people["eve"], "hi")
    assert any("Message from Ann" in t and "1234" in t for t in await world.texts("bob"))
    assert any("Message from Bob" in t and "On my way" in t for t in await world.texts("ann"))
    history = await world.requests.history(opened.id)
    assert [m.text for m in history.messages] == ["The door code is 1234", "On my way"]


async def test_an_unconfirmed_completion_is_reminded_then_confirmed_automatically(
    world: World,
) -> None:
    ann, bob = world.people["ann"], world.people["bob"]
    opened = await world.requests.open_request(ann, world.form())
    view = await world.requests.accept_offer((await _offer_of(world, opened.id, "bob")).id, bob)
    view = await world.requests.start(opened.id, bob, view.version)
    await world.requests.complete(opened.id, bob, view.version)

    world.clock.advance(hours=23)
    assert await world.requests.sweep_completed() == (0, 0)
    world.clock.advance(hours=2)
    assert await world.requests.sweep_completed() == (1, 0)
    assert await world.requests.sweep_completed() == (0, 0)  # once
    assert sum("Please confirm request" in t for t in await world.texts("ann")) == 1
    world.clock.advance(hours=48)
    assert await world.requests.sweep_completed() == (0, 1)
    row = await world.request_row(opened.id)
    assert row.state == "confirmed"
    assert (await world.transitions(opened.id))[-1] == ("auto_confirm", "completed", "confirmed")
    assert any("confirmed automatically" in t for t in await world.texts("bob"))


async def test_admin_recovery_reassigns_and_moves_with_a_reason(world: World) -> None:
    ann, bob, ada = world.people["ann"], world.people["bob"], world.people["ada"]
    opened = await world.requests.open_request(ann, world.form())
    view = await world.requests.accept_offer((await _offer_of(world, opened.id, "bob")).id, bob)
    view = await world.requests.transition(
        opened.id, Action.REASSIGN, ada, view.version, "Bob is ill",
        provider_id=world.providers["carl"].id)
    assert view.state is State.ASSIGNED and view.assignee_name == "Carl"
    assert any("no longer assigned to you" in t for t in await world.texts("bob"))
    carl_texts = await world.texts("carl")  # carl reads French
    assert any("12 rue des Lilas" in t for t in carl_texts)
    view = await world.requests.transition(opened.id, Action.FORCE_NEXT, ada, view.version,
                                           "started by phone")
    assert view.state is State.IN_PROGRESS
    view = await world.requests.transition(opened.id, Action.RESET_PREVIOUS, ada, view.version,
                                           "not started after all")
    assert view.state is State.ASSIGNED
    view = await world.requests.transition(opened.id, Action.FORCE_COMPLETE, ada, view.version,
                                           "done, paid cash")
    assert view.state is State.CONFIRMED
    reasons = await world.db.read(lambda s: s.scalars(
        select(WorkflowTransition.reason).where(WorkflowTransition.request_id == opened.id,
                                                WorkflowTransition.actor_id == ada.id)))
    assert list(reasons) == ["Bob is ill", "started by phone", "not started after all",
                             "done, paid cash"]


async def test_stuck_requests_are_listed_by_their_states_threshold(world: World) -> None:
    await world.requests.set_availability(world.people["dora"], False)
    escalated = await world.requests.open_request(
        world.people["ann"], world.form(service="electricity"))
    offered = await world.requests.open_request(world.people["fifi"], world.form())
    assert await world.requests.stuck() == []
    world.clock.advance(minutes=61)  # escalated: 1 h; offered: 2 h
    assert [s.request.id for s in await world.requests.stuck()] == [escalated.id]
    world.clock.advance(minutes=60)
    stuck = await world.requests.stuck()
    assert {s.request.id for s in stuck} == {escalated.id, offered.id}
    assert Action.RESET_PREVIOUS in stuck[0].recovery_actions


async def test_french_speaking_parties_are_told_in_french(world: World) -> None:
    fifi, carl = world.people["fifi"], world.people["carl"]
    opened = await world.requests.open_request(fifi, world.form(area="centre"))
    [offer] = await world.notifications("carl", "job_offer")
    assert offer.payload["text"].startswith("Nouvelle offre de mission")
    assert "Plomberie à Centre" in offer.payload["text"]
    assert [b["text"] for b in offer.payload["buttons"]] == ["Accepter", "Refuser"]
    view = await world.requests.accept_offer((await _offer_of(world, opened.id, "carl")).id, carl)
    view = await world.requests.start(opened.id, carl, view.version)
    await world.requests.relay_message(opened.id, carl, "J'arrive")
    await world.requests.complete(opened.id, carl, view.version)
    assert await world.texts("fifi") == [
        f"Carl va s'occuper de votre demande n°{opened.id} (Plomberie). Utilisez le bouton "
        "Message pour lui écrire.",
        f"Carl a commencé le travail sur votre demande n°{opened.id}.",
        f"Message de Carl au sujet de la demande n°{opened.id} :\nJ'arrive",
        f"Carl a terminé votre demande n°{opened.id}. Merci de la confirmer, ou de la "
        "contester si quelque chose ne va pas.",
    ]
    [notification] = (await world.notifications("fifi"))[:1]
    assert notification.payload["buttons"][0]["text"] == "Ouvrir la demande"


async def test_an_operator_assigns_an_escalated_request_by_hand(world: World) -> None:
    await world.requests.set_availability(world.people["dora"], False)
    opened = await world.requests.open_request(
        world.people["ann"], world.form(service="electricity"))
    operator = Viewer(id=world.people["eve"].id, roles=frozenset({Role.OPERATOR}))
    candidates = await world.requests.providers_for(opened.id)
    assert [p.display_name for p in candidates] == ["Dora"]
    with pytest.raises(NotAllowed):
        await world.requests.assign(opened.id, world.people["fifi"], opened.version,
                                    candidates[0].id)
    assigned = await world.requests.assign(opened.id, operator, opened.version,
                                           candidates[0].id)
    assert assigned.state is State.ASSIGNED and assigned.assignee_name == "Dora"
    assert any("You have been assigned request" in t and "12 rue des Lilas" in t
               for t in await world.texts("dora"))
    assert any("Dora will take care of your request" in t for t in await world.texts("ann"))


async def test_the_scheduler_runs_offer_expiry_and_the_completion_sweep(db: Database) -> None:
    world = await build_world(db, offer_candidates=1)
    scheduler = Scheduler(db, world.clock, world.requests.alerts, owner="test:1")
    register_workflow_jobs(scheduler, world.requests)
    opened = await world.requests.open_request(world.people["ann"], world.form())
    world.clock.advance(minutes=31)
    run = await scheduler.run_job("offer_expiry")
    assert run is not None and run.outcome == "ok" and run.summary == "expired 1"
    assert (await _offer_of(world, opened.id, "eve")).status == "pending"
    run = await scheduler.run_job("completed_requests")
    assert run is not None and run.summary == "reminded 0, confirmed 0"
