"""Composition of the delivery engine: limiters, channels, the dispatcher and the scheduler,
built from the settings and started and stopped with the bot.

With REDIS_URL every process dispatches and the provider limits live in Redis, shared by all of
them. Without it the limits live in memory, so only one process may dispatch: the one holding
the database lease "dispatcher"; the others only enqueue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from aiogram import Bot
from sqlalchemy.ext.asyncio import AsyncSession

from bot.closing import Step, close_all
from bot.config import Settings
from bot.telegram_pacing import PacingMiddleware
from database.engine import Database
from services.actions import Action
from services.alerts import Alerts
from services.clock import Clock
from services.health import Component, outbox_health
from services.notifications.channels.base import Channel, ChannelName
from services.notifications.channels.email import EmailChannel
from services.notifications.channels.manual import ManualChannel
from services.notifications.channels.sms import SmsChannel
from services.notifications.channels.telegram import TelegramChannel
from services.notifications.channels.webhook import WebhookChannel
from services.notifications.channels.whatsapp import WhatsAppChannel
from services.notifications.channels.whatsapp_limits import MemoryMessagingLimit, tier_limit
from services.notifications.dispatcher import Dispatcher, DispatcherConfig, new_owner
from services.notifications.pacing import MemoryRateLimiter, RateLimiter
from services.relay import Relay
from services.scheduler import Scheduler, register_core_jobs
from services.sender_health import SenderHealth
from services.whatsapp_desk import WhatsAppDesk
from services.whatsapp_inbound import InboundWorker, Processor, WorkerConfig
from services.workflow import WorkflowConfig

log = logging.getLogger(__name__)

TWILIO_STATUS_PATH = "/webhooks/twilio/status"

# The settings each channel needs: a channel missing any of them is off (not an error). The one
# rule for "which channels are on", read by the delivery engine, the start-up log and /profile;
# `build_delivery` refuses to start if a channel's own `enabled` disagrees with it.
CHANNEL_SETTINGS: dict[str, tuple[str, ...]] = {
    ChannelName.TELEGRAM: (),  # BOT_TOKEN: without it the bot does not start at all
    ChannelName.WHATSAPP: ("whatsapp_token", "whatsapp_phone_number_ids"),
    ChannelName.SMS: ("twilio_account_sid", "twilio_auth_token", "twilio_from"),
    ChannelName.EMAIL: ("smtp_host", "smtp_from"),
    ChannelName.MANUAL: (),  # a task for an admin, in the database
    ChannelName.WEBHOOK: ("alert_webhook_url",),
}


def missing_channel_settings(settings: Settings) -> dict[str, tuple[str, ...]]:
    """For every channel, the environment variables it lacks (empty: the channel is on)."""
    return {
        name: tuple(n.upper() for n in needed if not getattr(settings, n))
        for name, needed in CHANNEL_SETTINGS.items()
    }


def channels_on(settings: Settings) -> tuple[str, ...]:
    """The channels these settings switch on, in CHANNEL_SETTINGS' order."""
    missing = missing_channel_settings(settings)
    return tuple(name for name, lacking in missing.items() if not lacking)


@dataclass
class Delivery:
    alerts: Alerts
    channels: dict[str, Channel]
    dispatcher: Dispatcher
    scheduler: Scheduler
    dispatching: bool
    redis: Any = None
    # Processes the WhatsApp messages the webhook stored (every process runs one).
    inbound: InboundWorker | None = None
    _started: list[str] = field(default_factory=list)

    async def start(self) -> None:
        if self.dispatching:
            await self.dispatcher.start()
            self._started.append("dispatcher")
        if self.inbound is not None:
            self.inbound.start()
            self._started.append("inbound")
        self.scheduler.start()
        self._started.append("scheduler")

    async def stop(self, timeout: float) -> None:
        """Stop claiming and sweeping; finish or release what is in hand; close connections."""
        steps: list[Step] = []
        if "scheduler" in self._started:
            steps.append(("scheduler", partial(self.scheduler.shutdown, timeout)))
        if "dispatcher" in self._started:
            steps.append(("dispatcher", partial(self.dispatcher.stop, timeout)))
        if "inbound" in self._started and self.inbound is not None:
            steps.append(("inbound worker", partial(self.inbound.stop, timeout)))
        self._started.clear()
        steps += [(f"{name} channel", channel.close) for name, channel in self.channels.items()]
        if self.redis is not None:
            steps.append(("Redis connection", self.redis.aclose))
        await close_all(steps)

    async def health(self, session: AsyncSession) -> Component:
        """The outbox's part of /health, read in the health snapshot's read-only session."""
        return await outbox_health(session, now=self.dispatcher.clock.now())


