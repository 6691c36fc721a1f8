"""Recipients' contact data: phone (E.164, for WhatsApp and SMS), e-mail, the order in which they
want to be reached, and the channels they opted out of.

The dispatcher asks `channel_preferences` which channels to try, in which order; an opt-out (a
WhatsApp STOP, Twilio 21610, WhatsApp 131050) is honoured there until the user opts in again.
Every change is written to the audit trail in the same transaction, phone numbers and e-mail
addresses masked there (services/audit.py): the users row is the only copy in clear, so clearing
an e-mail forgets it. Phone numbers are stored (the database is not a log) but never logged, and
never put in an exception's message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Column, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database, DriverQuery
from database.models import User
from services import audit
from services.clock import Clock
from services.errors import DomainError
from services.notifications.channels.base import DEFAULT_ORDER, ChannelName

# The channels a person can put in order or opt out of; "manual" (a task for an admin) is the
# dispatcher's last resort, not a way the person chose to be reached.
CHOOSABLE_CHANNELS: tuple[str, ...] = tuple(
    c.value for c in DEFAULT_ORDER if c is not ChannelName.MANUAL
)

# What each channel needs on file to reach a person (as the channels' `can_reach` check on a
# recipient): a chat with the bot, a phone number, an e-mail address.
_NEEDS = {
    ChannelName.TELEGRAM: "telegram",
    ChannelName.WHATSAPP: "phone",
    ChannelName.SMS: "phone",
    ChannelName.EMAIL: "email",
}
PHONE_CHANNELS: tuple[str, ...] = tuple(c for c in CHOOSABLE_CHANNELS if _NEEDS[c] == "phone")

MAX_EMAIL_LENGTH = 254
_MAX_LOCAL_LENGTH = 64
_PHONE_SEPARATORS = re.compile(r"[\s\-().]")
_DIGITS = re.compile(r"[1-9][0-9]{7,14}")  # E.164: 8 to 15 digits, country codes never start with 0
# The dot-atom of RFC 5322: what real mailboxes use. Quoted local parts are refused on purpose.
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class ContactError(DomainError, ValueError):
    """A contact change refused; nothing was changed. A domain error (services.errors): one
    that reaches no handler of its own is still answered with a fitting message and a code."""


class InvalidPhone(ContactError):
    pass


class PhoneTaken(ContactError):
    """The number is already on another user's profile."""


class InvalidEmail(ContactError):
    pass


class InvalidChannelOrder(ContactError):
    pass


class UnknownChannel(ContactError):
    pass


class UnknownUser(ContactError):
    """No user has this id (deleted since the screen was drawn)."""


class NotOptedOut(ContactError):
    """An opt-in for a channel the person had not opted out of."""


class StaleChannelOrder(ContactError):
    """The order changed since the person saw it: their button is out of date."""


@dataclass(frozen=True, slots=True)
class ContactView:
    """What is on file for one user: a detached snapshot, safe after the session closed."""

    phone: str | None
    email: str | None
    # The order the user asked for, or the default one; opted-out channels are still listed.
    channel_order: tuple[str, ...]
    opt_outs: frozenset[str]
    custom_order: bool = False
    # They have a Telegram chat with the bot (a WhatsApp-only customer has not).
    telegram: bool = True
    # The channels the settings switch on (Profiles is told; every one when nobody said).
    switched_on: frozenset[str] = frozenset(CHOOSABLE_CHANNELS)

    def can_reach(self, channel: str) -> bool:
        """Whether what is on file is enough for `channel` (switched on or not)."""
        need = _NEEDS.get(channel)
        return bool(need and getattr(self, need))

    @property
    def offered(self) -> tuple[str, ...]:
        """The channels the person can put in order: switched on and able to reach them, in
        their order (opted-out ones included: they can opt in again)."""
        return tuple(
            c for c in self.channel_order if c in self.switched_on and self.can_reach(c)
        )

    @property
    def phone_channels(self) -> tuple[str, ...]:
        """The switched-on channels a phone number opens (WhatsApp, SMS)."""
        return tuple(c for c in PHONE_CHANNELS if c in self.switched_on)

    @property
    def email_on(self) -> bool:
        return ChannelName.EMAIL in self.switched_on


