"""Where an admin right came from, on both engines: ADMIN_IDS gives and takes back its own
right; one granted in the menu survives restarts and ADMIN_IDS changes until it is revoked in
the menu; an owner's right is never revoked there; alerts reach granted admins too; people are
found by name, @username, Telegram id and the last digits of their phone."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from database.engine import Database
from database.models import Notification, Provider, Role, RoleGrant, TransactionLog, User
from services import inventory
from services.alerts import Alerts
from services.clock import FakeClock
from services.people import DuplicateCode, OwnerAdmin, People
from services.users import Users
from tests.integration.test_users import _Statements

OWNER, ANN, BOB = 7001, 7002, 7003


async def _arrive(  # type: ignore[no-untyped-def]
    db: Database, clock: FakeClock, telegram_id: int, admin_ids=(OWNER,), **kw
):
    """An update from this person, seen by a process started with these ADMIN_IDS."""
    users = Users(db, clock, default_language="en", admin_ids=admin_ids)
    return await users.ensure(telegram_id=telegram_id, display_name=kw.get("name", "Ann Lee"),
                              client_language="en", username=kw.get("username", ""))


async def _grants(db: Database, user_id: int) -> set[tuple[str, str]]:
    rows = await db.read(lambda s: s.execute(
        select(RoleGrant.role, RoleGrant.source).where(RoleGrant.user_id == user_id)))
    return {tuple(r) for r in rows}  # type: ignore[misc]


async def test_a_menu_admin_survives_restarts_and_admin_ids_changes(db: Database) -> None:
    clock = FakeClock()
    owner = await _arrive(db, clock, OWNER)
    ann = await _arrive(db, clock, ANN)
    assert owner.is_admin and not ann.is_admin
    assert await _grants(db, owner.id) == {("admin", "settings")}

    people = People(db, clock, admin_ids=[OWNER])
    await people.grant(owner.id, ann.id, Role.ADMIN)
    # A restart (a new Users over the same database) and several updates: still an admin.
    for _ in range(2):
        assert (await _arrive(db, clock, ANN)).is_admin
    assert await _grants(db, ann.id) == {("admin", "menu")}

    # Ann is added to ADMIN_IDS, then taken out again: only ADMIN_IDS' own right goes.
    assert (await _arrive(db, clock, ANN, admin_ids=(OWNER, ANN))).is_admin
    assert await _grants(db, ann.id) == {("admin", "menu"), ("admin", "settings")}
    assert (await _arrive(db, clock, ANN, admin_ids=(OWNER,))).is_admin
    assert await _grants(db, ann.id) == {("admin", "menu")}

    await people.revoke(owner.id, ann.id, Role.ADMIN)
    assert not (await _arrive(db, clock, ANN)).is_admin
    assert await _grants(db, ann.id) == set()


async def test_an_owner_is_not_revocable_from_the_menu(db: Database) -> None:
    clock = FakeClock()
    owner = await _arrive(db, clock, OWNER)
    ann = await _arrive(db, clock, ANN)
    people = People(db, clock, admin_ids=[OWNER])
    await people.grant(owner.id, ann.id, Role.ADMIN)
    with pytest.raises(OwnerAdmin):
        await people.revoke(ann.id, owner.id, Role.ADMIN)
    assert (await _arrive(db, clock, OWNER)).is_admin
    # Removing the id from ADMIN_IDS is how an owner stops being one.
    assert not (await _arrive(db, clock, OWNER, admin_ids=())).is_admin


async def test_a_granted_admin_still_costs_one_read_per_update(db: Database) -> None:
    clock = FakeClock()
    owner = await _arrive(db, clock, OWNER)
    ann = await _arrive(db, clock, ANN, username="ann")
    await People(db, clock, admin_ids=[OWNER]).grant(owner.id, ann.id, Role.ADMIN)
    await _arrive(db, clock, ANN, username="ann")
    with _Statements(db) as seen:
        again = await _arrive(db, clock, ANN, username="ann")
    assert again.is_admin and seen.words.count("SELECT") == 1 and seen.writes == 0


async def test_roles_are_granted_and_revoked_with_an_audit(db: Database) -> None:
    clock = FakeClock()
    owner = await _arrive(db, clock, OWNER)
    bob = await _arrive(db, clock, BOB, name="Bob Stone")
    people = People(db, clock, admin_ids=[OWNER])
    for role in (Role.PROVIDER, Role.WAREHOUSE, Role.OPERATOR):
        await people.grant(owner.id, bob.id, role)
    view = await people.toggle_provider_service(owner.id, bob.id, await _service(db))
    assert view.provider is not None and view.provider.active and view.provider.capacity == 1
    view = await people.set_capacity(owner.id, bob.id, 3)
    view = await people.set_available(owner.id, bob.id, False)
    assert view.provider.capacity == 3 and not view.provider.available
    granted = {Role.PROVIDER, Role.WAREHOUSE, Role.OPERATOR}
    assert (await _arrive(db, clock, BOB)).roles >= granted

    view = await people.revoke(owner.id, bob.id, Role.PROVIDER)
    assert Role.PROVIDER not in (await _arrive(db, clock, BOB)).roles
    assert view.provider is not None and not view.provider.active  # matching skips them
    provider = await db.read(
        lambda s: s.scalar(select(Provider).where(Provider.user_id == bob.id)))
    assert provider is not None and not provider.active
    operations = list(await db.read(lambda s: s.scalars(
        select(TransactionLog.operation)
        .where(TransactionLog.actor_id == owner.id, TransactionLog.operation != "user.create")
        .order_by(TransactionLog.id))))
    assert operations == ["user.role_granted"] * 3 + [
        "provider.services", "provider.capacity", "provider.away", "user.role_revoked"]


async def _service(db: Database) -> int:
    people = People(db, FakeClock(), admin_ids=[])
    return (await people.add_entry(0, "service", "plumb", "Plumbing", "Plomberie")).id


async def test_alerts_reach_owners_and_granted_admins(db: Database) -> None:
    clock = FakeClock()
    owner = await _arrive(db, clock, OWNER)
    ann = await _arrive(db, clock, ANN)
    await _arrive(db, clock, BOB)
    await People(db, clock, admin_ids=[OWNER]).grant(owner.id, ann.id, Role.ADMIN)
    alerts = Alerts(admin_telegram_ids=[OWNER], window=timedelta(minutes=5))
    await db.run(lambda s: alerts.alert(s, key="k", severity="high", text="disk", now=clock.now()))
    recipients = set(await db.read(lambda s: s.scalars(select(Notification.recipient_id))))
    assert recipients == {owner.id, ann.id}


async def test_people_are_found_by_name_username_id_and_phone_digits(db: Database) -> None:
    clock = FakeClock()
    ann = await _arrive(db, clock, ANN, name="Ann Lee", username="annlee")
    bob = await _arrive(db, clock, BOB, name="Bob Stone")
    async with db.transaction() as session:
        (await session.get_one(User, bob.id)).phone = "+33612345678"
    people = People(db, clock, admin_ids=[])
    assert [p.id for p in await people.find("@AnnLee")] == [ann.id]
    assert [p.id for p in await people.find(str(BOB))] == [bob.id]
    found = await people.find("5678")
    assert [p.id for p in found] == [bob.id] and found[0].phone_masked != "+33612345678"
    assert [p.id for p in await people.find("lee")] == [ann.id]
    assert await people.find("nobody") == []


async def test_the_catalogue_is_kept_and_audited(db: Database) -> None:
    clock = FakeClock()
    owner = await _arrive(db, clock, OWNER)
    people = People(db, clock, admin_ids=[OWNER])
    north = await people.add_entry(owner.id, "area", "north", "North", "Nord")
    south = await people.add_entry(owner.id, "area", "south", "South")
    assert south.name("fr") == "South"  # no French name given: the English one
    with pytest.raises(DuplicateCode):
        await people.add_entry(owner.id, "area", "north", "Again")
    assert await people.toggle_neighbour(owner.id, north.id, south.id) == [south.id]
    assert await people.neighbours(south.id) == [north.id]  # both directions
    assert await people.toggle_neighbour(owner.id, south.id, north.id) == []
    renamed = await people.rename_entry(owner.id, "area", south.id, "South bank", "Rive sud")
    assert renamed.name("fr") == "Rive sud"

    item = await people.add_entry(owner.id, "item", "FUSE-10", "Fuse 10 A")
    await people.set_entry_active(owner.id, "item", item.id, False, reason="discontinued")
    assert [i.sku for i in await db.read(inventory.stock)] == []  # no longer offered
    assert [e.active for e in await people.entries("item")] == [False]  # kept

    operations = list(await db.read(lambda s: s.scalars(
        select(TransactionLog.operation).where(TransactionLog.actor_id == owner.id,
                                               TransactionLog.operation != "user.create")
        .order_by(TransactionLog.id))))
    assert operations == [
        "catalogue.area.add", "catalogue.area.add", "catalogue.area.neighbours",
        "catalogue.area.neighbours", "catalogue.area.rename", "inventory.add_item",
        "catalogue.item.retire"]
