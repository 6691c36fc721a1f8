"""Error records: every support code a person was given leads an admin to what happened.

`ErrorRecorder.record` classifies an exception, groups it by fingerprint (one `error_groups`
row with a count, the masked message and stack of the latest occurrence) and writes one small
`error_occurrences` row under a fresh support code, in one unit of work with the admins' alert
for high and critical errors (one per fingerprint per alert window: `Alerts` deduplicates).

While the database cannot be reached the occurrence goes to a bounded in-memory spool (the
oldest dropped first, and counted) and the caller still gets its code; the spool is written by
the next record or `flush` that reaches the database.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database, is_transient
from database.models import ErrorGroup, ErrorOccurrence
from services.actions import ActionName
from services.alerts import Alerts, Severity
from services.clock import Clock
from services.errors.categories import ErrorCategory
from services.errors.context import ErrorContext
from services.errors.fingerprint import exception_type, fingerprint, place, stack
from services.errors.rules import Classification, classify, database_unreachable
from services.localization import N_, Localized
from services.masking import mask_text

log = logging.getLogger(__name__)

# Short, unambiguous, easy to read out on the phone: no 0/O, no 1/I.
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
_MESSAGE_LIMIT = 2000
_STACK_LIMIT = 8000
_FLUSH_BATCH = 200
_ALERTING = frozenset({Severity.HIGH, Severity.CRITICAL})


def _unreachable(exc: BaseException) -> bool:
    """The database is away (or too busy): the occurrence waits in the spool. Any other
    failure to write is a bug, and spooling would only hide it."""
    return is_transient(exc) or database_unreachable(exc)


def new_support_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(text: str) -> str:
    """What a person typed or read out, as stored: upper case, no spaces or dashes."""
    return "".join(ch for ch in text.upper() if ch.isalnum())[:16]


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the caller tells the user: the code and the classification behind it."""

    code: str
    classification: Classification
    stored: bool  # False: waiting in the spool


@dataclass(slots=True)
class _Pending:
    """One occurrence, masked, ready to be written (now or after an outage)."""

    code: str
    fingerprint: str
    exception_type: str
    place: str
    category: ErrorCategory
    severity: Severity
    message: str
    stack: str
    context: dict[str, Any]
    at: datetime


@dataclass(frozen=True, slots=True)
class GroupView:
    id: int
    fingerprint: str
    exception_type: str
    place: str
    category: str
    severity: str
    count: int
    first_seen: datetime
    last_seen: datetime
    message: str
    stack: str
    resolved: bool
    resolved_by: int | None
    resolved_at: datetime | None

    @classmethod
    def of(cls, group: ErrorGroup) -> GroupView:
        return cls(
            group.id, group.fingerprint, group.exception_type, group.place, group.category,
            group.severity, group.count, group.first_seen, group.last_seen, group.message,
            group.stack, group.resolved, group.resolved_by, group.resolved_at,
        )


@dataclass(frozen=True, slots=True)
class OccurrenceView:
    id: int
    code: str
    at: datetime
    context: ErrorContext
    group: GroupView


@dataclass(frozen=True, slots=True)
class OccurrenceSummary:
    """One occurrence in a group's list: its code, when, and its (masked) context."""

    id: int
    code: str
    at: datetime
    context: ErrorContext


WINDOWS: dict[str, timedelta] = {
    "1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7),
}


@dataclass(frozen=True, slots=True)
class ErrorStatistics:
    """Occurrences by (category, severity) in each window ("1h", "24h", "7d"), and the spool."""

    at: datetime
    counts: dict[str, dict[tuple[str, str], int]]
    spooled: int = 0
    dropped: int = 0

    def total(self, window: str) -> int:
        return sum(self.counts.get(window, {}).values())

    def by_category(self, window: str) -> dict[str, int]:
        totals: dict[str, int] = {}
        for (category, _severity), count in self.counts.get(window, {}).items():
            totals[category] = totals.get(category, 0) + count
        return totals

    def by_severity(self, window: str) -> dict[str, int]:
        totals: dict[str, int] = {}
        for (_category, severity), count in self.counts.get(window, {}).items():
            totals[severity] = totals.get(severity, 0) + count
        return totals


