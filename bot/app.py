"""Composition root and lifecycle: builds every part from the settings, runs them, stops them.

`run()` is what `python main.py run` does: migrate, check the token, start the web app, take
updates (polling or webhook) until SIGTERM/SIGINT, then stop taking updates, let handlers already
running finish (bounded by SHUTDOWN_TIMEOUT_SECONDS), and close sessions and the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path

from aiogram import Bot, Dispatcher, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import PRODUCTION, TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramNetworkError, TelegramUnauthorizedError
from aiogram.fsm.storage.base import BaseStorage
from aiogram.types import BotCommand
from aiohttp import web

from bot.closing import Step, close_all
from bot.config import ConfigError, Settings
from bot.delivery import Delivery, build_delivery, channels_on
from bot.fsm_storage import DatabaseStorage
from bot.i18n import build_i18n
from bot.logs import LogContextMiddleware
from bot.memory import freeze_startup_objects, keep_response_models
from bot.startup_log import log_startup
from bot.web import APP_KEY_CHECKS, build_web_app
from bot.webhooks import TELEGRAM_PATH, register_telegram_webhook, register_webhooks
from database.engine import Database
from database.migrate import upgrade
from handlers import get_routers
from handlers.buttons import pack_action
from handlers.dashboard import setup_dashboard
from middlewares.errors import ErrorMiddleware, ErrorReporter
from middlewares.i18n import UserLanguageMiddleware
from middlewares.inflight import InFlightMiddleware
from middlewares.menus import CommandMenuMiddleware
from middlewares.throttling import FloodGate, ThrottlingMiddleware
from middlewares.user import LanguageCache, UserMiddleware
from services.alerts import Alerts
from services.backup import default_backup_dir, register_backup_job
from services.clock import Clock, SystemClock
from services.contacts import Profiles
from services.dashboard_access import DashboardAccess
from services.delivery_stats import DeliveryStats
from services.errors import ErrorRecorder
from services.health import SystemHealth
from services.inventory import Inventory
from services.inventory_reconciliation import InventoryReconciliation
from services.menus import EVERYONE, CommandMenus, render_commands
from services.notifications.dead_letters import DeadLetters, FailedNotifications
from services.notifications.manual_tasks import ManualTasks
from services.people import People
from services.privacy import Privacy
from services.recovery_jobs import (
    BackgroundJobs,
    jobs_config,
    register_recovery_jobs,
    stuck_condition,
)
from services.relay import Relay, RelayConfig, WhatsAppMedia
from services.users import Users
from services.workflow import Catalogue, ServiceRequests, WorkflowConfig
from services.workflow.jobs import register_workflow_jobs
from services.workflow.recovery import WorkflowRecovery

log = logging.getLogger(__name__)

TELEGRAM_WEBHOOK_PATH = TELEGRAM_PATH


def build_bot(settings: Settings) -> Bot:
    if not settings.bot_token:
        raise ConfigError(
            "BOT_TOKEN is not set: put BOT_TOKEN=<token from @BotFather> in .env or the "
            "environment (see .env.example)"
        )
    api = (
        TelegramAPIServer.from_base(settings.telegram_api_base.rstrip("/"))
        if settings.telegram_api_base
        else PRODUCTION
    )
    return Bot(
        settings.bot_token,
        session=AiohttpSession(api=api),
        default=DefaultBotProperties(parse_mode=ParseMode.HTML),
    )


def build_storage(settings: Settings, db: Database, clock: Clock) -> BaseStorage:
    """Redis when REDIS_URL is set (several processes); else the database, so a half-finished
    form survives a restart on the embedded default too."""
    if settings.redis_url:
        from aiogram.fsm.storage.redis import RedisStorage

        return RedisStorage.from_url(settings.redis_url)
    return DatabaseStorage(db, clock)


async def _check_storage(storage: BaseStorage) -> None:
    redis = getattr(storage, "redis", None)
    if redis is None:
        return
    from redis.exceptions import RedisError

    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        raise ConfigError(
            f"cannot reach Redis at REDIS_URL ({type(exc).__name__}); start it or unset REDIS_URL"
        ) from None


@dataclass
class Application:
    """Every long-lived part of one bot process."""

    settings: Settings
    db: Database
    bot: Bot
    dispatcher: Dispatcher
    inflight: InFlightMiddleware
    clock: Clock
    web_runner: web.AppRunner | None = None
    public_base_url: str = ""
    delivery: Delivery | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


def workflow_config(settings: Settings) -> WorkflowConfig:
    """The service-request settings as services.workflow takes them."""
    stuck = {
        f"stuck_after_{state}": timedelta(minutes=getattr(settings, f"stuck_after_{state}_minutes"))
        for state in ("new", "matching", "offered", "assigned", "in_progress", "completed",
                      "disputed", "escalated")
    }
    return WorkflowConfig(
        offer_candidates=settings.offer_candidates,
        offer_expiry=timedelta(minutes=settings.offer_expiry_minutes),
        completion_reminder_after=timedelta(hours=settings.completion_reminder_hours),
        auto_confirm_after=timedelta(hours=settings.auto_confirm_hours),
        stuck_after=stuck,
        job_interval=timedelta(seconds=settings.workflow_job_interval_seconds),
    )


def build_relay(settings: Settings, db: Database, clock: Clock) -> Relay:
    """The relay to the operators' chat (off without OPERATORS_CHAT_ID)."""
    return Relay(
        db, clock,
        RelayConfig(
            chat_id=settings.operators_chat_id,
            language=settings.default_language,
            reply_template=settings.whatsapp_reply_template,
            media_retry=timedelta(minutes=settings.relay_media_retry_minutes),
            group_per_minute=settings.telegram_group_per_minute,
        ),
        WhatsAppMedia(
            token=settings.whatsapp_token, phone_number_ids=settings.whatsapp_phone_number_ids,
            api_base=settings.whatsapp_api_base, api_version=settings.whatsapp_api_version,
        ),
    )


