"""Alembic environment. Migrations run on a connection handed in by database.migrate, or on
DATABASE_URL when `alembic` is used from the command line."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from dotenv import dotenv_values
from sqlalchemy.engine import Connection

from database import models  # noqa: F401  (registers the tables on Base.metadata)
from database.base import Base
from database.engine import create_engine

# The same default as bot/config.py's DEFAULT_DATABASE_URL. It is repeated rather than imported
# because database/ sits below bot/ and must not import it (an import-linter contract checks
# this); a test checks that the two stay equal.
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///data/bot.db"

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def _run(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


def _database_url() -> str:
    """sqlalchemy.url if alembic was given one, else DATABASE_URL as the bot reads it.

    The bot's settings take the environment first, then `.env` (python-dotenv, which
    pydantic-settings reads it with), and treat an empty value as unset; so does this.
    """
    return (
        config.get_main_option("sqlalchemy.url")
        or os.environ.get("DATABASE_URL")
        or dotenv_values(".env").get("DATABASE_URL")
        or DEFAULT_DATABASE_URL
    )


async def _run_from_url() -> None:
    engine = create_engine(_database_url())
    async with engine.begin() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_from_url())
