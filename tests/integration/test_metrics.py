"""/metrics and /health over HTTP on both engines: the status codes, the access rule (the
HEALTH_TOKEN bearer, or loopback without a proxy header) and the metric names."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from bot.web import build_web_app
from database.engine import Database, create_engine
from database.models import DeliveryAttempt, Notification
from services.clock import FakeClock
from services.health import SystemHealth
from services.notifications import outbox
from services.recovery_jobs import stuck_condition
from tests.integration.test_health import FROM_OUTSIDE, TOKEN, serving
from tests.integration.workflow_world import build_world

EXPECTED = {
    "servicedesk_health_status",
    "servicedesk_component_ok",
    "servicedesk_database_latency_seconds",
    "servicedesk_outbox_depth",
    "servicedesk_outbox_oldest_due_age_seconds",
    "servicedesk_dead_letters",
    "servicedesk_dead_letters_last_24h",
    "servicedesk_manual_tasks_open",
    "servicedesk_sends_last_hour",
    "servicedesk_send_failures_last_hour",
    "servicedesk_enqueue_to_send_seconds",
    "servicedesk_channel_circuit_open",
    "servicedesk_channel_paused",
    "servicedesk_stuck_workflows",
    "servicedesk_errors_last_hour",
    "servicedesk_job_last_outcome",
    "servicedesk_job_consecutive_failures",
}


async def test_metrics_answer_trusted_callers_only_with_every_metric(db: Database) -> None:
    world = await build_world(db)
    now = world.clock.now()
    admin = world.people["ada"].id

    async def seed(session) -> None:
        dead = await outbox.enqueue(session, recipient_id=admin, kind="test",
                                    idempotency_key="dead-1", text="hi", now=now)
        await session.execute(update(Notification).where(Notification.id == dead.id).values(
            status="failed", failed_at=now))
        sent = await outbox.enqueue(session, recipient_id=admin, kind="test",
                                    idempotency_key="sent-1", text="hi", now=now)
        await session.execute(update(Notification).where(Notification.id == sent.id).values(
            status="sent", sent_at=now))
        session.add(DeliveryAttempt(notification_id=sent.id, channel="telegram", outcome="sent",
                                    at=now))

    await db.run(seed)
    system = SystemHealth(db, world.clock, stuck_condition=stuck_condition(world.requests.config),
                          max_age=5)
    system.enabled_channels = ("telegram",)
    system.job_names = lambda: ("cleanup",)
    app = build_web_app(db, system.checks, health_token=TOKEN, clock=world.clock)
    async with serving(app) as base, aiohttp.ClientSession() as http:
        for headers, status in (
            (FROM_OUTSIDE, 401),
            ({**FROM_OUTSIDE, "Authorization": f"Bearer {TOKEN}x"}, 403),
            ({**FROM_OUTSIDE, "Authorization": f"Bearer {TOKEN}"}, 200),
            ({}, 200),  # loopback, no proxy header
        ):
            async with http.get(f"{base}/metrics", headers=headers) as response:
                assert response.status == status, headers
                body = await response.text()
        assert response.headers["Content-Type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(body)}
        assert EXPECTED - set(families) == set()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in families.values() for s in f.samples}
        assert samples[("servicedesk_dead_letters", ())] == 1
        assert samples[("servicedesk_outbox_depth",
                        (("channel", "telegram"), ("status", "failed")))] == 1
        assert samples[("servicedesk_health_status", (("status", "degraded"),))] == 1
        assert samples[("servicedesk_enqueue_to_send_seconds_count", ())] == 1
        assert samples[("servicedesk_sends_last_hour", (("channel", "telegram"),))] == 1

        async with http.get(f"{base}/health", headers=FROM_OUTSIDE) as response:
            assert response.status == 200
            assert (await response.json())["status"] == "degraded"
        for probe in ("/health/live", "/health/ready"):
            async with http.get(f"{base}{probe}", headers=FROM_OUTSIDE) as response:
                assert response.status == 200


async def test_health_is_503_and_metrics_say_down_when_the_database_is_gone() -> None:
    clock = FakeClock()
    unreachable = Database(create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none"))
    system = SystemHealth(unreachable, clock, stuck_condition=None, max_age=5)
    try:
        app = build_web_app(unreachable, system.checks, health_token=TOKEN, clock=clock)
        async with serving(app) as base, aiohttp.ClientSession() as http:
            async with http.get(f"{base}/health", headers=FROM_OUTSIDE) as response:
                assert response.status == 503
                assert await response.json() == {"status": "down",
                                                 "reasons": ["database: unreachable"]}
            async with http.get(f"{base}/metrics") as response:
                assert response.status == 200
                body = await response.text()
            assert 'servicedesk_health_status{status="down"} 1.0' in body
            async with http.get(f"{base}/health/ready") as response:
                assert response.status == 503
    finally:
        await unreachable.dispose()
