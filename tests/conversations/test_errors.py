"""Loud, useful errors through the production Dispatcher (handlers that fail on purpose come
from the test entry point, tests/e2e/entry.py): each category gives its user a fitting message
with a support code in their language, an admin's /error CODE opens that very occurrence, a
failing button is still answered, and high errors reach the admins once, with a button."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from benchmarks.chaos import Proxy
from database.engine import Database
from database.models import AlertRecord, ErrorGroup, ErrorOccurrence, Notification, User
from handlers.buttons import OpenError, ResolveError
from services.clock import FakeClock
from services.errors import CODE_ALPHABET
from tests.conftest import _truncate_all
from tests.conversations.conftest import StartConversation
from tests.conversations.harness import Conversation, buttons, start_conversation
from tests.fakes.telegram import FakeTelegram

ANN = 1001
ADMIN = 9000
CODE = re.compile(rf"^(?:Support code|Code d'assistance) ?: ([{CODE_ALPHABET}]{{8}})$", re.M)

# category -> (English, French) first line the user reads
MESSAGES = {
    "transient": (
        "Something went wrong for a moment. Please try again in a minute.",
        "Un problème passager est survenu. Veuillez réessayer dans une minute.",
    ),
    "data": (
        "Something in this request could not be processed. Please check it and try again.",
        "Une partie de cette demande n'a pas pu être traitée. Veuillez la vérifier et réessayer.",
    ),
    "business_logic": (
        "This cannot be done right now.",
        "Ce n'est pas possible pour le moment.",
    ),
    "system": (
        "Something went wrong on our side and we are on it.",
        "Un problème est survenu de notre côté et nous nous en occupons.",
    ),
    "inventory": (
        "There is a problem with the stock for this. An admin has been told and will sort it out.",
        "Il y a un problème de stock pour cela. Un administrateur a été prévenu et va le régler.",
    ),
    "notification": (
        "We could not send a message just now; we will keep trying.",
        "Nous n'avons pas pu envoyer un message pour l'instant ; nous continuons d'essayer.",
    ),
    "external_auth": (
        "A service we rely on is not available right now. An admin has been told; please try "
        "again later.",
        "Un service dont nous dépendons n'est pas disponible pour le moment. Un administrateur "
        "a été prévenu ; veuillez réessayer plus tard.",
    ),
}


def support_code(text: str) -> str:
    match = CODE.search(text)
    assert match, f"no support code in {text!r}"
    return match.group(1)


async def _count(db: Database, model: type, *where: object) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


@pytest.mark.parametrize("category", list(MESSAGES))
@pytest.mark.parametrize("language", ["en", "fr"])
async def test_a_failing_handler_tells_the_user_in_their_language_and_the_admin_finds_it(
    conversation: StartConversation, category: str, language: str
) -> None:
    chat = await conversation(admin_ids=(ADMIN,))
    [text] = (await chat.send(ANN, f"/fail {category}", language_code=language)).texts
    first_line = MESSAGES[category][0 if language == "en" else 1]
    assert text.splitlines()[0] == first_line
    code = support_code(text)

    [screen] = (await chat.send(ADMIN, f"/error {code.lower()}")).texts
    assert screen.startswith(f"Support code {code}, ")
    assert f"Category: {category};" in screen
    assert "Seen 1 time(s)" in screen
    assert "tests.e2e.entry:fail" in screen  # where it was raised
    assert f"telegram_user_id={ANN}" in screen and "update_type=message" in screen


async def test_a_failing_button_is_still_answered_with_the_code(
    conversation: StartConversation,
) -> None:
    chat = await conversation(admin_ids=(ADMIN,))
    replies = await chat.press(ANN, "fail:system", message_id=1, language_code="fr")
    answer = replies.answer
    assert answer["show_alert"] is True
    assert answer["text"].startswith(MESSAGES["system"][1])
    code = support_code(answer["text"])
    [screen] = (await chat.send(ADMIN, f"/error {code}")).texts
    assert "update_type=callback_query" in screen


async def test_an_unknown_code_is_said_to_be_unknown(conversation: StartConversation) -> None:
    chat = await conversation(admin_ids=(ADMIN,))
    [text] = (await chat.send(ADMIN, "/error ABCD2345")).texts
    assert text == "No error has the support code ABCD2345."


async def test_error_lookup_is_for_admins_only(conversation: StartConversation) -> None:
    chat = await conversation(admin_ids=(ADMIN,))
    code = support_code((await chat.send(ANN, "/fail system")).texts[0])
    assert (await chat.send(ANN, f"/error {code}")).texts == ["Only admins can do this."]
    # and a Resolve button replayed by a non-admin changes nothing
    group_id = await _group_of(chat.db, code)
    replies = await chat.press(ANN, ResolveError(group=group_id).pack(), message_id=1)
    assert replies.answer["text"] == "Only admins can do this."
    assert await _count(chat.db, ErrorGroup, ErrorGroup.resolved.is_(True)) == 0


async def _group_of(db: Database, code: str) -> int:
    async with db.transaction() as session:
        return (
            await session.scalars(
                select(ErrorOccurrence.group_id).where(ErrorOccurrence.code == code)
            )
        ).one()


async def _alerts_to(db: Database, telegram_id: int) -> list[Notification]:
    async with db.transaction() as session:
        return list(
            await session.scalars(
                select(Notification)
                .join(User, User.id == Notification.recipient_id)
                .where(User.telegram_id == telegram_id, Notification.kind == "alert")
                .order_by(Notification.id)
            )
        )


async def test_a_high_error_alerts_each_admin_once_in_their_language_with_a_button(
    conversation: StartConversation,
) -> None:
    second_admin = 9001
    chat = await conversation(admin_ids=(ADMIN, second_admin))
    welcome = (await chat.send(second_admin, "/start")).message("choose your language")
    await chat.press(second_admin, "lang:fr", message_id=welcome["message_id"])  # picks French
    codes = [support_code((await chat.send(ANN, "/fail system")).texts[0]) for _ in range(3)]

    # Three identical failures: one group, three codes, one alert per admin.
    assert await _count(chat.db, ErrorGroup) == 1
    assert await _count(chat.db, ErrorOccurrence) == 3
    assert await _count(chat.db, AlertRecord) == 1
    [english] = await _alerts_to(chat.db, ADMIN)
    [french] = await _alerts_to(chat.db, second_admin)
    assert english.payload["text"].startswith("🔴 HIGH: Error system in tests.e2e.entry:fail")
    assert english.payload["text"].endswith(f"Support code: {codes[0]}")
    assert french.payload["text"].startswith("🔴 HIGH: Erreur system dans tests.e2e.entry:fail")
    [button] = english.payload["buttons"]
    assert button["text"] == f"Open {codes[0]}"
    assert french.payload["buttons"][0]["text"] == f"Ouvrir {codes[0]}"

    # The button opens the occurrence; Resolve marks the group resolved.
    data = OpenError(occurrence=button["target"]).pack()
    replies = await chat.press(ADMIN, data, message_id=1)
    screen = replies.message(f"Support code {codes[0]}")
    assert "Seen 3 time(s)" in screen["text"]
    resolve = buttons(screen)["Resolve"]
    replies = await chat.press(ADMIN, resolve, message_id=screen["message_id"])
    assert replies.answer["text"].startswith("Marked resolved: 3 occurrence(s)")
    assert await _count(chat.db, ErrorGroup, ErrorGroup.resolved.is_(True)) == 1
    [screen_text] = (await chat.send(ADMIN, f"/error {codes[1]}")).texts
    assert "status: resolved by user" in screen_text


async def test_a_business_refusal_is_quiet_for_admins(conversation: StartConversation) -> None:
    chat: Conversation = await conversation(admin_ids=(ADMIN,))
    await chat.send(ANN, "/fail business_logic")
    await chat.send(ANN, "/fail inventory")
    assert await _count(chat.db, ErrorOccurrence) == 2
    assert await _alerts_to(chat.db, ADMIN) == []


async def test_error_statistics_on_the_admin_screen(conversation: StartConversation) -> None:
    chat = await conversation(admin_ids=(ADMIN,))
    for category in ("system", "system", "transient"):
        await chat.send(ANN, f"/fail {category}")
    [text] = (await chat.send(ADMIN, "/error")).texts
    assert "1 hour: 3 (system 2, transient 1)" in text
    assert "7 days: 3 (system 2, transient 1)" in text


@pytest.fixture
async def cuttable_postgres(postgres_url: str) -> AsyncIterator[tuple[str, Proxy]]:
    """The test's PostgreSQL database behind a TCP proxy that can cut it off, then restore it
    (the one benchmarks/chaos.py uses): (URL through the proxy, proxy)."""
    await _truncate_all(postgres_url)
    url = make_url(postgres_url)
    proxy = Proxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    yield url.set(port=proxy.port).render_as_string(hide_password=False), proxy
    await proxy.stop()


async def test_while_the_database_is_away_users_get_a_code_and_admins_find_it_afterwards(
    fake_telegram: FakeTelegram, postgres_url: str, cuttable_postgres: tuple[str, Proxy],
    clock: FakeClock,
) -> None:
    proxied_url, proxy = cuttable_postgres
    running: list[Conversation] = []
    chat = await start_conversation(
        fake_telegram, proxied_url, clock=clock, running=running, admin_ids=(ADMIN,)
    )
    try:
        assert (await chat.send(ANN, "/help")).texts[0].startswith("Here is what I can do")

        proxy.cut()
        codes = []
        for user, language in ((ANN, "en"), (ANN, "en"), (1002, "fr")):
            [text] = (await chat.send(user, "/help", language_code=language)).texts
            assert text.splitlines()[0] == MESSAGES["transient"][0 if language == "en" else 1]
            codes.append(support_code(text))
        errors = chat.dp["error_recorder"]
        assert errors.spooled == 3

        await proxy.restore()
        replies = await chat.send(ANN, "/help")
        assert replies.texts[0].startswith("Here is what I can do")  # normal answers resume
        assert errors.spooled == 0

        direct = Database.from_url(postgres_url)  # not through the proxy
        try:
            async with direct.transaction() as session:
                stored = set(await session.scalars(select(ErrorOccurrence.code)))
        finally:
            await direct.dispose()
        assert set(codes) <= stored
        [screen] = (await chat.send(ADMIN, f"/error {codes[-1]}")).texts
        assert screen.startswith(f"Support code {codes[-1]}, ")
        assert "Category: transient; severity: high" in screen
        assert "telegram_user_id=1002" in screen
    finally:
        for running_chat in running:
            await running_chat.close()
