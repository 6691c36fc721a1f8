"""Users: created on first contact, with the language they chose (or their client's, until then)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, delete, func, literal_column, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database, DriverQuery
from database.models import Role, RoleGrant, RoleGrantSource, User
from services import audit
from services.clock import Clock

SUPPORTED_LANGUAGES = ("en", "fr")
MAX_NAME_LENGTH = 128  # users.display_name
MAX_USERNAME_LENGTH = 32  # users.username


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
    username: str | None = None,
) -> UserView:
    """Load the user with this Telegram id, creating them on first contact.

    `admin`: the id is in ADMIN_IDS. On a returning user it syncs the name, the @username
    (None: not known, left as it is; "": they have none) and the admin right; `_needs_update`
    says whether it would, so `Users.ensure` can skip this unit of work: change both together.

    ADMIN_IDS gives the admin right with a "settings" grant (role_grants) and takes back only
    that one: an admin granted in the menu (a "menu" grant) stays one until revoked there."""
    user = await session.scalar(select(User).where(User.telegram_id == telegram_id))
    if user is not None:
        changed = False
        if (name := _new_name(user.display_name, display_name)) is not None:
            user.display_name = name
            changed = True
        if (handle := _new_username(user.username, username)) is not None:
            user.username = handle or None
            changed = True
        sources = await _admin_sources(session, user.id)
        if admin and RoleGrantSource.SETTINGS not in sources:
            try:
                async with session.begin_nested():
                    session.add(RoleGrant(user_id=user.id, role=Role.ADMIN.value,
                                          source=RoleGrantSource.SETTINGS.value, granted_at=now))
            except IntegrityError:
                pass  # a concurrent update of the same admin recorded it first
        elif not admin and RoleGrantSource.SETTINGS in sources:
            await session.execute(delete(RoleGrant).where(
                RoleGrant.user_id == user.id, RoleGrant.role == Role.ADMIN.value,
                RoleGrant.source == RoleGrantSource.SETTINGS.value))
        effective = admin or RoleGrantSource.MENU in sources
        if effective != (Role.ADMIN in user.role_set):
            # ADMIN_IDS gives and takes back its own right; a menu grant keeps the role.
            before = user.roles
            roles = {r for r in user.roles.split(",") if r} - {Role.ADMIN.value}
            user.roles = ",".join(sorted(roles | ({Role.ADMIN.value} if effective else set())))
            audit.record(
                session, operation="user.admin_granted" if effective else "user.admin_revoked",
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
        username=(username or None) and username[:MAX_USERNAME_LENGTH],
        created_at=now,
        updated_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(user)
            await session.flush()
            if admin:
                session.add(RoleGrant(user_id=user.id, role=Role.ADMIN.value,
                                      source=RoleGrantSource.SETTINGS.value, granted_at=now))
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


async def _admin_sources(session: AsyncSession, user_id: int) -> set[RoleGrantSource]:
    return {
        RoleGrantSource(s) for s in await session.scalars(
            select(RoleGrant.source).where(RoleGrant.user_id == user_id,
                                           RoleGrant.role == Role.ADMIN.value))
    }


def _admin_grants(source: RoleGrantSource) -> object:
    """How many admin grants of this source the user has (0 or 1), for the one-row read."""
    return (
        select(func.count()).select_from(RoleGrant)
        # Literal values: the statement goes to the driver with only the telegram id bound.
        .where(RoleGrant.user_id == User.id,
               RoleGrant.role == literal_column(f"'{Role.ADMIN.value}'"),
               RoleGrant.source == literal_column(f"'{source.value}'"))
        .scalar_subquery()
    )


# The read every update makes: plain columns, straight to the driver (DriverQuery).
_USER_BY_TELEGRAM_ID = DriverQuery(
    select(
        User.id, User.telegram_id, User.display_name, User.language, User.language_chosen,
        User.roles, User.username, _admin_grants(RoleGrantSource.SETTINGS),
        _admin_grants(RoleGrantSource.MENU),
    ).where(User.telegram_id == bindparam("telegram_id"))
)


@dataclass(frozen=True, slots=True)
class _Known:
    """A returning user as the one-row read sees them: the view, and what ensure syncs."""

    view: UserView
    username: str | None
    settings_grant: bool
    menu_grant: bool


async def _view_by_telegram_id(db: Database, telegram_id: int) -> _Known | None:
    row = await db.fetch_one(_USER_BY_TELEGRAM_ID, telegram_id=telegram_id)
    if row is None:
        return None
    user_id, telegram_id, name, language, chosen, roles, username, settings, menu = row
    view = UserView(user_id, telegram_id, name, language, bool(chosen), _roles(roles))
    return _Known(view, username, bool(settings), bool(menu))


@functools.lru_cache(maxsize=64)
def _roles(stored: str) -> frozenset[Role]:
    """'requester,admin' -> {Role.REQUESTER, Role.ADMIN}; a handful of distinct values exist."""
    return frozenset(Role(r) for r in stored.split(",") if r)


def _new_name(stored: str, display_name: str) -> str | None:
    """The name to store when Telegram's (cut to fit the column) differs; None when it does
    not, or when Telegram gave none."""
    name = display_name[:MAX_NAME_LENGTH]
    return name if name and name != stored else None


def _new_username(stored: str | None, username: str | None) -> str | None:
    """The @username to store ("" for none) when Telegram's differs; None: leave it."""
    if username is None:
        return None
    handle = username.lstrip("@")[:MAX_USERNAME_LENGTH]
    return handle if handle != (stored or "") else None


def _needs_update(known: _Known, display_name: str, admin: bool, username: str | None) -> bool:
    """Whether ensure_telegram_user would change this returning user: what it syncs from each
    update is the name, the @username and the admin right (ADMIN_IDS, and the grants it
    gave); keep the two lists together."""
    user = known.view
    return (
        _new_name(user.display_name, display_name) is not None
        or _new_username(known.username, username) is not None
        or admin != known.settings_grant
        or (admin or known.menu_grant) != user.is_admin
    )


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
        self, *, telegram_id: int, display_name: str, client_language: str | None,
        username: str | None = None,
    ) -> UserView:
        """The user behind an update, created on first contact (ensure_telegram_user).

        Runs on every update, so a returning user whose name and admin right did not change
        costs one read and no write: the read takes no writer's turn, and only a change (or a
        new user) runs the writing unit of work.
        """
        admin = telegram_id in self.admin_ids
        known = await _view_by_telegram_id(self.db, telegram_id)
        if known is not None and not _needs_update(known, display_name, admin, username):
            return known.view

        async def load(session: AsyncSession) -> UserView:
            return await ensure_telegram_user(
                session,
                telegram_id=telegram_id,
                display_name=display_name,
                client_language=client_language,
                default_language=self.default_language,
                admin=admin,
                now=self.clock.now(),
                username=username,
            )

        return await self.db.run(load)

    async def set_language(self, user_id: int, language: str) -> UserView:
        """Raises UnsupportedLanguage for a language we do not speak; nothing changes then."""
        return await self.db.run(
            lambda session: set_language(
                session, user_id=user_id, language=language, now=self.clock.now()
            )
        )

    async def get(self, user_id: int) -> UserView | None:
        """The user with this users.id as stored now (the dashboard asks on every request, so a
        revoked admin right takes effect at once); None when there is no such user."""

        async def read(session: AsyncSession) -> UserView | None:
            user = await session.get(User, user_id)
            return UserView.of(user) if user is not None else None

        return await self.db.read(read)
