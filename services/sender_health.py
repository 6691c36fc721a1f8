"""The health of each WhatsApp sender number (WHATSAPP_PHONE_NUMBER_IDS, primary first).

Promises (issue 11 item 7):
- Each number is healthy, degraded or down. Send outcomes drive it: a sender-level failure
  (classify.WHATSAPP_CODES rows scoped "sender" and classed broken, e.g. 131031, 133010) takes
  that number down at once; `degrade_after` transient failures in a row make it degraded (still
  used, after the healthy ones); a success makes a degraded number healthy again.
- The WhatsApp channel sends from the healthy numbers in their configured order, then the
  degraded ones, never from a down one; only when no number is left does it report the channel
  broken (and the dispatcher opens the channel's circuit).
- A down number is probed (the Graph API's phone-number status, `WhatsAppChannel.probe`) by a
  scheduled sweep, first `probe_base` seconds after it went down, then doubling up to
  `probe_max`; a good probe makes it healthy (or degraded when Meta says it is limited). After
  `alert_after` failed probes in a row the admins are told once, and probing goes on at the cap.
- States live in the database (`sender_states`), so every process sees a number go down; each
  process reads them again at most every `refresh_seconds`. A database error while recording a
  state is logged, never raised into a send.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import SenderState
from services.alerts import Alerts, Severity
from services.clock import Clock
from services.localization import N_, Localized
from services.notifications.failures import Failure, FailureClass

log = logging.getLogger(__name__)

HEALTHY, DEGRADED, DOWN = "healthy", "degraded", "down"
_REASON_MAX = 300


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool  # the number can send
    limited: bool = False  # it can, but Meta says it is limited: degraded
    detail: str = ""  # a short, safe reason (status name or error code)


Probe = Callable[[str], Awaitable[ProbeResult]]


def is_sender_failure(failure: Failure) -> bool:
    """A failure that concerns one sender number, not the channel: take the number down."""
    return failure.kind is FailureClass.BROKEN and failure.scope == "sender"


def probe_delay(failed_probes: int, base: float, cap: float) -> float:
    """Seconds before the next probe of a number that failed `failed_probes` probes in a row:
    base, 2 x base, 4 x base ... at most `cap`."""
    return min(base * 2 ** max(failed_probes, 0), cap)


class SenderHealth:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        senders: Sequence[str],
        *,
        probe_base: float = 60.0,
        probe_max: float = 300.0,
        alert_after: int = 5,
        degrade_after: int = 3,
        refresh_seconds: float = 5.0,
    ) -> None:
        self.db = db
        self.clock = clock
        self.senders = tuple(s for s in senders if s)
        self.probe_base = probe_base
        self.probe_max = max(probe_max, probe_base)
        self.alert_after = alert_after
        self.degrade_after = degrade_after
        self.refresh_seconds = refresh_seconds
        self._states: dict[str, str] = dict.fromkeys(self.senders, HEALTHY)
        self._failures: dict[str, int] = dict.fromkeys(self.senders, 0)
        self._loaded_at: float | None = None

    # ------------------------------------------------------------------ what sends ask

    def state(self, sender: str) -> str:
        return self._states.get(sender, HEALTHY)

    async def usable(self) -> list[str]:
        """The numbers to send from, in order: healthy ones first, then degraded ones."""
        await self._refresh()
        healthy = [s for s in self.senders if self._states[s] == HEALTHY]
        return healthy + [s for s in self.senders if self._states[s] == DEGRADED]

    async def record_success(self, sender: str) -> None:
        self._failures[sender] = 0
        if self._states.get(sender) == DEGRADED:
            await self._set(sender, HEALTHY, None)

    async def record_failure(self, sender: str, failure: Failure) -> None:
        """A send from `sender` failed in a way that may be the number's (transient, unknown)."""
        if sender not in self._failures:
            return
        self._failures[sender] += 1
        if self._failures[sender] >= self.degrade_after and self._states[sender] == HEALTHY:
            await self._set(sender, DEGRADED, f"{failure.code}: {failure.text}")

    async def mark_down(self, sender: str, failure: Failure) -> None:
        """Stop sending from `sender` until a probe finds it working again."""
        if sender not in self._states or self._states[sender] == DOWN:
            return
        log.error("WhatsApp sender %s is down (%s); traffic moves to the other numbers",
                  sender, failure.code)
        await self._set(sender, DOWN, f"{failure.code}: {failure.text}")

    # ------------------------------------------------------------------ the probe sweep

    async def probe_due(self, probe: Probe, alerts: Alerts | None) -> str:
        """Probe every down number whose probe is due; the scheduler's job."""
        now = self.clock.now()

        async def due(session: AsyncSession) -> list[str]:
            rows = await session.scalars(
                select(SenderState.phone_number_id).where(
                    SenderState.state == DOWN,
                    SenderState.next_probe_at <= now,
                    SenderState.phone_number_id.in_(self.senders),
                )
            )
            return list(rows)

        probed = back = 0
        for sender in await self.db.read(due):
            result = await probe(sender)
            probed += 1
            came_back = await self.db.run(
                lambda s, n=sender, r=result: self._probed(s, n, r, alerts)
            )
            back += int(came_back)
        self._loaded_at = None  # read the states again at the next send
        return f"probed {probed}, back {back}"

    async def _probed(
        self, session: AsyncSession, sender: str, result: ProbeResult, alerts: Alerts | None
    ) -> bool:
        now = self.clock.now()
        row = await session.get(SenderState, sender, with_for_update=True)
        if row is None or row.state != DOWN:
            return False
        if result.ok:
            row.state = DEGRADED if result.limited else HEALTHY
            row.reason = result.detail[:_REASON_MAX] or None
            row.failed_probes, row.next_probe_at, row.alerted = 0, None, False
            row.updated_at = now
            self._states[sender], self._failures[sender] = row.state, 0
            log.info("WhatsApp sender %s works again (%s)", sender, row.state)
            return True
        row.failed_probes += 1
        row.next_probe_at = now + timedelta(
            seconds=probe_delay(row.failed_probes, self.probe_base, self.probe_max)
        )
        row.updated_at = now
        log.warning("WhatsApp sender %s still down after probe %d (%s)", sender,
                    row.failed_probes, result.detail or "?")
        if row.failed_probes >= self.alert_after and not row.alerted:
            row.alerted = True
            if alerts is not None:
                await alerts.alert(
                    session,
                    key=f"whatsapp_sender_down:{sender}"[:128],
                    severity=Severity.HIGH,
                    text=Localized(
                        N_("WhatsApp sender number {sender} has been down since {since} UTC "
                           "({reason}); {probes} probes failed. Messages go out from the other "
                           "numbers meanwhile; it is probed every {minutes} minutes."),
                        {"sender": sender, "since": f"{row.updated_at:%Y-%m-%d %H:%M}",
                         "reason": row.reason or "?", "probes": row.failed_probes,
                         "minutes": round(self.probe_max / 60)},
                    ),
                    now=now,
                )
        return False

    # ------------------------------------------------------------------ state keeping

    async def _refresh(self) -> None:
        moment = self.clock.monotonic()
        if self._loaded_at is not None and moment - self._loaded_at < self.refresh_seconds:
            return
        self._loaded_at = moment

        async def load(session: AsyncSession) -> dict[str, str]:
            rows = await session.execute(
                select(SenderState.phone_number_id, SenderState.state).where(
                    SenderState.phone_number_id.in_(self.senders)
                )
            )
            return {sender: state for sender, state in rows}

        try:
            stored = await self.db.read(load)
        except SQLAlchemyError:
            log.warning("could not read the WhatsApp sender states; keeping the last known")
            return
        for sender in self.senders:
            self._states[sender] = stored.get(sender, HEALTHY)

    async def _set(self, sender: str, state: str, reason: str | None) -> None:
        self._states[sender] = state
        now = self.clock.now()

        async def work(session: AsyncSession) -> None:
            row = await session.get(SenderState, sender, with_for_update=True)
            if row is None:
                row = SenderState(phone_number_id=sender, failed_probes=0, alerted=False)
                session.add(row)
            elif row.state == state:
                return  # another process recorded it first: keep its probe schedule
            row.state = state
            row.reason = reason[:_REASON_MAX] if reason else None
            row.updated_at = now
            if state == DOWN:
                row.failed_probes, row.alerted = 0, False
                row.next_probe_at = now + timedelta(seconds=self.probe_base)
            else:
                row.next_probe_at = None

        try:
            await self.db.run(work)
        except SQLAlchemyError:
            log.warning("could not record WhatsApp sender %s as %s", sender, state)
