"""A database error never carries the statement's parameters (phone numbers, message texts):
SQLAlchemy's hide_parameters is on for every engine the application creates."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError

from database.engine import Database


async def test_a_failed_statement_does_not_show_its_parameters(db: Database) -> None:
    with pytest.raises(DBAPIError) as failed:
        async with db.engine.connect() as connection:
            await connection.exec_driver_sql(
                "INSERT INTO no_such_table (phone) VALUES (%s)"
                if db.dialect == "postgresql" else
                "INSERT INTO no_such_table (phone) VALUES (?)",
                ("+33612345678",),
            )
    text = str(failed.value)
    assert "+33612345678" not in text
    assert "hide_parameters" in text
