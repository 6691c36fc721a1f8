"""Contact data on a real database (SQLite, and PostgreSQL when TEST_DATABASE_URL is set): phone
numbers normalised and unique, e-mail validated, channel order checked, opt-outs honoured until
the person opts in again, and every change in the audit trail."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from database.engine import Database
from database.models import TransactionLog, User
from services import contacts, users
from services.clock import FakeClock

DEFAULT = ["telegram", "whatsapp", "sms", "email"]


async def _user(db: Database, clock: FakeClock, telegram_id: int = 501) -> int:
    view = await db.run(
        lambda s: users.ensure_telegram_user(
            s,
            telegram_id=telegram_id,
            display_name="Ann",
            client_language="en",
            default_language="en",
            admin=False,
            now=clock.now(),
        )
    )
    return view.id


async def _stored(db: Database, user_id: int) -> User:
    async with db.transaction() as session:
        return await session.get_one(User, user_id)


async def _audit(db: Database, operation: str | None = None) -> list[TransactionLog]:
    query = select(TransactionLog).where(TransactionLog.operation.like("contacts.%"))
    if operation is not None:
        query = select(TransactionLog).where(TransactionLog.operation == operation)
    async with db.transaction() as session:
        return list((await session.scalars(query.order_by(TransactionLog.id))).all())


# ------------------------------------------------------------------------------ normalisation


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+33612345678", "+33612345678"),
        ("+33 6 12 34 56 78", "+33612345678"),
        ("+1 (555) 123-4567", "+15551234567"),
        ("0033 6 12 34 56 78", "+33612345678"),
        ("33612345678", "+33612345678"),  # a Telegram contact without '+'
        ("  +44 20 7946 0958 ", "+442079460958"),
        ("+12345678", "+12345678"),  # 8 digits: the shortest E.164
        ("+123456789012345", "+123456789012345"),  # 15 digits: the longest
        ("+33.6.12.34.56.78", "+33612345678"),
    ],
)
def test_phone_numbers_are_normalised_to_e164(raw: str, expected: str) -> None:
    assert contacts.normalize_phone(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "0612345678",  # a national number: no country code to be sure of
        "+1234567",  # 7 digits
        "+1234567890123456",  # 16 digits
        "+0612345678",  # country codes never start with 0
        "++33612345678",
        "+33 6 12 34 56 7x",
        "+33612345678 ext 12",
        "+٣٣٦١٢٣٤٥٦٧٨",  # digits, but not ASCII ones
        "33 6 12 + 34 56 78",
        "tel:+33612345678",
    ],
)
def test_invalid_phone_numbers_are_refused(raw: str) -> None:
    with pytest.raises(contacts.InvalidPhone):
        contacts.normalize_phone(raw)


def test_an_invalid_phone_error_never_carries_the_number() -> None:
    with pytest.raises(contacts.InvalidPhone) as error:
        contacts.normalize_phone("+1234567")
    assert "1234567" not in str(error.value)


# ------------------------------------------------------------------------------------ e-mail


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ann@example.com", "ann@example.com"),
        ("  Ann.Lee+desk@Example.CO.UK ", "Ann.Lee+desk@example.co.uk"),  # domain lower-cased
        ("o'brien@mail.example.fr", "o'brien@mail.example.fr"),
        ("ann@café.fr", "ann@xn--caf-dma.fr"),  # an internationalised domain, in ASCII form
        ("a@b.io", "a@b.io"),
    ],
)
def test_valid_email_addresses_are_accepted(raw: str, expected: str) -> None:
    assert contacts.validate_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "ann",
        "ann@example",  # no dot in the domain
        "ann@@example.com",
        "ann@bob@example.com",
        "ann lee@example.com",  # a space
        "ann@exa mple.com",
        "ann\t@example.com",
        "ann@example.com\r\nBcc: eve@example.com",  # a header injection
        "josé@example.com",  # a non-ASCII local part: our SMTP cannot promise SMTPUTF8
        "ann@exämple..com",
        "ann@.example.com",
        "ann@example.com.",
        ".ann@example.com",
        "ann..lee@example.com",
        "@example.com",
        "ann@",
        "ann@-example.com",
        "ann@127.0.0.1",
        '"ann lee"@example.com',
        "a" * 65 + "@example.com",  # local part over 64
        "ann@" + "a" * 250 + ".com",  # over 254 in all
        "b" * 11 + "@" + ".".join(["a" * 60] * 4),  # 255 characters of valid labels
    ],
)
def test_invalid_email_addresses_are_refused(raw: str) -> None:
    with pytest.raises(contacts.InvalidEmail):
        contacts.validate_email(raw)


def test_an_address_of_exactly_254_characters_is_accepted() -> None:
    domain = ".".join(["a" * 60] * 4)  # 243 characters
    address = "b" * 10 + "@" + domain
    assert len(address) == 254
    assert contacts.validate_email(address) == address


# -------------------------------------------------------------------------------- phone (db)


async def test_a_phone_is_stored_in_e164_and_audited(db: Database) -> None:
    clock = FakeClock()
    ann = await _user(db, clock)
    view = await db.run(
        lambda s: contacts.set_phone(s, user_id=ann, phone="33 6 12 34 56 78", now=clock.now())
    )
    assert view.phone == "+33612345678"
    assert (await _stored(db, ann)).phone == "+33612345678"
    [entry] = await _audit(db, "contacts.set_phone")
    assert entry.entity_type == "user" and entry.entity_id == str(ann)
    # The audit trail keeps the number masked (test_personal_data.py).
    assert entry.before == {"phone": None} and entry.after == {"phone": "+•••••••••78"}
    assert entry.actor_id == ann and entry.at == clock.now()


async def test_sharing_the_same_number_again_changes_nothing(db: Database) -> None:
    clock = FakeClock()
    ann = await _user(db, clock)
    for raw in ("+33612345678", "33612345678"):
        await db.run(
            lambda s, raw=raw: contacts.set_phone(s, user_id=ann, phone=raw, now=clock.now())
        )
    assert len(await _audit(db, "contacts.set_phone")) == 1


async def test_a_number_on_another_user_is_refused_and_nothing_changes(db: Database) -> None:
    clock = FakeClock()
    ann = await _user(db, clock, 501)
    bob = await _user(db, clock, 502)
    await db.run(
        lambda s: contacts.set_phone(s, user_id=ann, phone="+33612345678", now=clock.now())
    )
    await db.run(
        lambda s: contacts.set_phone(s, user_id=bob, phone="+15551234567", now=clock.now())
    )

    with pytest.raises(contacts.PhoneTaken):
        await db.run(
            lambda s: contacts.set_phone(s, user_id=bob, phone="0033612345678", now=clock.now())
        )
    assert (await _stored(db, ann)).phone == "+33612345678"
    assert (await _stored(db, bob)).phone == "+15551234567"
    assert len(await _audit(db, "contacts.set_phone")) == 2


async def test_an_invalid_number_changes_nothing(db: Database) -> None:
    clock = FakeClock()
    ann = await _user(db, clock)
    with pytest.raises(contacts.InvalidPhone):
        await db.run(lambda s: contacts.set_phone(s, user_id=ann, phone="0612", now=clock.now()))
    assert (await _stored(db, ann)).phone is None
    assert await _audit(db) == []


# ------------------------------------------------------------------------------- e-mail (db)


async def test_email_is_set_changed_and_cleared_with_an_audit_row_each(db: Database) -> None:
    clock = FakeClock()
    ann = await _user(db, clock)
    view = await db.run(
        lambda s: contacts.set_email(s, user_id=ann, email="Ann@Example.com", now=clock.now())
    )
    assert view.email == "Ann@example.com"
    await db.run(lambda s: contacts.set_email(s, user_id=ann, email="ann@b.fr", now=clock.now()))
    view = await db.run(lambda s: contacts.clear_email(s, user_id=ann, now=clock.now()))
    assert view.email is None
    await db.run(lambda s: contacts.clear_email(s, user_id=ann, now=clock.now()))  # a no-op
    assert (await _stored(db, ann)).email is None
    log = await _audit(db)
    assert [(e.operation, e.before, e.after) for e in log] == [
        # Masked in the audit trail (test_personal_data.py).
        ("contacts.set_email", {"email": None}, {"email": "A•••@e•••.com"}),
        ("contacts.set_email", {"email": "A•••@e•••.com"}, {"email": "a•••@b•••.fr"}),
        ("contacts.clear_email", {"email": "a•••@b•••.fr"}, {"email": None}),
    ]


async def test_an_invalid_email_changes_nothing(db: Database) -> None:
    clock = FakeClock()
    ann = await _user(db, clock)
    await db.run(lambda s: contacts.set_email(s, user_id=ann, email="ann@a.fr", now=clock.now()))
    with pytest.raises(contacts.InvalidEmail):
        await db.run(
            lambda s: contacts.set_email(s, user_id=ann, email="ann at a.fr", now=clock.now())
        )
    assert (await _stored(db, ann)).email == "ann@a.fr"


# ------------------------------------------------------------------------ channel order (db)


async def test_a_new_user_gets_the_default_order(db: Database) -> None:
    clock = FakeClock()
    ann = await _user(db, clock)
    view = await db.run(lambda s: contacts.profile(s, ann))
    assert view == contacts.ContactView(
        phone=None, email=None, channel_order=tuple(DEFAULT), opt_outs=frozenset()
    )
    assert contacts.channel_preferences(await _stored(db, ann)) == DEFAULT


async def test_channel_order_is_stored_and_used(db: Database) -> None:
    clock = FakeClock()
    ann = await _user(db, clock)
    order = ["email", "sms", "telegram", "whatsapp"]
    view = await db.run(
        lambda s: contacts.set_channel_order(s, user_id=ann, order=order, now=clock.now())
    )
    assert list(view.channel_order) == order and view.custom_order
    stored = await _stored(db, ann)
    assert stored.channel_order == "email,sms,telegram,whatsapp"
    assert contacts.channel_preferences(stored) == order
    [entry] = await _audit(db, "contacts.set_channel_order")
    assert entry.before == {"channel_order": None}
    assert entry.after == {"channel_order": "email,sms,telegram,whatsapp"}


async def test_a_partial_order_puts_those_first_and_keeps_the_rest(db: Database) -> None:
    clock = FakeClock()
    ann = await _user(db, clock)
    view = await db.run(
        lambda s: contacts.set_channel_order(s, user_id=ann, order=["sms"], now=clock.now())
    )
    assert list(view.channel_order) == ["sms", "telegram", "whatsapp", "email"]


async def test_the_default_order_is_stored_as_null(db: Database) -> None:
    clock = FakeClock()
    ann = await _user(db, clock)
    await db.run(
        lambda s: contacts.set_channel_order(s, user_id=ann, order=["sms"], now=clock.now())
    )
    view = await db.run(
        lambda s: contacts.set_channel_order(s, user_id=ann, order=DEFAULT, now=clock.now())
    )
    assert not view.custom_order
    assert (await _stored(db, ann)).channel_order is None


@pytest.mark.parametrize(
    "order",
    [
        [],
        ["telegram", "telegram"],
        ["telegram", "fax"],
        ["manual"],  # the admins' last resort is not a person's choice
        ["Telegram"],
    ],
)
async def test_invalid_channel_orders_are_refused(db: Database, order: list[str]) -> None:
    clock = FakeClock()
    ann = await _user(db, clock)
    with pytest.raises(contacts.InvalidChannelOrder):
        await db.run(
            lambda s: contacts.set_channel_order(s, user_id=ann, order=order, now=clock.now())
        )
    assert (await _stored(db, ann)).channel_order is None
    assert await _audit(db) == []


async def test_moving_a_channel_up_swaps_it_with_the_one_before(db: Database) -> None:
    clock = FakeClock()
    ann = await _user(db, clock)
    view = await db.run(
        lambda s: contacts.move_channel_up(
            s, user_id=ann, channel="sms", seen_order=DEFAULT, now=clock.now()
        )
    )
    assert list(view.channel_order) == ["telegram", "sms", "whatsapp", "email"]


async def test_moving_up_from_a_stale_screen_changes_nothing(db: Database) -> None:
    clock = FakeClock()
    ann = await _user(db, clock)
    await db.run(
        lambda s: contacts.set_channel_order(s, user_id=ann, order=["email"], now=clock.now())
    )
    with pytest.raises(contacts.StaleChannelOrder):
        await db.run(
            lambda s: contacts.move_channel_up(
                s, user_id=ann, channel="sms", seen_order=DEFAULT, now=clock.now()
            )
        )
    for channel in ("email", "fax"):  # the first one cannot move up; an unknown one neither
        with pytest.raises(contacts.InvalidChannelOrder):
            await db.run(
                lambda s, channel=channel: contacts.move_channel_up(
                    s,
                    user_id=ann,
                    channel=channel,
                    seen_order=["email", "telegram", "whatsapp", "sms"],
                    now=clock.now(),
                )
            )
    assert (await _stored(db, ann)).channel_order == "email,telegram,whatsapp,sms"


# ---------------------------------------------------------------------------- opt-outs (db)


async def test_an_opt_out_is_honoured_until_the_user_opts_in_again(db: Database) -> None:
    clock = FakeClock()
    ann = await _user(db, clock)
    await db.run(
        lambda s: contacts.set_channel_order(
            s, user_id=ann, order=["whatsapp", "email"], now=clock.now()
        )
    )
    recorded = await db.run(
        lambda s: contacts.record_opt_out(
            s, user_id=ann, channel="whatsapp", now=clock.now(), reason="whatsapp STOP"
        )
    )
    assert recorded
    # A second STOP (or Twilio 21610 after WhatsApp 131050) is the same opt-out.
    again = await db.run(
        lambda s: contacts.record_opt_out(
            s, user_id=ann, channel="whatsapp", now=clock.now(), reason="whatsapp 131050"
        )
    )
    assert not again
    await db.run(
        lambda s: contacts.record_opt_out(
            s, user_id=ann, channel="sms", now=clock.now(), reason="twilio 21610"
        )
    )

    stored = await _stored(db, ann)
    assert contacts.channel_preferences(stored) == ["email", "telegram"]
    # Changing the number does not lift a STOP: only opting in does.
    await db.run(
        lambda s: contacts.set_phone(s, user_id=ann, phone="+15551234567", now=clock.now())
    )
    view = await db.run(lambda s: contacts.profile(s, ann))
    assert view.opt_outs == {"whatsapp", "sms"}

    clock.advance(3600)
    assert await db.run(
        lambda s: contacts.opt_in(s, user_id=ann, channel="whatsapp", now=clock.now())
    )
    assert not await db.run(
        lambda s: contacts.opt_in(s, user_id=ann, channel="whatsapp", now=clock.now())
    )
    assert contacts.channel_preferences(await _stored(db, ann)) == ["whatsapp", "email", "telegram"]

    log = [(e.operation, e.actor_id, e.detail, e.after) for e in await _audit(db)]
    assert ("contacts.opt_out", None, "whatsapp STOP", {"opt_outs": "whatsapp"}) in log
    assert ("contacts.opt_out", None, "twilio 21610", {"opt_outs": "sms,whatsapp"}) in log
    assert ("contacts.opt_in", ann, "user opted in", {"opt_outs": "sms"}) in log
    assert [op for op, *_ in log].count("contacts.opt_out") == 2


async def test_opting_out_of_an_unknown_channel_is_refused(db: Database) -> None:
    clock = FakeClock()
    ann = await _user(db, clock)
    for channel in ("fax", "manual"):
        with pytest.raises(contacts.UnknownChannel):
            await db.run(
                lambda s, channel=channel: contacts.record_opt_out(
                    s, user_id=ann, channel=channel, now=clock.now(), reason="?"
                )
            )
        with pytest.raises(contacts.UnknownChannel):
            await db.run(
                lambda s, channel=channel: contacts.opt_in(
                    s, user_id=ann, channel=channel, now=clock.now()
                )
            )
    assert (await _stored(db, ann)).opt_outs == ""


def test_channel_preferences_ignore_names_no_longer_known() -> None:
    class Row:
        channel_order = "fax,sms,sms,email"
        opt_outs = "pigeon,telegram"

    assert contacts.channel_preferences(Row()) == ["sms", "email", "whatsapp"]


async def test_two_users_racing_for_one_number_one_wins(db: Database) -> None:
    clock = FakeClock()
    ids = [await _user(db, clock, 600 + i) for i in range(4)]

    async def claim(user_id: int) -> str:
        try:
            await db.run(
                lambda s: contacts.set_phone(
                    s, user_id=user_id, phone="+33612345678", now=clock.now()
                )
            )
        except contacts.PhoneTaken:
            return "taken"
        return "saved"

    outcomes = await asyncio.gather(*(claim(i) for i in ids))
    assert sorted(outcomes) == ["saved", "taken", "taken", "taken"]
    async with db.transaction() as session:
        holders = (await session.scalars(select(User).where(User.phone.is_not(None)))).all()
    assert len(holders) == 1
    assert len(await _audit(db, "contacts.set_phone")) == 1
