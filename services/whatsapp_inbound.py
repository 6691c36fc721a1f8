"""Inbound WhatsApp messages: stored before the webhook answers 200, processed by a worker.

Promises (issue 11, docs/architecture.md, principles 2-4):
- `store` writes every message of a signed webhook in one INSERT ... ON CONFLICT DO NOTHING on
  the WhatsApp message id (wamid): a delivery Meta sends again (it retries for up to 7 days) is
  stored once, and nothing is processed in the request, so the 200 is fast.
- `InboundWorker` claims due rows with a lease (PostgreSQL: FOR UPDATE SKIP LOCKED, so several
  processes share the work) and processes each in one unit of work: the customer resolved (an
  unknown number becomes a customer: a requester with that WhatsApp number), the 24 h window
  refreshed, STOP / START applied, then each extra processor (the relay to operators plugs in
  here), and the row marked done in the same transaction. A crash between the 200 and the end
  of that transaction loses nothing: the lease runs out and the row is due again; a processed
  row is never processed again.
- Keywords are applied in the order the customer sent them (the message's own timestamp, then
  arrival): a STOP or START older than one already applied for the same person changes nothing,
  so a redelivered old START never cancels a newer STOP.
- A processing step that raises costs one attempt: the row is due again after a backoff, and
  after `max_attempts` it is kept as failed with the error's class name (logged), never dropped.
- Phone numbers and texts are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import unicodedata
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, and_, bindparam, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from database.base import UTCDateTime
from database.engine import Database, driver, is_connection_failure
from database.models import InboundMessage, InboundStatus, Role, User
from services import audit, contacts
from services.clock import Clock
from services.notifications.channels.base import ChannelName
from services.notifications.receipts import keyword
from services.users import MAX_NAME_LENGTH, SUPPORTED_LANGUAGES

log = logging.getLogger(__name__)

_PENDING = InboundStatus.PENDING.value
_PROCESSING = InboundStatus.PROCESSING.value
_DONE = InboundStatus.DONE.value
_FAILED = InboundStatus.FAILED.value
_MAX_DEPTH = 24
_TYPE = re.compile(r"[a-z_]{1,32}")


@dataclass(frozen=True, slots=True)
class Received:
    """One messages[] entry of a signed webhook, checked at the edge (bot/webhooks.py)."""

    phone: str  # "from": digits, country code first, no '+'
    wamid: str
    text: str | None
    at: datetime | None  # the message's timestamp; None when missing or unusable
    type: str = "text"
    profile_name: str | None = None
    phone_number_id: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ storing


def storable_json(value: Any, depth: int = 0) -> Any:
    """`value` as both engines' JSON columns take it: strings without NUL or lone surrogates,
    finite numbers, bounded nesting; anything else (a marker for a huge number) becomes None."""
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= _MAX_DEPTH:
        return None
    if isinstance(value, Mapping):
        return {_clean(str(k)): storable_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [storable_json(v, depth + 1) for v in value]
    return None


def _clean(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _row(message: Received, now: datetime) -> dict[str, Any]:
    kind = message.type if _TYPE.fullmatch(message.type or "") else "unknown"
    name = _clean(message.profile_name)[:MAX_NAME_LENGTH] if message.profile_name else None
    return {
        "wamid": message.wamid,
        "sender": message.phone[:32],
        "phone_number_id": message.phone_number_id[:64] if message.phone_number_id else None,
        "profile_name": name,
        "type": kind,
        "text": message.text,
        "keyword": keyword(message.text),
        "payload": storable_json(dict(message.payload)),
        "sent_at": min(message.at, now) if message.at is not None else now,
        "received_at": now,
        "status": _PENDING,
        "next_attempt_at": now,
        "attempts": 0,
    }


# One statement for both engines (SQLite >= 3.35 has ON CONFLICT ... RETURNING), as text with
# typed parameters: SQLAlchemy caches its compiled form, which it does not for the dialects'
# insert() with on_conflict_do_nothing(); compiling that cost more than the INSERT itself.
_COLUMNS = ("wamid", "sender", "phone_number_id", "profile_name", "type", "text", "keyword",
            "payload", "sent_at", "received_at", "status", "next_attempt_at", "attempts")
_INSERT = text(
    f"INSERT INTO inbound_messages ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in _COLUMNS)}) "
    "ON CONFLICT (wamid) DO NOTHING RETURNING id"
).bindparams(
    bindparam("payload", type_=JSON),
    bindparam("sent_at", type_=UTCDateTime()),
    bindparam("received_at", type_=UTCDateTime()),
    bindparam("next_attempt_at", type_=UTCDateTime()),
)
# PostgreSQL: any number of rows in one statement, one array per column.
_PG_BATCH_TYPES = {
    "wamid": "text", "sender": "text", "phone_number_id": "text", "profile_name": "text",
    "type": "text", "text": "text", "keyword": "text", "payload": "text",
    "sent_at": "timestamptz", "received_at": "timestamptz",
}
_PG_BATCH_COLUMNS = tuple(_PG_BATCH_TYPES)
_PG_BATCH_PAYLOAD = _PG_BATCH_COLUMNS.index("payload")
_PG_BATCH_INSERT = (
    f"INSERT INTO inbound_messages ({', '.join(_PG_BATCH_COLUMNS)}, status, next_attempt_at, "
    "attempts) SELECT wamid, sender, phone_number_id, profile_name, type, text, keyword, "
    "payload::json, sent_at, received_at, 'pending', received_at, 0 FROM unnest("
    + ", ".join(f"${i}::{t}[]" for i, t in enumerate(_PG_BATCH_TYPES.values(), 1))
    + f") AS m({', '.join(_PG_BATCH_COLUMNS)}) "
    "ON CONFLICT (wamid) DO NOTHING RETURNING wamid"
)


def insert_rows(messages: Sequence[Received], now: datetime) -> list[dict[str, Any]]:
    """The rows to store, one per wamid (a body may carry the same message twice)."""
    return list({m.wamid: _row(m, now) for m in messages}.values())


async def store(db: Database, messages: Sequence[Received], now: datetime) -> int:
    """Store the messages of one webhook, a wamid already stored skipped (a retried delivery
    stores only what is missing); returns how many were new. The caller wakes the worker
    (`InboundWorker.wake`)."""
    if not messages:
        return 0
    return len(await _insert_rows(db, insert_rows(messages, now)))


async def _insert_rows(db: Database, rows: list[dict[str, Any]]) -> set[str]:
    """Insert `rows` (distinct wamids) on one connection; returns the wamids that were new."""

    async def work(connection: AsyncConnection) -> set[str]:
        if db.dialect == "postgresql":
            # One statement for every row, straight to asyncpg: SQLAlchemy's statement handling
            # cost more than the INSERT.
            columns = [[row[c] for row in rows] for c in _PG_BATCH_COLUMNS]
            columns[_PG_BATCH_PAYLOAD] = [
                json.dumps(p, ensure_ascii=False) for p in columns[_PG_BATCH_PAYLOAD]
            ]
            async with driver(connection) as pg:
                return {r[0] for r in await pg.fetch(_PG_BATCH_INSERT, *columns)}
        new: set[str] = set()
        for row in rows:
            if (await connection.execute(_INSERT, row)).all():
                new.add(row["wamid"])
        return new

    return await db.run_statement(work)


class InboundStore:
    """`store` for the webhook, with group commit: the messages of the requests that arrive
    while an INSERT is under way are stored together by the next one (one connection, one
    statement on PostgreSQL), and each request is answered once its own rows are committed.
    Alone, a request is stored at once; under load, the cost of a connection and a round trip
    is shared. A failed INSERT fails every request of its group (each answers 503, and Meta
    sends it again)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._waiting: list[tuple[list[dict[str, Any]], asyncio.Future[set[str]]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def store(self, messages: Sequence[Received], now: datetime) -> int:
        if not messages:
            return 0
        rows = insert_rows(messages, now)
        future: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self._waiting.append((rows, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        # Shielded: a request whose client went away leaves its rows to be stored anyway.
        new = await asyncio.shield(future)
        return sum(1 for row in rows if row["wamid"] in new)

    async def _flush(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                rows = list({row["wamid"]: row for rows, _ in group for row in rows}.values())
                try:
                    new = await _insert_rows(self.db, rows)
                except Exception as exc:  # noqa: BLE001 - every waiting request must hear of it
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for _, future in group:
                    if not future.done():
                        future.set_result(new)
        finally:
            self._flusher = None


# --------------------------------------------------------------------------------- processing


@dataclass
class InboundContext:
    """What the steps of one message share: the row, the customer once resolved, the time."""

    message: InboundMessage
    now: datetime
    default_language: str
    user: User | None = None
    created: bool = False  # the customer was created by this message
    keyword_applied: str | None = None  # "stop" / "start" when it changed something
    notes: list[str] = field(default_factory=list)
    # False when a step answered the message itself (the WhatsApp desk): not relayed.
    relay: bool = True


# A processing step: runs in the message's unit of work, after the built-in ones; raising
# rolls the whole message back and costs it an attempt.
Processor = Callable[[AsyncSession, InboundContext], Awaitable[None]]

_FRENCH_WORDS = frozenset({
    'bonjour', 'bonsoir', 'salut', 'merci', 'oui', 'non', 'je', "j'ai", 'vous', 'nous', 'est',
    'une', 'des', 'les', 'pour', 'avec', 'svp', "s'il", 'plaît', 'plait', 'aide', 'besoin',
    'demande', 'problème', 'probleme', 'panne', 'fuite', 'arrêt', 'arret', 'madame',
    'monsieur', 'bienvenue',
})
_FRENCH_LETTERS = frozenset("éèêàùçôîœ")
_ENGLISH_WORDS = frozenset({
    'hello', 'hi', 'thanks', 'thank', 'yes', 'no', 'please', 'help', 'need', 'the', 'is',
    'are', 'my', 'you', 'with', 'request', 'problem', 'leak', 'broken', 'stop',
})


def guess_language(text: str | None, default: str) -> str:
    """The language a customer's first message is probably in ("fr" or "en"), else `default`."""
    if not text:
        return default
    lowered = unicodedata.normalize("NFC", text).casefold()
    words = set(re.findall(r"[\w']+", lowered))
    french = len(words & _FRENCH_WORDS) + (1 if _FRENCH_LETTERS & set(lowered) else 0)
    english = len(words & _ENGLISH_WORDS)
    if french > english and "fr" in SUPPORTED_LANGUAGES:
        return "fr"
    if english > french:
        return "en"
    return default


async def resolve_customer(session: AsyncSession, ctx: InboundContext) -> None:
    """The person behind the number, matched by normalized number; created when unknown."""
    row = ctx.message
    try:
        number = contacts.normalize_phone(row.sender)
    except contacts.InvalidPhone:
        ctx.notes.append("unusable number")
        return
    user = await session.scalar(select(User).where(User.phone == number).with_for_update())
    if user is None:
        user = User(
            telegram_id=None,
            phone=number,
            display_name=row.profile_name or "",
            language=guess_language(row.text, ctx.default_language),
            language_chosen=False,
            roles=Role.REQUESTER.value,
            created_at=ctx.now,
            updated_at=ctx.now,
        )
        try:
            async with session.begin_nested():
                session.add(user)
                await session.flush()
        except IntegrityError:
            # Another worker created this customer a moment ago: use theirs.
            user = (
                await session.scalars(select(User).where(User.phone == number).with_for_update())
            ).one()
        else:
            ctx.created = True
            audit.record(
                session, operation="user.create", entity_type="user", entity_id=user.id,
                after={"phone": number, "language": user.language, "roles": user.roles},
                detail="WhatsApp customer", at=ctx.now,
            )
            log.info("new WhatsApp customer: user %s", user.id)
    ctx.user = user
    row.user_id = user.id


async def refresh_window(session: AsyncSession, ctx: InboundContext) -> None:
    """The customer's own message opens (or refreshes) their 24 h window; it never moves back."""
    user = ctx.user
    if user is None:
        return
    at = min(ctx.message.sent_at, ctx.now)
    if user.whatsapp_inbound_at is None or user.whatsapp_inbound_at < at:
        user.whatsapp_inbound_at = at
        user.updated_at = ctx.now


async def apply_keyword(session: AsyncSession, ctx: InboundContext) -> None:
    """STOP / START, unless a keyword sent after this one was already applied."""
    row, user = ctx.message, ctx.user
    if user is None or row.keyword is None:
        return
    newer = await session.scalar(
        select(InboundMessage.id)
        .where(
            InboundMessage.user_id == user.id,
            InboundMessage.keyword.is_not(None),
            InboundMessage.status == _DONE,
            InboundMessage.id != row.id,
            or_(
                InboundMessage.sent_at > row.sent_at,
                and_(InboundMessage.sent_at == row.sent_at, InboundMessage.id > row.id),
            ),
        )
        .limit(1)
    )
    if newer is not None:
        ctx.notes.append(f"{row.keyword} older than one already applied")
        log.info("user %s: an older WhatsApp %s ignored (a newer keyword was applied)",
                 user.id, row.keyword.upper())
        return
    channel = ChannelName.WHATSAPP.value
    if row.keyword == "stop":
        changed = await contacts.record_opt_out(
            session, user_id=user.id, channel=channel, now=ctx.now, reason="WhatsApp STOP"
        )
    else:
        changed = await contacts.opt_in(
            session, user_id=user.id, channel=channel, now=ctx.now, reason="WhatsApp START"
        )
    if changed:
        ctx.keyword_applied = row.keyword
        log.info("user %s: WhatsApp %s applied", user.id, row.keyword.upper())


CORE_STEPS: tuple[Processor, ...] = (resolve_customer, refresh_window, apply_keyword)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    lease: timedelta = timedelta(seconds=60)
    batch_size: int = 50
    max_attempts: int = 8
    retry_base: timedelta = timedelta(seconds=5)
    retry_max: timedelta = timedelta(minutes=10)
    idle_seconds: float = 2.0  # how long the loop waits for a wake-up before looking anyway
    default_language: str = "en"


class InboundWorker:
    """Processes stored inbound messages; see the module docstring.

    `processors` run after the built-in steps, in order, in each message's unit of work: the
    relay to the operators' chat is added there (`add_processor`)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        owner: str,
        config: WorkerConfig | None = None,
        processors: Sequence[Processor] = (),
    ) -> None:
        self.db = db
        self.clock = clock
        self.owner = owner[:64]
        self.config = config or WorkerConfig()
        self.processors: list[Processor] = list(processors)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._database_away = False  # an outage is logged when it begins and when it ends

    def add_processor(self, processor: Processor) -> None:
        self.processors.append(processor)

    def wake(self) -> None:
        self._wake.set()

    # --------------------------------------------------------------------------- one pass

    async def run_once(self) -> int:
        """Claim and process one batch; returns how many messages were processed (done)."""
        claimed = await self.db.run(self._claim)
        done = 0
        for message_id in claimed:
            if await self._process(message_id):
                done += 1
        return done

    async def drain(self, limit: int = 1000) -> int:
        """Process until nothing is due (or `limit` passes); for tests and shutdown."""
        total = 0
        for _ in range(limit):
            done = await self.run_once()
            total += done
            if not done and not await self._any_due():
                break
        return total

    async def _any_due(self) -> bool:
        now = self.clock.now()

        async def work(session: AsyncSession) -> bool:
            found = await session.scalar(
                select(InboundMessage.id).where(
                    InboundMessage.status.in_((_PENDING, _PROCESSING)),
                    InboundMessage.next_attempt_at <= now,
                ).limit(1)
            )
            return found is not None

        return await self.db.read(work)

    async def _claim(self, session: AsyncSession) -> list[int]:
        now = self.clock.now()
        query = (
            select(InboundMessage.id)
            .where(
                InboundMessage.status.in_((_PENDING, _PROCESSING)),
                InboundMessage.next_attempt_at <= now,
            )
            .order_by(InboundMessage.sent_at, InboundMessage.id)
            .limit(self.config.batch_size)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list(await session.scalars(query))
        if ids:
            lease_until = now + self.config.lease
            await session.execute(
                update(InboundMessage)
                .where(InboundMessage.id.in_(ids))
                .values(
                    status=_PROCESSING,
                    lease_owner=self.owner,
                    lease_until=lease_until,
                    next_attempt_at=lease_until,
                    attempts=InboundMessage.attempts + 1,
                )
            )
        return ids

    async def _process(self, message_id: int) -> bool:
        async def work(session: AsyncSession) -> bool:
            row = await session.get(InboundMessage, message_id, with_for_update=True)
            if row is None or row.status != _PROCESSING or row.lease_owner != self.owner:
                return False  # our lease ran out and someone else took it
            now = self.clock.now()
            ctx = InboundContext(message=row, now=now,
                                 default_language=self.config.default_language)
            for step in (*CORE_STEPS, *self.processors):
                await step(session, ctx)
            row.status = _DONE
            row.processed_at = now
            row.lease_until = None
            row.lease_owner = None
            row.last_error = "; ".join(ctx.notes)[:500] or None
            return True

        try:
            return await self.db.run(work)
        except Exception as exc:
            log.exception("inbound WhatsApp message %s: processing failed", message_id)
            await self._release(message_id, exc)
            return False

    async def _release(self, message_id: int, exc: BaseException) -> None:
        """A failed try: due again after a backoff, or failed for good after max_attempts."""

        async def work(session: AsyncSession) -> None:
            row = await session.get(InboundMessage, message_id, with_for_update=True)
            if row is None or row.status != _PROCESSING or row.lease_owner != self.owner:
                return
            now = self.clock.now()
            row.lease_until = None
            row.lease_owner = None
            row.last_error = type(exc).__name__[:200]
            if row.attempts >= self.config.max_attempts:
                row.status = _FAILED
                log.error("inbound WhatsApp message %s failed %d times: kept as failed",
                          message_id, row.attempts)
                return
            wait = min(self.config.retry_base * 2 ** (row.attempts - 1), self.config.retry_max)
            row.status = _PENDING
            row.next_attempt_at = now + wait

        try:
            await self.db.run(work)
        except Exception:  # the lease will run out and make it due again anyway
            log.exception("inbound WhatsApp message %s: could not release it", message_id)

    # ------------------------------------------------------------------------- the loop

    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._loop(), name="inbound-worker")

    async def stop(self, timeout: float = 5.0) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                await task
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                done = await self.run_once()
            except Exception as exc:
                done = 0
                if not is_connection_failure(exc):
                    log.exception("inbound worker pass failed; trying again shortly")
                elif not self._database_away:  # an outage: said once, not every pass
                    self._database_away = True
                    log.warning("inbound worker: the database is unreachable (%s); the stored "
                                "messages wait for it", type(exc).__name__)
            else:
                if self._database_away:
                    self._database_away = False
                    log.warning("inbound worker: the database is back; processing resumes")
            if done:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.idle_seconds):
                    await self._wake.wait()
