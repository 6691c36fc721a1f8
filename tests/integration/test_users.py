"""Users are created on first contact, and their language choice is persisted and audited."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from database.engine import Database
from database.models import Role, TransactionLog, User
from services import users
from services.clock import FakeClock


async def _ensure(db: Database, clock: FakeClock, telegram_id: int = 501, **kw) -> users.UserView:
    async def work(session):
        return await users.ensure_telegram_user(
            session,
            telegram_id=telegram_id,
            display_name=kw.get("name", "Ann"),
            client_language=kw.get("client_language", "fr-FR"),
            default_language="en",
            admin=kw.get("admin", False),
            now=clock.now(),
        )

    return await db.run(work)


async def test_first_contact_creates_one_user_with_client_language(db: Database) -> None:
    clock = FakeClock()
    first = await _ensure(db, clock)
    again = await _ensure(db, clock)
    assert first.is_new and not again.is_new
    assert first.id == again.id
    assert first.language == "fr" and not first.language_chosen
    assert first.roles == frozenset({Role.REQUESTER})
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(User)) == 1
        log = (await session.scalars(select(TransactionLog))).all()
    assert [e.operation for e in log] == ["user.create"]


async def test_unknown_client_language_falls_back_to_default(db: Database) -> None:
    user = await _ensure(db, FakeClock(), client_language="de")
    assert user.language == "en"


async def test_admin_ids_get_the_admin_role(db: Database) -> None:
    user = await _ensure(db, FakeClock(), admin=True)
    assert Role.ADMIN in user.roles


async def test_language_choice_is_persisted_and_audited(db: Database) -> None:
    clock = FakeClock()
    user = await _ensure(db, clock, client_language="en")
    clock.advance(60)
    updated = await db.run(
        lambda s: users.set_language(s, user_id=user.id, language="fr", now=clock.now())
    )
    assert updated.language == "fr" and updated.language_chosen
    async with db.transaction() as session:
        stored = await session.get_one(User, user.id)
        entry = await session.scalar(
            select(TransactionLog).where(TransactionLog.operation == "user.set_language")
        )
    assert stored.language == "fr"
    assert entry is not None
    assert entry.before == {"language": "en", "language_chosen": False}
    assert entry.after == {"language": "fr", "language_chosen": True}
    assert entry.at == clock.now()


async def test_unsupported_language_changes_nothing(db: Database) -> None:
    user = await _ensure(db, FakeClock(), client_language="en")
    with pytest.raises(users.UnsupportedLanguage):
        await db.run(
            lambda s: users.set_language(s, user_id=user.id, language="de", now=FakeClock().now())
        )
    async with db.transaction() as session:
        assert (await session.get_one(User, user.id)).language == "en"


async def test_unit_of_work_rolls_back_on_error(db: Database) -> None:
    clock = FakeClock()

    async def work(session):
        await users.ensure_telegram_user(
            session, telegram_id=77, display_name="X", client_language=None,
            default_language="en", admin=False, now=clock.now(),
        )
        raise RuntimeError("boom after the write")

    with pytest.raises(RuntimeError):
        await db.run(work)
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(User)) == 0


async def test_transient_error_reruns_the_whole_unit_with_a_fresh_session(db: Database) -> None:
    clock = FakeClock()
    sessions = []

    async def work(session):
        sessions.append(session)
        await users.ensure_telegram_user(
            session, telegram_id=88, display_name="Y", client_language=None,
            default_language="en", admin=False, now=clock.now(),
        )
        if len(sessions) == 1:
            raise OperationalError("INSERT ...", {}, Exception("database is locked"))
        return "done"

    assert await db.run(work) == "done"
    assert len(sessions) == 2 and sessions[0] is not sessions[1]
    async with db.transaction() as session:
        # The first attempt's write was rolled back; only the second one's remains.
        assert await session.scalar(select(func.count()).select_from(User)) == 1


async def test_permanent_error_is_not_retried(db: Database) -> None:
    calls = 0

    async def work(session):
        nonlocal calls
        calls += 1
        raise OperationalError("SELECT", {}, Exception("no such table: nothing"))

    with pytest.raises(OperationalError):
        await db.run(work)
    assert calls == 1


async def test_removing_an_id_from_admin_ids_takes_the_admin_role_away(db: Database) -> None:
    clock = FakeClock()
    assert Role.ADMIN in (await _ensure(db, clock, admin=True)).roles
    demoted = await _ensure(db, clock, admin=False)
    assert Role.ADMIN not in demoted.roles and Role.REQUESTER in demoted.roles
    async with db.transaction() as session:
        revoked = await session.scalar(
            select(TransactionLog).where(TransactionLog.operation == "user.admin_revoked"))
    assert revoked is not None and revoked.after == {"roles": "requester"}


class _Statements:
    """Counts the statements a piece of work sends, by their first word."""

    def __init__(self, db: Database) -> None:
        self.words: list[str] = []
        self._db = db

    def __enter__(self) -> _Statements:
        event.listen(self._db.engine.sync_engine, "before_cursor_execute", self._seen)
        event.listen(self._db.engine.sync_engine, "begin", self._began)
        self._db.driver_statement_listeners.append(self._sent)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self._db.engine.sync_engine, "before_cursor_execute", self._seen)
        event.remove(self._db.engine.sync_engine, "begin", self._began)
        self._db.driver_statement_listeners.remove(self._sent)

    def _began(self, _conn) -> None:
        self.words.append("TRANSACTION")

    def _seen(self, _conn, _cursor, statement: str, *_args) -> None:
        self._sent(statement)

    def _sent(self, statement: str) -> None:
        self.words.append(statement.split(None, 1)[0].upper())

    @property
    def writes(self) -> int:
        return sum(w in ("INSERT", "UPDATE", "DELETE") for w in self.words)


def _service(db: Database, clock: FakeClock, admin_ids: tuple[int, ...] = ()) -> users.Users:
    return users.Users(db, clock, default_language="en", admin_ids=admin_ids)


async def test_a_returning_user_costs_one_read_and_no_write(db: Database) -> None:
    service = _service(db, FakeClock())
    first = await service.ensure(telegram_id=777, display_name="Ann", client_language="fr")
    with _Statements(db) as seen:
        again = await service.ensure(telegram_id=777, display_name="Ann", client_language="fr")
    assert again.id == first.id and again.language == "fr" and not again.is_new
    assert seen.words.count("SELECT") == 1
    assert seen.writes == 0
    # No transaction at all, so on SQLite no writer's lock (BEGIN IMMEDIATE) either.
    assert "TRANSACTION" not in seen.words and "BEGIN" not in seen.words


async def test_a_returning_user_is_loaded_while_a_writer_holds_its_turn(db: Database) -> None:
    """Every update loads its user: that read must not queue behind a unit of work."""
    service = _service(db, FakeClock())
    await service.ensure(telegram_id=781, display_name="Ann", client_language="en")
    holding, release = asyncio.Event(), asyncio.Event()

    async def slow_writer(session) -> None:
        await session.execute(select(func.count()).select_from(User))
        holding.set()
        await release.wait()

    writer = asyncio.create_task(db.run(slow_writer))
    try:
        await asyncio.wait_for(holding.wait(), 10)
        user = await asyncio.wait_for(
            service.ensure(telegram_id=781, display_name="Ann", client_language="en"), 5
        )
        assert user.display_name == "Ann"
    finally:
        release.set()
        await writer


async def test_a_long_name_does_not_cost_a_write_on_every_update(db: Database) -> None:
    service = _service(db, FakeClock())
    name = "Ann " * 100
    await service.ensure(telegram_id=778, display_name=name, client_language=None)
    with _Statements(db) as seen:
        user = await service.ensure(telegram_id=778, display_name=name, client_language=None)
    assert user.display_name == name[: users.MAX_NAME_LENGTH]
    assert seen.writes == 0


async def test_a_renamed_user_is_updated(db: Database) -> None:
    service = _service(db, FakeClock())
    await service.ensure(telegram_id=779, display_name="Ann", client_language=None)
    renamed = await service.ensure(telegram_id=779, display_name="Annie", client_language=None)
    assert renamed.display_name == "Annie"
    assert (await service.ensure(telegram_id=779, display_name="", client_language=None)
            ).display_name == "Annie"


async def test_admin_ids_apply_to_a_returning_user_both_ways(db: Database) -> None:
    clock = FakeClock()
    user = await _service(db, clock).ensure(telegram_id=780, display_name="A", client_language=None)
    assert not user.is_admin
    promoted = await _service(db, clock, admin_ids=(780,)).ensure(
        telegram_id=780, display_name="A", client_language=None
    )
    assert promoted.is_admin
    demoted = await _service(db, clock).ensure(
        telegram_id=780, display_name="A", client_language=None
    )
    assert not demoted.is_admin and Role.REQUESTER in demoted.roles
