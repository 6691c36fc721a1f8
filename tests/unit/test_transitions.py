"""The rules that move a notification between states, and their two applications: to the
dispatcher's in-memory outcome and to a row (with a stand-in session: no database needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Notification, NotificationStatus
from services.notifications import transitions
from services.notifications.batches import Job
from services.notifications.channels.base import Recipient
from services.notifications.delivery import Outcome
from services.notifications.failures import Failure, FailureClass

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
BLOCKED = Failure(FailureClass.PERMANENT, "telegram", "403", "bot was blocked")
PENDING, FAILED = NotificationStatus.PENDING, NotificationStatus.FAILED


class StandInSession:
    """What `transitions.apply` and `wake` use of an AsyncSession, and what they sent."""

    def __init__(self, dialect: str = "sqlite") -> None:
        self.info: dict[str, Any] = {}
        self.bind = SimpleNamespace(dialect=SimpleNamespace(name=dialect))
        self.statements: list[str] = []

    async def execute(self, statement: Any) -> None:
        self.statements.append(str(statement))


def _as_session(stand_in: StandInSession) -> AsyncSession:
    return cast(AsyncSession, stand_in)


def _row(**values: Any) -> Notification:
    defaults: dict[str, Any] = dict(
        id=1, kind="request.update", status="sent", channel_chain="whatsapp,sms,manual",
        channel_index=0, channel="whatsapp", channel_attempts=2, parts_sent=1, attempts=3,
        provider_message_id="wamid.1", sent_at=NOW - timedelta(minutes=5),
        created_at=NOW - timedelta(hours=30), restarted_at=None, failed_at=None,
        lease_until=None, lease_owner=None, next_attempt_at=NOW - timedelta(minutes=5),
    )
    return Notification(**(defaults | values))


def _outcome(channel_index: int = 0) -> Outcome:
    job = Job(1, "k", {"text": "hi"}, "key", ("telegram", "whatsapp"), channel_index, 2, 1, 0,
              True, NOW, Recipient(7), frozenset())
    return Outcome(job, channel_index=channel_index, channel_attempts=2, parts_sent=1)


# --- the rules ---------------------------------------------------------------------------------

def test_waiting_on_the_same_channel_keeps_its_counters_and_on_another_starts_it_afresh() -> None:
    later = NOW + timedelta(minutes=1)
    assert transitions.wait(1, later) == (PENDING, 1, False, later, None, False)
    assert transitions.wait(1, later, on=2) == (PENDING, 2, True, later, None, False)
    assert transitions.move_to(1, 1, NOW).fresh is False
    assert transitions.move_to(1, 3, NOW) == (PENDING, 3, True, NOW, None, False)


def test_next_channel_moves_on_now_or_dead_letters_with_the_reason() -> None:
    assert transitions.next_channel(0, 3, allow_fallback=True, after=BLOCKED, now=NOW) == (
        PENDING, 1, True, NOW, None, False)
    spent = transitions.next_channel(2, 3, allow_fallback=True, after=BLOCKED, now=NOW)
    assert spent == (FAILED, 2, False, None,
                     "no channel left after telegram 403: bot was blocked", False)
    # May not fall back: dead on its one channel, and the reason says why.
    stuck = transitions.next_channel(0, 3, allow_fallback=False, after=BLOCKED, now=NOW)
    assert (stuck.status, stuck.channel_index) == (FAILED, 0)
    assert stuck.reason == "fallback not allowed after telegram 403: bot was blocked"


def test_a_notification_past_its_age_budget_is_a_dead_letter() -> None:
    day = timedelta(hours=24)
    assert transitions.out_of_time(0, NOW - day, NOW, day) is None  # exactly spent: still sent
    expired = transitions.out_of_time(1, NOW - day - timedelta(seconds=1), NOW, day)
    assert expired is not None and (expired.status, expired.channel_index) == (FAILED, 1)
    assert expired.reason == "older than 1 day, 0:00:00 and not delivered"


def test_a_restart_is_the_first_channel_now_with_every_budget_fresh() -> None:
    assert transitions.restart(NOW) == (PENDING, 0, True, NOW, None, True)


# --- applied to the dispatcher's outcome --------------------------------------------------------

def test_an_outcome_takes_a_step_as_a_row_would() -> None:
    waiting = _outcome(1)
    waiting.apply(transitions.wait(1, NOW))
    assert (waiting.status, waiting.channel_index, waiting.channel_attempts, waiting.parts_sent,
            waiting.next_attempt_at) == ("pending", 1, 2, 1, NOW)
    moved = _outcome(0)
    moved.apply(transitions.next_channel(0, 2, allow_fallback=True, after=BLOCKED, now=NOW))
    assert (moved.status, moved.channel_index, moved.channel_attempts, moved.parts_sent) == (
        "pending", 1, 0, 0)
    dead = _outcome(1)
    dead.apply(transitions.next_channel(1, 2, allow_fallback=True, after=BLOCKED, now=NOW))
    assert (dead.status, dead.channel_index, dead.channel_attempts) == ("failed", 1, 2)
    assert dead.dead_reason and dead.dead_reason.startswith("no channel left")
    assert dead.next_attempt_at is None  # recording writes its own time


# --- applied to a row ---------------------------------------------------------------------------

async def test_a_row_moved_on_forgets_the_channel_it_left_and_wakes_the_dispatcher() -> None:
    row, session = _row(), StandInSession()
    step = transitions.next_channel(0, 3, allow_fallback=True, after=BLOCKED, now=NOW)
    await transitions.apply(_as_session(session), row, step, now=NOW)
    assert (row.status, row.channel_index, row.channel, row.next_attempt_at) == (
        "pending", 1, "sms", NOW)
    # A late receipt for the message on WhatsApp must not find this row any more.
    assert (row.channel_attempts, row.parts_sent, row.provider_message_id, row.sent_at) == (
        0, 0, None, None)
    assert (row.failed_at, row.updated_at) == (None, NOW)
    assert session.info[transitions.WAKE_FLAG] is True


async def test_a_dead_row_keeps_what_it_sent_and_wakes_nobody() -> None:
    row, session = _row(channel_index=2, channel="manual"), StandInSession()
    step = transitions.next_channel(2, 3, allow_fallback=True, after=BLOCKED, now=NOW)
    await transitions.apply(_as_session(session), row, step, now=NOW)
    assert (row.status, row.channel, row.failed_at) == ("failed", "manual", NOW)
    assert row.last_error_text == step.reason
    assert row.provider_message_id == "wamid.1"  # which message failed stays on record
    assert transitions.WAKE_FLAG not in session.info


async def test_a_restarted_row_keeps_its_creation_and_counts_its_age_from_now() -> None:
    created = NOW - timedelta(hours=30)
    row = _row(status="failed", channel_index=2, channel="manual", failed_at=NOW,
               created_at=created)
    await transitions.apply(_as_session(StandInSession()), row, transitions.restart(NOW), now=NOW)
    assert (row.status, row.channel_index, row.channel, row.failed_at) == (
        "pending", 0, "whatsapp", None)
    assert (row.created_at, row.restarted_at) == (created, NOW)


async def test_waking_sends_one_notify_per_transaction_on_postgresql_only() -> None:
    postgres = StandInSession("postgresql")
    for _ in range(3):
        await transitions.wake(_as_session(postgres))
    assert postgres.statements == ["NOTIFY outbox"]
    sqlite = StandInSession("sqlite")
    await transitions.wake(_as_session(sqlite))
    assert sqlite.statements == [] and sqlite.info[transitions.WAKE_FLAG] is True
