"""Sender health on both engines, against the fake Graph API: a number broken with a
sender-level code goes down and traffic moves to the other number without opening the channel's
circuit; a down number is probed with a doubling backoff capped at 5 minutes, admins are told
once after 5 failed probes, and a good probe brings it back. Time moves with the test clock."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from database.engine import Database
from database.models import ChannelState, Notification, SenderState, User
from services.alerts import ALERT_KIND, Alerts
from services.clock import FakeClock
from services.notifications import outbox
from services.notifications.channels.base import ChannelName, Outgoing, Recipient
from services.notifications.channels.whatsapp import WhatsAppChannel
from services.notifications.delivery import circuit_open_until
from services.notifications.dispatcher import Dispatcher, DispatcherConfig
from services.notifications.failures import ChannelError, FailureClass
from services.notifications.pacing import MemoryRateLimiter
from services.sender_health import DOWN, HEALTHY, SenderHealth, probe_delay
from tests.fakes.whatsapp import DEFAULT_API_VERSION, DEFAULT_TOKEN, FakeWhatsApp
from tests.support import make_user

PRIMARY, SECONDARY = "100100", "100200"
PHONE = "+33612345678"
ADMIN_TG = 9000


@dataclass
class Senders:
    fake: FakeWhatsApp
    health: SenderHealth
    channel: WhatsAppChannel
    clock: FakeClock
    db: Database
    alerts: Alerts

    def recipient(self) -> Recipient:
        return Recipient(user_id=7, phone=PHONE,
                         whatsapp_inbound_at=self.clock.now() - timedelta(hours=1))

    async def send(self, key: str = "k") -> str | None:
        result = await self.channel.send(self.recipient(), Outgoing(1, "test", key, text="Hi"))
        return result.sender

    async def state(self, sender: str) -> SenderState | None:
        async with self.db.transaction() as session:
            return await session.get(SenderState, sender)

    async def probe(self) -> str:
        return await self.health.probe_due(self.channel.probe, self.alerts)


class TickingClock(FakeClock):
    """`now()` moves when the test says; monotonic time keeps running, so the channel's pacing
    (a real, short sleep) works as in production."""

    def __init__(self) -> None:
        super().__init__()
        self._origin = time.monotonic()

    def monotonic(self) -> float:
        return super().monotonic() + (time.monotonic() - self._origin)


@pytest.fixture
async def senders(db: Database) -> AsyncIterator[Senders]:
    clock = TickingClock()
    async with FakeWhatsApp(phone_number_ids=(PRIMARY, SECONDARY)) as fake:
        health = SenderHealth(db, clock, (PRIMARY, SECONDARY), probe_base=60, probe_max=300,
                              alert_after=5)
        channel = WhatsAppChannel(
            token=DEFAULT_TOKEN, phone_number_ids=(PRIMARY, SECONDARY), api_base=fake.base_url,
            api_version=DEFAULT_API_VERSION, limiter=MemoryRateLimiter(clock), clock=clock,
            recipient_interval=0, health=health,
        )
        alerts = Alerts(admin_telegram_ids=[ADMIN_TG], window=timedelta(hours=1))
        yield Senders(fake, health, channel, clock, db, alerts)
        await channel.close()


@pytest.mark.parametrize("code", [131031, 133010])
async def test_a_broken_number_goes_down_and_traffic_moves_to_the_other(
    senders: Senders, code: int
) -> None:
    senders.fake.break_number(PRIMARY, code)
    assert await senders.send("a") == SECONDARY
    assert (await senders.state(PRIMARY)).state == DOWN
    tried = len([r for r in senders.fake.requests if f"/{PRIMARY}/" in r.path])
    assert await senders.send("b") == SECONDARY
    # The down number is not tried again for each send.
    assert len([r for r in senders.fake.requests if f"/{PRIMARY}/" in r.path]) == tried
    assert [m.phone_number_id for m in senders.fake.sent] == [SECONDARY, SECONDARY]


async def test_another_process_sees_the_number_down(senders: Senders) -> None:
    senders.fake.break_number(PRIMARY)
    assert await senders.send() == SECONDARY
    other = SenderHealth(senders.db, senders.clock, (PRIMARY, SECONDARY))
    assert await other.usable() == [SECONDARY]


async def test_only_when_no_number_is_left_is_the_channel_broken(senders: Senders) -> None:
    senders.fake.break_number(PRIMARY)
    senders.fake.break_number(SECONDARY, 133010)
    with pytest.raises(ChannelError) as raised:
        await senders.send()
    assert (raised.value.failure.kind, raised.value.failure.scope) == (
        FailureClass.BROKEN, "channel")
    # With every number down, nothing is even tried.
    before = len(senders.fake.requests)
    with pytest.raises(ChannelError):
        await senders.send("again")
    assert len(senders.fake.requests) == before


async def test_one_broken_number_never_opens_the_channel_circuit(
    senders: Senders, db: Database
) -> None:
    clock = senders.clock
    user = await make_user(db, clock, telegram_id=None, phone=PHONE)
    await db.run(lambda s: s.execute(update(User).where(User.id == user).values(
        whatsapp_inbound_at=clock.now() - timedelta(minutes=5))))
    for i in range(3):
        await db.run(lambda s, i=i: outbox.enqueue(
            s, recipient_id=user, kind="request.update", idempotency_key=f"u:{i}",
            text=f"Update {i}", now=clock.now(), channels=["whatsapp"], allow_fallback=False))
    senders.fake.break_number(PRIMARY)
    dispatcher = Dispatcher(
        db, {ChannelName.WHATSAPP: senders.channel}, clock, senders.alerts,
        DispatcherConfig(send_retry_wait=0, workers=1, batch_size=10), owner="test",
    )
    await dispatcher.run_once()
    async with db.transaction() as session:
        statuses = list(await session.scalars(select(Notification.status)))
        circuit = await session.get(ChannelState, "whatsapp")
    assert statuses == ["sent"] * 3
    assert circuit is None or circuit.circuit_open_until is None
    assert {m.phone_number_id for m in senders.fake.sent} == {SECONDARY}


async def test_a_down_number_is_probed_with_a_capped_doubling_backoff_and_alerted_once(
    senders: Senders, db: Database
) -> None:
    fake, clock = senders.fake, senders.clock
    await make_user(db, clock, telegram_id=ADMIN_TG, roles="requester,admin")
    fake.break_number(PRIMARY)
    await senders.send()
    assert await senders.probe() == "probed 0, back 0"  # not due yet

    waits = []
    for _ in range(7):
        due = (await senders.state(PRIMARY)).next_probe_at
        waits.append((due - clock.now()).total_seconds())
        clock.advance(seconds=waits[-1])
        assert await senders.probe() == "probed 1, back 0"
    assert waits == [60, 120, 240, 300, 300, 300, 300]
    assert fake.probes == [PRIMARY] * 7
    async with db.transaction() as session:
        alerts = list(await session.scalars(
            select(Notification.payload).where(Notification.kind == ALERT_KIND)))
    assert len(alerts) == 1 and PRIMARY in alerts[0]["text"]

    fake.heal_number(PRIMARY)
    clock.advance(seconds=300)
    assert await senders.probe() == "probed 1, back 1"
    assert (await senders.state(PRIMARY)).state == HEALTHY
    assert await senders.send("after") == PRIMARY


async def test_a_limited_number_comes_back_degraded_and_is_used_after_the_healthy_one(
    senders: Senders,
) -> None:
    senders.fake.break_number(PRIMARY)
    await senders.send()
    senders.fake.heal_number(PRIMARY)
    senders.fake.number_status[PRIMARY] = ("CONNECTED", "LIMITED")
    senders.clock.advance(seconds=60)
    assert await senders.probe() == "probed 1, back 1"
    assert await senders.health.usable() == [SECONDARY, PRIMARY]


async def test_transient_failures_make_a_number_degraded_and_a_success_heals_it(
    senders: Senders,
) -> None:
    for _ in range(3):
        senders.fake.fail_next(code=131000, phone_number_id=PRIMARY)
        with pytest.raises(ChannelError):
            await senders.send()
    assert senders.health.state(PRIMARY) == "degraded"
    assert await senders.health.usable() == [SECONDARY, PRIMARY]
    assert await senders.send() == SECONDARY
    senders.fake.break_number(SECONDARY)
    assert await senders.send() == PRIMARY  # the degraded number still serves
    assert senders.health.state(PRIMARY) == HEALTHY


def test_probe_and_circuit_backoffs_double_and_stop_at_five_minutes() -> None:
    assert [probe_delay(n, 60, 300) for n in range(6)] == [60, 120, 240, 300, 300, 300]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    delays = [(circuit_open_until(trips, now, 60, 300) - now).total_seconds()
              for trips in (1, 2, 3, 4, 10, 100)]
    assert delays == [60, 120, 240, 300, 300, 300]
