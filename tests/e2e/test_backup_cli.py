"""`python main.py backup PATH` and `migrate --to REVISION` as an operator runs them (processes),
and the running bot's daily backup on SQLite (none on PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from database.engine import Database
from database.migrate import current_revision, head_revision, known_revisions, upgrade
from database.models import JobRun, SystemHealthSnapshot
from services.backup import BACKUP_JOB
from tests.conftest import NO_POSTGRES, TEST_DATABASE_URL, _admin
from tests.e2e.conftest import StartBot
from tests.e2e.harness import BotProcess

HEAD = head_revision()


async def run_cli(*args: str, **env: str) -> BotProcess:
    process = BotProcess({"BOT_TOKEN": "", "LOG_LEVEL": "WARNING", **env}, args=args)
    await process.start()
    await process.wait_exit()
    return process


@pytest.fixture(params=["sqlite", "postgresql"])
async def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database of this test's own, migrated to head (going down must not pull the schema
    from under other tests)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        name = None
    else:
        if not TEST_DATABASE_URL:
            pytest.skip(NO_POSTGRES)
        name = f"test_migrate_{uuid.uuid4().hex[:10]}"
        await _admin(TEST_DATABASE_URL, f'CREATE DATABASE "{name}"')
        url = make_url(TEST_DATABASE_URL).set(database=name).render_as_string(
            hide_password=False)
    db = Database.from_url(url)
    await upgrade(db.engine)
    await db.dispose()
    try:
        yield url
    finally:
        if name is not None and TEST_DATABASE_URL:
            await _admin(TEST_DATABASE_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_backup_writes_a_checked_copy_and_says_where(db_url: str, tmp_path: Path):
    folder = tmp_path / "backups"
    folder.mkdir()
    process = await run_cli("backup", str(folder), DATABASE_URL=db_url)
    assert process.process is not None and process.process.returncode == 0, process.text
    [line] = process.output
    match = re.fullmatch(
        rf"backup written: (\S+) \([\d.]+ (?:bytes|KB|MB), revision {HEAD}, [\d.]+ s\)", line
    )
    assert match is not None, line
    written = Path(match.group(1))
    assert written.parent == folder
    assert re.fullmatch(r"bot-\d{8}-\d{6}\.(db|dump)", written.name)
    assert os.listdir(folder) == [written.name]  # no temporary file left behind


async def test_without_pg_dump_the_command_is_printed_with_the_password_masked(tmp_path: Path):
    empty = tmp_path / "bin"
    empty.mkdir()
    url = "postgresql+asyncpg://desk:pa55-w0rd@db.example.com:5432/desk"
    process = await run_cli("backup", str(tmp_path / "desk.dump"), DATABASE_URL=url,
                            PATH=str(empty))
    assert process.process is not None and process.process.returncode == 2
    assert "pa55-w0rd" not in process.text
    assert process.output[-1] == (
        f"PGPASSWORD=**** pg_dump --format=custom --file {tmp_path / 'desk.dump'} "
        "postgresql://desk@db.example.com:5432/desk"
    )
    assert process.output[0].startswith("error: pg_dump is not installed here")
    assert not (tmp_path / "desk.dump").exists()


async def test_migrate_to_goes_down_only_with_yes_when_it_drops_data(fresh_url: str):
    db = Database.from_url(fresh_url)
    try:
        await db.run(lambda s: _snapshot(s))
        refused = await run_cli("migrate", "--to", "0012", DATABASE_URL=fresh_url)
        assert refused.process is not None and refused.process.returncode == 2
        assert "going down from" in refused.output[0] and "to 0012 drops:" in refused.output[0]
        assert "  table system_health_snapshots (1 rows)" in refused.output
        assert refused.output[-1].startswith("nothing changed: this loses data")
        assert await current_revision(db.engine) == HEAD
        assert len((await db.read(lambda s: s.scalars(select(SystemHealthSnapshot)))).all()) == 1

        down = await run_cli("migrate", "--to", "0012", "--yes", DATABASE_URL=fresh_url)
        assert down.process is not None and down.process.returncode == 0, down.text
        assert down.output[-1] == "database is at revision 0012"
        assert await current_revision(db.engine) == "0012"

        up = await run_cli("migrate", "--to", "head", DATABASE_URL=fresh_url)
        assert up.output == [f"database is at revision {HEAD}"]

        unknown = await run_cli("migrate", "--to", "42", DATABASE_URL=fresh_url)
        assert unknown.process is not None and unknown.process.returncode == 2
        assert unknown.output == [
            f"error: unknown revision '42'; known: {', '.join(known_revisions())} "
            f"(or head = {HEAD})"
        ]
    finally:
        await db.dispose()


async def _snapshot(session) -> None:
    session.add(SystemHealthSnapshot(status="ok", reasons=[], components={},
                                     at=datetime.now(UTC)))


async def test_the_running_bot_backs_up_sqlite_daily_and_leaves_postgresql_to_pg_dump(
    start_bot: StartBot, db: Database, db_url: str, tmp_path: Path
):
    folder = tmp_path / "backups"
    bot = await start_bot(BACKUP_DIR=str(folder), BACKUP_KEEP="2")
    jobs = (await bot.wait_for_line(r"scheduler started as \S+ with jobs: (.*)")).group(1)
    if db.dialect != "sqlite":
        assert BACKUP_JOB not in jobs.split(", ")
        return
    assert BACKUP_JOB in jobs.split(", ")

    async def recorded() -> JobRun | None:
        return await db.read(lambda s: s.scalar(
            select(JobRun).where(JobRun.job == BACKUP_JOB, JobRun.outcome != "running")))

    async with asyncio.timeout(20):  # interval jobs first run a moment after the start
        while (run := await recorded()) is None:
            await asyncio.sleep(0.1)
    assert run.outcome == "ok", run.error_text
    [written] = os.listdir(folder)
    assert re.fullmatch(r"bot-\d{8}-\d{6}\.db", written)
    assert run.summary is not None and run.summary.startswith(f"{written} ")
    assert run.summary.endswith("kept 1, deleted 0")
