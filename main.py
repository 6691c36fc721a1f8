"""Entry point: `python main.py [run|migrate|seed-demo|backup PATH]`. See README.md."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import ConfigError, Settings, load_settings
from bot.logs import masked_output, setup_logging
from services.masking import mask_text

if TYPE_CHECKING:
    from aiogram import Router

    from database.engine import Database

EXIT_CONFIG = 2


async def _migrate(settings: Settings, to: str | None = None, *, yes: bool = False) -> int:
    from database.engine import Database
    from database.migrate import current_revision, upgrade

    db = Database.from_url(settings.database_url)
    try:
        if to is None:
            await upgrade(db.engine)
        elif (status := await _migrate_to(db, to, yes=yes)) != 0:
            return status
        print(f"database is at revision {await current_revision(db.engine) or 'base'}")
    finally:
        await db.dispose()
    return 0


async def _migrate_to(db: Database, to: str, *, yes: bool) -> int:
    """Up or down to `to`. Going down, say what it drops first; if that holds data, go only
    with --yes (exit status 2 without it, nothing changed)."""
    from database.migrate import UnknownRevision, downgrade, plan_migration, upgrade

    try:
        plan = await plan_migration(db.engine, to)
    except UnknownRevision as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if plan.direction == "up":
        await upgrade(db.engine, plan.target)
    elif plan.direction == "down":
        assert plan.loss is not None
        lines = plan.loss.lines()
        print(f"going down from {plan.current} to {plan.target} drops:"
              if lines else f"going down from {plan.current} to {plan.target} drops nothing")
        for line in lines:
            print(f"  {line}")
        if plan.loss.loses_data and not yes:
            print("nothing changed: this loses data; back up first (./dev backup "
                  "PATH), then run again with --yes", file=sys.stderr)
            return EXIT_CONFIG
        await downgrade(db.engine, plan.target)
    return 0


async def _backup(settings: Settings, path: str) -> int:
    from services.backup import BackupError, PgDumpMissing, back_up

    try:
        result = await back_up(settings.database_url, Path(path))
    except PgDumpMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        # Written past the output's masking, which would turn the **** into [REDACTED]: the
        # command holds no password (PGPASSWORD carries it, shown as ****).
        sys.stderr.flush()
        sys.stdout.flush()
        print(exc.command, file=getattr(sys.stdout, "stream", sys.stdout), flush=True)
        return EXIT_CONFIG
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(result.line())
    return 0


DEMO_GUIDE = """
How to play each part with the fake Telegram Bot API (no token needed):
  terminal 1: ./dev fake-telegram --chat 1001
  terminal 2: TELEGRAM_API_BASE=http://127.0.0.1:8081 ./dev run
              (the fake takes any token of the form <digits>:<text>, e.g. 1:fake, in BOT_TOKEN)
In terminal 1 you are Ann (1001), a requester: /new (Plumbing, Centre) opens a request.
Press a button with: !press <callback_data> <message_id> (both are printed under each message).
To be someone else, stop the fake (Ctrl-D) and start it again with their id; the bot keeps
running and remembers everything:
  --chat 1002  Paul, provider (plumbing, heating; centre): the offer arrives, Accept,
               /jobs, Start work, Record parts used, Mark completed, /away, /available
  --chat 1003  Fatou, provider who speaks French, on call (plumbing, electrical; north)
  --chat 1004  Sam, provider (electrical, heating; south)
  --chat 1005  Wendy, warehouse: /stock (low stock marked), /receive
  --chat 1001  Ann again: Confirm or Dispute the completed request, /status, /cancel
  an id from ADMIN_IDS: admin, e.g. /request 1 to resolve a dispute
"""


async def _seed_demo(settings: Settings) -> None:
    from database.engine import Database
    from database.migrate import upgrade
    from services.clock import SystemClock
    from services.demo import Demo

    db = Database.from_url(settings.database_url)
    try:
        await upgrade(db.engine)
        report = await Demo(db, SystemClock()).seed(
            admin_ids=settings.admin_ids, default_language=settings.default_language
        )
    finally:
        await db.dispose()
    if report.changed:
        print(f"demo catalogue loaded: {len(report.created)} new row(s)")
        for line in report.created:
            print(f"  + {line}")
    else:
        print("demo catalogue already loaded: nothing changed")
    print(DEMO_GUIDE.rstrip())


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
        choices=["run", "migrate", "seed-demo", "backup"],
        help="run: migrate the database, then start the bot (default); "
        "migrate: only bring the database schema up to date (--to: up or down to a revision); "
        "seed-demo: migrate, then load a small demo catalogue (safe to run again); "
        "backup PATH: a checked copy of the database while the bot runs (a folder: a dated "
        "file in it)",
    )
    parser.add_argument("path", nargs="?", help="backup: where to write the copy")
    parser.add_argument(
        "--to", metavar="REVISION",
        help="migrate: go up or down to this revision (head, base or an id such as 0013); "
        "going down says what it drops first",
    )
    parser.add_argument(
        "--yes", action="store_true", help="migrate --to: go down even if that drops data"
    )
    args = parser.parse_args(argv)
    if (args.command == "backup") != (args.path is not None):
        parser.error("backup needs a PATH, and only backup takes one")
    if args.command != "migrate" and (args.to is not None or args.yes):
        parser.error("--to and --yes go with migrate")
    if args.yes and args.to is None:
        parser.error("--yes goes with migrate --to REVISION")
    # Everything the process prints is masked, as its log records are (a ConfigError may quote
    # a URL, and a Bot API URL holds the token).
    with masked_output():
        try:
            settings = load_settings()
            setup_logging(settings.log_level, settings.log_format, settings.secret_values())
            if args.command == "migrate":
                return asyncio.run(_migrate(settings, args.to, yes=args.yes))
            if args.command == "backup":
                return asyncio.run(_backup(settings, args.path))
            if args.command == "seed-demo":
                asyncio.run(_seed_demo(settings))
            else:
                from bot.app import run

                asyncio.run(run(settings, extra_routers=extra_routers))
        except ConfigError as exc:
            print(f"error: {mask_text(str(exc))}", file=sys.stderr)
            return EXIT_CONFIG
        except KeyboardInterrupt:
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
