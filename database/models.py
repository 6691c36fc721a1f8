"""The tables, as typed SQLAlchemy 2.0 models. Schema changes go through Alembic migrations."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text
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
    whatsapp_phone: Mapped[str | None] = mapped_column(String(16), unique=True)
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