class ContactPreferences(Protocol):
    """What channel_preferences reads: a User row, or any snapshot with the same two columns."""

    channel_order: str | None
    opt_outs: str


def normalize_phone(raw: str | None) -> str:
    """'+33 6 12-34-56-78', '0033612345678' or '33612345678' -> '+33612345678'.

    A bare digit string is read as international (Telegram contacts often lack the '+'), so a
    national number such as 0612345678 is refused rather than guessed at.
    """
    if not raw:
        raise InvalidPhone()
    compact = _PHONE_SEPARATORS.sub("", raw.strip())
    if compact.startswith("+"):
        digits = compact[1:]
    elif compact.startswith("00"):
        digits = compact[2:]
    else:
        digits = compact
    if not _DIGITS.fullmatch(digits):
        raise InvalidPhone()
    return f"+{digits}"


def validate_email(raw: str | None) -> str:
    """A pragmatic check: one '@', a dotted domain, no spaces, at most 254 characters.

    The domain is lower-cased (internationalised domains become their ASCII 'xn--' form); the
    local part keeps its case and must be ASCII, because our SMTP sender cannot promise SMTPUTF8.
    Control characters (a header injection) can never get through.
    """
    if not raw:
        raise InvalidEmail()
    address = raw.strip()
    if len(address) > MAX_EMAIL_LENGTH or address.count("@") != 1:
        raise InvalidEmail()
    local, domain = address.split("@")
    if len(local) > _MAX_LOCAL_LENGTH or not _LOCAL_PART.fullmatch(local):
        raise InvalidEmail()
    domain = _ascii_domain(domain)
    labels = domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        raise InvalidEmail()
    if labels[-1].isdigit():  # an IP address, not a mail domain
        raise InvalidEmail()
    normalized = f"{local}@{domain}"
    if len(normalized) > MAX_EMAIL_LENGTH:
        raise InvalidEmail()
    return normalized


def _ascii_domain(domain: str) -> str:
    domain = domain.lower()
    if domain.isascii():
        return domain
    if any(ch.isspace() for ch in domain):
        raise InvalidEmail()
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidEmail() from None


def _split(value: str | None) -> list[str]:
    return [part for part in (value or "").split(",") if part]


def _effective_order(stored: str | None) -> list[str]:
    """The stored order (names we no longer know dropped), then any choosable channel it lacks."""
    order = [c for c in dict.fromkeys(_split(stored)) if c in CHOOSABLE_CHANNELS]
    return order + [c for c in CHOOSABLE_CHANNELS if c not in order]


def channel_preferences(user: ContactPreferences) -> list[str]:
    """The channels to try for this user, in order: theirs or the default, minus opt-outs.

    "manual" is never listed: the dispatcher appends its own last resort.
    """
    opted_out = set(_split(user.opt_outs))
    return [c for c in _effective_order(user.channel_order) if c not in opted_out]


def _view(user: User) -> ContactView:
    return _view_of(user.phone, user.email, user.channel_order, user.opt_outs, user.telegram_id)


def _view_of(
    phone: str | None,
    email: str | None,
    channel_order: str | None,
    opt_outs: str | None,
    telegram_id: int | None,
) -> ContactView:
    return ContactView(
        phone=phone,
        email=email,
        channel_order=tuple(_effective_order(channel_order)),
        opt_outs=frozenset(c for c in _split(opt_outs) if c in CHOOSABLE_CHANNELS),
        custom_order=channel_order is not None,
        telegram=telegram_id is not None,
    )


# What the profile screens show, read straight from the driver (DriverQuery): no writer's turn,
# no ORM, as cheap as the user read that precedes it on every button press.
_CONTACTS_BY_USER_ID = DriverQuery(
    select(User.phone, User.email, User.channel_order, User.opt_outs, User.telegram_id).where(
        User.id == bindparam("user_id")
    )
)