@dataclass
class ErrorRecorder:
    db: Database
    clock: Clock
    alerts: Alerts | None = None
    spool_size: int = 1000
    write_timeout: float = 10.0
    _spool: deque[_Pending] = field(default_factory=deque, init=False, repr=False)
    dropped: int = field(default=0, init=False)
    _flushing: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    @property
    def spooled(self) -> int:
        return len(self._spool)

    # ------------------------------------------------------------------ recording

    async def record(self, exc: BaseException, context: ErrorContext | None = None) -> Recorded:
        """Classify and store `exc`; never raises, so the caller can always answer with the
        code: a database that is away gets the occurrence spooled, any other failure to store
        it is logged with the code."""
        context = context or ErrorContext()
        classification = classify(exc, context)
        pending = self._pending(exc, context, classification)
        for _attempt in range(3):
            try:
                # Bounded: a database that does not answer at all must not hold up the answer.
                async with asyncio.timeout(self.write_timeout):
                    await self.db.run(lambda session: self._store(session, pending))
                break
            except IntegrityError:  # the code was taken (1 in 10^12): draw another
                pending.code = new_support_code()
            except Exception as write_error:
                if isinstance(write_error, TimeoutError) or _unreachable(write_error):
                    log.warning(
                        "error %s not stored (%s): kept in the spool until the database answers",
                        pending.code, type(write_error).__name__,
                    )
                    self._keep(pending)
                else:  # a bug in recording itself: loud, with the code the user was given
                    log.exception("could not record error %s (%s)", pending.code,
                                  pending.exception_type)
                return Recorded(pending.code, classification, stored=False)
        else:
            log.error("could not draw a free support code for error %s", pending.exception_type)
            return Recorded(pending.code, classification, stored=False)
        if self._spool:
            await self.flush()
        return Recorded(pending.code, classification, stored=True)

    def _pending(
        self, exc: BaseException, context: ErrorContext, classification: Classification
    ) -> _Pending:
        exc_type, where = exception_type(exc), place(exc)
        text = str(exc)
        return _Pending(
            code=new_support_code(),
            fingerprint=fingerprint(exc_type, where, classification.category),
            exception_type=exc_type,
            place=where,
            category=classification.category,
            severity=classification.severity,
            message=mask_text(f"{exc_type}: {text}" if text else exc_type, limit=_MESSAGE_LIMIT),
            stack=mask_text(stack(exc), limit=_STACK_LIMIT),
            context={
                name: mask_text(value) if isinstance(value, str) else value
                for name, value in context.as_dict().items()
            },
            at=self.clock.now(),
        )

    def _keep(self, pending: _Pending) -> None:
        if len(self._spool) >= self.spool_size:
            lost = self._spool.popleft()
            self.dropped += 1
            log.error(
                "error spool full (%d): dropped the oldest occurrence %s (%d dropped so far)",
                self.spool_size, lost.code, self.dropped,
            )
        self._spool.append(pending)

    async def flush(self) -> int:
        """Write the spooled occurrences, oldest first; returns how many were written. While
        the database is still away they stay spooled."""
        written = 0
        async with self._flushing:
            while self._spool:
                batch = [self._spool.popleft() for _ in range(min(_FLUSH_BATCH, len(self._spool)))]
                try:
                    await self.db.run(lambda session, batch=batch: self._store_all(session, batch))
                except Exception as write_error:
                    if not _unreachable(write_error):
                        # Not the outage: a batch that can never be written would block the
                        # spool for good, so it is dropped, loudly and counted.
                        self.dropped += len(batch)
                        log.exception("error spool: %d occurrence(s) could not be stored: %s",
                                      len(batch), ", ".join(p.code for p in batch))
                        continue
                    log.warning(
                        "error spool: %d occurrence(s) still not stored (%s)",
                        len(self._spool) + len(batch), type(write_error).__name__,
                    )
                    for pending in reversed(batch):
                        self._spool.appendleft(pending)
                    while len(self._spool) > self.spool_size:  # more came in meanwhile
                        self._spool.popleft()
                        self.dropped += 1
                    break
                written += len(batch)
        if written:
            log.info("error spool: %d occurrence(s) stored after the database came back", written)
        return written

    async def _store_all(self, session: AsyncSession, batch: Sequence[_Pending]) -> None:
        for pending in batch:
            await self._store(session, pending)

    async def _store(self, session: AsyncSession, pending: _Pending) -> None:
        """Count the occurrence in its group and write it: a handful of statements, the same
        for the thousandth occurrence of a storm as for the first."""
        latest = ErrorGroup.last_seen <= pending.at
        counted = await session.execute(
            update(ErrorGroup)
            .where(ErrorGroup.fingerprint == pending.fingerprint)
            .values(
                count=ErrorGroup.count + 1,
                last_seen=case((latest, pending.at), else_=ErrorGroup.last_seen),
                message=case((latest, pending.message), else_=ErrorGroup.message),
                stack=case((latest, pending.stack), else_=ErrorGroup.stack),
                severity=case((latest, pending.severity.value), else_=ErrorGroup.severity),
                # It came back: not resolved after all.
                resolved=False, resolved_by=None, resolved_at=None,
            )
            .returning(ErrorGroup.id)
            .execution_options(synchronize_session=False)
        )
        group_id = counted.scalar()
        if group_id is None:
            group_id = await self._new_group(session, pending)
        occurrence = ErrorOccurrence(
            code=pending.code, group_id=group_id, context=pending.context, at=pending.at
        )
        session.add(occurrence)
        await session.flush()
        if pending.severity in _ALERTING and self.alerts is not None:
            await self._alert(session, occurrence, pending)

    async def _new_group(self, session: AsyncSession, pending: _Pending) -> int:
        try:
            async with session.begin_nested():
                group = ErrorGroup(
                    fingerprint=pending.fingerprint, exception_type=pending.exception_type,
                    place=pending.place, category=pending.category.value,
                    severity=pending.severity.value, count=1, first_seen=pending.at,
                    last_seen=pending.at, message=pending.message, stack=pending.stack,
                    resolved=False,
                )
                session.add(group)
            return group.id
        except IntegrityError:  # another process made the group at the same moment: count in it
            group_id = await session.scalar(
                update(ErrorGroup).where(ErrorGroup.fingerprint == pending.fingerprint)
                .values(count=ErrorGroup.count + 1).returning(ErrorGroup.id)
                .execution_options(synchronize_session=False)
            )
            assert group_id is not None
            return group_id

    async def _alert(
        self, session: AsyncSession, occurrence: ErrorOccurrence, pending: _Pending
    ) -> None:
        assert self.alerts is not None
        text = Localized(
            N_("Error {category} in {place}: {message}\nSupport code: {code}"),
            {
                "category": pending.category.value, "place": pending.place,
                "message": pending.message[:300], "code": occurrence.code,
            },
        )
        button = {
            "text": Localized(N_("Open {code}"), {"code": occurrence.code}),
            "action": ActionName.OPEN_ERROR.value,
            "target": occurrence.id,
        }
        await self.alerts.alert(
            session, key=f"error:{pending.fingerprint[:20]}", severity=pending.severity,
            text=text, now=pending.at, button=button,
        )

    # ------------------------------------------------------------------ admin tools

    async def find(self, code: str) -> OccurrenceView | None:
        """The occurrence behind a support code (spooled ones are written first)."""
        if self._spool:
            await self.flush()
        code = normalize_code(code)
        return await self.db.read(
            lambda session: self._view(session, ErrorOccurrence.code == code)
        )

    async def occurrence(self, occurrence_id: int) -> OccurrenceView | None:
        return await self.db.read(
            lambda session: self._view(session, ErrorOccurrence.id == occurrence_id)
        )

    async def resolve(self, group_id: int, *, actor_id: int) -> GroupView | None:
        """Mark a group resolved by an admin (users.id); a new occurrence reopens it."""

        async def work(session: AsyncSession) -> GroupView | None:
            group = await session.get(ErrorGroup, group_id, with_for_update=True)
            if group is None:
                return None
            if not group.resolved:
                group.resolved, group.resolved_by = True, actor_id
                group.resolved_at = self.clock.now()
            return GroupView.of(group)

        return await self.db.run(work)

    async def statistics(self) -> ErrorStatistics:
        """Occurrences by category and severity over the last hour, day and week, with this
        process's spool."""
        now = self.clock.now()
        stats = await self.db.read(lambda session: statistics(session, now))
        return replace(stats, spooled=self.spooled, dropped=self.dropped)

    async def latest_serious(self, *, limit: int = 8) -> list[tuple[GroupView, str | None]]:
        """The open high and critical groups seen last first, each with its latest support
        code (the /workflow_recovery Errors screen)."""
        return await self.db.read(lambda session: latest_serious(session, limit=limit))

    async def group(self, group_id: int) -> GroupView | None:
        """One group as it is now (the dashboard's error page)."""
        return await self.db.read(lambda session: group(session, group_id))

    async def groups(self, *, limit: int, offset: int = 0, resolved: bool = False
                     ) -> tuple[list[tuple[GroupView, str | None]], int]:
        """One page of the open (or resolved) groups, seen last first, each with its latest
        support code, and how many there are (the dashboard's Errors page)."""
        return await self.db.read(lambda session: groups(
            session, limit=limit, offset=offset, resolved=resolved))

    async def occurrences(self, group_id: int, *, limit: int, offset: int = 0
                          ) -> tuple[list[OccurrenceSummary], int]:
        """One page of a group's occurrences, latest first, and how many it has."""
        return await self.db.read(lambda session: occurrences(
            session, group_id, limit=limit, offset=offset))

    @staticmethod
    async def _view(session: AsyncSession, where: Any) -> OccurrenceView | None:
        row = (
            await session.execute(
                select(ErrorOccurrence, ErrorGroup)
                .join(ErrorGroup, ErrorGroup.id == ErrorOccurrence.group_id)
                .where(where)
            )
        ).first()
        if row is None:
            return None
        occurrence, group = row
        return OccurrenceView(
            occurrence.id, occurrence.code, occurrence.at,
            ErrorContext.from_dict(occurrence.context or {}), GroupView.of(group),
        )