def build_dispatcher(
    settings: Settings,
    db: Database,
    clock: Clock,
    *,
    extra_routers: Sequence[Router] = (),
) -> tuple[Dispatcher, InFlightMiddleware]:
    """The Dispatcher with its middlewares, fresh routers, and the services handlers ask for by
    name (aiogram's dependency injection: `users`, `profiles`, `dead_letters`, `clock`,
    `settings`). Handlers reach the database only through those services."""
    i18n = build_i18n(settings.default_language)
    users = Users(
        db, clock, default_language=settings.default_language, admin_ids=settings.admin_ids
    )
    # Admin alerts of errors; `start` swaps in the delivery engine's Alerts once it is built.
    errors = ErrorRecorder(
        db, clock, Alerts(
            admin_telegram_ids=settings.admin_ids,
            window=timedelta(seconds=settings.alert_window_seconds),
            default_language=settings.default_language,
        ),
        spool_size=settings.error_spool_size,
    )
    languages = LanguageCache()
    error_reporter = ErrorReporter(errors, i18n, settings.default_language, languages)
    dp = Dispatcher(
        storage=build_storage(settings, db, clock),
        error_recorder=errors,
        error_reporter=error_reporter,
        clock=clock,
        settings=settings,
        users=users,
        # /profile offers only the channels these settings switch on (the delivery's rule).
        profiles=Profiles(db, clock, switched_on=channels_on(settings)),
        dead_letters=DeadLetters(db, clock),
        # Service requests (issue 10); `start` swaps in the delivery engine's Alerts.
        service_requests=ServiceRequests(db, clock, errors.alerts, workflow_config(settings)),
        catalogue=Catalogue(db),
        inventory=Inventory(db, clock),
        # The operators' chat (issue 11): relayed customers, answers, /support.
        relay=build_relay(settings, db, clock),
        # /workflow_recovery -> Inventory, People, Audit (issue 12).
        inventory_reconciliation=InventoryReconciliation(db, clock),
        people=People(db, clock, admin_ids=settings.admin_ids),
    )
    # /workflow_recovery -> Stuck workflows (issue 12), on the facade: its alerts follow the swap.
    dp["workflow_recovery"] = WorkflowRecovery(dp["service_requests"])
    dp["failed_notifications"] = FailedNotifications(db, clock)
    # /workflow_recovery -> System health, Background jobs (issue 12); `start` attaches the
    # delivery engine's channels and scheduler.
    dp["system_health"] = SystemHealth(
        db, clock, stuck_condition=stuck_condition(dp["service_requests"].config),
        max_age=settings.health_cache_seconds,
    )
    dp["background_jobs"] = BackgroundJobs(db)
    dp["manual_tasks"] = ManualTasks(db, clock)
    # The dashboard's Delivery page (issue 13): attempts per minute and hour, wait percentiles.
    dp["delivery_stats"] = DeliveryStats(db, clock)
    # The web dashboard (issue 13): /dashboard issues sign-in links to it; `start` sets the
    # base URL of the links once the web server is bound.
    dp["dashboard_access"] = DashboardAccess(
        db, clock, session_hours=settings.dashboard_session_hours
    )
    dp["dashboard_base_url"] = (
        settings.public_base_url or f"http://{settings.web_host}:{settings.web_port}"
    ).rstrip("/")
    # /mydata and /forget (issue 14): the ADMIN_IDS owners cannot erase themselves.
    dp["privacy"] = Privacy(db, clock, owner_ids=settings.admin_ids)
    inflight = InFlightMiddleware()
    # Outer update middlewares run in this order, after aiogram's own (errors, user context).
    # First: every line logged while an update is handled carries its id and user (masked).
    dp.update.outer_middleware(LogContextMiddleware())
    dp.update.outer_middleware(inflight)
    # Inside the in-flight count (shutdown waits for an error's answer too), outside the rest.
    dp.update.outer_middleware(ErrorMiddleware(error_reporter))
    dp.update.outer_middleware(
        ThrottlingMiddleware(
            FloodGate(settings.throttle_rate, settings.throttle_window_seconds, clock),
            i18n,
            languages,
            settings.default_language,
        )
    )
    dp.update.outer_middleware(UserMiddleware(users, languages))
    dp.update.outer_middleware(CommandMenuMiddleware(CommandMenus(db, clock)))
    UserLanguageMiddleware(i18n, settings.default_language).setup(dp)
    dp.include_routers(*extra_routers, *get_routers())
    return dp, inflight


