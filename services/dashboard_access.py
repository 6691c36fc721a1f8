"""Who may use the web dashboard: one-time sign-in links and the sessions they open.

Promises:
- Only SHA-256 hashes of login tokens and session ids are stored: a copy of the database signs
  nobody in.
- A login token is bound to the admin who asked for it, valid LOGIN_TTL, and spent by one
  sign-in: the redeem is a single UPDATE ... WHERE used_at IS NULL AND expires_at > now, so of
  two sign-ins racing with the same link exactly one wins, on SQLite and PostgreSQL alike.
- A refused token (unknown, used, expired) grants nothing and is logged with its reason and
  the first characters of its hash, never the token.
- A session lasts `session_hours` from sign-in and ends earlier on sign-out. Whether its user is
  still an admin is not decided here: the web layer asks the Users service on every request.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import DashboardLoginToken, DashboardSession
from services.clock import Clock
from services.refusal_log import RefusalLog

log = logging.getLogger(__name__)

LOGIN_TTL = timedelta(minutes=10)
# Rows deleted per unit of work by the daily clean-up.
CLEANUP_BATCH = 1000


class Refusal(StrEnum):
    """Why a login token signs nobody in."""

    UNKNOWN = "unknown"
    USED = "used"
    EXPIRED = "expired"


def digest(secret: str) -> str:
    """The stored form of a token or session id."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def _prefix(secret: str) -> str:
    """What the log may say about a secret: the first characters of its hash."""
    return digest(secret)[:10]


@dataclass(frozen=True, slots=True)
class LoginCheck:
    """A login token as it stands: whose it is, or why it is refused."""

    user_id: int | None
    refusal: Refusal | None


@dataclass(frozen=True, slots=True)
class SessionView:
    """A live session: the cookie's value is not kept here, only what requests need."""

    id: int
    user_id: int
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class NewSession:
    """A session just opened: `secret` goes into the cookie and nowhere else."""

    secret: str
    view: SessionView


async def _explain(session: AsyncSession, token_hash: str, now: datetime) -> Refusal:
    row = await session.scalar(
        select(DashboardLoginToken).where(DashboardLoginToken.token_hash == token_hash)
    )
    if row is None:
        return Refusal.UNKNOWN
    if row.used_at is not None:
        return Refusal.USED
    return Refusal.EXPIRED if row.expires_at <= now else Refusal.UNKNOWN


async def delete_expired(session: AsyncSession, cutoff: datetime) -> int:
    """One batch of the daily clean-up: login tokens and sessions that expired before
    `cutoff` (through the index on expires_at)."""
    deleted = 0
    for model in (DashboardLoginToken, DashboardSession):
        ids = list(await session.scalars(
            select(model.id).where(model.expires_at < cutoff).order_by(model.expires_at)
            .limit(CLEANUP_BATCH)
        ))
        if ids:
            result = await session.execute(delete(model).where(model.id.in_(ids)))
            deleted += result.rowcount or 0
    return deleted


class DashboardAccess:
    """Sign-in links and sessions (aiogram DI and the dashboard: `dashboard_access`). Each
    method is one unit of work, committed when it returns."""

    def __init__(self, db: Database, clock: Clock, *, session_hours: float = 12.0) -> None:
        self.db = db
        self.clock = clock
        self.session_ttl = timedelta(hours=session_hours)
        self._refusals = RefusalLog(log)

    async def issue_login(self, user_id: int) -> str:
        """A new login token for `user_id` (the caller checked they are an admin); only its
        hash is stored."""
        token = secrets.token_urlsafe(32)
        now = self.clock.now()

        async def store(session: AsyncSession) -> None:
            session.add(DashboardLoginToken(
                token_hash=digest(token), user_id=user_id, created_at=now,
                expires_at=now + LOGIN_TTL,
            ))

        await self.db.run(store)
        log.info("dashboard sign-in link issued to user %s (token %s)", user_id, _prefix(token))
        return token

    async def check_login(self, token: str) -> LoginCheck:
        """What the link's page shows before the click: read only, the token is not spent."""
        now = self.clock.now()
        token_hash = digest(token)

        async def read(session: AsyncSession) -> LoginCheck:
            row = await session.scalar(
                select(DashboardLoginToken).where(DashboardLoginToken.token_hash == token_hash)
            )
            if row is not None and row.used_at is None and row.expires_at > now:
                return LoginCheck(row.user_id, None)
            return LoginCheck(None, await _explain(session, token_hash, now))

        checked = await self.db.read(read)
        if checked.refusal is not None:
            self._refused(token, checked.refusal, "opened")
        return checked

    async def redeem(self, token: str) -> LoginCheck:
        """Spend the token: its user id when this call is the one that used it, else why not.
        One conditional UPDATE decides, so two concurrent redeems cannot both succeed."""
        now = self.clock.now()
        token_hash = digest(token)
        t = DashboardLoginToken

        async def spend(session: AsyncSession) -> LoginCheck:
            user_id = await session.scalar(
                update(t)
                .where(t.token_hash == token_hash, t.used_at.is_(None), t.expires_at > now)
                .values(used_at=now)
                .returning(t.user_id)
            )
            if user_id is not None:
                return LoginCheck(user_id, None)
            return LoginCheck(None, await _explain(session, token_hash, now))

        spent = await self.db.run(spend)
        if spent.refusal is not None:
            self._refused(token, spent.refusal, "redeemed")
        return spent

    def _refused(self, token: str, refusal: Refusal, how: str) -> None:
        # At a bounded rate: anyone who reaches /admin/ can try made-up links by the thousand.
        self._refusals.refused("dashboard sign-in", f"{refusal.value} token {how}",
                               f" (hash {_prefix(token)}...)")

    async def open_session(self, user_id: int) -> NewSession:
        secret = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self.clock.now()
        expires = now + self.session_ttl

        async def store(session: AsyncSession) -> int:
            row = DashboardSession(
                session_hash=digest(secret), user_id=user_id, csrf_token=csrf, created_at=now,
                expires_at=expires,
            )
            session.add(row)
            await session.flush()
            return row.id

        session_id = await self.db.run(store)
        log.info("dashboard session %s opened for user %s", session_id, user_id)
        return NewSession(secret, SessionView(session_id, user_id, csrf, expires))

    async def session(self, secret: str) -> SessionView | None:
        """The live session behind a cookie's value; None when unknown, ended or expired."""
        if not secret:
            return None
        now = self.clock.now()
        s = DashboardSession

        async def read(session: AsyncSession) -> SessionView | None:
            row = (await session.execute(
                select(s.id, s.user_id, s.csrf_token, s.expires_at)
                .where(s.session_hash == digest(secret), s.ended_at.is_(None), s.expires_at > now)
            )).first()
            return SessionView(*row) if row is not None else None

        return await self.db.read(read)

    async def end_session(self, session_id: int, *, why: str = "signed out") -> None:
        now = self.clock.now()

        async def end(session: AsyncSession) -> None:
            await session.execute(
                update(DashboardSession)
                .where(DashboardSession.id == session_id, DashboardSession.ended_at.is_(None))
                .values(ended_at=now)
            )

        await self.db.run(end)
        log.info("dashboard session %s ended: %s", session_id, why)
