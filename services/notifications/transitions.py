"""How a notification moves between states: the rules, written once.

A notification is pending (due at `next_attempt_at`, on the channel at `channel_index` of its
chain), sending (leased to a dispatcher), sent, failed (a dead letter), cancelled or archived.
Every move along the chain of channels (and out of it) is decided here, as a `Step`, by a
pure function; taking and releasing leases (`batches`, `outbox.release_expired_leases`) and an
admin's cancel or archive (`outbox`) are not moves along the chain and live with their queries:

- `wait`: pending again at a given time, on the same channel or a later one;
- `move_to`: pending now on a later channel (the first usable one);
- `next_channel`: pending now on the next channel, or a dead letter when the chain is spent or
  the notification may not fall back;
- `dead`: a dead letter, with the reason an admin will read;
- `out_of_time`: a dead letter once the age budget is spent;
- `restart`: pending now on the first channel with fresh budgets, the age budget included;
  `created_at` keeps the row's history, `restarted_at` says where the new budget starts.

A step onto another channel starts it afresh: no attempts on it and no parts sent yet. The
dispatcher applies steps to its in-memory outcomes (`delivery.Outcome.apply`, its hot path);
receipts and admin actions apply them to rows (`apply`), which wakes the dispatcher (`wake`)
after commit when the row is due again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import text as sql
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Notification, NotificationStatus
from services.notifications.failures import Failure

# Set in session.info by `wake`; the Database calls the dispatcher's wake-up after such a commit.
WAKE_FLAG = "outbox_wake"
# PostgreSQL: the NOTIFY channel dispatchers of other processes LISTEN on.
PG_CHANNEL = "outbox"
_NOTIFY = sql(f"NOTIFY {PG_CHANNEL}")

PENDING = NotificationStatus.PENDING
FAILED = NotificationStatus.FAILED


class Step(NamedTuple):
    """A notification's next state."""

    status: NotificationStatus  # PENDING or FAILED
    channel_index: int
    # Another channel, or a restart: its attempts and parts sent start at 0.
    fresh: bool
    due_at: datetime | None  # when a pending notification is due; None for a dead letter
    reason: str | None = None  # why it is a dead letter
    # The budgets start again, its age included (a restart; only rows are restarted).
    restarted: bool = False


def describe(failure: Failure) -> str:
    """A failure as dead-letter reasons and error texts quote it."""
    return f"{failure.provider} {failure.code}: {failure.text}"


def wait(current: int, until: datetime, *, on: int | None = None) -> Step:
    """Pending until `until`, on channel `on` (default: the current one)."""
    index = current if on is None else on
    return Step(PENDING, index, index != current, until)


def move_to(current: int, index: int, now: datetime) -> Step:
    """Pending now on channel `index` (the current one, or a later one it skips to)."""
    return Step(PENDING, index, index != current, now)


def dead(current: int, reason: str) -> Step:
    return Step(FAILED, current, False, None, reason)


def next_channel(
    current: int, chain_length: int, *, allow_fallback: bool, after: Failure, now: datetime
) -> Step:
    """The current channel cannot deliver: the next one now, or a dead letter."""
    if not allow_fallback:
        return dead(current, f"fallback not allowed after {describe(after)}")
    if current + 1 >= chain_length:
        return dead(current, f"no channel left after {describe(after)}")
    return Step(PENDING, current + 1, True, now)


def out_of_time(
    current: int, budget_from: datetime, now: datetime, max_age: timedelta
) -> Step | None:
    """A dead letter when the notification was not delivered within `max_age` of the start of
    its budget (its creation, or its last restart); else None."""
    if now - budget_from > max_age:
        return dead(current, f"older than {max_age} and not delivered")
    return None


def restart(now: datetime) -> Step:
    """Send again from the first channel, with every budget fresh."""
    return Step(PENDING, 0, True, now, restarted=True)


async def apply(session: AsyncSession, row: Notification, step: Step, *, now: datetime) -> None:
    """Write `step` to a row in the caller's unit of work (receipts, admin actions)."""
    row.status = step.status.value
    row.channel_index = step.channel_index
    row.channel = row.chain[step.channel_index]
    if step.fresh:
        # What belonged to the channel left behind: a receipt for that message changes nothing.
        row.channel_attempts = row.parts_sent = 0
        row.provider_message_id = row.sent_at = None
    if step.restarted:
        row.restarted_at = now
    row.lease_until = row.lease_owner = None
    row.updated_at = now
    if step.status is FAILED:
        row.failed_at = now
        row.last_error_text = step.reason
        return
    row.failed_at = None
    row.next_attempt_at = step.due_at or now
    await wake(session)


async def wake(session: AsyncSession) -> None:
    """Due work is being written: wake this process's dispatcher after commit, and on
    PostgreSQL the dispatchers of other processes (NOTIFY is delivered at commit too).

    Once per transaction: one wake-up finds every due row, and a NOTIFY per row would be a
    round trip per row. (A NOTIFY undone with a savepoint is not sent again; other processes
    then find that work at their next idle look.)
    """
    if session.info.get(WAKE_FLAG):
        return
    session.info[WAKE_FLAG] = True
    if session.bind.dialect.name == "postgresql":
        await session.execute(_NOTIFY)