async def statistics(session: AsyncSession, now: datetime) -> ErrorStatistics:
    """Occurrences by (category, severity) in the hour, day and week before `now`: for the
    admin screens, /health and /metrics (one query, read-only)."""
    columns = [
        func.sum(case((ErrorOccurrence.at >= now - span, 1), else_=0)).label(name)
        for name, span in WINDOWS.items()
    ]
    rows = await session.execute(
        select(ErrorGroup.category, ErrorGroup.severity, *columns)
        .select_from(ErrorOccurrence)
        .join(ErrorGroup, ErrorGroup.id == ErrorOccurrence.group_id)
        .where(ErrorOccurrence.at >= now - max(WINDOWS.values()))
        .group_by(ErrorGroup.category, ErrorGroup.severity)
    )
    counts: dict[str, dict[tuple[str, str], int]] = {name: {} for name in WINDOWS}
    for row in rows:
        for name in WINDOWS:
            if value := int(row._mapping[name] or 0):
                counts[name][(row.category, row.severity)] = value
    return ErrorStatistics(now, counts)


async def latest_serious(
    session: AsyncSession, *, limit: int
) -> list[tuple[GroupView, str | None]]:
    groups = list(await session.scalars(
        select(ErrorGroup)
        .where(ErrorGroup.severity.in_(("high", "critical")), ErrorGroup.resolved.is_(False))
        .order_by(ErrorGroup.last_seen.desc(), ErrorGroup.id.desc()).limit(limit)
        .execution_options(populate_existing=True)
    ))
    codes = await _latest_codes(session, [g.id for g in groups])
    return [(GroupView.of(g), codes.get(g.id)) for g in groups]


