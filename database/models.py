"""The tables, as typed SQLAlchemy 2.0 models. Schema changes go through Alembic migrations."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
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
    # The Telegram @username (without the @), kept current from updates, so admins can find
    # a person by it (issue 12).
    username: Mapped[str | None] = mapped_column(String(32), index=True)
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
    # Privacy (issue 14): when the person's data was erased (/forget, or the clean-up of
    # inactive WhatsApp customers; services/privacy.py). The row stays, anonymous, for the
    # requests and history that refer to it.
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

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
    """One message to one person, written in the same transaction as the change that caused it.

    Addressed to a user (`recipient_id`: the channel chain comes from their contacts) or to a
    destination that is not one (`destination`, "<kind>:<target>", e.g. "webhook:alerts": its
    kind picks its channel; services.notifications.destinations); exactly one of the two."""

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
        # The dashboard's wait percentiles read the sends of a time window (delivery_stats).
        Index("ix_notifications_sent_at", "sent_at"),
        CheckConstraint(
            "(recipient_id IS NULL) <> (destination IS NULL)", name="addressee"
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    recipient_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    destination: Mapped[str | None] = mapped_column(String(128))
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
    __table_args__ = (
        # A notification's attempts in order; "was there an earlier try" (delivery_stats'
        # retried count) is answered from the index alone.
        Index("ix_delivery_attempts_notification_id_id", "notification_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    notification_id: Mapped[int] = mapped_column(
        ForeignKey("notifications.id", ondelete="CASCADE")
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


# --- FSM state (issue 10): the conversation a person is in, kept when REDIS_URL is unset ---


class FsmState(Base):
    """One person's half-finished conversation (aiogram FSM state and data), so it survives a
    restart on the embedded default. Only keys with a state or data have a row."""

    __tablename__ = "fsm_states"

    # bot:chat:thread:user:destiny (bot.fsm_storage), unique per conversation.
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    state: Mapped[str | None] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


# --- Error records (issue: loud, useful errors) ---------------------------------------------


class ErrorGroup(Base):
    """Every occurrence of one failure (same exception type, place and category), counted, with
    the masked message and stack of the latest one only, so a storm costs one row."""

    __tablename__ = "error_groups"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(40), unique=True)
    exception_type: Mapped[str] = mapped_column(String(128))
    place: Mapped[str] = mapped_column(String(200))  # module:function where it was raised
    category: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    message: Mapped[str] = mapped_column(Text, default="")
    stack: Mapped[str] = mapped_column(Text, default="")
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)
    resolved_by: Mapped[int | None] = mapped_column(Integer)  # users.id of the admin
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ErrorOccurrence(Base):
    """One failure a person may quote: its support code, its group, and a small masked context
    (update type and id, Telegram user and chat, handler, FSM state)."""

    __tablename__ = "error_occurrences"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    group_id: Mapped[int] = mapped_column(
        ForeignKey("error_groups.id", ondelete="CASCADE"), index=True
    )
    context: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


# --- WhatsApp inbound and sender health (issue 11) ---


class InboundStatus(enum.StrEnum):
    PENDING = "pending"  # stored, not processed yet (or released after a failed try)
    PROCESSING = "processing"  # leased by a worker until lease_until
    DONE = "done"  # every processing step ran and committed
    FAILED = "failed"  # gave up after its attempts; kept for an admin


class InboundMessage(Base):
    """One WhatsApp message as Meta delivered it, stored before the webhook is answered 200 and
    processed later by a worker with a lease (services.whatsapp_inbound). Unique on the wamid, so
    a redelivery (Meta retries for up to 7 days) is stored once."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        Index(
            "ix_inbound_messages_due",
            "next_attempt_at",
            postgresql_where=text("status IN ('pending', 'processing')"),
            sqlite_where=text("status IN ('pending', 'processing')"),
        ),
        Index("ix_inbound_messages_user_keyword", "user_id", "keyword"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    wamid: Mapped[str] = mapped_column(String(512), unique=True)
    # Meta's "from": digits, country code first, no '+'.
    sender: Mapped[str] = mapped_column(String(32))
    # The business number it was sent to (metadata.phone_number_id).
    phone_number_id: Mapped[str | None] = mapped_column(String(64))
    profile_name: Mapped[str | None] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(32))
    text: Mapped[str | None] = mapped_column(Text)
    # "stop" / "start" when the text is an opt-out / opt-in word: applied in sent_at order.
    keyword: Mapped[str | None] = mapped_column(String(8))
    # The messages[] object as received (strings cleaned to be storable).
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the message's own timestamp
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default=InboundStatus.PENDING.value)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    last_error: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SenderState(Base):
    """The health of one WhatsApp sender number (a phone-number id): healthy, degraded or down,
    shared by every process; a down number is probed with a capped, doubling backoff."""

    __tablename__ = "sender_states"

    phone_number_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # healthy | degraded | down
    reason: Mapped[str | None] = mapped_column(Text)
    failed_probes: Mapped[int] = mapped_column(Integer, default=0)
    next_probe_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    alerted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


