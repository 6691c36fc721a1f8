"""Backups of the live database, taken while the bot keeps running (issue 14).

- SQLite: SQLite's online backup API (https://www.sqlite.org/backup.html) on a connection of
  its own, in a worker thread, so the event loop is never held. The copy is one step: one read
  transaction, which in WAL mode never blocks the bot's writer, and which sees one committed
  state (a copy in several steps starts over each time another connection writes between two
  steps, which a dispatching bot does all the time).
- PostgreSQL: `pg_dump --format=custom` (one consistent snapshot; restored with pg_restore),
  with the password in the child's PGPASSWORD only, never on its command line. Without pg_dump,
  `PgDumpMissing` carries the command to run elsewhere, password shown as ****.

Either way the copy is written beside the path asked for under a temporary name, checked
(SQLite: `PRAGMA integrity_check`; both: the copy's alembic_version is this code's head), and
only then renamed to that path: a half-written or unchecked copy never bears the name.

The daily job (`register_backup_job`, SQLite only) writes BACKUP_DIR/bot-YYYYmmdd-HHMMSS.db with
the same function and keeps the newest BACKUP_KEEP files of that name pattern.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from database.migrate import head_revision
from services.scheduler import Scheduler

BACKUP_JOB = "backup"
# The daily job's files; only these are ever deleted to keep BACKUP_KEEP of them.
BACKUP_NAME = re.compile(r"^bot-\d{8}-\d{6}\.db$")
MASKED_PASSWORD = "****"
# libpq's names for what asyncpg calls differently in a SQLAlchemy URL's query.
_LIBPQ_QUERY = {"ssl": "sslmode"}


class BackupError(Exception):
    """The backup was not written; the message is one line meant for a person."""


class PgDumpMissing(BackupError):
    """pg_dump is not installed here: `command` is what to run where it is."""

    def __init__(self, command: str) -> None:
        super().__init__("pg_dump is not installed here (Debian: apt-get install "
                         "postgresql-client); run this where it is:")
        self.command = command


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    size: int
    revision: str
    seconds: float

    def line(self) -> str:
        return (f"backup written: {self.path} ({human_size(self.size)}, revision "
                f"{self.revision}, {self.seconds:.2f} s)")


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def backup_name(now: datetime, suffix: str = ".db") -> str:
    return f"bot-{now:%Y%m%d-%H%M%S}{suffix}"


def default_backup_dir(database_url: str) -> Path:
    """Where backups go when BACKUP_DIR is unset: a `backups` folder beside the SQLite file
    (data/backups with the default DATABASE_URL); ./backups for PostgreSQL."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).parent / "backups"
    return Path("backups")


async def back_up(database_url: str, path: Path, *, now: datetime | None = None) -> BackupResult:
    """Write a checked copy of the database at `database_url` to `path` (an existing folder:
    a file named for `now` inside it). Raises BackupError with the reason when it could not."""
    url = make_url(database_url)
    sqlite = url.get_backend_name() == "sqlite"
    path = _target(path, now or datetime.now(UTC), ".db" if sqlite else ".dump")
    head = head_revision() or "base"
    started = time.monotonic()
    if sqlite:
        revision, size = await asyncio.to_thread(_sqlite_backup, _sqlite_file(url), path, head)
    else:
        revision, size = await _pg_backup(url, path, head)
    return BackupResult(path, size, revision, time.monotonic() - started)


def _target(path: Path, now: datetime, suffix: str) -> Path:
    if path.is_dir():
        path = path / backup_name(now, suffix)
    if not path.parent.is_dir():
        raise BackupError(f"no folder {path.parent} to write the backup in")
    return path


# --- SQLite -------------------------------------------------------------------------------------


def _sqlite_file(url: URL) -> Path:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError(f"cannot back up the SQLite database {database or '(in memory)'!r}: "
                          "only a database file can be copied")
    source = Path(database)
    if not source.is_file():
        raise BackupError(f"no database file at {source}")
    return source


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    """A temporary name in `path`'s folder (so the final rename is atomic), removed unless the
    caller renamed it."""
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        yield temporary
    finally:
        for leftover in (temporary, *(Path(f"{temporary}{s}") for s in ("-wal", "-shm",
                                                                          "-journal"))):
            leftover.unlink(missing_ok=True)


def _sqlite_backup(source: Path, path: Path, head: str) -> tuple[str, int]:
    """Copy, check, rename; returns the copy's revision and size. Runs in a worker thread."""
    if path.exists() and path.resolve() == source.resolve():
        raise BackupError(f"{path} is the live database itself: choose another path")
    with _temporary_beside(path) as temporary:
        # Read-only: a backup never writes to the live database, nor creates one by mistake.
        live = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            copy = sqlite3.connect(temporary)
            try:
                live.backup(copy)  # pages=-1: the whole database in one step (module docstring)
            finally:
                copy.close()
        except sqlite3.Error as exc:
            raise BackupError(f"the copy failed: {exc}") from None
        finally:
            live.close()
        revision = check_sqlite_copy(temporary, head)
        size = _durable_rename(temporary, path)
    return revision, size


