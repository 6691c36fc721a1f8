"""Shutdown closes every part, even after one of them failed, and says which one failed."""

from __future__ import annotations

import logging

import pytest

from bot.closing import close_all


async def test_a_failing_part_is_logged_and_the_next_parts_are_still_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[str] = []

    async def database() -> None:
        raise ConnectionError("the database went away")

    async def close(name: str) -> None:
        closed.append(name)

    await close_all([
        ("dispatcher", lambda: close("dispatcher")),
        ("database", database),
        ("Telegram session", lambda: close("Telegram session")),
    ])
    assert closed == ["dispatcher", "Telegram session"]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "could not stop the database cleanly"
    assert record.exc_info and "the database went away" in str(record.exc_info[1])