async def profile(session: AsyncSession, user_id: int) -> ContactView:
    """What is on file for this user."""
    return _view(await session.get_one(User, user_id))


def _audit(
    session: AsyncSession,
    user: User,
    operation: str,
    *,
    before: dict[str, Any],
    after: dict[str, Any],
    now: datetime,
    actor_id: int | None,
    detail: str | None = None,
) -> None:
    user.updated_at = now
    audit.record(
        session,
        operation=operation,
        entity_type="user",
        entity_id=user.id,
        before=before,
        after=after,
        actor_id=actor_id,
        detail=detail,
        at=now,
    )


def _change(session: AsyncSession, user: User, field: str, value: object, operation: str,
            now: datetime) -> None:
    """Set one contact field the user changed themselves, audited; no change, no record."""
    before = getattr(user, field)
    if before == value:
        return
    setattr(user, field, value)
    _audit(session, user, operation, before={field: before}, after={field: value}, now=now,
           actor_id=user.id)


async def set_phone(
    session: AsyncSession, *, user_id: int, phone: str, now: datetime
) -> ContactView:
    """Store the user's phone number (normalised to E.164).

    A number on a WhatsApp-only customer (no Telegram account) is theirs: the two are one
    person, merged into this user (`merge_customer`). A number already on another Telegram
    user raises PhoneTaken and changes nothing; opt-outs are kept, since a STOP is only lifted
    by opting in again.
    """
    number = normalize_phone(phone)
    user = await session.get_one(User, user_id)
    if user.phone == number:
        return _view(user)
    holder = await session.scalar(
        select(User).where(User.phone == number, User.id != user_id).with_for_update()
    )
    if holder is not None and holder.telegram_id is None and user.telegram_id is not None:
        await merge_customer(session, keep=user, absorb=holder, now=now)
        return _view(user)
    if holder is not None:
        raise PhoneTaken()
    before = {"phone": user.phone}
    try:
        # Two users racing for one number: the unique index decides, the loser gets PhoneTaken.
        async with session.begin_nested():
            user.phone = number
            await session.flush()
    except IntegrityError:
        raise PhoneTaken() from None
    _audit(
        session,
        user,
        "contacts.set_phone",
        before=before,
        after={"phone": number},
        now=now,
        actor_id=user.id,
    )
    return _view(user)


def _user_references() -> list[Column[Any]]:
    """Every column of every table that refers to users.id (other features' tables included)."""
    return [
        column
        for table in User.metadata.sorted_tables
        for column in table.columns
        if any(fk.column.table.name == User.__tablename__ for fk in column.foreign_keys)
    ]


async def merge_customer(
    session: AsyncSession, *, keep: User, absorb: User, now: datetime
) -> dict[str, int]:
    """Make `absorb` (a WhatsApp-only customer) part of `keep` (the Telegram user who shared
    that number): every row that referred to `absorb` (messages, notifications, requests...)
    now refers to `keep`, the number, the WhatsApp window and the opt-outs (a STOP stays a
    STOP) move over, the e-mail and name fill gaps, then `absorb` is deleted. Audited on both
    ids in the same transaction. Returns how many rows moved, per table."""
    number = absorb.phone
    before = {"phone": keep.phone, "opt_outs": keep.opt_outs, "roles": keep.roles}
    absorb.phone = None
    await session.flush()
    moved: dict[str, int] = {}
    for column in _user_references():
        result = await session.execute(
            update(column.table).where(column == absorb.id).values({column.name: keep.id})
        )
        if result.rowcount:
            key = f"{column.table.name}.{column.name}"
            moved[key] = moved.get(key, 0) + result.rowcount
    keep.phone = number
    keep.opt_outs = ",".join(sorted({*_split(keep.opt_outs), *_split(absorb.opt_outs)}))
    keep.roles = ",".join(sorted({*_split(keep.roles), *_split(absorb.roles)}))
    if absorb.whatsapp_inbound_at is not None and (
        keep.whatsapp_inbound_at is None or keep.whatsapp_inbound_at < absorb.whatsapp_inbound_at
    ):
        keep.whatsapp_inbound_at = absorb.whatsapp_inbound_at
    keep.email = keep.email or absorb.email
    keep.display_name = keep.display_name or absorb.display_name
    absorbed_id = absorb.id
    await session.delete(absorb)
    await session.flush()
    detail = f"merged WhatsApp customer {absorbed_id}: " + (
        ", ".join(f"{name} {count}" for name, count in sorted(moved.items())) or "no rows"
    )
    _audit(
        session, keep, "contacts.merge",
        before={**before, "merged_user_id": absorbed_id},
        after={"phone": number, "opt_outs": keep.opt_outs, "roles": keep.roles},
        now=now, actor_id=keep.id, detail=detail,
    )
    audit.record(
        session, operation="user.merged_into", entity_type="user", entity_id=absorbed_id,
        after={"user_id": keep.id}, actor_id=keep.id, detail=detail, at=now,
    )
    return moved


