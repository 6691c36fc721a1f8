"""Provider matching on both engines: who is offered a job, in which tier, in which order."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from database.engine import Database
from database.models import Offer, Provider
from services.workflow import State
from services.workflow.errors import ProviderBusy
from tests.integration.workflow_world import World, build_world


@pytest.fixture
async def world(db: Database) -> World:
    return await build_world(db)


async def _offered(world: World, request_id: int) -> list[str]:
    names = {p.id: name for name, p in world.providers.items()}
    rows = await world.db.read(lambda s: s.scalars(
        select(Offer.provider_id).where(Offer.request_id == request_id).order_by(Offer.id)))
    return [names[i] for i in rows]


async def _set(world: World, name: str, **values: object) -> None:
    provider_id = world.providers[name].id
    await world.db.run(lambda s: s.execute(
        update(Provider).where(Provider.id == provider_id).values(**values)))


async def _assign_to(world: World, name: str) -> None:
    """Give `name` a job: a request in their area that they accept."""
    opened = await world.requests.open_request(world.people["fifi"], world.form())
    offer_id = await world.db.read(lambda s: s.scalar(
        select(Offer.id).where(Offer.request_id == opened.id,
                               Offer.provider_id == world.providers[name].id)))
    await world.requests.accept_offer(offer_id, world.people[name])


async def test_the_least_loaded_provider_comes_first(db: Database) -> None:
    world = await build_world(db, offer_candidates=1)
    await _set(world, "bob", capacity=3)
    await _set(world, "eve", capacity=3)
    await _assign_to(world, "bob")  # bob comes first by id while both are idle
    opened = await world.requests.open_request(world.people["ann"], world.form())
    assert await _offered(world, opened.id) == ["eve"]


async def test_among_equally_loaded_the_one_waiting_longest_comes_first(db: Database) -> None:
    world = await build_world(db, offer_candidates=1)
    await _set(world, "bob", last_assigned_at=world.clock.now())
    world.clock.advance(hours=1)
    await _set(world, "eve", last_assigned_at=world.clock.now())
    opened = await world.requests.open_request(world.people["ann"], world.form())
    assert await _offered(world, opened.id) == ["bob"]
    # ... and one never assigned waits longest of all.
    await _set(world, "eve", last_assigned_at=None)
    second = await world.requests.open_request(world.people["fifi"], world.form())
    assert await _offered(world, second.id) == ["eve"]


async def test_busy_providers_are_left_out(world: World) -> None:
    # A pending offer holds a provider's only place: the next request goes further.
    first = await world.requests.open_request(world.people["ann"], world.form())
    assert await _offered(world, first.id) == ["bob", "eve"]
    second = await world.requests.open_request(world.people["fifi"], world.form())
    assert await _offered(world, second.id) == ["carl"]
    assert second.matching_tier == "broad"
    # With carl away too, nobody is left.
    await _set(world, "carl", available=False)
    third = await world.requests.open_request(world.people["fifi"], world.form())
    assert third.state is State.ESCALATED


async def test_a_provider_is_never_offered_their_own_request(world: World) -> None:
    opened = await world.requests.open_request(world.people["bob"], world.form())
    assert await _offered(world, opened.id) == ["eve"]


async def test_neighbouring_areas_come_before_any_area(world: World) -> None:
    south = await world.requests.open_request(world.people["ann"], world.form(area="south"))
    assert await _offered(world, south.id) == ["carl"]
    await _set(world, "carl", available=False)
    again = await world.requests.open_request(world.people["fifi"], world.form(area="south"))
    assert await _offered(world, again.id) == ["bob", "eve"]  # any area, still broad
    assert again.matching_tier == "broad"


async def test_inactive_providers_and_other_skills_are_never_offered(world: World) -> None:
    await _set(world, "bob", active=False)
    opened = await world.requests.open_request(world.people["ann"], world.form())
    assert await _offered(world, opened.id) == ["eve"]  # dora does electricity only


async def test_an_offer_cannot_take_a_provider_over_capacity(world: World) -> None:
    offered = await world.requests.open_request(world.people["fifi"], world.form())
    await _set(world, "dora", available=False)
    escalated = await world.requests.open_request(
        world.people["ann"], world.form(service="electricity"))
    # An admin gives bob the escalated job by hand while bob's offer is still open.
    await world.requests.assign(escalated.id, world.people["ada"], escalated.version,
                                world.providers["bob"].id, "bob can do it")
    offer_id = await world.db.read(lambda s: s.scalar(
        select(Offer.id).where(Offer.request_id == offered.id,
                               Offer.provider_id == world.providers["bob"].id)))
    with pytest.raises(ProviderBusy):
        await world.requests.accept_offer(offer_id, world.people["bob"])
    assert (await world.requests.get(offered.id)).state is State.OFFERED
