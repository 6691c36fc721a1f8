"""The tables, as typed SQLAlchemy 2.0 models. Schema changes go through Alembic migrations."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from database.base import Base, UTCDateTime


class Role(enum.StrEnum):
    REQUESTER = "requester"
    PROVIDER = "provider"
    OPERATOR = "operator"
    WAREHOUSE = "warehouse"
    ADMIN = "admin"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    telegram_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    # E.164, e.g. +33612345678; used by WhatsApp and SMS.
    phone: Mapped[str | None] = mapped_column(String(16), unique=True)
    email: Mapped[str | None] = mapped_column(String(254))
    # Comma-separated channel names in the order the user prefers; NULL: the default order.
    channel_order: Mapped[str | None] = mapped_column(String(64))
    # Comma-separated channels the user opted out of (WhatsApp STOP, Twilio 21610, ...).
    opt_outs: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # When the user last wrote to us on WhatsApp: opens the 24 h customer-service window.
    whatsapp_inbound_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    language: Mapped[str] = mapped_column(String(8), default="en")
    # True once the user picked a language themselves (not guessed from their client).
    language_chosen: Mapped[bool] = mapped_column(default=False)
    # Comma-separated Role values; a user may hold several.
    roles: Mapped[str] = mapped_column(String(128), default=Role.REQUESTER.value)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    @property
    def role_set(self) -> frozenset[Role]:
        return frozenset(Role(r) for r in self.roles.split(",") if r)


class TransactionLog(Base):
    """The audit trail: one row per state change, written in the same transaction as the change."""

    __tablename__ = "transaction_log"
    __table_args__ = (Index("ix_transaction_log_entity", "entity_type", "entity_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operation: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(64))
    actor_id: Mapped[int | None] = mapped_column(Integer)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    outcome: Mapped[str] = mapped_column(String(32), default="ok")
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


# A big integer key on PostgreSQL, SQLite's rowid alias (INTEGER PRIMARY KEY) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class NotificationStatus(enum.StrEnum):
    PENDING = "pending"  # due at next_attempt_at
    SENDING = "sending"  # leased by a dispatcher until lease_until
    SENT = "sent"  # handed to a provider (receipts are timestamps beside it)
    FAILED = "failed"  # the dead letter: every channel spent, or too old
    CANCELLED = "cancelled"
    ARCHIVED = "archived"


class Notification(Base):
    """One message to one person, written in the same transaction as the change that caused it."""

    __tablename__ = "notifications"
    __table_args__ = (
        # The claim query reads only this index: due rows, highest priority, oldest first.
        Index(
            "ix_notifications_due",
            "priority",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index(
            "ix_notifications_leased",
            "lease_until",
            postgresql_where=text("status = 'sending'"),
            sqlite_where=text("status = 'sending'"),
        ),
        Index(
            "ix_notifications_failed",
            "failed_at",
            postgresql_where=text("status = 'failed'"),
            sqlite_where=text("status = 'failed'"),
        ),
        Index("ix_notifications_provider_message_id", "provider_message_id"),
        Index("ix_notifications_recipient", "recipient_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    recipient_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    # {"text": ...} | {"template": {"name", "language", "params"}} | {"media": {...}}
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    # 0 is the most urgent (a person waiting for an answer), 9 the least (bulk); as in Oban.
    priority: Mapped[int] = mapped_column(SmallInteger, default=5)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    # False: stay on the first channel that can reach the recipient (e.g. an operator's reply
    # to a WhatsApp customer must never leave by SMS).
    allow_fallback: Mapped[bool] = mapped_column(Boolean, default=True)
    channel_chain: Mapped[str] = mapped_column(String(128))
    channel_index: Mapped[int] = mapped_column(SmallInteger, default=0)
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=NotificationStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    channel_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Parts of a split text already accepted by the current channel: never sent again.
    parts_sent: Mapped[int] = mapped_column(SmallInteger, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    last_error_class: Mapped[str | None] = mapped_column(String(16))
    last_error_code: Mapped[str | None] = mapped_column(String(32))
    last_error_text: Mapped[str | None] = mapped_column(Text)
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When an admin last sent this dead letter again: its age budget (NOTIFICATION_MAX_AGE)
    # counts from here, or from created_at when it was never restarted.
    restarted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def chain(self) -> list[str]:
        return [c for c in self.channel_chain.split(",") if c]


class DeliveryAttempt(Base):
    """One try on one channel: what was tried, through which sender, and how it ended."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    notification_id: Mapped[int] = mapped_column(
        ForeignKey("notifications.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(16))
    sender: Mapped[str | None] = mapped_column(String(64))
    # Where it went: chat id, E.164 number or e-mail address.
    address: Mapped[str | None] = mapped_column(String(254))
    outcome: Mapped[str] = mapped_column(String(16))  # sent | failed | rate_limited | receipt
    error_class: Mapped[str | None] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_text: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ManualTask(Base):
    """Something a person must do (call this customer, say), open until an admin closes it."""

    __tablename__ = "manual_tasks"
    __table_args__ = (
        Index(
            "ix_manual_tasks_open",
            "created_at",
            postgresql_where=text("status = 'open'"),
            sqlite_where=text("status = 'open'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notification_id: Mapped[int | None] = mapped_column(
        ForeignKey("notifications.id", ondelete="SET NULL"), unique=True
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_by: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(Text)


class ChannelState(Base):
    """A channel an admin paused, or whose circuit is open after it was found broken."""

    __tablename__ = "channel_states"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    circuit_open_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # How many times in a row the circuit opened: the probe backoff grows with it.
    circuit_trips: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AlertRecord(Base):
    """The last time an alert key was sent, so the same alert is sent once per window."""

    __tablename__ = "alerts"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    severity: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    last_sent_at: Mapped[datetime] = mapped_column(UTCDateTime)
    suppressed: Mapped[int] = mapped_column(Integer, default=0)


class Lease(Base):
    """A named lock with an expiry: who runs a sweep, which process dispatches (without Redis)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    lease_until: Mapped[datetime] = mapped_column(UTCDateTime)


class JobRun(Base):
    """One run of a scheduled job."""

    __tablename__ = "job_runs"
    __table_args__ = (Index("ix_job_runs_job_started", "job", "started_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(16), default="running")  # running | ok | failed
    summary: Mapped[str | None] = mapped_column(Text)  # what an ok run did ("released 3")
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_text: Mapped[str | None] = mapped_column(Text)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)


class EarlyReceipt(Base):
    """A provider receipt that arrived while its notification was still being sent, before the
    dispatcher recorded the provider's message id: kept until that record, then applied
    (services.notifications.receipts), or dropped after a bounded time if it never matches."""

    __tablename__ = "early_receipts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    notification_id: Mapped[int] = mapped_column(
        ForeignKey("notifications.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[str] = mapped_column(String(16))  # whatsapp | twilio
    # What the send carried to tie the receipt to its notification: WhatsApp's
    # biz_opaque_callback_data (the idempotency key), Twilio's StatusCallback ?ref= (the id).
    reference: Mapped[str] = mapped_column(String(200))
    provider_message_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    # The classified failure of a failed receipt; NULL when the provider gave no code.
    error_class: Mapped[str | None] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_text: Mapped[str | None] = mapped_column(Text)
    opt_out: Mapped[bool] = mapped_column(Boolean, default=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime)  # when the provider says it happened
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