# --- Service requests, matching and inventory (issue 10) ---------------------------------------
# The workflow itself (states, who acts, what may follow what) is data in services/workflow.

# States in which a request holds its provider: what counts against a provider's capacity.
ACTIVE_JOB_STATES = ("assigned", "in_progress")


class ServiceType(Base):
    """A kind of work providers offer (plumbing, electricity...), named in each language."""

    __tablename__ = "service_types"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name_en: Mapped[str] = mapped_column(String(64))
    name_fr: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Area(Base):
    """Where a request is and where a provider works; neighbours feed the broad matching tier."""

    __tablename__ = "areas"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name_en: Mapped[str] = mapped_column(String(64))
    name_fr: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class AreaNeighbour(Base):
    """One direction of a neighbourhood; both directions are stored."""

    __tablename__ = "area_neighbours"

    area_id: Mapped[int] = mapped_column(
        ForeignKey("areas.id", ondelete="CASCADE"), primary_key=True
    )
    neighbour_id: Mapped[int] = mapped_column(
        ForeignKey("areas.id", ondelete="CASCADE"), primary_key=True
    )


class Provider(Base):
    """A user who does the work: what they offer, where, how many jobs at once, and whether
    they can take one now."""

    __tablename__ = "providers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    capacity: Mapped[int] = mapped_column(Integer, default=1)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    on_call: Mapped[bool] = mapped_column(Boolean, default=False)
    available: Mapped[bool] = mapped_column(Boolean, default=True)
    # Fair rotation: among equally loaded candidates the one waiting longest comes first.
    last_assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProviderService(Base):
    __tablename__ = "provider_services"
    __table_args__ = (Index("ix_provider_services_service", "service_type_id", "provider_id"),)

    provider_id: Mapped[int] = mapped_column(
        ForeignKey("providers.id", ondelete="CASCADE"), primary_key=True
    )
    service_type_id: Mapped[int] = mapped_column(
        ForeignKey("service_types.id", ondelete="CASCADE"), primary_key=True
    )


class ProviderArea(Base):
    __tablename__ = "provider_areas"
    __table_args__ = (Index("ix_provider_areas_area", "area_id", "provider_id"),)

    provider_id: Mapped[int] = mapped_column(
        ForeignKey("providers.id", ondelete="CASCADE"), primary_key=True
    )
    area_id: Mapped[int] = mapped_column(
        ForeignKey("areas.id", ondelete="CASCADE"), primary_key=True
    )


