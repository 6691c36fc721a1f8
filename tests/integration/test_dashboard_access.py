"""Who gets into the dashboard, over real HTTP to the bot's web app on a real database: the
one-time sign-in link (a GET never spends it, one POST does, once, within ten minutes), the
session cookie and its flags, the admin check on every request, the CSRF check on every POST,
sign-out, the security headers, and the clean-up of what expired."""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import timedelta
from http.cookies import SimpleCookie

import pytest
from sqlalchemy import func, select

from database.models import DashboardLoginToken, DashboardSession, JobRun, Role
from services.dashboard_access import digest
from services.recovery_jobs import RecoveryJobsConfig, clean_up
from services.scheduler import Scheduler
from tests.integration.dashboard_support import ADMIN, DashboardWorld, dashboard_world

BOB = 9100  # an admin by a grant of the People screen, not an owner


def _set_cookie(headers) -> SimpleCookie:
    cookie: SimpleCookie = SimpleCookie()
    for value in headers.getall("Set-Cookie", []):
        cookie.load(value)
    return cookie


async def _count(world: DashboardWorld, model) -> int:
    return await world.db.read(lambda s: s.scalar(select(func.count()).select_from(model)))


async def _live_sessions(world: DashboardWorld) -> int:
    return await world.db.read(lambda s: s.scalar(
        select(func.count()).select_from(DashboardSession)
        .where(DashboardSession.ended_at.is_(None))))


async def test_the_link_signs_in_once_with_one_click(db_url: str) -> None:
    async with dashboard_world(db_url) as world:
        browser = world.browser()
        link = await world.login_link()

        # Opening the link (as a link preview or a mail scanner would, twice) spends nothing.
        for _ in range(2):
            page = await browser.get(link)
            assert page.status == 200
            assert 'id="sign-in"' in page.text and "signs you in once" in page.text
        assert (await browser.get("/admin/")).status == 302

        signed = await browser.post(link)
        assert signed.status == 303 and signed.location == "/admin/"
        cookie = _set_cookie(signed.headers)["dashboard_session"]
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "Strict"
        assert cookie["path"] == "/admin"
        assert not cookie["secure"]  # PUBLIC_BASE_URL is not https here
        assert cookie.value and cookie.value not in link

        overview = await browser.get("/admin/")
        assert overview.status == 200 and "System status" in overview.text
        assert "Signed in as Ada" in overview.text
        # Only hashes are stored.
        stored = await world.db.read(lambda s: s.scalar(select(DashboardSession.session_hash)))
        assert stored == digest(cookie.value) != cookie.value


async def test_the_cookie_is_secure_behind_https(db_url: str) -> None:
    async with dashboard_world(db_url, public_base_url="https://desk.example.com") as world:
        browser = world.browser()
        signed = await browser.post(await world.login_link())
        assert signed.status == 303
        assert _set_cookie(signed.headers)["dashboard_session"]["secure"] is True


