"""The dispatcher's loop: leadership, leases and lifecycle; one batch at a time per worker.

Promises:
- A row is claimed by one worker at a time (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: one
  writer at a time) and carries a lease, renewed while its batch is being sent; a crashed
  worker's rows become due again when the lease ends (`outbox.release_expired_leases`, run at
  start, every half lease by worker 0, and by the lease-rescue sweep).
- Without Redis one process dispatches: the holder of the "dispatcher" lease.
- Workers sleep until the next row is due, or until a commit wakes them (`transitions.wake`:
  this process's commits directly, other processes' through PostgreSQL's LISTEN/NOTIFY).
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
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import Notification, NotificationStatus
from services import leases
from services.alerts import Alerts
from services.clock import Clock
from services.notifications import outbox, transitions
from services.notifications.batches import ChannelStatus, Claimed, batches_for
from services.notifications.channels.base import Channel
from services.notifications.config import DispatcherConfig
from services.notifications.delivery import DeliveryPolicy
from services.notifications.recording import Recorder

__all__ = ["DISPATCH_LEASE", "Dispatcher", "DispatcherConfig", "new_owner"]

log = logging.getLogger(__name__)

DISPATCH_LEASE = "dispatcher"


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
        self._listener: Any = None
        self._is_leader = not self.config.exclusive
        self._leader_checked = 0.0
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
            transitions.PG_CHANNEL, lambda *_: self.wake()
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
        renewal = asyncio.create_task(self._renew_lease(token))
        try:
            outcomes = await self.delivery.deliver_all(jobs, states, self._stopping)
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
        await self.recorder.record(outcomes, token)
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
