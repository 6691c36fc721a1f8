"""What each role can do, as commands: one table for the command menu and for /help.

Everyone gets the requester's menu (Telegram's default menu, per language). A person with more
roles (provider, warehouse, admin...) gets a menu of their own (a per-chat scope), set when
their roles or language no longer match the menu recorded for them. `command_menus` records the
menus set, so a restart does not set them all again, and a role taken away while the bot was
down still takes its commands away.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import CommandMenu, Role
from services.clock import Clock
from services.localization import N_, render

Command = tuple[str, str]  # (command without the slash, N_-marked description)

EVERYONE: tuple[Command, ...] = (
    ("start", N_("register and say hello")),
    ("new", N_("open a service request")),
    ("status", N_("your requests and where they stand")),
    ("cancel", N_("cancel a request, or the form you are filling in")),
    ("support", N_("talk to a person")),
    ("profile", N_("your phone, e-mail and how we reach you")),
    ("mydata", N_("everything we store about you, as a file")),
    ("forget", N_("erase your data")),
    ("language", N_("choose English or French")),
    ("help", N_("what I can do")),
)

# Roles in the order their sections appear; the requester's commands are everyone's.
BY_ROLE: dict[Role, tuple[Command, ...]] = {
    Role.PROVIDER: (
        ("jobs", N_("your jobs and offers")),
        ("available", N_("take new job offers")),
        ("away", N_("pause new job offers")),
    ),
    Role.WAREHOUSE: (
        ("stock", N_("stock on hand, low stock marked")),
        ("receive", N_("record stock received")),
    ),
    Role.OPERATOR: (("request", N_("any request by its number, e.g. /request 12")),),
    Role.ADMIN: (
        ("request", N_("any request by its number; resolve disputes")),
        ("workflow_recovery", N_("fix stuck work, failed notifications, errors")),
        ("dashboard", N_("a sign-in link to the web dashboard")),
    ),
}

ROLE_TITLES: dict[Role, str] = {
    Role.PROVIDER: N_("As a provider:"),
    Role.WAREHOUSE: N_("As warehouse staff:"),
    Role.OPERATOR: N_("As an operator:"),
    Role.ADMIN: N_("As an admin:"),
}


def commands_for(roles: Iterable[Role]) -> list[Command]:
    """Everyone's commands, then each held role's, in the table's order."""
    held = set(roles)
    commands = list(EVERYONE)
    for role, extra in BY_ROLE.items():
        if role in held:
            commands += [c for c in extra if c[0] not in {name for name, _ in commands}]
    return commands


def sections_for(roles: Iterable[Role]) -> list[tuple[str | None, tuple[Command, ...]]]:
    """(title or None for everyone's, commands) for /help."""
    held = set(roles)
    sections: list[tuple[str | None, tuple[Command, ...]]] = [(None, EVERYONE)]
    sections += [(ROLE_TITLES[r], BY_ROLE[r]) for r in BY_ROLE if r in held]
    return sections


@lru_cache(maxsize=64)
def menu_key(roles: frozenset[Role], language: str) -> str | None:
    """What a person's own menu depends on; None: the default (requester's) menu is theirs.
    Asked on every update: a few distinct answers exist, so they are cached. The commands'
    names are part of it (a short digest), so a release that adds a command gives everyone
    who holds the role the new menu on their next message."""
    extra = sorted(r.value for r in roles if r in BY_ROLE)
    if not extra:
        return None
    names = ",".join(name for name, _ in commands_for(roles))
    digest = hashlib.sha256(names.encode()).hexdigest()[:8]
    return f"{','.join(extra)}:{language}:{digest}"


def render_commands(commands: Iterable[Command], language: str | None) -> list[tuple[str, str]]:
    return [(name, render(language, description)) for name, description in commands]


@dataclass(frozen=True, slots=True)
class MenuChange:
    telegram_id: int
    key: str | None  # None: drop their own menu, the default one applies
    commands: list[tuple[str, str]]  # rendered; empty when key is None


class CommandMenus:
    """Which menu each person was given. Read once per process, then kept in memory: asking
    whether someone's menu is current costs no database trip."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._known: dict[int, str] | None = None

    async def _load(self) -> dict[int, str]:
        if self._known is None:

            async def load(session: AsyncSession) -> dict[int, str]:
                rows = await session.execute(select(CommandMenu.telegram_id, CommandMenu.menu))
                return {telegram_id: menu for telegram_id, menu in rows}

            known = await self.db.read(load)
            if self._known is None:
                self._known = known
        return self._known

    async def change_for(
        self, telegram_id: int, roles: frozenset[Role], language: str
    ) -> MenuChange | None:
        """The menu to set for this person, or None when theirs is current."""
        key = menu_key(roles, language)
        if (await self._load()).get(telegram_id) == key:
            return None
        commands = render_commands(commands_for(roles), language) if key is not None else []
        return MenuChange(telegram_id, key, commands)

    async def record(self, change: MenuChange) -> None:
        """Once Telegram took the menu."""
        known = await self._load()

        async def save(session: AsyncSession) -> None:
            if change.key is None:
                await session.execute(
                    delete(CommandMenu).where(CommandMenu.telegram_id == change.telegram_id)
                )
                return
            insert = pg_insert if self.db.dialect == "postgresql" else sqlite_insert
            now = self.clock.now()
            statement = insert(CommandMenu).values(
                telegram_id=change.telegram_id, menu=change.key, updated_at=now
            )
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=[CommandMenu.telegram_id],
                    set_={"menu": change.key, "updated_at": now},
                )
            )

        await self.db.run(save)
        if change.key is None:
            known.pop(change.telegram_id, None)
        else:
            known[change.telegram_id] = change.key