def build_delivery(
    settings: Settings,
    db: Database,
    bot: Bot,
    clock: Clock,
    *,
    public_base_url: str,
    pack_action: Callable[[Action], str],
    relay: Relay | None = None,
    workflow: WorkflowConfig | None = None,
) -> Delivery:
    """`pack_action` turns a notification button's action into Telegram callback data (the
    handlers' packing, beside the code that decodes it). `relay` (the operators' chat) places
    relayed messages in their threads and relays each inbound WhatsApp message. `workflow`
    is the service requests' configuration the WhatsApp desk opens requests with."""
    redis = None
    limiter: RateLimiter
    if settings.redis_url:
        from services.notifications.pacing_redis import RedisMessagingLimit, RedisRateLimiter

        # If Redis goes away, pace in memory for this process and try Redis again shortly.
        redis_limiter = RedisRateLimiter.from_url(
            settings.redis_url, fallback=MemoryRateLimiter(clock)
        )
        redis, limiter = redis_limiter.redis, redis_limiter
        messaging_limit: Any = RedisMessagingLimit(
            redis, tier_limit(settings.whatsapp_messaging_limit)
        )
    else:
        limiter = MemoryRateLimiter(clock)
        messaging_limit = MemoryMessagingLimit(tier_limit(settings.whatsapp_messaging_limit))

    # Every Bot API call passes through this one limiter: handler replies and deliveries alike.
    # A send that would wait past half a lease is deferred instead, so no row outlives its lease.
    bot.session.middleware(
        PacingMiddleware.from_settings(
            settings, limiter, clock, max_wait=settings.dispatcher_lease_seconds / 2
        )
    )

    sender_health = SenderHealth(
        db, clock, settings.whatsapp_phone_number_ids,
        probe_base=settings.whatsapp_sender_probe_seconds,
        probe_max=settings.probe_max_seconds,
        alert_after=settings.whatsapp_sender_alert_after,
    )
    whatsapp = WhatsAppChannel(
        token=settings.whatsapp_token or "",
        phone_number_ids=list(settings.whatsapp_phone_number_ids),
        limiter=limiter,
        clock=clock,
        api_base=settings.whatsapp_api_base,
        api_version=settings.whatsapp_api_version,
        rate_per_second=settings.whatsapp_rate_per_second,
        recipient_interval=settings.whatsapp_recipient_interval_seconds,
        daily_cap_per_sender=settings.whatsapp_daily_cap_per_sender,
        messaging_limit=messaging_limit,
        health=sender_health,
    )
    channels: dict[str, Channel] = {
        ChannelName.TELEGRAM: TelegramChannel(bot, pack_action=pack_action, threads=relay),
        ChannelName.WHATSAPP: whatsapp,
        ChannelName.SMS: SmsChannel(
            account_sid=settings.twilio_account_sid or "",
            auth_token=settings.twilio_auth_token or "",
            from_number=settings.twilio_from or "",
            limiter=limiter,
            clock=clock,
            api_base=settings.twilio_api_base,
            rate_per_second=settings.twilio_rate_per_second,
            status_callback_url=f"{public_base_url}{TWILIO_STATUS_PATH}",
        ),
        ChannelName.EMAIL: EmailChannel(
            settings.smtp_host or "",
            settings.smtp_port,
            settings.smtp_from or "",
            username=settings.smtp_user,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
        ),
        ChannelName.MANUAL: ManualChannel(db, clock),
        # Destinations that are not users: "webhook:alerts" (ALERT_WEBHOOK_URL).
        ChannelName.WEBHOOK: WebhookChannel(
            {"alerts": settings.alert_webhook_url},
            limiter=limiter,
            rate_per_second=settings.alert_webhook_rate_per_second,
        ),
    }
    on = channels_on(settings)
    disagree = [name for name, channel in channels.items() if channel.enabled != (name in on)]
    if disagree:  # a channel's own test changed without CHANNEL_SETTINGS: fix the table
        raise RuntimeError(f"CHANNEL_SETTINGS disagrees with channel(s) {', '.join(disagree)}")

    alerts = Alerts(
        admin_telegram_ids=settings.admin_ids,
        window=timedelta(seconds=settings.alert_window_seconds),
        default_language=settings.default_language,
        webhook=bool(settings.alert_webhook_url),
    )
    owner = new_owner()
    config = DispatcherConfig(
        workers=settings.dispatcher_workers,
        batch_size=settings.dispatcher_batch_size,
        lease=timedelta(seconds=settings.dispatcher_lease_seconds),
        idle_seconds=settings.dispatcher_idle_seconds,
        channel_max_attempts=settings.channel_max_attempts,
        max_age=settings.notification_max_age,
        retry_schedule=settings.retry_schedule_seconds,
        send_retry_wait=settings.send_retry_wait_seconds,
        circuit_probe_seconds=settings.circuit_probe_seconds,
        circuit_probe_max_seconds=settings.probe_max_seconds,
        exclusive=redis is None,
        leader_lease=timedelta(seconds=settings.dispatcher_leader_lease_seconds),
    )
    dispatcher = Dispatcher(db, channels, clock, alerts, config, owner=owner)
    scheduler = Scheduler(
        db, clock, alerts, owner=owner, shutdown_timeout=settings.shutdown_timeout_seconds
    )
    register_core_jobs(
        scheduler, db, dead_letter_retention=timedelta(days=settings.dead_letter_retention_days),
        delivery_address_retention=timedelta(days=settings.delivery_address_retention_days),
    )
    if whatsapp.enabled:
        async def probe_senders(now: datetime) -> str:
            return await sender_health.probe_due(whatsapp.probe, scheduler.alerts)

        scheduler.add_job("whatsapp_sender_probe", probe_senders, every=timedelta(seconds=15),
                          lease=timedelta(minutes=2))
    # The WhatsApp desk answers what is for it ("new", "status"...) before the relay, which
    # relays everything else to the operators' chat.
    processors: list[Processor] = []
    if whatsapp.enabled:
        processors.append(WhatsAppDesk(alerts, workflow).process)
    if relay is not None and relay.enabled:
        processors.append(relay.process)
    inbound = InboundWorker(
        db, clock, owner=owner,
        config=WorkerConfig(
            lease=timedelta(seconds=settings.inbound_lease_seconds),
            batch_size=settings.inbound_batch_size,
            default_language=settings.default_language,
        ),
        processors=processors,
    )
    return Delivery(
        alerts=alerts,
        channels=channels,
        dispatcher=dispatcher,
        scheduler=scheduler,
        dispatching=settings.dispatcher_enabled,
        redis=redis,
        inbound=inbound,
    )
