"""Shared fixtures: a fresh, migrated database on each engine.

SQLite always runs. PostgreSQL runs when TEST_DATABASE_URL is set (CI sets it); each test session
creates a database of its own (dropped at the end), so reruns and parallel runs never collide.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import text
from sqlalchemy.engine import make_url

from database.base import Base
from database.engine import Database, create_engine
from database.migrate import upgrade

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL")
NO_POSTGRES = "TEST_DATABASE_URL is not set: PostgreSQL variants skipped (see README)"

# Property tests: fewer examples in CI (the CI variable set), hypothesis's default elsewhere; no
# deadline, since an example runs on a real database whose latency varies. A function-scoped
# fixture (the database) is shared by a test's examples on purpose: each example checks its
# own answer only.
settings.register_profile(
    "ci", max_examples=50, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "dev", deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


async def _admin(url: str, statement: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database private to this test session, migrated to head."""
    if not TEST_DATABASE_URL:
        pytest.skip(NO_POSTGRES)
    base = make_url(TEST_DATABASE_URL)
    name = f"bot_test_{uuid.uuid4().hex[:12]}"
    url = base.set(database=name).render_as_string(hide_password=False)

    async def create() -> None:
        await _admin(TEST_DATABASE_URL, f'CREATE DATABASE "{name}"')
        engine = create_engine(url)
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(create())
    yield url
    asyncio.run(_admin(TEST_DATABASE_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A database URL with an empty, migrated schema, once per engine."""
    if request.param == "sqlite":
        path = tmp_path / "test.db"
        url = f"sqlite+aiosqlite:///{path}"

        async def migrate() -> None:
            engine = create_engine(url)
            await upgrade(engine)
            await engine.dispose()

        asyncio.run(migrate())
        return url
    url = request.getfixturevalue("postgres_url")
    asyncio.run(_truncate_all(url))
    return url


async def _truncate_all(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    await engine.dispose()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(db_url)
    yield database
    await database.dispose()