class ServiceRequest(Base):
    """A service request is its workflow: the state, who must act next, and a version bumped
    on every transition so a stale screen is refused (services/workflow)."""

    __tablename__ = "service_requests"
    __table_args__ = (
        # "Stuck" queries: requests in a state for longer than its threshold, oldest first.
        Index("ix_service_requests_state_entered", "state", "state_entered_at"),
        # A provider's load (matching's busy exclusion): only the few active rows are indexed.
        Index(
            "ix_service_requests_active_assignee",
            "assignee_id",
            postgresql_where=text("state IN ('assigned', 'in_progress')"),
            sqlite_where=text("state IN ('assigned', 'in_progress')"),
        ),
        Index("ix_service_requests_requester", "requester_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    service_type_id: Mapped[int] = mapped_column(ForeignKey("service_types.id"))
    area_id: Mapped[int] = mapped_column(ForeignKey("areas.id"))
    address: Mapped[str] = mapped_column(String(256))
    time_window: Mapped[str] = mapped_column(String(128), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    # Telegram file ids of the photos the requester attached.
    photos: Mapped[list[str]] = mapped_column(JSON, default=list)
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16))
    acting_role: Mapped[str | None] = mapped_column(String(16))
    assignee_id: Mapped[int | None] = mapped_column(
        ForeignKey("providers.id", ondelete="SET NULL"), index=True
    )
    matching_tier: Mapped[str | None] = mapped_column(String(16))
    # Each run of matching is a round; offers of earlier rounds do not hold a provider out.
    match_round: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=1)
    state_entered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The 24 h "please confirm" reminder of a completed request, sent once.
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WorkflowTransition(Base):
    """A request's history: one row per transition, written with it."""

    __tablename__ = "workflow_transitions"
    __table_args__ = (Index("ix_workflow_transitions_request", "request_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("service_requests.id", ondelete="CASCADE")
    )
    action: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)  # the request's version after this transition
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class Offer(Base):
    """A job offered to one provider; the first accept wins (a conditional update)."""

    __tablename__ = "offers"
    __table_args__ = (
        Index("uq_offers_request_provider_round", "request_id", "provider_id", "round",
              unique=True),
        # The expiry job reads due pending offers; the busy exclusion, a provider's pending ones.
        Index(
            "ix_offers_pending_expiry",
            "expires_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index(
            "ix_offers_pending_provider",
            "provider_id",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("service_requests.id", ondelete="CASCADE")
    )
    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    tier: Mapped[str] = mapped_column(String(16))
    # pending | accepted | declined | expired | withdrawn
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RequestMessage(Base):
    """A message relayed between a request's requester and provider, kept in its history."""

    __tablename__ = "request_messages"
    __table_args__ = (Index("ix_request_messages_request", "request_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("service_requests.id", ondelete="CASCADE")
    )
    sender_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    recipient_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class InventoryItem(Base):
    """A stocked part; `on_hand` always equals the sum of its ledger (inventory_transactions)."""

    __tablename__ = "inventory_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    unit: Mapped[str] = mapped_column(String(16), default="pcs")
    on_hand: Mapped[int] = mapped_column(Integer, default=0)
    low_threshold: Mapped[int] = mapped_column(Integer, default=0)
    # False once an admin retired the item (issue 12): kept for its ledger, not offered.
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InventoryTransaction(Base):
    """The stock ledger: receive (+), issue (-), adjust (+/-), reversal (+, undoing an issue)."""

    __tablename__ = "inventory_transactions"
    __table_args__ = (
        Index("ix_inventory_transactions_item", "item_id", "id"),
        Index("ix_inventory_transactions_request", "request_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("inventory_items.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[int] = mapped_column(Integer)  # signed: what it did to on_hand
    request_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("service_requests.id", ondelete="SET NULL")
    )
    # The issue a reversal undoes (so an issue is reversed once at most).
    reverses_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("inventory_transactions.id", ondelete="SET NULL"), unique=True
    )
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    note: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class CommandMenu(Base):
    """The command menu (services.menus) set for a person with more roles than a requester's;
    no row: Telegram's default menu is theirs."""

    __tablename__ = "command_menus"

    telegram_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    menu: Mapped[str] = mapped_column(String(128))  # roles and language it was set for
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


# --- Relay to the operators' chat (issue 11) ---------------------------------------------------


class RelayThread(Base):
    """One person's conversation in the operators' chat (services/relay): a forum topic when
    the chat is a forum, else a reply chain under the first message relayed for them."""

    __tablename__ = "relay_threads"
    __table_args__ = (
        Index("uq_relay_threads_chat_user", "chat_id", "user_id", unique=True),
        Index("ix_relay_threads_chat_topic", "chat_id", "topic_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Where the person writes from, and where the operators' answers go: whatsapp | telegram.
    channel: Mapped[str] = mapped_column(String(16))
    topic_id: Mapped[int | None] = mapped_column(BigInteger)  # the forum topic's thread id
    root_message_id: Mapped[int | None] = mapped_column(BigInteger)  # reply chains: the first
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RelayMessage(Base):
    """A message relayed into a thread: the notification that carries it, the inbound message
    it came from (each relayed once), and the Telegram message id it got once sent."""

    __tablename__ = "relay_messages"
    __table_args__ = (
        Index("ix_relay_messages_thread", "thread_id", "id"),
        Index("ix_relay_messages_notification", "notification_id"),
        Index("ix_relay_messages_telegram", "telegram_message_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    thread_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("relay_threads.id", ondelete="CASCADE")
    )
    notification_id: Mapped[int | None] = mapped_column(BigId)
    inbound_message_id: Mapped[int | None] = mapped_column(BigId, unique=True)
    telegram_message_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


# --- Reconciliation and role grants (issue 12) -------------------------------------------------


class RoleGrantSource(enum.StrEnum):
    SETTINGS = "settings"  # ADMIN_IDS: synced from the settings on every update
    MENU = "menu"  # granted by an admin in /workflow_recovery -> People


class RoleGrant(Base):
    """Where a role came from: a right ADMIN_IDS gave goes when the id leaves ADMIN_IDS, one
    granted in the menu stays until revoked there. `users.roles` stays the effective set."""

    __tablename__ = "role_grants"
    __table_args__ = (
        Index("uq_role_grants_user_role_source", "user_id", "role", "source", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    granted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InventoryReconciliationLog(Base):
    """What reconciliation found and what was done about it (services.inventory_reconciliation):
    `key` names the discrepancy; plain ids, no foreign keys, so the log outlives what it names."""

    __tablename__ = "inventory_reconciliation_log"
    __table_args__ = (Index("ix_inventory_reconciliation_log_key", "key", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(16))  # found | auto_fixed | adjusted | dismissed
    item_id: Mapped[int | None] = mapped_column(Integer)
    request_id: Mapped[int | None] = mapped_column(BigInteger)
    transaction_id: Mapped[int | None] = mapped_column(BigInteger)
    delta: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text)
    actor_id: Mapped[int | None] = mapped_column(Integer)  # NULL: the hourly job
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


# --- Workflow recovery log (issue 12) -----------------------------------------------------------


class WorkflowRecoveryLog(Base):
    """Every recovery action an admin took on a request from /workflow_recovery: who, what,
    from which state to which, and why. Plain ids, so the log outlives what it names."""

    __tablename__ = "workflow_recovery_log"
    __table_args__ = (Index("ix_workflow_recovery_log_request", "request_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    admin_id: Mapped[int] = mapped_column(Integer)  # users.id
    action: Mapped[str] = mapped_column(String(32))
    request_id: Mapped[int] = mapped_column(BigInteger)
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    provider_id: Mapped[int | None] = mapped_column(Integer)  # reassign: the new provider
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


# --- System health snapshots and the stuck-workflow digest (issue 12) ---------------------------


class SystemHealthSnapshot(Base):
    """The health of every part, every five minutes (services.health): the heavy parts
    (inventory discrepancies) are read from the latest one, and the history shows when a part
    went bad. Kept seven days by the daily clean-up."""

    __tablename__ = "system_health_snapshots"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # ok | degraded | down
    reasons: Mapped[list[str]] = mapped_column(JSON)
    # {part: {"status": ..., figures...}} as /health shows it to trusted callers.
    components: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class StuckReport(Base):
    """A stuck request the digest already told the admins about, at the version it was stuck
    in: it is reported again only once it moved and got stuck anew."""

    __tablename__ = "stuck_reports"

    request_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime)


# --- Dashboard access (issue 13) ----------------------------------------------------------------


class DashboardLoginToken(Base):
    """A one-time sign-in link an admin asked for with /dashboard (services.dashboard_access):
    only the token's SHA-256 is kept; valid ten minutes, spent by one sign-in (`used_at`)."""

    __tablename__ = "dashboard_login_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DashboardSession(Base):
    """A signed-in dashboard session: the cookie's SHA-256, its admin, the CSRF token its forms
    carry; over at `expires_at` (DASHBOARD_SESSION_HOURS) or when signed out (`ended_at`)."""

    __tablename__ = "dashboard_sessions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
