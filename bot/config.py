"""Settings: the configuration contract of docs/architecture.md, read once from the environment
and `.env`.

Every setting's name is its environment variable in lower case. A malformed value fails at start
with one line naming the variable (see `load_settings`), never deep inside the bot.
"""

from __future__ import annotations

import re
from datetime import timedelta
from ipaddress import ip_address
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///data/bot.db"
SUPPORTED_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
_WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_HEALTH_TOKEN = re.compile(r"^[\x21-\x7e]{16,256}$")


def _is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


# The settings whose values are secrets: masked wherever text is logged or stored
# (services.masking). A new setting named like a secret must be listed (tests/unit/test_masking).
SECRET_SETTINGS = (
    "bot_token",
    "webhook_secret",
    "whatsapp_token",
    "whatsapp_app_secret",
    "whatsapp_verify_token",
    "twilio_auth_token",
    "smtp_password",
    "health_token",
    "alert_webhook_url",
)


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line meant for a person."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True
    )

    bot_token: str | None = None
    admin_ids: Annotated[tuple[int, ...], NoDecode] = ()
    operators_chat_id: int | None = None

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None

    telegram_api_base: str | None = None
    telegram_mode: Literal["polling", "webhook"] = "polling"
    public_base_url: str | None = None
    webhook_secret: str | None = None
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8080, ge=0, le=65535)

    whatsapp_token: str | None = None
    whatsapp_phone_number_ids: Annotated[tuple[str, ...], NoDecode] = ()
    whatsapp_app_secret: str | None = None
    whatsapp_verify_token: str | None = None
    whatsapp_api_base: str = "https://graph.facebook.com"
    whatsapp_api_version: str = "v23.0"

    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from: str | None = None
    twilio_api_base: str = "https://api.twilio.com"

    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_from: str | None = None
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = True

    default_language: Literal["en", "fr"] = "en"
    timezone: str = "UTC"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    # Inbound flood protection: a user may send this many updates per window.
    throttle_rate: int = Field(default=5, ge=1)
    throttle_window_seconds: float = Field(default=3.0, gt=0)
    # How long shutdown waits for handlers already running before it closes connections.
    shutdown_timeout_seconds: float = Field(default=20.0, ge=0)
    # A webhook body not received within this many seconds is refused (408): a body that
    # trickles in holds a connection for no longer.
    webhook_read_timeout_seconds: float = Field(default=10.0, gt=0)
    # Updates handled at once, in polling and in webhook mode; more wait for a slot.
    max_concurrent_updates: int = Field(default=100, ge=1)
    # /health: how long a snapshot is served before the database is read again, and the token
    # that shows a caller its counts (`Authorization: Bearer <token>`; loopback sees them).
    health_cache_seconds: float = Field(default=5.0, ge=0, le=3600)
    health_token: str | None = None
    # The web dashboard (/dashboard): how long a signed-in session lasts before the admin asks
    # the bot for a new link (sign-in links themselves last 10 minutes, once).
    dashboard_session_hours: float = Field(default=12.0, gt=0, le=24 * 30)

    # --- Delivery engine (outbox, dispatcher, channels) ---------------------------------------
    dispatcher_enabled: bool = True
    dispatcher_workers: int = Field(default=4, ge=1, le=64)
    dispatcher_batch_size: int = Field(default=50, ge=1, le=1000)
    dispatcher_lease_seconds: float = Field(default=60.0, gt=0)
    # Without Redis: how long the "dispatcher" leadership outlives a crashed holder.
    dispatcher_leader_lease_seconds: float = Field(default=6.0, gt=0)
    # Longest sleep between looks for due rows when nothing woke the dispatcher.
    dispatcher_idle_seconds: float = Field(default=5.0, gt=0)
    channel_max_attempts: int = Field(default=4, ge=1)
    notification_max_age: timedelta = timedelta(hours=24)
    dead_letter_retention_days: int = Field(default=30, ge=1)
    # Where a message went (chat id, phone, e-mail) is blanked on delivery_attempts after this.
    delivery_address_retention_days: int = Field(default=30, ge=1)
    # Quick in-call retries of a transient failure wait base, 2*base, 4*base seconds (jittered).
    send_retry_wait_seconds: float = Field(default=1.0, ge=0)
    # Then the row is rescheduled on this persisted schedule (seconds, comma-separated).
    retry_schedule_seconds: Annotated[tuple[float, ...], NoDecode] = (
        60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0,
    )
    # A broken channel's circuit stays open this long, doubling at each trip, before a probe.
    circuit_probe_seconds: float = Field(default=60.0, gt=0)
    alert_window_seconds: float = Field(default=3600.0, gt=0)
    # Error occurrences kept in memory while the database is away (oldest dropped first).
    error_spool_size: int = Field(default=1000, ge=1)

    # --- Provider limits ------------------------------------------------------------------------
    telegram_rate_per_second: float = Field(default=30.0, gt=0)
    telegram_per_chat_per_second: float = Field(default=1.0, gt=0)
    telegram_group_per_minute: float = Field(default=20.0, gt=0)
    whatsapp_rate_per_second: float = Field(default=80.0, gt=0)
    whatsapp_recipient_interval_seconds: float = Field(default=6.0, ge=0)
    # Unique customers messaged outside the 24 h window in a moving 24 h: 250, 2000, 10000,
    # 100000 or "unlimited".
    whatsapp_messaging_limit: Literal["250", "2000", "10000", "100000", "unlimited"] = "250"
    # Messages per sender number per day; 0: no cap.
    whatsapp_daily_cap_per_sender: int = Field(default=0, ge=0)
    twilio_rate_per_second: float = Field(default=1.0, gt=0)

    # --- Paging beyond Telegram (issue 9) -------------------------------------------------------
    # High and critical alerts are also POSTed here as Slack-compatible JSON (a secret: an
    # incoming webhook's URL is its own credential). Unset: Telegram only.
    alert_webhook_url: str | None = None
    # Slack accepts about one message a second per incoming webhook.
    alert_webhook_rate_per_second: float = Field(default=1.0, gt=0)

    # --- WhatsApp inbound and sender health (issue 11) ------------------------------------------
    # A stored inbound message claimed by a worker is due again after this if it was not done.
    inbound_lease_seconds: float = Field(default=60.0, gt=0)
    inbound_batch_size: int = Field(default=50, ge=1, le=1000)
    # A down sender number is probed after this, doubling up to the cap; the cap also bounds
    # the channel circuits' probe backoff (CIRCUIT_PROBE_SECONDS doubling).
    whatsapp_sender_probe_seconds: float = Field(default=60.0, gt=0)
    probe_max_seconds: float = Field(default=300.0, gt=0)
    # Admins are told once when a down number failed this many probes in a row.
    whatsapp_sender_alert_after: int = Field(default=5, ge=1)

    # --- Relay to the operators' chat (issue 11) -------------------------------------------------
    # An approved WhatsApp template (one body parameter: the operator's text) sent when an
    # operator answers a customer outside the 24 h window. Unset: the operator is told instead.
    whatsapp_reply_template: str | None = None
    # A customer's media that cannot be fetched is tried again this long, then relayed as a
    # notice with the reason.
    relay_media_retry_minutes: float = Field(default=10.0, ge=0)

    # --- Service requests (issue 10) ------------------------------------------------------------
    # Offers go to the best K providers at a time; an unanswered offer expires after this.
    offer_candidates: int = Field(default=3, ge=1, le=50)
    offer_expiry_minutes: float = Field(default=30.0, gt=0)
    # A completed request nobody confirms: reminded after this, confirmed automatically after.
    completion_reminder_hours: float = Field(default=24.0, gt=0)
    auto_confirm_hours: float = Field(default=72.0, gt=0)
    # How often the offer-expiry and completed-request jobs run.
    workflow_job_interval_seconds: float = Field(default=60.0, gt=0)
    # A request in a state longer than this counts as stuck (the recovery menus).
    stuck_after_new_minutes: float = Field(default=10.0, gt=0)
    stuck_after_matching_minutes: float = Field(default=10.0, gt=0)
    stuck_after_offered_minutes: float = Field(default=120.0, gt=0)
    stuck_after_assigned_minutes: float = Field(default=1440.0, gt=0)
    stuck_after_in_progress_minutes: float = Field(default=4320.0, gt=0)
    stuck_after_completed_minutes: float = Field(default=5760.0, gt=0)
    stuck_after_disputed_minutes: float = Field(default=2880.0, gt=0)
    stuck_after_escalated_minutes: float = Field(default=60.0, gt=0)

    # --- Recovery sweeps and system health (issue 12) -------------------------------------------
    # How often each sweep runs: the stuck-workflow digest, inventory reconciliation, the health
    # snapshot, the clean-up.
    stuck_sweep_interval_seconds: float = Field(default=1800.0, gt=0)
    inventory_reconciliation_interval_seconds: float = Field(default=3600.0, gt=0)
    health_snapshot_interval_seconds: float = Field(default=300.0, gt=0)
    cleanup_interval_seconds: float = Field(default=86400.0, gt=0)
    # What the clean-up deletes, by age: resolved error groups and their occurrences, the
    # transaction log, health snapshots, sent notifications (with their attempts), processed
    # inbound WhatsApp messages. Dead letters are archived after DEAD_LETTER_RETENTION_DAYS.
    error_retention_days: float = Field(default=30.0, gt=0)
    transaction_log_retention_days: float = Field(default=90.0, gt=0)
    health_snapshot_retention_days: float = Field(default=7.0, gt=0)
    sent_notification_retention_days: float = Field(default=30.0, gt=0)
    inbound_message_retention_days: float = Field(default=30.0, gt=0)
    # Privacy (issue 14): WhatsApp customers with no activity (a message in or out, a request
    # of theirs touched) for this many months are anonymized by the clean-up, as /forget does.
    whatsapp_customer_retention_months: int = Field(default=12, ge=1)

    # --- Backups (issue 14) -----------------------------------------------------------------------
    # The daily backup job (SQLite only): BACKUP_DIR/bot-YYYYmmdd-HHMMSS.db, the newest
    # BACKUP_KEEP kept. Unset BACKUP_DIR: a `backups` folder beside the database file
    # (data/backups with the default DATABASE_URL).
    backup_dir: str | None = None
    backup_keep: int = Field(default=7, ge=1)
    backup_interval_seconds: float = Field(default=86400.0, gt=0)

    def secret_values(self) -> list[str]:
        """Every configured value of a setting marked secret (`SECRET_SETTINGS`), and the
        passwords inside DATABASE_URL and REDIS_URL: what the logs and error records mask."""
        from services.masking import url_password

        values = [getattr(self, name) for name in SECRET_SETTINGS]
        values += [url_password(self.database_url), url_password(self.redis_url)]
        return [v for v in values if isinstance(v, str) and v]

    @field_validator("notification_max_age", mode="before")
    @classmethod
    def _seconds_or_iso(cls, value: object) -> object:
        if isinstance(value, str) and value.replace(".", "", 1).isdigit():
            return timedelta(seconds=float(value))
        return value

    @field_validator("retry_schedule_seconds", mode="before")
    @classmethod
    def _split_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                steps = tuple(float(p) for p in value.split(",") if p.strip())
            except ValueError:
                raise ValueError("expected comma-separated seconds, e.g. 60,300,900") from None
            if not steps or any(step <= 0 for step in steps):
                raise ValueError("expected positive seconds, e.g. 60,300,900")
            return steps
        return value

    @field_validator("admin_ids", mode="before")
    @classmethod
    def _split_admin_ids(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            bad = [p for p in parts if not p.lstrip("-").isdigit()]
            if bad:
                raise ValueError(f"expected comma-separated Telegram user ids, got {bad[0]!r}")
            return tuple(int(p) for p in parts)
        return value

    @field_validator("whatsapp_phone_number_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError("not a SQLAlchemy URL, e.g. sqlite+aiosqlite:///data/bot.db") from None
        if url.drivername not in SUPPORTED_DRIVERS:
            raise ValueError(
                f"driver {url.drivername!r} is not supported; "
                f"use one of {', '.join(SUPPORTED_DRIVERS)}"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}, e.g. Europe/Paris") from None
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _check_secret(cls, value: str | None) -> str | None:
        if value is not None and not _WEBHOOK_SECRET.match(value):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @field_validator("health_token")
    @classmethod
    def _check_health_token(cls, value: str | None) -> str | None:
        if value is not None and not _HEALTH_TOKEN.match(value):
            raise ValueError("must be 16-256 visible ASCII characters (no spaces)")
        return value

    @model_validator(mode="after")
    def _channels_can_hear_back(self) -> Settings:
        # Twilio signs a status callback with the URL it called, which we rebuild from
        # PUBLIC_BASE_URL; without it we would rebuild http://WEB_HOST:port, which is not what
        # Twilio calls behind a proxy, so every receipt would be refused. A Twilio API on this
        # machine (a fake, in tests) calls that very address, so it may go without.
        twilio_on = self.twilio_account_sid and self.twilio_auth_token and self.twilio_from
        if twilio_on and not self.public_base_url and not _is_loopback_url(self.twilio_api_base):
            raise ValueError(
                "PUBLIC_BASE_URL is not set but Twilio SMS is (TWILIO_ACCOUNT_SID): every "
                "status callback would be refused; set PUBLIC_BASE_URL to the https address "
                "Twilio reaches this bot at"
            )
        # Without the app secret every webhook Meta sends (messages, receipts) is refused.
        whatsapp_on = (self.whatsapp_token and self.whatsapp_phone_number_ids) or (
            self.whatsapp_verify_token
        )
        if whatsapp_on and not self.whatsapp_app_secret:
            raise ValueError(
                "WHATSAPP_APP_SECRET is not set but WhatsApp is (WHATSAPP_TOKEN or "
                "WHATSAPP_VERIFY_TOKEN): every WhatsApp webhook, messages and receipts, would "
                "be refused; set it to the app secret from the Meta app dashboard"
            )
        return self

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> Settings:
        if self.telegram_mode == "webhook" and not self.webhook_secret:
            raise ValueError(
                "TELEGRAM_MODE=webhook needs WEBHOOK_SECRET (1-256 characters of A-Z a-z 0-9 _ -)"
            )
        return self


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning pydantic's report into one line that names the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        name = "_".join(str(p) for p in error["loc"]).upper()
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{name}: {message}" if name else message) from None
