"""`python main.py seed-demo` (main._seed_demo): migrates, loads the demo catalogue once, says
so when a second run changes nothing, and prints how to play each role."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

import main
from database.engine import Database
from services.alerts import Alerts
from services.clock import SystemClock
from services.inventory import Inventory
from services.users import Users
from services.workflow import Catalogue, ServiceRequests
from tests.conversations.harness import ExplicitSettings


async def _catalogue(url: str) -> tuple[list[str], dict[str, int], set[str], bool]:
    db = Database.from_url(url)
    try:
        clock = SystemClock()
        types = [t.code for t in await Catalogue(db).service_types()]
        stock = {i.sku: i.on_hand for i in await Inventory(db, clock).list_stock()}
        users = Users(db, clock, default_language="en", admin_ids=[1005])
        wendy = await users.ensure(telegram_id=1005, display_name="", client_language=None)
        requests = ServiceRequests(db, clock, Alerts(admin_telegram_ids=[], window=timedelta(1)))
        paul = await requests.provider_profile(
            (await users.ensure(telegram_id=1002, display_name="", client_language=None)).id
        )
        return types, stock, {r.value for r in wendy.roles}, paul is not None
    finally:
        await db.dispose()


def test_seed_demo_loads_once_and_says_so_the_second_time(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # What `python main.py seed-demo` runs once it has the settings (main() also sets up the
    # process's logging, which a test in a shared process must not).
    settings = ExplicitSettings(database_url=db_url, admin_ids=[1005])
    asyncio.run(main._seed_demo(settings))
    first = capsys.readouterr().out
    assert "demo catalogue loaded" in first and "+ stock item FUSE-10" in first
    assert "--chat 1002" in first and "./dev fake-telegram" in first

    asyncio.run(main._seed_demo(settings))
    second = capsys.readouterr().out
    assert "already loaded: nothing changed" in second and "+ " not in second

    types, stock, wendy_roles, paul_is_provider = asyncio.run(_catalogue(db_url))
    assert types == ["plumbing", "electrical", "heating"]
    assert stock == {"FUSE-10": 3, "PIPE-15": 40, "SEAL-KIT": 20, "VALVE-1": 12}
    assert {"warehouse", "admin"} <= wendy_roles  # ADMIN_IDS stay admins
    assert paul_is_provider
