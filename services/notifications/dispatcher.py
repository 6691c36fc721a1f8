"""The dispatcher's loop: leadership, leases and lifecycle; one batch at a time per worker.

Promises:
- A row is claimed by one worker at a time (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: one
  writer at a time) and carries a lease, renewed while its batch is being sent; a crashed
  worker's rows become due again when the lease ends (`outbox.release_expired_leases`, run at
  start, every half lease by worker 0, and by the lease-rescue sweep).
- Without Redis one process dispatches: the holder of the "dispatcher" lease, a short one
  (`leader_lease`, renewed every third of it by a task of its own), so a successor takes over
  that long after a crash; gaining it wakes every worker at once.
- Workers sleep until the next row is due, or until a commit wakes them (`transitions.wake`:
  this process's commits directly, other processes' through PostgreSQL's LISTEN/NOTIFY). A lost
  LISTEN connection is made again (with backoff), and the workers look once it is back.
- A database outage is logged once when it starts and once when it ends, not per failure.
- `stop` claims nothing more, lets batches in hand finish (bounded), and hands back the rows
  it did not start.

What a batch goes through: `batches` claims it, `delivery` sends it, `recording` writes what
happened. This module only drives them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database, is_transient
from database.models import Notification, NotificationStatus
from services import leases
from services.alerts import Alerts
from services.clock import Clock
from services.notifications import outbox, transitions
from services.notifications.batches import ChannelStatus, Claimed, batches_for
from services.notifications.channels.base import Channel
from services.notifications.config import DispatcherConfig
from services.notifications.delivery import DeliveryPolicy, Outcome
from services.notifications.recording import Recorder

__all__ = ["DISPATCH_LEASE", "Dispatcher", "DispatcherConfig", "new_owner"]

log = logging.getLogger(__name__)

DISPATCH_LEASE = "dispatcher"
# The LISTEN connection: how often it is checked (a ping, which also finds a connection that
# died without closing), and the longest wait between tries to make it again.
LISTENER_CHECK_SECONDS = 10.0
LISTENER_MAX_BACKOFF_SECONDS = 5.0


def _is_outage(exc: BaseException) -> bool:
    """The database is unreachable or went away (as opposed to a bug or a constraint)."""
    return is_transient(exc) or isinstance(
        exc, OperationalError | InterfaceError | OSError | TimeoutError
    )


async def _wait_any(seconds: float, *events: asyncio.Event) -> None:
    """Wait until one of `events` is set, at most `seconds`."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


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
        self.clock = clock
        self._config = config = config or DispatcherConfig()
        self.owner = owner or new_owner()
        self._batches = batches_for(db.dialect)
        self.delivery = DeliveryPolicy(channels, clock, config)
        self.recorder = Recorder(db, self._batches, clock, alerts, config)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._helpers: list[asyncio.Task[None]] = []  # leadership, listener
        self._listener: Any = None
        self._listener_lost = asyncio.Event()
        # Until when (this clock) this process holds the dispatcher lease, when exclusive.
        self._leader_until: datetime | None = None
        # When (time.monotonic) the database went away; None while it answers.
        self._down_since: float | None = None
        # Between tries while the database is away.
        self.outage_retry_seconds = 1.0
        self._rescue_every = max(1.0, self.config.lease.total_seconds() / 2)
        self._states: dict[str, ChannelStatus] = {}
        self._states_read_at: float | None = None
        self._states_changed = 0  # counts pauses/resumes committed here
        db.on_commit(transitions.WAKE_FLAG, self.wake)
        db.on_commit(outbox.STATES_FLAG, self._forget_states)

    @property
    def config(self) -> DispatcherConfig:
        """Read-only: the delivery and recording parts were built with it."""
        return self._config

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
        if self.config.exclusive:
            self._helpers.append(asyncio.create_task(self._keep_leadership(), name="leadership"))
        if self.db.dialect == "postgresql":
            self._helpers.append(asyncio.create_task(self._keep_listening(), name="listener"))
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
        for task in self._helpers:  # they end on _stopping; cancel any in a database call
            task.cancel()
        await asyncio.gather(*self._helpers, return_exceptions=True)
        self._helpers = []
        released = await self.db.run(self._release_mine)
        if released:
            log.warning("released %d notification(s) still held at shutdown", released)
        if self.config.exclusive and self._leader_until is not None:
            await self.db.run(
                lambda s: leases.release(s, name=DISPATCH_LEASE, owner=self.owner)
            )
            self._leader_until = None
        await self._drop_listener()
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
        lost = asyncio.Event()
        try:
            pg: Any = (await connection.get_raw_connection()).driver_connection
            pg.add_termination_listener(lambda *_: lost.set())
            await pg.add_listener(transitions.PG_CHANNEL, lambda *_: self.wake())
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.invalidate()
                await connection.close()
            raise
        self._listener, self._listener_lost = connection, lost

    async def _drop_listener(self) -> None:
        connection, self._listener = self._listener, None
        if connection is None:
            return
        with contextlib.suppress(Exception):
            if self._listener_lost.is_set():
                await connection.invalidate()  # the server or the network ended it
            await connection.close()

    async def _listener_alive(self) -> bool:
        if self._listener is None or self._listener_lost.is_set():
            return False
        try:
            pg: Any = (await self._listener.get_raw_connection()).driver_connection
            await asyncio.wait_for(pg.fetchval("SELECT 1"), LISTENER_CHECK_SECONDS)
        except Exception:  # any failure of the ping: make the connection again
            self._listener_lost.set()
            log.debug("the LISTEN connection failed its ping", exc_info=True)
            return False
        return True

    async def _keep_listening(self) -> None:
        """Listen again when the LISTEN connection is lost (an outage, a server restart), with
        backoff; once listening again, wake the workers: commits meanwhile went unheard."""
        backoff = self.outage_retry_seconds
        while not self._stopping.is_set():
            if self._listener is not None:
                await _wait_any(LISTENER_CHECK_SECONDS, self._listener_lost, self._stopping)
                if self._stopping.is_set() or await self._listener_alive():
                    continue
                log.info("dispatcher %s lost its LISTEN connection; listening again", self.owner)
                await self._drop_listener()
            try:
                await self._listen()
            except Exception as exc:
                if not self._outage_began(exc, "listening for new notifications"):
                    log.exception("dispatcher %s could not LISTEN", self.owner)
                await _wait_any(backoff, self._stopping)
                backoff = min(backoff * 2, LISTENER_MAX_BACKOFF_SECONDS)
                continue
            backoff = self.outage_retry_seconds
            await self._database_answered()
            self.wake()

    # --- outages ----------------------------------------------------------------------------

    def _outage_began(self, exc: BaseException, doing: str) -> bool:
        """True if `exc` says the database is away (logged once, when the outage begins);
        False for any other failure, which the caller logs with its traceback."""
        if not _is_outage(exc):
            return False
        if self._down_since is None:
            self._down_since = time.monotonic()
            detail = (str(exc).splitlines() or [""])[0][:200]
            log.error("database unreachable (%s: %s) while %s; dispatching waits for it",
                      type(exc).__name__, detail, doing)
        return True

    async def _database_answered(self) -> None:
        """Log the end of an outage once, with how long it lasted and what waited for it."""
        if self._down_since is None:
            return
        down = time.monotonic() - self._down_since
        self._down_since = None
        try:
            waiting: int | str = await self.db.read(self._waiting)
        except Exception:  # the count is only for the log line
            log.debug("could not count the notifications waiting", exc_info=True)
            waiting = "?"
        log.warning("database is back after %.1f s; dispatching resumes (%s notification(s) "
                    "due or in flight)", down, waiting)

    async def _waiting(self, session: AsyncSession) -> int:
        return await session.scalar(
            select(func.count()).select_from(Notification).where(
                (Notification.status == NotificationStatus.SENDING)
                | ((Notification.status == NotificationStatus.PENDING)
                   & (Notification.next_attempt_at <= self.clock.now()))
            )
        ) or 0

    # --- leadership -------------------------------------------------------------------------

    def _leading(self) -> bool:
        """Whether this process may claim now: always with Redis; without, while its
        dispatcher lease (by this process's own clock) has not run out."""
        if not self.config.exclusive:
            return True
        return self._leader_until is not None and self.clock.now() < self._leader_until

    async def _keep_leadership(self) -> None:
        """Take or renew the dispatcher lease every third of it, whatever the workers do (a
        batch paced for longer than the lease does not lose it)."""
        every = self.config.leader_lease.total_seconds() / 3
        while not self._stopping.is_set():
            try:
                await self._may_dispatch()
            except Exception as exc:
                if not self._outage_began(exc, "renewing the dispatcher lease"):
                    log.exception("dispatcher %s could not renew its lease", self.owner)
            else:
                await self._database_answered()
            await _wait_any(every, self._stopping)

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
                if not self._leading():
                    # Another process dispatches: taking the lease over wakes every worker.
                    await self._idle(self.config.idle_seconds)
                    continue
                handled = await self.run_once()
                if handled == 0 and not self._stopping.is_set():
                    await self._sleep_until_due()
            except Exception as exc:
                # A worker must outlive any failure: a batch's (its rows keep their lease and
                # are rescued when it ends) and the database's own (an outage, a restart).
                if not self._outage_began(exc, f"worker {number} was dispatching"):
                    log.exception("dispatcher worker %d: batch failed; trying again shortly",
                                  number)
                await self._idle(self.outage_retry_seconds)

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
        """Without Redis, one process dispatches: the holder of the dispatcher lease. Takes or
        renews it (`_keep_leadership` calls this every third of `leader_lease`); gaining it
        wakes every worker, so none waits out its idle time."""
        if not self.config.exclusive:
            return True
        was_leader = self._leading()
        now, ttl = self.clock.now(), self.config.leader_lease
        held = await self.db.run(
            lambda s: leases.try_acquire(s, name=DISPATCH_LEASE, owner=self.owner, now=now, ttl=ttl)
        )
        self._leader_until = now + ttl if held else None
        if held != was_leader:
            log.info("dispatcher %s %s the dispatch lease", self.owner,
                     "holds" if held else "lost")
        if held and not was_leader:
            self.wake()
        return held

    # --- one batch --------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim one batch, deliver it, record the outcomes; returns how many rows it handled.

        The batch's rows are leased to a token of its own, renewed while it is being sent: a
        batch that takes longer than a lease (a queue of messages to one chat paced at 1/s)
        keeps its rows, and no other worker, in this process or another, sends them again.
        """
        token = f"{self.owner}:{uuid.uuid4().hex[:8]}"
        jobs = (await self._claim(token)).jobs
        await self._database_answered()  # after an outage: say so, before sending
        # Shared by the batches in flight: a circuit one opens the others see at once, until
        # the next read replaces the dict with the database's copy.
        states = self._states
        if not jobs:
            return 0
        log.debug("dispatcher %s claimed %d notification(s)", self.owner, len(jobs))
        # Until when (this process's monotonic clock) the batch's rows are surely still ours:
        # the claim's lease, moved on by each renewal that reached the database.
        held_until = [self.clock.monotonic() + self.config.lease.total_seconds()]
        renewal = asyncio.create_task(self._renew_lease(token, held_until))
        try:
            outcomes = await self.delivery.deliver_all(jobs, states, self._stopping)
            await self._record_while_held(outcomes, token, held_until)
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
        return len(jobs)

    async def _record_while_held(
        self, outcomes: list[Outcome], token: str, held_until: list[float]
    ) -> None:
        """Record what was sent; while the database is away, keep the outcomes and try again
        as long as the rows are still leased to the batch.

        The messages have left: if the outcomes were dropped, the rows would be sent again
        when their lease ended. So an outage shorter than the lease sends nothing twice (the
        lease renewal goes on meanwhile, and extends the time once the database is back).
        """
        while True:
            try:
                await self.recorder.record(outcomes, token)
                return
            except Exception as exc:
                if not _is_outage(exc) or self.clock.monotonic() >= held_until[0]:
                    raise
                self._outage_began(exc, f"recording batch {token}")
            await asyncio.sleep(self.outage_retry_seconds)

    async def _renew_lease(self, token: str, held_until: list[float]) -> None:
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

            renewed_at = self.clock.monotonic()
            try:
                await self.db.run(renew)
            except Exception as exc:
                if not self._outage_began(exc, f"renewing the lease of batch {token}"):
                    log.exception("could not renew the lease of batch %s", token)
            else:
                held_until[0] = renewed_at + self.config.lease.total_seconds()

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
