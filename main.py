"""Entry point: `python main.py [run|migrate]`. See README.md."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bot.config import ConfigError, Settings, load_settings
from bot.logs import setup_logging

if TYPE_CHECKING:
    from aiogram import Router

EXIT_CONFIG = 2


def _secrets(settings: Settings) -> list[str | None]:
    return [
        settings.bot_token,
        settings.webhook_secret,
        settings.whatsapp_token,
        settings.whatsapp_app_secret,
        settings.whatsapp_verify_token,
        settings.twilio_auth_token,
        settings.smtp_password,
        settings.health_token,
    ]


async def _migrate(settings: Settings) -> None:
    from database.engine import Database
    from database.migrate import current_revision, upgrade

    db = Database.from_url(settings.database_url)
    try:
        await upgrade(db.engine)
        print(f"database is at revision {await current_revision(db.engine)}")
    finally:
        await db.dispose()


def main(argv: list[str] | None = None, *, extra_routers: Sequence[Router] = ()) -> int:
    """Parse the command line and run it; returns the process exit status.

    `extra_routers` lets the end-to-end tests add handlers that exist only for testing (a slow
    one, a failing one) while running exactly the production start-up path.
    """
    parser = argparse.ArgumentParser(
        prog="python main.py",
        description="Service desk Telegram bot. Settings come from the environment and .env "
        "(see .env.example).",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=["run", "migrate"],
        help="run: migrate the database, then start the bot (default); "
        "migrate: only bring the database schema up to date",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        setup_logging(settings.log_level, settings.log_format, _secrets(settings))
        if args.command == "migrate":
            asyncio.run(_migrate(settings))
        else:
            from bot.app import run

            asyncio.run(run(settings, extra_routers=extra_routers))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
