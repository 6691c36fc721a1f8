"""The dispatcher: claims due notifications with a lease, sends them, records what happened.

Promises:
- A row is claimed by one worker at a time (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: one
  writer at a time) and carries a lease; a crashed worker's rows become due again when the lease
  ends (`outbox.release_expired_leases`, run at start and by the lease-rescue sweep).
- Every try is a delivery_attempts row. The failure class decides what happens next
  (ARCHITECTURE.md principle 5): transient -> quick retries in the call, then the persisted
  schedule; rate limited -> wait as told, not counted; permanent -> next channel now; broken ->
  open the channel's circuit, alert once, next channel; unknown -> transient with a budget of 2.
- When the chain is spent, or the notification is older than its maximum age, it is failed:
  a dead letter, with admins alerted once per kind per window (never for alerts themselves).
- Outcomes are written in one transaction per batch; only rows still leased by this dispatcher
  are updated, so a worker that lost its lease cannot overwrite someone else's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from database.engine import Database
from database.models import (
    ChannelState,
    Notification,
    NotificationStatus,
)
from services import contacts, leases
from services.alerts import ALERT_KIND, Alerts, Severity
from services.clock import Clock
from services.notifications import outbox
from services.notifications.batches import (
    AttemptRow,
    ChannelStatus,
    Claimed,
    Job,
    OutcomeRow,
    batches_for,
)
from services.notifications.channels.base import Channel, Outgoing, SendResult
from services.notifications.failures import ChannelError, Failure, FailureClass
from services.notifications.text import split_text

log = logging.getLogger(__name__)

DISPATCH_LEASE = "dispatcher"


@dataclass(frozen=True)
class DispatcherConfig:
    workers: int = 4
    batch_size: int = 50
    lease: timedelta = timedelta(seconds=60)
    idle_seconds: float = 5.0
    channel_max_attempts: int = 4
    unknown_max_attempts: int = 2
    max_age: timedelta = timedelta(hours=24)
    retry_schedule: tuple[float, ...] = (60, 300, 900, 1800, 3600, 7200)
    send_tries: int = 3
    send_retry_wait: float = 1.0
    circuit_probe_seconds: float = 60.0
    # When a rate limit comes without a retry_after, and a paused channel's re-check interval.
    default_wait_seconds: float = 30.0
    # How long a read of the channels' states (paused, circuits) serves before the next claim
    # reads them again. Changes this process makes apply at once; another process's within
    # this time. Reading them with every batch costs a round trip per batch.
    states_ttl_seconds: float = 1.0
    # Without Redis only one process may dispatch: it holds the "dispatcher" lease.
    exclusive: bool = False


@dataclass
class Outcome:
    job: Job
    status: str = NotificationStatus.PENDING.value
    channel_index: int = 0
    channel_attempts: int = 0
    parts_sent: int = 0
    tries: int = 0
    next_attempt_at: datetime | None = None
    failure: Failure | None = None
    dead_reason: str | None = None
    result: SendResult | None = None
    sent_at: datetime | None = None
    attempt_rows: list[AttemptRow] = field(default_factory=list)
    opt_outs: dict[str, str] = field(default_factory=dict)  # channel -> the provider's reason
    broken: list[tuple[str, Failure]] = field(default_factory=list)
    healed: list[str] = field(default_factory=list)


def _fit(value: str | None, size: int) -> str | None:
    """A provider's or a setting's string as its column can hold it: no NUL (PostgreSQL text
    cannot), at most `size` characters. A row that cannot be written would have its whole
    batch sent again when the lease ends."""
    return None if value is None else value.replace("\x00", "")[:size]


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, ChannelError) and exc.failure.kind is FailureClass.TRANSIENT


def new_owner() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Dispatcher:
    def __init__(
        self,
        db: Database,
        channels: Mapping[str, Channel],
        clock: Clock,
        alerts: Alerts,
        config: DispatcherConfig | None = None,
        *,
        owner: str | None = None,
    ) -> None:
        self.db = db
        self.channels = dict(channels)
        self.clock = clock
        self.alerts = alerts
        self.config = config or DispatcherConfig()
        self.owner = owner or new_owner()
        self._batches = batches_for(db.dialect)
        # How the quick in-call retries wait; a test may replace it to see the waits.
        self.retry_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._listener: Any = None
        self._is_leader = not self.config.exclusive
        self._leader_checked = 0.0
        self._rescue_every = max(1.0, self.config.lease.total_seconds() / 2)
        self._states: dict[str, ChannelStatus] = {}
        self._states_read_at: float | None = None
        self._states_changed = 0  # counts pauses/resumes committed here
        db.on_commit(outbox.WAKE_FLAG, self.wake)
        db.on_commit(outbox.STATES_FLAG, self._forget_states)

    # --- lifecycle --------------------------------------------------------------------------

    def _forget_states(self) -> None:
        """A channel was paused or resumed here: read the states again at the next claim."""
        self._states_read_at = None
        self._states_changed += 1

    def wake(self) -> None:
        """New work was committed: look for due rows now instead of at the next idle tick."""
        self._wake.set()

    async def start(self) -> None:
        released = await self.db.run(
            lambda s: outbox.release_expired_leases(s, now=self.clock.now())
        )
        if released:
            log.warning("rescued %d notification(s) left leased by a stopped dispatcher", released)
        await self._listen()
        self._stopping.clear()
        self._workers = [
            asyncio.create_task(self._work(i), name=f"dispatcher-{i}")
            for i in range(self.config.workers)
        ]
        log.info("dispatcher %s started with %d worker(s)", self.owner, self.config.workers)

    async def stop(self, timeout: float = 20.0) -> None:
        """Stop claiming; let batches in hand finish (bounded), then release what is left."""
        self._stopping.set()
        self._wake.set()
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers = []
        released = await self.db.run(self._release_mine)
        if released:
            log.warning("released %d notification(s) still held at shutdown", released)
        if self.config.exclusive and self._is_leader:
            await self.db.run(
                lambda s: leases.release(s, name=DISPATCH_LEASE, owner=self.owner)
            )
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        log.info("dispatcher %s stopped", self.owner)

    async def _release_mine(self, session: AsyncSession) -> int:
        result = await session.execute(
            update(Notification)
            .where(
                Notification.status == NotificationStatus.SENDING,
                Notification.lease_owner.startswith(f"{self.owner}:", autoescape=True),
            )
            .values(status="pending", lease_owner=None, lease_until=None)
        )
        return result.rowcount or 0

    async def _listen(self) -> None:
        """On PostgreSQL, LISTEN for commits of other processes' enqueues."""
        if self.db.dialect != "postgresql":
            return
        connection = await self.db.engine.connect()
        raw = await connection.get_raw_connection()
        await raw.driver_connection.add_listener(  # type: ignore[union-attr]
            outbox.PG_CHANNEL, lambda *_: self.wake()
        )
        self._listener = connection

    async def _work(self, number: int) -> None:
        rescued_at = time.monotonic()
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                if number == 0 and time.monotonic() - rescued_at > self._rescue_every:
                    # Crash recovery does not wait for the sweep: a dead peer's rows are due
                    # again as soon as their lease ends.
                    rescued_at = time.monotonic()
                    await self.db.run(
                        lambda s: outbox.release_expired_leases(s, now=self.clock.now())
                    )
                if not await self._may_dispatch():
                    # Another process dispatches: look again after the idle time, no sooner.
                    await self._idle(self.config.idle_seconds)
                    continue
                if await self.run_once() == 0 and not self._stopping.is_set():
                    await self._sleep_until_due()
            except Exception:
                # A worker must outlive any failure: a batch's (its rows keep their lease and
                # are rescued when it ends) and the database's own (an outage, a restart).
                log.exception("dispatcher worker %d: batch failed; trying again shortly", number)
                await self._idle(1.0)

    async def _sleep_until_due(self) -> None:
        timeout = self.config.idle_seconds
        next_due = await self.db.run(self._next_due)
        if next_due is not None:
            timeout = min(timeout, max(0.0, (next_due - self.clock.now()).total_seconds()))
        if timeout > 0:
            await self._idle(timeout)

    async def _idle(self, seconds: float) -> None:
        """Sleep up to `seconds`, or until new work is committed or we are stopping."""
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            return

    async def _next_due(self, session: AsyncSession) -> datetime | None:
        return await session.scalar(
            select(func.min(Notification.next_attempt_at)).where(
                Notification.status == NotificationStatus.PENDING
            )
        )

    async def _may_dispatch(self) -> bool:
        """Without Redis, one process dispatches: the holder of the dispatcher lease."""
        if not self.config.exclusive:
            return True
        now_mono = self.clock.monotonic()
        if self._leader_checked and (
            now_mono - self._leader_checked < self.config.lease.total_seconds() / 3
        ):
            return self._is_leader
        self._leader_checked = now_mono
        was_leader = self._is_leader
        self._is_leader = await self.db.run(
            lambda s: leases.try_acquire(
                s, name=DISPATCH_LEASE, owner=self.owner, now=self.clock.now(),
                ttl=self.config.lease,
            )
        )
        if self._is_leader != was_leader:
            log.info("dispatcher %s %s the dispatch lease", self.owner,
                     "holds" if self._is_leader else "lost")
        return self._is_leader

    # --- one batch --------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim one batch, deliver it, record the outcomes; returns how many rows it handled.

        The batch's rows are leased to a token of its own, renewed while it is being sent: a
        batch that takes longer than a lease (a queue of messages to one chat paced at 1/s)
        keeps its rows, and no other worker, in this process or another, sends them again.
        """
        token = f"{self.owner}:{uuid.uuid4().hex[:8]}"
        jobs = (await self._claim(token)).jobs
        # Shared by the batches in flight: a circuit one opens the others see at once, until
        # the next read replaces the dict with the database's copy.
        states = self._states
        if not jobs:
            return 0
        log.debug("dispatcher %s claimed %d notification(s)", self.owner, len(jobs))
        by_recipient: dict[int, list[Job]] = {}
        for job in jobs:
            by_recipient.setdefault(job.recipient.user_id, []).append(job)

        async def deliver_in_order(group: list[Job]) -> list[Outcome]:
            outcomes = []
            for job in group:
                if self._stopping.is_set():
                    # Stopping: what was not started goes back as it was, to be sent later.
                    outcomes.append(self._untouched(job))
                    continue
                try:
                    outcomes.append(await self._deliver(job, states))
                except Exception as exc:  # a bug must cost one attempt, not loop forever
                    log.exception("delivering notification %s failed inside the dispatcher", job.id)
                    outcomes.append(self._internal_error(job, exc))
            return outcomes

        renewal = asyncio.create_task(self._renew_lease(token))
        try:
            groups = await asyncio.gather(*(deliver_in_order(g) for g in by_recipient.values()))
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
        outcomes = [outcome for group in groups for outcome in group]
        await self._record(outcomes, token)
        return len(jobs)

    async def _renew_lease(self, token: str) -> None:
        every = self.config.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(every)

            async def renew(session: AsyncSession) -> None:
                await session.execute(
                    update(Notification)
                    .where(
                        Notification.lease_owner == token,
                        Notification.status == NotificationStatus.SENDING,
                    )
                    .values(lease_until=self.clock.now() + self.config.lease)
                )

            try:
                await self.db.run(renew)
            except Exception:
                log.exception("could not renew the lease of batch %s", token)

    def _untouched(self, job: Job) -> Outcome:
        outcome = Outcome(job, channel_index=job.channel_index,
                          channel_attempts=job.channel_attempts, parts_sent=job.parts_sent)
        self._wait(outcome, self.clock.now())
        return outcome

    async def _claim(self, token: str) -> Claimed:
        """Lease a batch to `token`; the channels' states are read with it when this
        dispatcher's copy is older than `states_ttl_seconds`."""
        now = self.clock.now()
        read_at, ttl = self._states_read_at, self.config.states_ttl_seconds
        stale = read_at is None or self.clock.monotonic() - read_at >= ttl
        changes = self._states_changed
        claimed = await self._batches.claim(
            self.db, now=now, owner=token, lease_until=now + self.config.lease,
            limit=self.config.batch_size, read_states=stale,
        )
        if claimed.channels is not None:
            self._states = claimed.channels
            # A pause committed while this read was under way may be missing from it: then
            # the next claim reads again.
            if changes == self._states_changed:
                self._states_read_at = self.clock.monotonic()
        return claimed

    # --- delivering one notification ---------------------------------------------------------

    async def _deliver(self, job: Job, states: dict[str, ChannelStatus]) -> Outcome:
        now = self.clock.now()
        outcome = Outcome(
            job,
            channel_index=job.channel_index,
            channel_attempts=job.channel_attempts,
            parts_sent=job.parts_sent,
        )
        if now - job.created_at > self.config.max_age:
            self._dead(outcome, f"older than {self.config.max_age} and not delivered")
            return outcome
        while True:
            picked = self._pick_channel(job, outcome, states, now)
            if picked is None:
                return outcome  # dead or waiting: _pick_channel set the outcome
            channel = picked
            # Taken before the send: a circuit another batch opens while this send is under
            # way is not closed by its success, only one this send was probing.
            probed = states.get(channel.name)
            failure = await self._send(job, channel, outcome)
            if failure is None:
                if probed is not None and probed.circuit_trips:
                    outcome.healed.append(channel.name)
                    states[channel.name] = probed._replace(circuit_open_until=None,
                                                           circuit_trips=0)
                outcome.status = NotificationStatus.SENT.value
                outcome.sent_at = self.clock.now()
                return outcome
            outcome.failure = failure
            now = self.clock.now()
            if failure.kind is FailureClass.RATE_LIMITED:
                wait = failure.retry_after or self.config.default_wait_seconds
                self._wait(outcome, now + timedelta(seconds=wait))
                return outcome
            if failure.kind in (FailureClass.TRANSIENT, FailureClass.UNKNOWN):
                outcome.channel_attempts += 1
                budget = (
                    self.config.unknown_max_attempts
                    if failure.kind is FailureClass.UNKNOWN
                    else self.config.channel_max_attempts
                )
                if failure.kind is FailureClass.UNKNOWN:
                    log.warning("unknown %s error code %s (%s): treated as transient",
                                failure.provider, failure.code, failure.text)
                if outcome.channel_attempts < budget:
                    step = self.config.retry_schedule[
                        min(outcome.channel_attempts - 1, len(self.config.retry_schedule) - 1)
                    ]
                    self._wait(outcome, now + timedelta(seconds=step))
                    return outcome
            elif failure.kind is FailureClass.PERMANENT:
                if failure.opt_out:
                    outcome.opt_outs[channel.name] = f"{failure.provider} {failure.code}"
            elif failure.kind is FailureClass.BROKEN:
                outcome.broken.append((channel.name, failure))
                state = self._open_circuit(states.get(channel.name), failure, now)
                states[channel.name] = state
                if not job.allow_fallback:
                    # It may not move on: it waits for the channel to be mended (until its
                    # maximum age), rather than dying of someone else's expired token.
                    self._wait(outcome, state.circuit_open_until or now)
                    return outcome
            if not self._advance(outcome):
                return outcome

    def _internal_error(self, job: Job, exc: Exception) -> Outcome:
        """An error of ours, not the provider's: counted as an unknown failure, so a row that
        always trips it ends as a dead letter in front of an admin instead of retrying forever."""
        outcome = Outcome(
            job,
            channel_index=job.channel_index,
            channel_attempts=job.channel_attempts + 1,
            parts_sent=job.parts_sent,
            tries=1,
            failure=Failure(FailureClass.UNKNOWN, "dispatcher", type(exc).__name__,
                            str(exc)[:200]),
        )
        if outcome.channel_attempts >= self.config.unknown_max_attempts:
            self._dead(outcome, f"internal error: {type(exc).__name__}")
        else:
            step = self.config.retry_schedule[0]
            self._wait(outcome, self.clock.now() + timedelta(seconds=step))
        return outcome

    def _advance(self, outcome: Outcome) -> bool:
        """Move to the next channel; False (and the outcome is final) when that is not allowed."""
        job = outcome.job
        if not job.allow_fallback or outcome.channel_index + 1 >= len(job.chain):
            failure = outcome.failure
            reason = f"{failure.provider} {failure.code}: {failure.text}" if failure else "?"
            self._dead(outcome, f"no channel left after {reason}")
            return False
        outcome.channel_index += 1
        outcome.channel_attempts = 0
        outcome.parts_sent = 0
        return True

    def _pick_channel(
        self, job: Job, outcome: Outcome, states: dict[str, ChannelStatus], now: datetime
    ) -> Channel | None:
        """The first usable channel from the current index on; None when the outcome is set."""
        start = outcome.channel_index
        for index in range(start, len(job.chain)):
            name = job.chain[index]
            channel = self.channels.get(name)
            usable = (
                channel is not None
                and channel.enabled
                and channel.can_reach(job.recipient)
                and name not in job.opt_outs
                and name not in outcome.opt_outs
            )
            if not usable:
                if not job.allow_fallback and index == start:
                    break
                continue
            state = states.get(name)
            if state is not None and state.paused:
                # An admin paused this channel: its rows wait for the resume, they do not move.
                recheck = now + timedelta(seconds=self.config.default_wait_seconds)
                return self._wait(outcome, recheck, index=index)
            if state is not None and state.circuit_open_until and state.circuit_open_until > now:
                if not job.allow_fallback:
                    return self._wait(outcome, state.circuit_open_until, index=index)
                continue
            if index != outcome.channel_index:
                outcome.channel_index = index
                outcome.channel_attempts = 0
                outcome.parts_sent = 0
            return channel
        failure = outcome.failure
        why = f"; last error {failure.provider} {failure.code}: {failure.text}" if failure else ""
        return self._dead(outcome, f"no usable channel can reach the recipient{why}")

    def _wait(self, outcome: Outcome, until: datetime, *, index: int | None = None) -> None:
        outcome.status = NotificationStatus.PENDING.value
        outcome.next_attempt_at = until
        if index is not None and index != outcome.channel_index:
            outcome.channel_index = index
            outcome.channel_attempts = 0
            outcome.parts_sent = 0
        return None

    def _dead(self, outcome: Outcome, reason: str) -> None:
        outcome.status = NotificationStatus.FAILED.value
        outcome.dead_reason = reason
        return None

    def _open_circuit(
        self, state: ChannelStatus | None, failure: Failure, now: datetime
    ) -> ChannelStatus:
        """The circuit as this batch sees it from now on (the database's is saved with the
        outcomes, by `_save_circuit`)."""
        trips = (state.circuit_trips if state else 0) + 1
        until = now + timedelta(seconds=self.config.circuit_probe_seconds * 2 ** (trips - 1))
        return ChannelStatus(paused=state.paused if state else False,
                             circuit_open_until=until, circuit_trips=trips)

    def _outgoing(self, job: Job, channel: Channel) -> list[Outgoing]:
        payload = job.payload
        subject = payload.get("subject")
        extra = {"buttons": payload["buttons"]} if payload.get("buttons") else {}
        if "text" in payload:
            return [
                Outgoing(job.id, job.kind, job.idempotency_key, text=part, subject=subject,
                         part=i, extra=extra)
                for i, part in enumerate(split_text(payload["text"], channel.max_text_length))
            ]
        if "template" in payload:
            return [Outgoing(job.id, job.kind, job.idempotency_key, template=payload["template"],
                             subject=subject, extra=extra)]
        return [Outgoing(job.id, job.kind, job.idempotency_key, media=payload["media"],
                         subject=subject, extra=extra)]

    async def _send(self, job: Job, channel: Channel, outcome: Outcome) -> Failure | None:
        """Send the parts not yet sent on this channel; a transient failure is tried again at
        once, up to `send_tries` times, waiting 1x, 2x, 4x `send_retry_wait` (jittered).

        The first try is made directly: tenacity costs more than a whole send to a fast
        provider, and most sends succeed at once, so it is only set up after a transient
        failure.
        """
        for message in self._outgoing(job, channel)[outcome.parts_sent:]:
            try:
                await self._try_send(job, channel, message, outcome)
            except ChannelError as exc:
                if not _is_transient(exc) or self.config.send_tries < 2:
                    return exc.failure
                failure = await self._retry_send(job, channel, message, outcome)
                if failure is not None:
                    return failure
        return None

    async def _retry_send(
        self, job: Job, channel: Channel, message: Outgoing, outcome: Outcome
    ) -> Failure | None:
        """The quick retries after a transient failure: the remaining `send_tries - 1` tries,
        the first after 1x `send_retry_wait`, the next after 2x, then 4x at most; jittered by
        up to half of it, except where the 4x cap applies."""
        base = self.config.send_retry_wait
        await self.retry_sleep(base + random.uniform(0, base / 2))
        retrying = AsyncRetrying(
            sleep=self.retry_sleep,
            stop=stop_after_attempt(self.config.send_tries - 1),
            wait=wait_exponential_jitter(multiplier=2 * base, max=4 * base, jitter=base / 2),
            retry=retry_if_exception(_is_transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._try_send(job, channel, message, outcome)
        except ChannelError as exc:
            return exc.failure
        return None

    async def _try_send(
        self, job: Job, channel: Channel, message: Outgoing, outcome: Outcome
    ) -> None:
        """One try, recorded as one delivery_attempts row; a failure raises ChannelError."""
        started = time.monotonic()
        try:
            result = await channel.send(job.recipient, message)
        except ChannelError as exc:
            failure = exc.failure
        except Exception as exc:  # a bug in a channel must not lose the row
            log.exception("channel %s raised an unexpected error", channel.name)
            failure = Failure(FailureClass.UNKNOWN, channel.name, type(exc).__name__,
                              str(exc)[:200])
        else:
            outcome.tries += 1
            outcome.attempt_rows.append(
                self._attempt(job, channel.name, "sent", started, result=result)
            )
            outcome.parts_sent += 1
            outcome.result = result
            return
        rate_limited = failure.kind is FailureClass.RATE_LIMITED
        outcome.tries += not rate_limited
        outcome.attempt_rows.append(self._attempt(
            job, channel.name, "rate_limited" if rate_limited else "failed", started,
            failure=failure,
        ))
        raise ChannelError(failure)

    def _attempt(
        self,
        job: Job,
        channel: str,
        outcome: str,
        started: float,
        *,
        result: SendResult | None = None,
        failure: Failure | None = None,
    ) -> AttemptRow:
        return AttemptRow(
            notification_id=job.id,
            channel=channel,
            sender=_fit(result.sender, 64) if result else None,
            address=_fit(result.address, 254) if result else None,
            outcome=outcome,
            error_class=failure.kind.value if failure else None,
            error_code=failure.code[:32] if failure else None,
            error_text=failure.text[:500] if failure else None,
            latency_ms=int((time.monotonic() - started) * 1000),
            at=self.clock.now(),
        )

    # --- recording --------------------------------------------------------------------------

    async def _record(self, outcomes: list[Outcome], token: str) -> None:
        now = self.clock.now()
        # The common case has nothing beside the rows themselves to record.
        special = [
            o for o in outcomes
            if o.opt_outs or o.broken or o.healed or o.status == NotificationStatus.FAILED
        ]

        async def side_effects(session: AsyncSession) -> None:
            for o in special:
                try:
                    # Its own savepoint: a side effect that fails (two workers creating the
                    # same channel state at once) must not undo the batch's outcomes with it.
                    async with session.begin_nested():
                        await self._record_side_effects(session, o, now)
                        await session.flush()
                except Exception:
                    log.exception("side effects of notification %s not recorded", o.job.id)

        written = await self._batches.record(
            self.db, now=now, owner=token,
            outcomes=[self._record_row(o, now) for o in outcomes],
            attempts=[row for o in outcomes for row in o.attempt_rows],
            side_effects=side_effects if special else None,
        )
        if written < len(outcomes):
            # Their lease ended while this batch was sending (the process stalled longer than
            # a lease): whoever took them over owns them now, and their outcome here is lost.
            log.warning("batch %s: %d of %d outcome(s) not written, their lease was lost",
                        token, len(outcomes) - written, len(outcomes))

    def _record_row(self, o: Outcome, now: datetime) -> OutcomeRow:
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
            provider_message_id=_fit(o.result.provider_message_id, 128) if o.result else None,
            sent_at=o.sent_at,
            failed_at=now if o.status == NotificationStatus.FAILED else None,
        )

    async def _record_side_effects(self, session: AsyncSession, o: Outcome, now: datetime) -> None:
        job = o.job
        for channel, reason in o.opt_outs.items():
            if await contacts.record_opt_out(
                session, user_id=job.recipient.user_id, channel=channel, now=now, reason=reason
            ):
                log.info("user %s opted out of %s (%s)", job.recipient.user_id, channel, reason)
        for name, failure in o.broken:
            await self._save_circuit(session, name, failure, now)
        for name in o.healed:
            state = await session.get(ChannelState, name, with_for_update=True)
            if state is not None and state.circuit_trips:
                state.circuit_trips, state.circuit_open_until = 0, None
                state.reason, state.updated_at = None, now
                log.info("channel %s works again: circuit closed", name)
        if o.status == NotificationStatus.FAILED:
            text = f"notification {job.id} ({job.kind}) failed: {o.dead_reason}"
            if job.kind == ALERT_KIND:
                # Never alert about an alert: that way lies a loop. Say it loudly instead.
                log.error("ALERT UNDELIVERABLE to user %s: %s", job.recipient.user_id, text)
                return
            log.warning("dead letter: %s", text)
            await self.alerts.alert(
                session,
                key=f"dead_letter:{job.kind}",
                severity=Severity.HIGH,
                text=f"Notifications of kind {job.kind} are failing. Latest: {text}",
                now=now,
                button={"text": "Retry failed", "callback_data": f"nf:retry:{job.kind}"[:64]},
            )

    async def _save_circuit(
        self, session: AsyncSession, name: str, failure: Failure, now: datetime
    ) -> None:
        state = await session.get(ChannelState, name, with_for_update=True)
        if state is None:
            state = ChannelState(channel=name, paused=False, circuit_trips=0, updated_at=now)
            session.add(state)
        if state.circuit_open_until and state.circuit_open_until > now:
            return  # another worker opened it already
        state.circuit_trips += 1
        state.circuit_open_until = now + timedelta(
            seconds=self.config.circuit_probe_seconds * 2 ** (state.circuit_trips - 1)
        )
        state.reason = f"{failure.provider} {failure.code}: {failure.text}"
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