async def _check_token(bot: Bot) -> None:
    try:
        me = await bot.get_me()
    except TelegramUnauthorizedError:
        raise ConfigError(
            "BOT_TOKEN was refused by Telegram (401 Unauthorized): copy the token again from "
            "@BotFather"
        ) from None
    except TelegramNetworkError as exc:
        raise ConfigError(
            f"cannot reach the Telegram Bot API ({exc.message}); check the network or "
            "TELEGRAM_API_BASE"
        ) from None
    log.info("connected to Telegram as @%s (id %s)", me.username, me.id)


async def _set_commands(bot: Bot) -> None:
    """Everyone's menu (services.menus), in each language; people with more roles get theirs
    from CommandMenuMiddleware."""
    for language in (None, "fr"):
        commands = render_commands(EVERYONE, language or "en")
        await bot.set_my_commands(
            [BotCommand(command=c, description=d) for c, d in commands], language_code=language
        )


async def start(
    settings: Settings,
    *,
    clock: Clock | None = None,
    extra_routers: Sequence[Router] = (),
) -> Application:
    """Bring every part up; raise ConfigError with a one-line reason if something is wrong."""
    clock = clock or SystemClock()
    bot = build_bot(settings)
    db = Database.from_url(settings.database_url)
    app: Application | None = None
    try:
        await upgrade(db.engine)
        await _check_token(bot)
        dispatcher, inflight = build_dispatcher(settings, db, clock, extra_routers=extra_routers)
        await _check_storage(dispatcher.storage)
        app = Application(settings, db, bot, dispatcher, inflight, clock)
        web_app = await _start_web(app)
        app.delivery = build_delivery(
            settings, db, bot, clock, public_base_url=app.public_base_url,
            pack_action=pack_action, relay=dispatcher["relay"],
            workflow=workflow_config(settings),
        )
        web_app[APP_KEY_CHECKS]["outbox"] = app.delivery.health
        dispatcher["error_recorder"].alerts = app.delivery.alerts
        dispatcher["service_requests"].alerts = app.delivery.alerts
        register_workflow_jobs(app.delivery.scheduler, dispatcher["service_requests"])
        _wire_recovery(app, web_app)
        await _set_commands(bot)
        await log_startup(
            settings, db.engine, listening=_listening(app), public_base_url=app.public_base_url
        )
        await app.delivery.start()
    except BaseException:
        steps: list[Step] = []
        if app is not None:
            if app.delivery is not None:
                steps.append(("delivery", partial(app.delivery.stop, 0)))
            if app.web_runner is not None:
                steps.append(("web server", app.web_runner.cleanup))
            steps.append(("FSM storage", app.dispatcher.storage.close))
        steps += [("Telegram session", bot.session.close), ("database", db.dispose)]
        await close_all(steps)
        raise
    return app