async def set_email(
    session: AsyncSession, *, user_id: int, email: str, now: datetime
) -> ContactView:
    """Store the user's e-mail address, validated (InvalidEmail changes nothing)."""
    address = validate_email(email)
    user = await session.get_one(User, user_id)
    _change(session, user, "email", address, "contacts.set_email", now)
    return _view(user)


async def clear_email(session: AsyncSession, *, user_id: int, now: datetime) -> ContactView:
    """Forget the user's e-mail address (nothing happens when none is on file)."""
    user = await session.get_one(User, user_id)
    _change(session, user, "email", None, "contacts.clear_email", now)
    return _view(user)


def _checked_order(order: Sequence[str]) -> list[str]:
    names = [str(name) for name in order]
    if not names:
        raise InvalidChannelOrder("empty")
    unknown = [name for name in names if name not in CHOOSABLE_CHANNELS]
    if unknown:
        raise InvalidChannelOrder(f"unknown channel(s): {', '.join(sorted(set(unknown)))}")
    if len(set(names)) != len(names):
        raise InvalidChannelOrder("a channel is listed twice")
    # A partial order puts those channels first; the rest follow in the default order, so a
    # preference can never silently make someone unreachable.
    return names + [c for c in CHOOSABLE_CHANNELS if c not in names]


async def set_channel_order(
    session: AsyncSession, *, user_id: int, order: Sequence[str], now: datetime
) -> ContactView:
    """Store the order in which the user wants to be reached.

    Only choosable channel names ("manual" is not one), no duplicates. Channels left out follow
    in the default order. The default order itself is stored as NULL, so the user keeps
    following the default if it changes.
    """
    full = _checked_order(order)
    stored = None if full == list(CHOOSABLE_CHANNELS) else ",".join(full)
    user = await session.get_one(User, user_id)
    _change(session, user, "channel_order", stored, "contacts.set_channel_order", now)
    return _view(user)


async def move_channel_up(
    session: AsyncSession,
    *,
    user_id: int,
    channel: str,
    seen_order: Sequence[str],
    now: datetime,
    switched_on: Iterable[str] | None = None,
) -> ContactView:
    """Put `channel` before the one shown above it, as the person saw the order on their screen.
    With `switched_on` the screen showed the channels offered to them (switched on and able to
    reach them, `ContactView.offered`), and the channels not shown keep their places relative
    to each other; without it, the whole order.

    A screen drawn before the order last changed raises StaleChannelOrder, and the first
    channel, or one not shown, raises InvalidChannelOrder: nothing changes either way.
    """
    user = await session.get_one(User, user_id)
    view = _view(user)
    shown = (
        view.channel_order if switched_on is None
        else replace(view, switched_on=frozenset(switched_on)).offered
    )
    if tuple(seen_order) != shown:
        raise StaleChannelOrder()
    if channel not in shown or shown.index(channel) == 0:
        raise InvalidChannelOrder(channel)
    above = shown[shown.index(channel) - 1]
    order = [c for c in _effective_order(user.channel_order) if c != channel]
    order.insert(order.index(above), channel)
    return await set_channel_order(session, user_id=user_id, order=order, now=now)


