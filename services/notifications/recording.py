"""Recording: a delivered batch's outcomes written in one transaction, with their side effects.

Promises:
- Only rows still leased to the batch's token are written (`batches`), with their attempt rows
  and no others, so a worker that lost its lease cannot overwrite someone else's result, and a
  record retried after it committed writes nothing twice; the lost ones are logged.
- The common batch (nothing but sends and waits) is one statement on PostgreSQL. Outcomes with
  side effects are written in one transaction with them: an opt-out recorded for the
  recipient, a broken channel's circuit opened (with a critical alert), a mended one closed,
  and a dead letter's alert to the admins (`dead_letters.alert_admins`).
- A side effect that fails is logged and undone alone (a savepoint): it never takes the
  batch's outcomes down with it.
- Receipts that arrived while the batch was being sent (stored by `receipts`, since no row had
  their message id yet) are applied right after the record, through `receipts`' own path: a
  failure reported early still moves the notification on. Only a batch with WhatsApp or SMS
  sends looks (one indexed read, without the writer's turn, then a unit of work only when one
  is there); if that fails, the scheduler's sweep applies them later.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import ChannelState, NotificationStatus
from services import contacts
from services.alerts import Alerts, Severity
from services.clock import Clock
from services.notifications import dead_letters, outbox, receipts, transitions
from services.notifications.batches import Batches, OutcomeRow
from services.notifications.config import DispatcherConfig
from services.notifications.delivery import Outcome, circuit_open_until, fit
from services.notifications.failures import Failure

log = logging.getLogger(__name__)

_FAILED = NotificationStatus.FAILED.value
_SENT = NotificationStatus.SENT.value
# The channels whose providers send receipts (so a receipt may arrive before the record).
_RECEIPT_CHANNELS = frozenset(receipts.PROVIDER_CHANNELS.values())


class Recorder:
    def __init__(
        self,
        db: Database,
        batches: Batches,
        clock: Clock,
        alerts: Alerts,
        config: DispatcherConfig,
    ) -> None:
        self.db = db
        self.batches = batches
        self.clock = clock
        self.alerts = alerts
        self.config = config

    async def record(self, outcomes: list[Outcome], token: str) -> None:
        now = self.clock.now()
        rows = [self._row(o, now) for o in outcomes]
        attempts = [row for o in outcomes for row in o.attempt_rows]
        # The common case has nothing beside the rows themselves to record.
        special = [
            o for o in outcomes if o.opt_outs or o.broken or o.healed or o.status == _FAILED
        ]
        if not special:
            written = await self.batches.record(
                self.db, now=now, owner=token, outcomes=rows, attempts=attempts
            )
        else:

            async def with_side_effects(session: AsyncSession) -> int:
                held = await self.batches.record_in(
                    session, now=now, owner=token, outcomes=rows, attempts=attempts
                )
                for o in special:
                    try:
                        # Its own savepoint: a side effect that fails (two workers creating
                        # the same channel state at once) must not undo the batch with it.
                        async with session.begin_nested():
                            await self._side_effects(session, o, now)
                            await session.flush()
                    except Exception:
                        log.exception("side effects of notification %s not recorded", o.job.id)
                return held

            written = await self.db.run(with_side_effects)
        if written < len(outcomes):
            # Their lease ended while this batch was sending (the process stalled longer than
            # a lease): whoever took them over owns them now, and their outcome (attempt rows
            # included) here is lost.
            log.warning("batch %s: %d of %d outcome(s) not written, their lease was lost",
                        token, len(outcomes) - written, len(outcomes))
        await self._apply_early_receipts(outcomes)

    async def _apply_early_receipts(self, outcomes: list[Outcome]) -> None:
        ids = [
            o.job.id for o in outcomes
            if o.status == _SENT and o.result is not None and o.result.provider_message_id
            and o.job.chain[min(o.channel_index, len(o.job.chain) - 1)] in _RECEIPT_CHANNELS
        ]
        if not ids:
            return
        try:
            if not await self.db.read(lambda s: receipts.has_stored_receipts(s, ids)):
                return
            applied = await self.db.run(lambda s: receipts.apply_stored_receipts(
                s, ids, now=self.clock.now(), alerts=self.alerts
            ))
        except Exception:
            # The batch is recorded whatever happens here; the sweep applies these later.
            log.exception("early receipts of a recorded batch not applied yet; the sweep will")
            return
        if applied:
            log.info("early receipts applied after the record: %s",
                     ", ".join(f"{name} {n}" for name, n in sorted(applied.items())))

    @staticmethod
    def _row(o: Outcome, now: datetime) -> OutcomeRow:
        job, failure = o.job, o.failure
        return OutcomeRow(
            id=job.id,
            status=o.status,
            channel_index=o.channel_index,
            channel=job.chain[min(o.channel_index, len(job.chain) - 1)],
            channel_attempts=o.channel_attempts,
            parts_sent=o.parts_sent,
            attempts=job.attempts + o.tries,
            next_attempt_at=o.next_attempt_at or now,
            last_error_class=failure.kind.value if failure else None,
            last_error_code=failure.code[:32] if failure else None,
            last_error_text=o.dead_reason or (failure.text if failure else None),
            provider_message_id=fit(o.result.provider_message_id, 128) if o.result else None,
            sent_at=o.sent_at,
            failed_at=now if o.status == _FAILED else None,
        )

    async def _side_effects(self, session: AsyncSession, o: Outcome, now: datetime) -> None:
        job = o.job
        for channel, reason in o.opt_outs.items():
            if await contacts.record_opt_out(
                session, user_id=job.recipient.user_id, channel=channel, now=now, reason=reason
            ):
                log.info("user %s opted out of %s (%s)", job.recipient.user_id, channel, reason)
        if o.broken or o.healed:
            # This process's claims read the channels' states again once this commits: a read
            # that began before the circuit changed must not keep serving the old state (the
            # alert about the broken channel, enqueued here, would go out over it).
            session.info[outbox.STATES_FLAG] = True
        for name, failure in o.broken:
            await self._open_circuit(session, name, failure, now)
        for name in o.healed:
            state = await session.get(ChannelState, name, with_for_update=True)
            if state is not None and state.circuit_trips:
                state.circuit_trips, state.circuit_open_until = 0, None
                state.reason, state.updated_at = None, now
                log.info("channel %s works again: circuit closed", name)
        if o.status == _FAILED:
            await dead_letters.alert_admins(
                session, self.alerts, notification_id=job.id, kind=job.kind,
                recipient_id=job.recipient.user_id, reason=o.dead_reason or "?", now=now,
                destination=job.recipient.destination,
            )

    async def _open_circuit(
        self, session: AsyncSession, name: str, failure: Failure, now: datetime
    ) -> None:
        state = await session.get(ChannelState, name, with_for_update=True)
        if state is None:
            state = ChannelState(channel=name, paused=False, circuit_trips=0, updated_at=now)
            session.add(state)
        if state.circuit_open_until and state.circuit_open_until > now:
            return  # another worker opened it already
        state.circuit_trips += 1
        state.circuit_open_until = circuit_open_until(
            state.circuit_trips, now, self.config.circuit_probe_seconds,
            self.config.circuit_probe_max_seconds,
        )
        state.reason = transitions.describe(failure)
        state.updated_at = now
        log.error("channel %s is broken (%s); circuit open until %s", name, state.reason,
                  state.circuit_open_until.isoformat())
        await self.alerts.alert(
            session,
            key=f"channel_broken:{name}",
            severity=Severity.CRITICAL,
            text=(
                f"The {name} channel is broken ({state.reason}). Queued messages move to the "
                f"next channel; it will be tried again after "
                f"{state.circuit_open_until:%Y-%m-%d %H:%M} UTC."
            ),
            now=now,
        )
