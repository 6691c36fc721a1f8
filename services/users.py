"""Users: created on first contact, with the language they chose (or their client's, until then)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database, DriverQuery
from database.models import Role, User
from services import audit
from services.clock import Clock

SUPPORTED_LANGUAGES = ("en", "fr")
MAX_NAME_LENGTH = 128  # users.display_name


class UnsupportedLanguage(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class UserView:
    """What handlers see of a user: a detached snapshot, safe to use after the session closed."""

    id: int
    telegram_id: int | None
    display_name: str
    language: str
    language_chosen: bool
    roles: frozenset[Role]
    is_new: bool = False

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles

    @classmethod
    def of(cls, user: User, *, is_new: bool = False) -> UserView:
        return cls(
            id=user.id,
            telegram_id=user.telegram_id,
            display_name=user.display_name,
            language=user.language,
            language_chosen=user.language_chosen,
            roles=user.role_set,
            is_new=is_new,
        )


def guess_language(client_language: str | None, default: str) -> str:
    """The language a new user probably reads: their Telegram client's, if we speak it."""
    if client_language:
        code = client_language.split("-")[0].lower()
        if code in SUPPORTED_LANGUAGES:
            return code
    return default


async def ensure_telegram_user(
    session: AsyncSession,
    *,
    telegram_id: int,
    display_name: str,
    client_language: str | None,
    default_language: str,
    admin: bool,
    now: datetime,
) -> UserView:
    """Load the user with this Telegram id, creating them on first contact.

    On a returning user it syncs the name and the admin right; `_needs_update` says whether
    it would, so `Users.ensure` can skip this unit of work: change both together."""
    user = await session.scalar(select(User).where(User.telegram_id == telegram_id))
    if user is not None:
        changed = False
        if (name := _new_name(user.display_name, display_name)) is not None:
            user.display_name = name
            changed = True
        if admin != (Role.ADMIN in user.role_set):
            # ADMIN_IDS is the source of truth, both ways: removing an id takes the rights away.
            before = user.roles
            roles = {r for r in user.roles.split(",") if r} - {Role.ADMIN.value}
            user.roles = ",".join(sorted(roles | ({Role.ADMIN.value} if admin else set())))
            audit.record(
                session, operation="user.admin_granted" if admin else "user.admin_revoked",
                entity_type="user", entity_id=user.id, before={"roles": before},
                after={"roles": user.roles}, at=now,
            )
            changed = True
        if changed:
            user.updated_at = now
        return UserView.of(user)

    roles = [Role.REQUESTER.value] + ([Role.ADMIN.value] if admin else [])
    user = User(
        telegram_id=telegram_id,
        display_name=display_name[:MAX_NAME_LENGTH],
        language=guess_language(client_language, default_language),
        language_chosen=False,
        roles=",".join(roles),
        created_at=now,
        updated_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(user)
            await session.flush()
    except IntegrityError:
        # Two updates from a brand-new user raced; the other one created the row.
        user = (await session.scalars(select(User).where(User.telegram_id == telegram_id))).one()
        return UserView.of(user)
    audit.record(
        session,
        operation="user.create",
        entity_type="user",
        entity_id=user.id,
        after={"language": user.language, "roles": user.roles},
        actor_id=user.id,
        at=now,
    )
    return UserView.of(user, is_new=True)


async def set_language(
    session: AsyncSession, *, user_id: int, language: str, now: datetime
) -> UserView:
    """Persist the user's chosen language, recording the change in the audit trail."""
    if language not in SUPPORTED_LANGUAGES:
        raise UnsupportedLanguage(language)
    user = await session.get_one(User, user_id)
    before = {"language": user.language, "language_chosen": user.language_chosen}
    user.language = language
    user.language_chosen = True
    user.updated_at = now
    audit.record(
        session,
        operation="user.set_language",
        entity_type="user",
        entity_id=user.id,
        before=before,
        after={"language": language, "language_chosen": True},
        actor_id=user.id,
        at=now,
    )
    return UserView.of(user)


# The read every update makes: plain columns, straight to the driver (DriverQuery).
_USER_BY_TELEGRAM_ID = DriverQuery(
    select(
        User.id, User.telegram_id, User.display_name, User.language, User.language_chosen,
        User.roles,
    ).where(User.telegram_id == bindparam("telegram_id"))
)


async def _view_by_telegram_id(db: Database, telegram_id: int) -> UserView | None:
    row = await db.fetch_one(_USER_BY_TELEGRAM_ID, telegram_id=telegram_id)
    if row is None:
        return None
    user_id, telegram_id, name, language, chosen, roles = row
    return UserView(user_id, telegram_id, name, language, bool(chosen), _roles(roles))


@functools.lru_cache(maxsize=64)
def _roles(stored: str) -> frozenset[Role]:
    """'requester,admin' -> {Role.REQUESTER, Role.ADMIN}; a handful of distinct values exist."""
    return frozenset(Role(r) for r in stored.split(",") if r)


def _new_name(stored: str, display_name: str) -> str | None:
    """The name to store when Telegram's (cut to fit the column) differs; None when it does
    not, or when Telegram gave none."""
    name = display_name[:MAX_NAME_LENGTH]
    return name if name and name != stored else None


def _needs_update(user: UserView, display_name: str, admin: bool) -> bool:
    """Whether ensure_telegram_user would change this returning user: what it syncs from each
    update is the name and the admin right (ADMIN_IDS); keep the two lists together."""
    return _new_name(user.display_name, display_name) is not None or admin != user.is_admin


class Users:
    """What handlers and middlewares do with users; each method is one unit of work that has
    committed when it returns."""

    def __init__(
        self, db: Database, clock: Clock, *, default_language: str, admin_ids: Iterable[int]
    ) -> None:
        self.db = db
        self.clock = clock
        self.default_language = default_language
        self.admin_ids = frozenset(admin_ids)

    async def ensure(
        self, *, telegram_id: int, display_name: str, client_language: str | None
    ) -> UserView:
        """The user behind an update, created on first contact (ensure_telegram_user).

        Runs on every update, so a returning user whose name and admin right did not change
        costs one read and no write: the read takes no writer's turn, and only a change (or a
        new user) runs the writing unit of work.
        """
        admin = telegram_id in self.admin_ids
        known = await _view_by_telegram_id(self.db, telegram_id)
        if known is not None and not _needs_update(known, display_name, admin):
            return known

        async def load(session: AsyncSession) -> UserView:
            return await ensure_telegram_user(
                session,
                telegram_id=telegram_id,
                display_name=display_name,
                client_language=client_language,
                default_language=self.default_language,
                admin=admin,
                now=self.clock.now(),
            )

        return await self.db.run(load)

    async def set_language(self, user_id: int, language: str) -> UserView:
        """Raises UnsupportedLanguage for a language we do not speak; nothing changes then."""
        return await self.db.run(
            lambda session: set_language(
                session, user_id=user_id, language=language, now=self.clock.now()
            )
        )