def _wire_recovery(app: Application, web_app: web.Application) -> None:
    """Issue 12: the health parts behind /health, /metrics and the System health screen; the
    recovery sweeps; the Background jobs screen's scheduler."""
    assert app.delivery is not None
    delivery, dp = app.delivery, app.dispatcher
    system_health: SystemHealth = dp["system_health"]
    system_health.enabled_channels = tuple(
        name for name, channel in delivery.channels.items() if channel.enabled
    )
    system_health.job_names = lambda: delivery.scheduler.jobs
    web_app[APP_KEY_CHECKS].update(system_health.checks)
    dp["background_jobs"].scheduler = delivery.scheduler
    register_recovery_jobs(
        delivery.scheduler, app.db, app.clock, jobs_config(app.settings),
        stuck_condition=stuck_condition(dp["service_requests"].config),
        health_checks=system_health.checks,
    )
    settings = app.settings
    if app.db.dialect == "sqlite":  # issue 14; PostgreSQL: pg_dump on the operator's schedule
        register_backup_job(
            delivery.scheduler, settings.database_url,
            folder=Path(settings.backup_dir or default_backup_dir(settings.database_url)),
            keep=settings.backup_keep,
            every=timedelta(seconds=settings.backup_interval_seconds),
        )


async def _start_web(app: Application) -> web.Application:
    settings = app.settings
    web_app = build_web_app(
        app.db,
        health_token=settings.health_token,
        health_cache_seconds=settings.health_cache_seconds,
        clock=app.clock,
    )
    if settings.telegram_mode == "webhook":
        register_telegram_webhook(
            web_app, app.dispatcher, app.bot, secret=settings.webhook_secret or "",
            max_concurrent_updates=settings.max_concurrent_updates,
            read_timeout=settings.webhook_read_timeout_seconds,
        )
    register_webhooks(
        web_app,
        db=app.db,
        clock=app.clock,
        whatsapp_app_secret=settings.whatsapp_app_secret,
        whatsapp_verify_token=settings.whatsapp_verify_token,
        twilio_auth_token=settings.twilio_auth_token,
        # Known once the server is bound; the alerting service once delivery is built.
        public_base_url=lambda: app.public_base_url,
        alerts=lambda: app.delivery.alerts if app.delivery is not None else None,
        read_timeout=settings.webhook_read_timeout_seconds,
        on_inbound=lambda: app.delivery.inbound.wake()
        if app.delivery is not None and app.delivery.inbound is not None else None,
    )
    # The dashboard under /admin/, over the services the menus use (the same objects).
    setup_dashboard(
        web_app, app.dispatcher.workflow_data, i18n=build_i18n(settings.default_language),
        timezone=settings.timezone, public_base_url=settings.public_base_url,
        session_hours=settings.dashboard_session_hours,
    )
    runner = web.AppRunner(web_app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.web_host, settings.web_port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot listen on {settings.web_host}:{settings.web_port} ({exc.strerror}); "
            "set WEB_HOST/WEB_PORT (WEB_PORT=0 picks a free port)"
        ) from None
    app.web_runner = runner
    host, port = runner.addresses[0][:2]
    app.public_base_url = (settings.public_base_url or f"http://{host}:{port}").rstrip("/")
    app.dispatcher["dashboard_base_url"] = app.public_base_url
    return web_app


