"""What every benchmark shares: a database of its own (BENCH_DATABASE_URL, default a temporary
SQLite file), migrated to head and dropped afterwards, and the RESULT line."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psutil
from sqlalchemy import text
from sqlalchemy.engine import make_url

from database.engine import Database, create_engine
from database.migrate import upgrade


@asynccontextmanager
async def bench_database() -> AsyncIterator[tuple[Database, str]]:
    """A fresh migrated database; yields (Database, url). PostgreSQL gets a database of its own
    on the server named by BENCH_DATABASE_URL, so a run never touches existing data."""
    base = os.environ.get("BENCH_DATABASE_URL")
    if base and make_url(base).get_backend_name() == "postgresql":
        name = f"bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(base).set(database=name).render_as_string(hide_password=False)
        db = Database.from_url(url, pool_size=20)
        try:
            await upgrade(db.engine)
            yield db, url
        finally:
            await db.dispose()
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await admin.dispose()
        return
    with tempfile.TemporaryDirectory() as folder:
        url = base or f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"
        db = Database.from_url(url)
        try:
            await upgrade(db.engine)
            yield db, url
        finally:
            await db.dispose()


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1024 / 1024


def print_result(result: dict[str, object]) -> None:
    print("RESULT " + json.dumps(result, sort_keys=True))