def check_sqlite_copy(path: Path, head: str) -> str:
    """The copy is whole (`PRAGMA integrity_check`) and at `head`; returns its revision.

    The copy is also made a single file (rollback journal instead of the live database's WAL):
    restoring it is copying that one file. The bot turns WAL on again when it opens it."""
    copy = sqlite3.connect(path)
    try:
        copy.execute("PRAGMA journal_mode=DELETE")
        problems = [row[0] for row in copy.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise BackupError(f"the copy failed its integrity check: {'; '.join(problems[:3])}")
        try:
            row = copy.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:
            row = None
    finally:
        copy.close()
    return _check_revision(row[0] if row else None, head)


def _check_revision(revision: str | None, head: str) -> str:
    if revision != head:
        raise BackupError(
            f"the database is at revision {revision or 'none (no schema)'}, not this code's "
            f"head {head}: back it up with the code it was migrated by, or migrate it first"
        )
    return revision


def _durable_rename(temporary: Path, path: Path) -> int:
    """fsync the file, rename it over `path`, fsync the folder: after a crash the name holds
    either the old file or the whole new one. Returns its size."""
    with open(temporary, "rb") as written:
        os.fsync(written.fileno())
        size = os.fstat(written.fileno()).st_size
    os.replace(temporary, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return size


# --- PostgreSQL ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PgDump:
    argv: list[str]
    password: str | None

    def env(self) -> dict[str, str]:
        """The child's environment: ours, plus PGPASSWORD when the URL has a password."""
        env = dict(os.environ)
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def display(self) -> str:
        """The command as a person would type it, the password masked."""
        prefix = f"PGPASSWORD={MASKED_PASSWORD} " if self.password else ""
        return prefix + shlex.join(self.argv)


def libpq_url(url: URL) -> str:
    """The URL as libpq reads it: no +asyncpg driver, no password (PGPASSWORD carries it)."""
    plain = URL.create(
        "postgresql", username=url.username, host=url.host, port=url.port,
        database=url.database,
        query={_LIBPQ_QUERY.get(k, k): v for k, v in url.query.items()},
    )
    return plain.render_as_string(hide_password=False)


def pg_dump_command(database_url: str, path: Path) -> PgDump:
    url = make_url(database_url)
    return PgDump(
        ["pg_dump", "--format=custom", "--file", str(path), libpq_url(url)], url.password
    )


async def _pg_backup(url: URL, path: Path, head: str) -> tuple[str, int]:
    database_url = url.render_as_string(hide_password=False)
    executable = shutil.which("pg_dump")
    if executable is None:
        raise PgDumpMissing(pg_dump_command(database_url, path).display())
    with _temporary_beside(path) as temporary:
        command = pg_dump_command(database_url, temporary)
        await _run([executable, *command.argv[1:]], command.env(), "pg_dump")
        revision = _check_revision(await _dump_revision(temporary, command.env()), head)
        size = _durable_rename(temporary, path)
    return revision, size


async def _run(argv: list[str], env: dict[str, str], name: str) -> bytes:
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise BackupError(f"{name} failed (exit status {process.returncode}): "
                          f"{lines[-1] if lines else 'no message'}")
    return out


async def _dump_revision(dump: Path, env: dict[str, str]) -> str | None:
    """alembic_version as the dump holds it (read back with pg_restore, which also proves the
    archive readable); None when the dump has no such row."""
    executable = shutil.which("pg_restore")
    if executable is None:
        raise BackupError("pg_restore is not installed here: the dump cannot be checked")
    out = await _run(
        [executable, "--data-only", "--table=alembic_version", "--file=-", str(dump)],
        env, "pg_restore",
    )
    lines = out.decode().splitlines()
    for number, line in enumerate(lines):
        if line.startswith("COPY ") and "alembic_version" in line:
            value = lines[number + 1] if number + 1 < len(lines) else "\\."
            return None if value == "\\." else value.strip()
    return None


# --- the daily job (SQLite) ---------------------------------------------------------------------


def prune(folder: Path, keep: int) -> tuple[list[str], list[str]]:
    """Delete all but the newest `keep` files named like the job's (bot-YYYYmmdd-HHMMSS.db);
    returns the names deleted and kept. Nothing else in the folder is touched."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and BACKUP_NAME.match(p.name))
    cut = max(0, len(names) - keep)
    for name in names[:cut]:
        (folder / name).unlink(missing_ok=True)
    return names[:cut], names[cut:]


async def scheduled_backup(database_url: str, folder: Path, keep: int, now: datetime) -> str:
    """One run of the daily job; returns its outcome for the Background jobs screen."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    result = await back_up(database_url, folder / backup_name(now))
    deleted, kept = await asyncio.to_thread(prune, folder, keep)
    return (f"{result.path.name} {human_size(result.size)}, revision {result.revision}, "
            f"{result.seconds:.1f} s; kept {len(kept)}, deleted {len(deleted)}")


def register_backup_job(
    scheduler: Scheduler, database_url: str, *, folder: Path, keep: int, every: timedelta
) -> None:
    """The daily backup on the scheduler (once per cluster, every run recorded). SQLite only:
    on PostgreSQL, pg_dump belongs to the operator's own schedule (README)."""
    if make_url(database_url).get_backend_name() != "sqlite":
        raise ValueError("the backup job is for SQLite; schedule pg_dump for PostgreSQL")

    async def backup(now: datetime) -> str:
        return await scheduled_backup(database_url, folder, keep, now)

    scheduler.add_job(BACKUP_JOB, backup, every=every, lease=timedelta(minutes=30))