async def _latest_codes(session: AsyncSession, group_ids: Sequence[int]) -> dict[int, str]:
    codes: dict[int, str] = {}
    for group_id in group_ids:
        code = await session.scalar(
            select(ErrorOccurrence.code).where(ErrorOccurrence.group_id == group_id)
            .order_by(ErrorOccurrence.id.desc()).limit(1)
        )
        if code is not None:
            codes[group_id] = code
    return codes


async def group(session: AsyncSession, group_id: int) -> GroupView | None:
    found = await session.get(ErrorGroup, group_id, populate_existing=True)
    return GroupView.of(found) if found is not None else None


async def groups(
    session: AsyncSession, *, limit: int, offset: int = 0, resolved: bool = False
) -> tuple[list[tuple[GroupView, str | None]], int]:
    where = ErrorGroup.resolved.is_(resolved)
    total = await session.scalar(select(func.count()).select_from(ErrorGroup).where(where))
    rows = list(await session.scalars(
        select(ErrorGroup).where(where)
        .order_by(ErrorGroup.last_seen.desc(), ErrorGroup.id.desc()).limit(limit).offset(offset)
        .execution_options(populate_existing=True)
    ))
    codes = await _latest_codes(session, [g.id for g in rows])
    return [(GroupView.of(g), codes.get(g.id)) for g in rows], int(total or 0)


async def occurrences(
    session: AsyncSession, group_id: int, *, limit: int, offset: int = 0
) -> tuple[list[OccurrenceSummary], int]:
    of_group = ErrorOccurrence.group_id == group_id
    total = await session.scalar(
        select(func.count()).select_from(ErrorOccurrence).where(of_group))
    rows = await session.scalars(
        select(ErrorOccurrence).where(of_group)
        .order_by(ErrorOccurrence.id.desc()).limit(limit).offset(offset)
    )
    return [OccurrenceSummary(o.id, o.code, o.at, ErrorContext.from_dict(o.context or {}))
            for o in rows], int(total or 0)