async def test_a_used_expired_or_forged_link_grants_nothing(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with dashboard_world(db_url) as world:
        link = await world.login_link()
        first = world.browser()
        assert (await first.post(link)).status == 303

        caplog.set_level(logging.WARNING, logger="services.dashboard_access")
        again = world.browser()
        page = await again.get(link)
        assert page.status == 410 and "It was used already" in page.text
        assert "send /dashboard to the bot" in page.text
        refused = await again.post(link)
        assert refused.status == 410 and "It was used already" in refused.text
        assert "dashboard_session" not in _set_cookie(refused.headers)
        assert (await again.get("/admin/")).status == 302

        expiring = await world.login_link()
        world.clock.advance(minutes=10, seconds=1)
        late = world.browser()
        page = await late.post(expiring)
        assert page.status == 410 and "It has expired" in page.text
        assert (await late.get("/admin/")).status == 302

        forged = f"/admin/login/{secrets.token_urlsafe(32)}"
        page = await late.post(forged)
        assert page.status == 410 and "It is not a link the bot gave" in page.text

        assert await _count(world, DashboardSession) == 1  # the first sign-in's only
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        for reason, path in (("used", link), ("expired", expiring), ("unknown", forged)):
            token = path.rsplit("/", 1)[1]
            said = [w for w in warnings if f"refused: {reason} token redeemed" in w]
            assert any(digest(token)[:10] in w for w in said), warnings
        assert not any(path.rsplit("/", 1)[1] in w for w in warnings
                       for path in (link, expiring, forged))


async def test_a_flood_of_made_up_links_logs_one_line_not_one_per_try(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone who reaches /admin/ can try links by the thousand: the log stays readable."""
    async with dashboard_world(db_url) as world:
        caplog.set_level(logging.WARNING, logger="services.dashboard_access")
        stranger = world.browser()
        for _ in range(20):
            page = await stranger.post(f"/admin/login/{secrets.token_urlsafe(32)}")
            assert page.status == 410
        said = [r.getMessage() for r in caplog.records
                if "refused: unknown token redeemed" in r.getMessage()]
        assert len(said) == 1, said
        assert await _count(world, DashboardSession) == 0


async def test_two_clicks_at_once_open_one_session(db_url: str) -> None:
    async with dashboard_world(db_url) as world:
        link = await world.login_link()
        browsers = [world.browser() for _ in range(4)]
        pages = await asyncio.gather(*(b.post(link) for b in browsers))
        assert sorted(p.status for p in pages) == [303, 410, 410, 410]
        assert await _count(world, DashboardSession) == 1
        winner = browsers[[p.status for p in pages].index(303)]
        assert (await winner.get("/admin/")).status == 200


async def test_without_a_session_every_page_leads_to_the_explanation(db_url: str) -> None:
    async with dashboard_world(db_url) as world:
        browser = world.browser()
        for path in ("/admin/", "/admin/jobs", "/admin/no-such-page", "/admin"):
            page = await browser.get(path)
            assert page.status == 302, path
            assert page.location in ("/admin/signin", "/admin/"), path
        assert (await browser.post("/admin/jobs/run", {"job": "x"}, csrf="")).status == 302
        status, body = await browser.json("/admin/overview.json")
        assert status == 401 and body == {"error": "signed out"}
        signin = await browser.get("/admin/signin")
        assert signin.status == 200 and "send /dashboard to the bot" in signin.text
        assert 'href="/admin/jobs"' not in signin.text  # no navigation for strangers
        # A cookie that is not a session's is no session.
        browser.session.cookie_jar.update_cookies({"dashboard_session": "made-up"},
                                                  response_url=world.server.make_url("/admin/"))
        assert (await browser.get("/admin/")).status == 302


async def test_an_expired_session_needs_a_new_link(db_url: str) -> None:
    async with dashboard_world(db_url, dashboard_session_hours=2) as world:
        browser = await world.sign_in()
        world.clock.advance(hours=1, minutes=59)
        assert (await browser.get("/admin/")).status == 200
        world.clock.advance(minutes=2)
        page = await browser.get("/admin/")
        assert page.status == 302 and page.location == "/admin/signin"


async def test_an_admin_whose_right_is_revoked_is_refused_at_once(db_url: str) -> None:
    async with dashboard_world(db_url) as world:
        owner = await world.user(ADMIN)
        bob = await world.user(BOB, "Bob")
        people = world.services["people"]
        await people.grant(owner.id, bob.id, Role.ADMIN)
        browser = await world.sign_in(BOB)

        await people.revoke(owner.id, bob.id, Role.ADMIN)
        page = await browser.get("/admin/jobs")
        assert page.status == 403
        assert "you are not an admin any more" in page.text
        assert await _live_sessions(world) == 0  # the session was ended
        # Even with the right back, that session stays over: a new link is needed.
        await people.grant(owner.id, bob.id, Role.ADMIN)
        assert (await browser.get("/admin/")).status == 302

        # A link issued while an admin does not sign in someone who no longer is.
        link = await world.login_link(BOB)
        await people.revoke(owner.id, bob.id, Role.ADMIN)
        refused = await world.browser().post(link)
        assert refused.status == 403 and "dashboard_session" not in _set_cookie(refused.headers)


async def test_a_post_without_the_csrf_token_does_nothing(db_url: str) -> None:
    async with dashboard_world(db_url) as world:
        runs: list[str] = []

        async def tidy(now) -> str:
            runs.append("ran")
            return "tidied"

        scheduler = Scheduler(world.db, world.clock, world.services["service_requests"].alerts,
                              owner="test:1")
        scheduler.add_job("tidy", tidy, every=timedelta(hours=1))
        world.services["background_jobs"].scheduler = scheduler
        browser = await world.sign_in()

        for token in ("", "x" * 43, world.browsers[0].csrf + "x"):
            page = await browser.post("/admin/jobs/run", {"job": "tidy"}, csrf=token)
            assert page.status == 403, token
            assert "nothing was done" in page.text
        assert runs == []
        assert await _count(world, JobRun) == 0

        done = await browser.post("/admin/jobs/run", {"job": "tidy"})
        assert done.status == 303 and runs == ["ran"]


async def test_sign_out_ends_the_session(db_url: str) -> None:
    async with dashboard_world(db_url) as world:
        browser = await world.sign_in()
        secret = browser.cookie().value
        assert (await browser.post("/admin/logout", csrf="")).status == 403  # CSRF applies
        out = await browser.post("/admin/logout")
        assert out.status == 303 and out.location == "/admin/signin?out=1"
        assert (await browser.get(out.location)).text.count("You are signed out.") == 1
        assert (await browser.get("/admin/")).status == 302
        # The old cookie, replayed, is worth nothing.
        replay = world.browser()
        replay.session.cookie_jar.update_cookies({"dashboard_session": secret},
                                                 response_url=world.server.make_url("/admin/"))
        assert (await replay.get("/admin/")).status == 302
        assert await _live_sessions(world) == 0


async def test_every_dashboard_answer_carries_the_security_headers(db_url: str) -> None:
    async with dashboard_world(db_url) as world:
        stranger = world.browser()
        admin = await world.sign_in()
        answers = [
            await stranger.get("/admin/"),
            await stranger.get("/admin/signin"),
            await stranger.get(await world.login_link()),
            await stranger.get("/admin/login/forged"),
            await stranger.get("/admin/static/style.css"),
            await stranger.get("/admin/static/dashboard.js"),
            await admin.get("/admin/"),
            await admin.get("/admin/no-such-page"),
            await admin.post("/admin/jobs/run", {"job": "x"}, csrf=""),
        ]
        for page in answers:
            headers = page.headers
            assert headers["Content-Security-Policy"].startswith("default-src 'self'"), page
            assert headers["X-Frame-Options"] == "DENY"
            assert headers["Referrer-Policy"] == "no-referrer"
            assert headers["Cache-Control"] == "no-store"
        assert answers[4].status == 200 and answers[5].status == 200  # static needs no session
        assert answers[7].status == 404
        async with world.browser().session.get("/health/live") as health:
            assert "Content-Security-Policy" not in health.headers  # the rest of the app: as before


async def test_the_clean_up_deletes_expired_links_and_sessions(db_url: str) -> None:
    async with dashboard_world(db_url, dashboard_session_hours=12) as world:
        await world.sign_in()  # a used link and a session
        await world.login_link()  # a link never used
        world.clock.advance(hours=12, seconds=1)
        fresh = await world.login_link()
        done = await clean_up(world.db, world.clock.now(), RecoveryJobsConfig())
        assert done["dashboard_access"] == 3
        assert await _count(world, DashboardSession) == 0
        tokens = await world.db.read(lambda s: s.scalars(select(DashboardLoginToken.token_hash)))
        assert list(tokens) == [digest(fresh.rsplit("/", 1)[1])]
        assert (await world.browser().post(fresh)).status == 303