def _checked_channel(channel: str) -> str:
    if channel not in CHOOSABLE_CHANNELS:
        raise UnknownChannel(channel)
    return channel


async def record_opt_out(
    session: AsyncSession, *, user_id: int, channel: str, now: datetime, reason: str
) -> bool:
    """Stop using `channel` for this user until they opt in again (a STOP, Twilio 21610, ...).

    Returns True when the opt-out is new; recording it again changes nothing.
    """
    _checked_channel(channel)
    user = await session.get_one(User, user_id)
    current = _split(user.opt_outs)
    if channel in current:
        return False
    updated = ",".join(sorted({*current, channel}))
    before = {"opt_outs": user.opt_outs}
    user.opt_outs = updated
    # The provider told us, on the person's behalf: no actor.
    _audit(
        session,
        user,
        "contacts.opt_out",
        before=before,
        after={"opt_outs": updated},
        now=now,
        actor_id=None,
        detail=reason,
    )
    return True


async def opt_in(
    session: AsyncSession,
    *,
    user_id: int,
    channel: str,
    now: datetime,
    reason: str = "user opted in",
) -> bool:
    """The user asks to be reached on `channel` again. Returns False when they had not opted out."""
    _checked_channel(channel)
    user = await session.get_one(User, user_id)
    current = _split(user.opt_outs)
    if channel not in current:
        return False
    updated = ",".join(c for c in current if c != channel)
    before = {"opt_outs": user.opt_outs}
    user.opt_outs = updated
    _audit(
        session,
        user,
        "contacts.opt_in",
        before=before,
        after={"opt_outs": updated},
        now=now,
        actor_id=user.id,
        detail=reason,
    )
    return True


class Profiles:
    """What the /profile screens do: each method is one unit of work that has committed when it
    returns, and raises a ContactError (nothing changed) when the change is refused."""

    def __init__(
        self, db: Database, clock: Clock, *, switched_on: Iterable[str] = CHOOSABLE_CHANNELS
    ) -> None:
        self.db = db
        self.clock = clock
        # The channels the settings switch on (bot.delivery.channels_on): the screens offer
        # only these.
        self.switched_on = frozenset(c for c in switched_on if c in CHOOSABLE_CHANNELS)

    def _seen_by_them(self, view: ContactView) -> ContactView:
        return replace(view, switched_on=self.switched_on)

    async def show(self, user_id: int) -> ContactView:
        row = await self.db.fetch_one(_CONTACTS_BY_USER_ID, user_id=user_id)
        if row is None:
            raise UnknownUser(user_id)
        return self._seen_by_them(_view_of(*row))

    async def set_phone(self, user_id: int, phone: str) -> ContactView:
        return self._seen_by_them(await self.db.run(
            lambda session: set_phone(session, user_id=user_id, phone=phone, now=self.clock.now())
        ))

    async def set_email(self, user_id: int, email: str) -> ContactView:
        return self._seen_by_them(await self.db.run(
            lambda session: set_email(session, user_id=user_id, email=email, now=self.clock.now())
        ))

    async def clear_email(self, user_id: int) -> ContactView:
        return self._seen_by_them(await self.db.run(
            lambda session: clear_email(session, user_id=user_id, now=self.clock.now())
        ))

    async def opt_in(self, user_id: int, channel: str) -> ContactView:
        """Raises UnknownChannel, or NotOptedOut when they had not opted out of it (a forged
        or twice-pressed button)."""

        async def work(session: AsyncSession) -> ContactView:
            if not await opt_in(
                session, user_id=user_id, channel=channel, now=self.clock.now(), reason="profile"
            ):
                raise NotOptedOut(channel)
            return await profile(session, user_id)

        return self._seen_by_them(await self.db.run(work))

    async def move_channel_up(
        self, user_id: int, channel: str, seen_order: Sequence[str]
    ) -> ContactView:
        return self._seen_by_them(await self.db.run(
            lambda session: move_channel_up(
                session, user_id=user_id, channel=channel, seen_order=seen_order,
                now=self.clock.now(), switched_on=self.switched_on,
            )
        ))
