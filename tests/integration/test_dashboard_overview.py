"""The dashboard's overview and background jobs pages over real HTTP, on the services the
Telegram menus use: the overview shows the /health snapshot's parts and its JSON refresh the
same figures; Run now runs a job and the run shows on the page."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import select

from database.models import JobRun, User
from services.notifications import outbox
from services.scheduler import Scheduler
from tests.integration.dashboard_support import ADMIN, DashboardWorld, dashboard_world


def _figure(text: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}">([^<]*)<', text)
    assert found, element_id
    return found.group(1)


async def _enqueue(world: DashboardWorld, count: int) -> None:
    async with world.db.transaction() as session:
        admin = await session.scalar(select(User.id).where(User.telegram_id == ADMIN))
        for index in range(count):
            await outbox.enqueue(
                session, recipient_id=admin, kind="test.hello",
                idempotency_key=f"overview:{index}", text="Hello", now=world.clock.now(),
                channels=["telegram"],
            )


async def test_the_overview_shows_what_health_sees_and_follows_it(db_url: str) -> None:
    async with dashboard_world(db_url) as world:
        admin = await world.sign_in()
        page = await admin.get("/admin/")
        assert page.status == 200
        assert _figure(page.text, "outbox-due") == "0"
        for part in ("System status", "Outbox", "Channels", "Stuck workflows",
                     "Errors in the last hour", "Dead letters, last 24 h"):
            assert part in page.text, part
        status, before = await admin.json("/admin/overview.json")
        assert status == 200 and before["components"]["outbox"]["due"] == 0
        assert before["status"] in ("ok", "degraded")

        await _enqueue(world, 3)
        world.clock.advance(minutes=6)  # due and unsent for longer than /health accepts

        page = await admin.get("/admin/")
        assert _figure(page.text, "outbox-due") == "3"
        assert "outbox: notifications due for more than 5 minutes are unsent" in page.text
        status, after = await admin.json("/admin/overview.json")
        assert after["components"]["outbox"]["due"] == 3
        assert after["components"]["outbox"]["oldest_due_age_seconds"] == 360
        assert after["status"] == "degraded"
        # The same snapshot the System health screen and /health read.
        snapshot = await world.services["system_health"].snapshot()
        assert after["reasons"] == list(snapshot.reasons)


async def test_the_page_refreshes_itself_without_inline_script(db_url: str) -> None:
    async with dashboard_world(db_url) as world:
        admin = await world.sign_in()
        page = await admin.get("/admin/")
        scripts = re.findall(r"<script([^>]*)>", page.text)
        assert scripts == [' src="/admin/static/dashboard.js" defer'], scripts
        assert not re.search(r"\son[a-z]+=", page.text)  # no inline event handlers
        assert 'data-source="/admin/overview.json"' in page.text
        assert 'name="viewport"' in page.text
        async with admin.session.get("/admin/static/dashboard.js") as script:
            body = await script.text()
        assert "fetch(" in body and "setInterval" in body
        # What the page says when a refresh fails, rather than stale figures in silence.
        assert 'data-lost="connection lost' in page.text


async def test_run_now_runs_the_job_and_the_run_shows(db_url: str) -> None:
    async with dashboard_world(db_url) as world:
        calls: list[datetime] = []

        async def tidy(now: datetime) -> str:
            calls.append(now)
            return f"tidied {len(calls)}"

        # What bot/app.py attaches once the delivery engine (and its scheduler) is built.
        scheduler = Scheduler(world.db, world.clock, world.services["service_requests"].alerts,
                              owner="test:1")
        scheduler.add_job("tidy", tidy, every=timedelta(hours=1))
        world.services["background_jobs"].scheduler = scheduler
        await scheduler.run_job("tidy")  # its timer ran it just now

        admin = await world.sign_in()
        page = await admin.get("/admin/jobs")
        assert page.status == 200
        assert "every 1h 0m" in page.text and page.text.count('class="run"') == 1
        assert "tidied 1" in page.text

        done = await admin.post("/admin/jobs/run", {"job": "tidy"})
        assert done.status == 303 and done.location == "/admin/jobs"
        shown = await admin.get(done.location)
        assert shown.notice == "tidy ran: tidied 2"
        assert shown.text.count('class="run"') == 2 and "tidied 2" in shown.text
        again = await admin.get("/admin/jobs")
        assert again.notice is None  # a notice is shown once
        runs = await world.db.read(lambda s: s.scalars(
            select(JobRun.summary).where(JobRun.job == "tidy").order_by(JobRun.id)))
        assert list(runs) == ["tidied 1", "tidied 2"]

        unknown = await admin.post("/admin/jobs/run", {"job": "nope"})
        assert (await admin.get(unknown.location)).notice == \
            "This job is not run by this process."


async def test_the_overview_speaks_the_admins_language(db_url: str) -> None:
    async with dashboard_world(db_url) as world:
        admin = await world.user(ADMIN)
        await world.services["users"].set_language(admin.id, "fr")
        browser = await world.sign_in()
        page = await browser.get("/admin/jobs")
        assert 'lang="fr"' in page.text
        assert "<h1>Tâches de fond</h1>" in page.text and "Se déconnecter" in page.text