def _listening(app: Application) -> str:
    """Where the web server is bound (the port actually bound, WEB_PORT=0 included)."""
    assert app.web_runner is not None
    host, port = app.web_runner.addresses[0][:2]
    return f"http://{host}:{port}"


async def serve(app: Application) -> None:
    """Take updates until `app.stopping` is set, then shut down gracefully."""
    dp, bot, settings = app.dispatcher, app.bot, app.settings
    allowed = dp.resolve_used_update_types()
    polling: asyncio.Task[None] | None = None
    try:
        if settings.telegram_mode == "webhook":
            await bot.set_webhook(
                f"{app.public_base_url}{TELEGRAM_WEBHOOK_PATH}",
                secret_token=settings.webhook_secret,
                allowed_updates=allowed,
            )
            log.info("webhook mode: Telegram posts updates to %s", TELEGRAM_WEBHOOK_PATH)
        else:
            await bot.delete_webhook(drop_pending_updates=False)
            polling = asyncio.create_task(
                dp.start_polling(
                    bot,
                    handle_signals=False,
                    close_bot_session=False,
                    allowed_updates=allowed,
                    tasks_concurrency_limit=settings.max_concurrent_updates,
                )
            )
            log.info("polling mode: taking updates")
        await _wait_stopping(app, polling)
    finally:
        await shutdown(app, polling)


async def _wait_stopping(app: Application, polling: asyncio.Task[None] | None) -> None:
    waiters = [asyncio.create_task(app.stopping.wait())]
    if polling is not None:
        waiters.append(polling)  # type: ignore[arg-type]
    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if polling is not None and polling in done and not app.stopping.is_set():
        polling.result()  # polling died: surface its error
    waiters[0].cancel()


async def shutdown(app: Application, polling: asyncio.Task[None] | None) -> None:
    log.info("shutting down")
    if polling is not None and not polling.done():
        try:
            await app.dispatcher.stop_polling()
        except RuntimeError:  # stopped before polling got going
            polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
    if app.web_runner is not None and app.settings.telegram_mode == "webhook":
        # The web server stops taking webhook updates before handlers drain.
        await app.web_runner.cleanup()
        app.web_runner = None
    log.info("no longer taking updates; waiting for %d running handler(s)", app.inflight.count)
    timeout = app.settings.shutdown_timeout_seconds
    if not await app.inflight.wait_idle(timeout):
        log.warning("%d handler(s) still running after %.0f s; closing anyway",
                    app.inflight.count, timeout)
    # After the handlers: what they enqueued on their way out is still delivered or left
    # pending for the next start, never half-sent. Each part is closed even if one before it
    # failed (a database outage during shutdown, say).
    # Error occurrences spooled during a database outage: a last try before they are lost.
    steps: list[Step] = [("error spool", app.dispatcher["error_recorder"].flush)]
    if app.delivery is not None:
        steps.append(("delivery", partial(app.delivery.stop, timeout)))
    steps.append(("relay", app.dispatcher["relay"].close))
    if app.web_runner is not None:
        steps.append(("web server", app.web_runner.cleanup))
    steps += [
        ("FSM storage", app.dispatcher.storage.close),
        ("Telegram session", app.bot.session.close),
        ("database", app.db.dispose),
    ]
    await close_all(steps)
    log.info("stopped")


def install_signal_handlers(app: Application) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, app, sig)


def _on_signal(app: Application, sig: signal.Signals) -> None:
    log.info("received %s", sig.name)
    app.stopping.set()


async def run(
    settings: Settings,
    *,
    clock: Clock | None = None,
    extra_routers: Sequence[Router] = (),
) -> None:
    app = await start(settings, clock=clock, extra_routers=extra_routers)
    keep_response_models()
    freeze_startup_objects()
    install_signal_handlers(app)
    await serve(app)
