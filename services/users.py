"""Users: created on first contact, with the language they chose (or their client's, until then)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Role, User
from services import audit

SUPPORTED_LANGUAGES = ("en", "fr")


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
    """Load the user with this Telegram id, creating them on first contact."""
    user = await session.scalar(select(User).where(User.telegram_id == telegram_id))
    if user is not None:
        changed = False
        if display_name and user.display_name != display_name:
            user.display_name = display_name[:128]
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
        display_name=display_name[:128],
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
