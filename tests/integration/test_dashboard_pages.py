"""The dashboard's Delivery, Dead letters, Manual tasks, Stuck workflows and Errors pages over
real HTTP to the real web app, on both engines: each page renders what the database holds,
each action does what the /workflow_recovery menu's action does and leaves the same audit rows
naming the signed-in admin, filters and pages work, and an action on something that moved on
is refused with a notice."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from database.models import (
    DeliveryAttempt,
    ErrorGroup,
    ManualTask,
    Notification,
    TransactionLog,
    WorkflowRecoveryLog,
)
from services.users import ensure_telegram_user
from services.workflow import NewRequest, State
from services.workflow.catalogue import ensure_area, ensure_provider, ensure_service_type
from tests.integration.dashboard_support import ADMIN, DashboardWorld, dashboard_world


async def _admin_id(world: DashboardWorld) -> int:
    return (await world.user(ADMIN)).id


async def _dead_letters(world: DashboardWorld, *kinds: str, channel: str = "telegram",
                        failure_class: str = "permanent", attempts: int = 1) -> list[int]:
    """Dead letters to a user, each with `attempts` failed attempts."""
    user = await world.user(5001, "Ann")
    now = world.clock.now()

    async def work(session: Any) -> list[int]:
        rows = []
        for index, kind in enumerate(kinds):
            row = Notification(
                recipient_id=user.id, kind=kind, payload={"text": f"Hello {index}"},
                priority=5, idempotency_key=f"dead:{kind}:{index}:{channel}:{failure_class}",
                allow_fallback=False, channel_chain=channel, channel_index=0, channel=channel,
                status="failed", attempts=attempts, channel_attempts=attempts, parts_sent=0,
                next_attempt_at=now, created_at=now - timedelta(minutes=5), updated_at=now,
                failed_at=now - timedelta(seconds=index), last_error_class=failure_class,
                last_error_code="403", last_error_text="Forbidden: bot was blocked by the user",
            )
            session.add(row)
            await session.flush()
            for attempt in range(attempts):
                session.add(DeliveryAttempt(
                    notification_id=row.id, channel=channel, outcome="failed",
                    error_class=failure_class, error_code="403", error_text=f"try {attempt}",
                    at=now - timedelta(minutes=4) + timedelta(seconds=attempt)))
            rows.append(row.id)
        return rows

    return await world.db.run(work)


async def _status(world: DashboardWorld, notification_id: int) -> str:
    return str(await world.db.read(lambda s: s.scalar(
        select(Notification.status).where(Notification.id == notification_id))))


async def _audit(world: DashboardWorld, operation: str) -> list[TransactionLog]:
    return list(await world.db.read(lambda s: s.scalars(
        select(TransactionLog).where(TransactionLog.operation == operation)
        .order_by(TransactionLog.id))))


def _rows(page_text: str, table_id: str) -> list[str]:
    """The data-id of each row of the table with that id."""
    found = re.search(rf'<table id="{table_id}">(.*?)</table>', page_text, re.S)
    return re.findall(r'<tr data-id="(\d+)"', found.group(1)) if found else []


# --- delivery -----------------------------------------------------------------------------------


async def test_the_delivery_page_charts_attempts_and_shows_wait_percentiles(
    db_url: str,
) -> None:
    async with dashboard_world(db_url) as world:
        [first, second] = await _dead_letters(world, "a", "b")
        now = world.clock.now()

        async def attempts(session: Any) -> None:
            session.add(DeliveryAttempt(notification_id=first, channel="whatsapp",
                                        outcome="sent", at=now - timedelta(seconds=30)))
            row = await session.get(Notification, second)
            row.status, row.sent_at = "sent", now - timedelta(seconds=10)
            row.created_at = now - timedelta(seconds=70)

        await world.db.run(attempts)
        admin = await world.sign_in()
        page = await admin.get("/admin/delivery")

        assert page.status == 200
        block = re.search(r'<script type="application/json" id="delivery-data"[^>]*>(.*?)</script>',
                          page.text, re.S)
        assert block is not None
        charts = json.loads(block.group(1))
        hour = charts["hour"]
        assert len(hour["x"]) == 60 and hour["step"] == 60
        # Two failed first tries on Telegram, one retry that WhatsApp sent.
        assert sum(hour["measures"]["failed"]["telegram"]) == 2
        assert sum(hour["measures"]["sent"]["whatsapp"]) == 1
        assert sum(hour["measures"]["retried"]["whatsapp"]) == 1
        assert sum(hour["measures"]["retried"]["telegram"]) == 0
        assert len(charts["week"]["x"]) == 168
        assert 'data-measure="retried"' in page.text and "uPlot.iife.min.js" in page.text
        # The wait of the one notification sent: 60 s, in every percentile.
        waits = re.search(r'<tr data-window="1h" data-channel="all">(.*?)</tr>', page.text, re.S)
        assert waits is not None and waits.group(1).count("1m") == 3
        for path in ("/admin/static/vendor/uplot/uPlot.iife.min.js", "/admin/static/charts.js",
                     "/admin/static/vendor/uplot/uPlot.min.css"):
            assert (await admin.get(path)).status == 200


# --- dead letters -------------------------------------------------------------------------------


async def test_dead_letters_filter_detail_retry_and_archive_as_the_menu_does(
    db_url: str,
) -> None:
    async with dashboard_world(db_url) as world:
        [greeting] = await _dead_letters(world, "test.greeting", attempts=12)
        [other] = await _dead_letters(world, "test.other", channel="sms",
                                      failure_class="transient")
        admin = await world.sign_in()
        admin_id = await _admin_id(world)

        listing = await admin.get("/admin/dead-letters")
        assert _rows(listing.text, "dead-letters") == [str(other), str(greeting)]  # latest first
        assert '<option value="sms">sms (1)</option>' in listing.text
        assert '<option value="test.greeting">test.greeting (1)</option>' in listing.text
        for query in ("channel=sms", "kind=test.other", "failure_class=transient",
                      "channel=sms&kind=test.other&failure_class=transient"):
            filtered = await admin.get(f"/admin/dead-letters?{query}")
            assert _rows(filtered.text, "dead-letters") == [str(other)], query
        nothing = await admin.get("/admin/dead-letters?channel=sms&kind=test.greeting")
        assert _rows(nothing.text, "dead-letters") == [] and "No dead letter matches." in \
            nothing.text

        detail = await admin.get(f"/admin/dead-letters/{greeting}")
        assert detail.text.count('<tr class="attempt">') == 12  # every attempt, not the latest 10
        assert "try 0" in detail.text and "try 11" in detail.text

        # Retry with one of the menu's reasons (index 1: "The contact details were fixed").
        done = await admin.post(f"/admin/dead-letters/{greeting}/retry", {"reason": "1"})
        assert done.status == 303 and done.location == f"/admin/dead-letters/{greeting}"
        after = await admin.get(done.location)
        assert after.notice == "Sent again: it is back in the queue with a fresh budget."
        assert await _status(world, greeting) == "pending"
        [logged] = await _audit(world, "notification.retry")
        assert (logged.entity_id, logged.actor_id, logged.detail) == (
            str(greeting), admin_id, "The contact details were fixed")

        # The same form again: no longer a dead letter, nothing done.
        again = await admin.post(f"/admin/dead-letters/{greeting}/retry", {"reason": "1"})
        assert (await admin.get(again.location)).notice == \
            "Nothing done: it is no longer a dead letter."
        assert len(await _audit(world, "notification.retry")) == 1

        # Archive with a typed reason; without any reason nothing happens.
        refused = await admin.post(f"/admin/dead-letters/{other}/archive", {"reason": ""})
        assert "Say why" in (await admin.get(refused.location)).notice
        assert await _status(world, other) == "failed"
        archived = await admin.post(f"/admin/dead-letters/{other}/archive",
                                    {"reason": "", "reason_text": "  Customer left  "})
        assert (await admin.get(archived.location)).notice == "Archived."
        assert await _status(world, other) == "archived"
        [logged] = await _audit(world, "notification.archived")
        assert (logged.entity_id, logged.actor_id, logged.detail, logged.before,
                logged.after) == (str(other), admin_id, "Customer left", {"status": "failed"},
                                  {"status": "archived"})


async def test_retry_all_of_a_filter_confirms_its_count_and_refuses_a_changed_one(
    db_url: str,
) -> None:
    async with dashboard_world(db_url) as world:
        a1, a2, b = await _dead_letters(world, "kind.a", "kind.a", "kind.b")
        admin = await world.sign_in()

        listing = await admin.get("/admin/dead-letters?kind=kind.a")
        assert 'href="/admin/dead-letters/retry-all?kind=kind.a"' in listing.text
        asked = await admin.get("/admin/dead-letters/retry-all?kind=kind.a")
        assert "Send all 2 dead letter(s) again" in html.unescape(asked.text)
        assert [await _status(world, i) for i in (a1, a2)] == ["failed", "failed"]

        # A third one of that kind fails meanwhile: the confirmed count is out of date.
        [a3] = await _dead_letters(world, "kind.a", channel="sms")
        stale = await admin.post("/admin/dead-letters/retry-all",
                                 {"kind": "kind.a", "count": "2", "reason": "2"})
        assert stale.location == "/admin/dead-letters/retry-all?kind=kind.a"
        assert "changed in the meantime (now 3)" in (await admin.get(stale.location)).notice
        assert await _audit(world, "notification.retry_all") == []

        done = await admin.post("/admin/dead-letters/retry-all",
                                {"kind": "kind.a", "count": "3", "reason": "2"})
        assert done.location == "/admin/dead-letters?kind=kind.a"
        assert (await admin.get(done.location)).notice == "Sent 3 notification(s) again."
        assert [await _status(world, i) for i in (a1, a2, a3, b)] == [
            "pending", "pending", "pending", "failed"]
        [logged] = await _audit(world, "notification.retry_all")
        assert (logged.actor_id, logged.detail, logged.after) == (
            await _admin_id(world), "Trying once more",
            {"count": 3, "kind": "kind.a", "channel": None})


async def test_the_dead_letter_list_is_paginated(db_url: str) -> None:
    async with dashboard_world(db_url) as world:
        ids = await _dead_letters(world, *[f"bulk.{i:02d}" for i in range(30)])
        admin = await world.sign_in()
        first = await admin.get("/admin/dead-letters")
        # Latest failure first: the loader gave each an older failed_at than the one before.
        assert _rows(first.text, "dead-letters") == [str(i) for i in ids[:25]]
        assert 'rel="next" href="/admin/dead-letters?page=1"' in first.text
        second = await admin.get("/admin/dead-letters?page=1")
        assert _rows(second.text, "dead-letters") == [str(i) for i in ids[25:]]
        assert 'rel="prev"' in second.text and 'rel="next"' not in second.text
        beyond = await admin.get("/admin/dead-letters?page=9")  # past the end: the last page
        assert _rows(beyond.text, "dead-letters") == [str(i) for i in ids[25:]]


# --- manual tasks -------------------------------------------------------------------------------


async def test_a_manual_task_is_masked_revealed_and_closed_with_a_note(db_url: str) -> None:
    async with dashboard_world(db_url) as world:
        now = world.clock.now()

        async def task(session: Any) -> int:
            row = ManualTask(kind="request.assigned", status="open", created_at=now,
                             text="Please contact Ann\nPhone: +33612345678\n\nPaul comes at 9.")
            session.add(row)
            await session.flush()
            return row.id

        task_id = await world.db.run(task)
        admin = await world.sign_in()
        admin_id = await _admin_id(world)

        listing = await admin.get("/admin/tasks")
        assert f'id="task-{task_id}"' in listing.text and "Paul comes at 9." in listing.text
        assert "+33612345678" not in listing.text
        assert "Open manual tasks: 1, oldest first." in listing.text

        revealed = await admin.post(f"/admin/tasks/{task_id}/reveal")
        assert revealed.status == 200 and "Phone: +33612345678" in revealed.text
        [look] = await _audit(world, "manual_task.reveal")
        assert (look.entity_id, look.actor_id) == (str(task_id), admin_id)

        closed = await admin.post(f"/admin/tasks/{task_id}/close",
                                  {"reason": "", "reason_text": "Called her, all good"})
        assert (await admin.get(closed.location)).notice == f"Manual task #{task_id} closed."
        row = await world.db.read(lambda s: s.get(ManualTask, task_id))
        assert (row.status, row.note, row.closed_by) == ("closed", "Called her, all good",
                                                         admin_id)
        [logged] = await _audit(world, "manual_task.close")
        assert (logged.actor_id, logged.after) == (
            admin_id, {"status": "closed", "note": "Called her, all good"})

        again = await admin.post(f"/admin/tasks/{task_id}/close", {"reason": "0"})
        assert (await admin.get(again.location)).notice == "This task is already closed."
        assert len(await _audit(world, "manual_task.close")) == 1
        assert "No open manual task." in (await admin.get("/admin/tasks")).text


# --- stuck workflows ----------------------------------------------------------------------------


async def _assigned_request(
    world: DashboardWorld,
) -> tuple[int, dict[str, int], dict[str, str]]:
    """A plumbing request of Ann's, accepted by the provider it was offered to ("holder"),
    which the other one ("other") could take too: (request id, {"holder"|"other": provider
    id}, {"holder"|"other": name})."""
    now = world.clock.now()

    async def seed(session: Any) -> tuple[Any, dict[str, int], int, int]:
        people = {}
        for telegram_id, name in ((1001, "Ann"), (2001, "Paul"), (2002, "Fatou")):
            people[name] = await ensure_telegram_user(
                session, telegram_id=telegram_id, display_name=name, client_language="en",
                default_language="en", admin=False, now=now)
        service, _ = await ensure_service_type(session, code="plumbing", name_en="Plumbing",
                                               name_fr="Plomberie")
        area, _ = await ensure_area(session, code="north", name_en="North", name_fr="Nord")
        providers = {}
        for name in ("Paul", "Fatou"):
            provider, _ = await ensure_provider(
                session, user_id=people[name].id, service_type_ids=[service.id],
                area_ids=[area.id], now=now)
            providers[name] = provider.id
        return people, providers, service.id, area.id

    people, providers, service_id, area_id = await world.db.run(seed)
    requests = world.services["service_requests"]
    opened = await requests.open_request(people["Ann"], NewRequest(
        service_type_id=service_id, area_id=area_id, address="12 rue des Lilas",
        time_window="Monday", description="The sink leaks", photos=(), urgent=False))
    for holder, other in (("Paul", "Fatou"), ("Fatou", "Paul")):
        offers = [o for o in await requests.pending_offers(people[holder])
                  if o.request.id == opened.id]
        if offers:
            await requests.accept_offer(offers[0].id, people[holder])
            return opened.id, {"holder": providers[holder], "other": providers[other]}, {
                "holder": holder, "other": other}
    raise AssertionError("the request was offered to nobody")


async def _recovery_log(world: DashboardWorld) -> list[WorkflowRecoveryLog]:
    return list(await world.db.read(lambda s: s.scalars(
        select(WorkflowRecoveryLog).order_by(WorkflowRecoveryLog.id))))


async def test_a_stuck_workflow_is_forced_on_the_version_shown_and_a_stale_form_refused(
    db_url: str,
) -> None:
    async with dashboard_world(db_url) as world:
        request_id, _providers, names = await _assigned_request(world)
        admin = await world.sign_in()
        assert "No stuck workflow" in (await admin.get("/admin/stuck")).text
        world.clock.advance(hours=25)  # ASSIGNED counts as stuck after 24 h
        admin = await world.sign_in()  # the session of 25 h ago has expired

        listing = await admin.get("/admin/stuck")
        assert _rows(listing.text, "stuck") == [str(request_id)]
        assert "1d 1h" in listing.text
        detail = await admin.get(f"/admin/stuck/{request_id}")
        assert 'data-state="assigned"' in detail.text
        assert names["holder"] in detail.text and 'id="history"' in detail.text
        assert "<td>offered</td><td>assigned</td><td>accept</td>" in detail.text
        version = re.search(r'name="version" value="(\d+)"', detail.text).group(1)
        for name in ("force", "reset", "complete", "reassign"):
            assert f'action="/admin/stuck/{request_id}/{name}"' in detail.text

        done = await admin.post(f"/admin/stuck/{request_id}/force",
                                {"version": version, "reason": "1"})
        assert done.location == f"/admin/stuck/{request_id}"
        after = await admin.get(done.location)
        assert after.notice == "Done: assigned → in_progress. The people concerned are told."
        assert 'data-state="in_progress"' in after.text
        assert (await world.services["service_requests"].get(request_id)).state is \
            State.IN_PROGRESS
        [entry] = await _recovery_log(world)
        assert (entry.admin_id, entry.action, entry.request_id, entry.from_state,
                entry.to_state, entry.reason) == (
            await _admin_id(world), "force_next", request_id, "assigned", "in_progress",
            "The provider cannot be reached")
        assert "The provider cannot be reached" in after.text  # the recovery log on the page

        # The same form again, with the version it showed: refused, nothing changed.
        stale = await admin.post(f"/admin/stuck/{request_id}/force",
                                 {"version": version, "reason": "1"})
        assert (await admin.get(stale.location)).notice == \
            "This request changed in the meantime; here is how it stands now."
        assert (await world.services["service_requests"].get(request_id)).state is \
            State.IN_PROGRESS
        assert len(await _recovery_log(world)) == 1


async def test_reassign_to_a_provider_the_menu_offers_with_a_typed_reason(
    db_url: str,
) -> None:
    async with dashboard_world(db_url) as world:
        request_id, providers, names = await _assigned_request(world)
        world.clock.advance(hours=25)
        admin = await world.sign_in()
        detail = await admin.get(f"/admin/stuck/{request_id}")
        offered = re.findall(r'<option value="(\d+)">([^<]*)</option>',
                             detail.text.split('id="reassign-provider"')[1].split("</select>")[0])
        # Not the provider who holds it.
        assert offered == [(str(providers["other"]), f"{names['other']} (0/1)")]
        version = re.search(r'name="version" value="(\d+)"', detail.text).group(1)

        missing = await admin.post(f"/admin/stuck/{request_id}/reassign",
                                   {"version": version, "reason_text": "Ill"})
        assert (await admin.get(missing.location)).notice == \
            "Pick the provider to reassign it to."
        done = await admin.post(f"/admin/stuck/{request_id}/reassign", {
            "version": version, "provider": str(providers["other"]), "reason": "0",
            "reason_text": "Broke a wrist"})
        assert (await admin.get(done.location)).notice == \
            "Done: assigned → assigned. The people concerned are told."
        view = await world.services["service_requests"].get(request_id)
        assert view.assignee_name == names["other"]
        [entry] = await _recovery_log(world)
        assert (entry.action, entry.reason, entry.provider_id) == (
            "reassign", "Broke a wrist", providers["other"])


# --- errors -------------------------------------------------------------------------------------


async def test_errors_counted_found_by_support_code_and_resolved(db_url: str) -> None:
    async with dashboard_world(db_url) as world:
        recorder = world.services["error_recorder"]
        recorded = await recorder.record(RuntimeError("the disk is on fire at +33612345678"))
        await recorder.record(RuntimeError("the disk is on fire again"))
        admin = await world.sign_in()

        page = await admin.get("/admin/errors")
        assert '<span data-window="1h" class="window-total">2</span>' in page.text
        assert '<tr data-category="system"><td>system</td><td>0</td><td>0</td><td>2</td>' \
            in page.text
        [group_id] = _rows(page.text, "error-groups")

        found = await admin.get(f"/admin/errors?code={recorded.code.lower()}")
        assert found.status == 303
        assert found.location == f"/admin/errors/{group_id}?code={recorded.code}"
        missing = await admin.get("/admin/errors?code=NOPE")
        assert missing.notice == "No error has the support code NOPE."

        detail = await admin.get(found.location)
        assert f'data-code="{recorded.code}" class="searched"' in detail.text
        assert detail.text.count("<tr data-code=") == 2
        assert "RuntimeError: the disk is on fire again" in detail.text  # the latest message
        assert "+33612345678" not in detail.text

        done = await admin.post(f"/admin/errors/{group_id}/resolve")
        assert done.location == f"/admin/errors/{group_id}"
        assert (await admin.get(done.location)).notice == \
            "Marked resolved: 2 occurrence(s) of RuntimeError."
        group = await world.db.read(lambda s: s.get(ErrorGroup, int(group_id)))
        assert (group.resolved, group.resolved_by) == (True, await _admin_id(world))
        again = await admin.post(f"/admin/errors/{group_id}/resolve")
        assert (await admin.get(again.location)).notice == "Already resolved; nothing done."
        assert _rows((await admin.get("/admin/errors")).text, "error-groups") == []
        assert _rows((await admin.get("/admin/errors?resolved=1")).text, "error-groups") == [
            group_id]


async def test_an_action_without_the_csrf_token_changes_nothing(db_url: str) -> None:
    async with dashboard_world(db_url) as world:
        [dead] = await _dead_letters(world, "test.csrf")
        admin = await world.sign_in()
        refused = await admin.post(f"/admin/dead-letters/{dead}/retry", {"reason": "0"},
                                   csrf="")
        assert refused.status == 403
        assert await _status(world, dead) == "failed"
