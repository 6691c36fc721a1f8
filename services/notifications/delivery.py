"""Delivery policy: for each claimed notification, pick a channel, send, and decide what next.

Promises (docs/architecture.md, principle 5):
- Notifications to one recipient are sent in the order they were claimed; recipients in
  parallel.
- Every try is an attempt row. The failure class decides what happens next: transient -> quick
  retries in the call (1x, 2x, 4x `send_retry_wait`, jittered), then the persisted schedule;
  rate limited -> wait as told, not counted; permanent -> the next channel now (an opt-out is
  noted); broken -> open the channel's circuit and take the next channel, or wait for the
  circuit when the notification may not fall back; unknown -> transient with a budget of 2.
- A paused channel holds its notifications where they are; a channel with an open circuit is
  skipped. Past its age budget a notification is a dead letter without being tried.
- An error of ours costs one unknown attempt, so a notification that always trips it ends as a
  dead letter instead of retrying forever.

Nothing here touches the database: what happened is returned as one `Outcome` per
notification, which `recording` writes. The state changes themselves are `transitions`' rules.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from database.models import NotificationStatus
from services.clock import Clock
from services.masking import mask_text
from services.notifications import transitions
from services.notifications.batches import AttemptRow, ChannelStatus, Job
from services.notifications.channels.base import Channel, Outgoing, SendResult
from services.notifications.config import DispatcherConfig
from services.notifications.failures import ChannelError, Failure, FailureClass
from services.notifications.text import split_text

log = logging.getLogger(__name__)

_PENDING = NotificationStatus.PENDING.value
_SENT = NotificationStatus.SENT.value


@dataclass
class Outcome:
    """What delivering one claimed notification came to; a mutable record, cheap to build."""

    job: Job
    status: str = _PENDING
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

    def apply(self, step: transitions.Step) -> None:
        """The in-memory twin of `transitions.apply` (the dispatcher never restarts a row)."""
        self.status = step.status.value
        if step.fresh:
            self.channel_index = step.channel_index
            self.channel_attempts = 0
            self.parts_sent = 0
        self.next_attempt_at = step.due_at
        self.dead_reason = step.reason


def circuit_open_until(
    trips: int, now: datetime, probe_seconds: float, cap: float = 300.0
) -> datetime:
    """When a channel broken `trips` times in a row is probed again: the delay doubles, up to
    `cap` seconds (never below `probe_seconds`)."""
    delay = probe_seconds * 2 ** min(max(trips - 1, 0), 32)
    return now + timedelta(seconds=min(delay, max(cap, probe_seconds)))


def fit(value: str | None, size: int) -> str | None:
    """A provider's or a setting's string as its column can hold it: no NUL (PostgreSQL text
    cannot), at most `size` characters. A row that cannot be written would have its whole
    batch sent again when the lease ends."""
    return None if value is None else value.replace("\x00", "")[:size]


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, ChannelError) and exc.failure.kind is FailureClass.TRANSIENT


class DeliveryPolicy:
    def __init__(
        self, channels: Mapping[str, Channel], clock: Clock, config: DispatcherConfig
    ) -> None:
        self.channels = dict(channels)
        self.clock = clock
        self.config = config
        # How the quick in-call retries wait; a test may replace it to see the waits.
        self.retry_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def deliver_all(
        self, jobs: list[Job], states: dict[str, ChannelStatus], stopping: asyncio.Event
    ) -> list[Outcome]:
        """Deliver a claimed batch: each recipient's notifications in order, recipients at once.

        `states` is shared by the batches in flight: a circuit one opens, the others see at
        once. Once `stopping` is set, what was not started goes back as it was.
        """
        by_recipient: dict[int | str | None, list[Job]] = {}
        for job in jobs:
            by_recipient.setdefault(job.recipient.key, []).append(job)

        async def in_order(group: list[Job]) -> list[Outcome]:
            outcomes = []
            for job in group:
                if stopping.is_set():
                    outcomes.append(self.untouched(job))
                    continue
                try:
                    outcomes.append(await self.deliver(job, states))
                except Exception as exc:  # a bug must cost one attempt, not loop forever
                    log.exception("delivering notification %s failed inside the dispatcher",
                                  job.id)
                    outcomes.append(self.internal_error(job, exc))
            return outcomes

        groups = await asyncio.gather(*(in_order(g) for g in by_recipient.values()))
        return [outcome for group in groups for outcome in group]

    def untouched(self, job: Job) -> Outcome:
        """Handed back unsent, due now, as it was claimed."""
        outcome = self._start(job)
        outcome.apply(transitions.wait(job.channel_index, self.clock.now()))
        return outcome

    def internal_error(self, job: Job, exc: Exception) -> Outcome:
        """An error of ours, not the provider's: one unknown attempt (see the docstring)."""
        outcome = self._start(job)
        outcome.channel_attempts += 1
        outcome.tries = 1
        outcome.failure = Failure(FailureClass.UNKNOWN, "dispatcher", type(exc).__name__,
                                  mask_text(str(exc), limit=800)[:200])
        current = job.channel_index
        if outcome.channel_attempts >= self.config.unknown_max_attempts:
            step = transitions.dead(current, f"internal error: {type(exc).__name__}")
        else:
            due = self.clock.now() + timedelta(seconds=self.config.retry_schedule[0])
            step = transitions.wait(current, due)
        outcome.apply(step)
        return outcome

    @staticmethod
    def _start(job: Job) -> Outcome:
        return Outcome(job, channel_index=job.channel_index,
                       channel_attempts=job.channel_attempts, parts_sent=job.parts_sent)

    async def deliver(self, job: Job, states: dict[str, ChannelStatus]) -> Outcome:
        now = self.clock.now()
        outcome = self._start(job)
        expired = transitions.out_of_time(job.channel_index, job.budget_from, now,
                                          self.config.max_age)
        if expired is not None:
            outcome.apply(expired)
            return outcome
        config = self.config
        while True:
            channel = self._pick_channel(job, outcome, states, now)
            if channel is None:
                return outcome  # dead or waiting: _pick_channel applied the step
            # Taken before the send: a circuit another batch opens while this send is under
            # way is not closed by its success, only one this send was probing.
            probed = states.get(channel.name)
            failure = await self._send(job, channel, outcome)
            if failure is None:
                if probed is not None and probed.circuit_trips:
                    outcome.healed.append(channel.name)
                    states[channel.name] = probed._replace(circuit_open_until=None,
                                                           circuit_trips=0)
                outcome.status = _SENT
                outcome.sent_at = self.clock.now()
                return outcome
            outcome.failure = failure
            now = self.clock.now()
            current = outcome.channel_index
            if failure.kind is FailureClass.RATE_LIMITED:
                wait = failure.retry_after or config.default_wait_seconds
                outcome.apply(transitions.wait(current, now + timedelta(seconds=wait)))
                return outcome
            if failure.kind in (FailureClass.TRANSIENT, FailureClass.UNKNOWN):
                outcome.channel_attempts += 1
                budget = (
                    config.unknown_max_attempts
                    if failure.kind is FailureClass.UNKNOWN
                    else config.channel_max_attempts
                )
                if failure.kind is FailureClass.UNKNOWN:
                    log.warning("unknown %s error code %s (%s): treated as transient",
                                failure.provider, failure.code, failure.text)
                if outcome.channel_attempts < budget:
                    schedule = config.retry_schedule
                    step = schedule[min(outcome.channel_attempts - 1, len(schedule) - 1)]
                    outcome.apply(transitions.wait(current, now + timedelta(seconds=step)))
                    return outcome
            elif failure.kind is FailureClass.PERMANENT:
                if failure.opt_out:
                    outcome.opt_outs[channel.name] = f"{failure.provider} {failure.code}"
            elif failure.kind is FailureClass.BROKEN:
                outcome.broken.append((channel.name, failure))
                state = self._open_circuit(states.get(channel.name), now)
                states[channel.name] = state
                if not job.allow_fallback:
                    # It may not move on: it waits for the channel to be mended (until its
                    # maximum age), rather than dying of someone else's expired token.
                    outcome.apply(transitions.wait(current, state.circuit_open_until or now))
                    return outcome
            step = transitions.next_channel(current, len(job.chain),
                                            allow_fallback=job.allow_fallback, after=failure,
                                            now=now)
            outcome.apply(step)
            if step.status is transitions.FAILED:
                return outcome

    def _pick_channel(
        self, job: Job, outcome: Outcome, states: dict[str, ChannelStatus], now: datetime
    ) -> Channel | None:
        """The first usable channel from the current index on; None when a step was applied
        instead (waiting for a paused channel, or dead: nothing can reach the recipient)."""
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
                outcome.apply(transitions.wait(start, recheck, on=index))
                return None
            if state is not None and state.circuit_open_until and state.circuit_open_until > now:
                if not job.allow_fallback:
                    outcome.apply(transitions.wait(start, state.circuit_open_until, on=index))
                    return None
                continue
            if index != start:
                outcome.apply(transitions.move_to(start, index, now))
            return channel
        failure = outcome.failure
        why = f"; last error {transitions.describe(failure)}" if failure else ""
        outcome.apply(transitions.dead(start, f"no usable channel can reach the recipient{why}"))
        return None

    def _open_circuit(self, state: ChannelStatus | None, now: datetime) -> ChannelStatus:
        """The circuit as this batch sees it from now on (recording saves the database's)."""
        trips = (state.circuit_trips if state else 0) + 1
        until = circuit_open_until(trips, now, self.config.circuit_probe_seconds,
                                   self.config.circuit_probe_max_seconds)
        return ChannelStatus(paused=state.paused if state else False,
                             circuit_open_until=until, circuit_trips=trips)

    def _outgoing(self, job: Job, channel: Channel) -> list[Outgoing]:
        payload = job.payload
        subject = payload.get("subject")
        extra = {"buttons": payload["buttons"]} if payload.get("buttons") else {}
        if payload.get("fields"):
            extra["fields"] = payload["fields"]
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
        """One try, recorded as one attempt row; a failure raises ChannelError."""
        started = time.monotonic()
        try:
            result = await channel.send(job.recipient, message)
        except ChannelError as exc:
            failure = exc.failure
        except Exception as exc:  # a bug in a channel must not lose the row
            log.exception("channel %s raised an unexpected error", channel.name)
            failure = Failure(FailureClass.UNKNOWN, channel.name, type(exc).__name__,
                              mask_text(str(exc), limit=800)[:200])
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
            sender=fit(result.sender, 64) if result else None,
            address=fit(result.address, 254) if result else None,
            outcome=outcome,
            error_class=failure.kind.value if failure else None,
            error_code=failure.code[:32] if failure else None,
            error_text=failure.text[:500] if failure else None,
            latency_ms=int((time.monotonic() - started) * 1000),
            at=self.clock.now(),
        )
