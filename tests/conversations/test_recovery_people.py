"""/workflow_recovery -> People through the production Dispatcher: an admin finds a person and
grants a role (with a reason), and the person gets that role's menu; a granted admin survives
a restart; a revoked one loses the menu and is refused at once; an owner (ADMIN_IDS) has no
Revoke and a forged one changes nothing; a non-admin's replayed buttons change nothing; the
provider settings, the catalogue and the audit screen work from the same menus."""

from __future__ import annotations

from sqlalchemy import select

from database.models import Provider, ServiceType, TransactionLog, User
from handlers.admin.recovery.callbacks import Ask, Nav, Why
from handlers.admin.recovery.people import PersonAct
from tests.conversations.conftest import StartConversation
from tests.conversations.harness import Conversation, Replies, buttons

OWNER = 9000
ANN = 1001
REFUSED = "Only admins can do this."
ADMIN_INDEX = 3  # services.people.GRANTABLE: provider, operator, warehouse, admin


async def _user_id(chat: Conversation, telegram_id: int) -> int:
    return await chat.db.read(lambda s: s.scalar(
        select(User.id).where(User.telegram_id == telegram_id)))  # type: ignore[return-value]


async def _roles(chat: Conversation, telegram_id: int) -> str:
    return await chat.db.read(lambda s: s.scalar(
        select(User.roles).where(User.telegram_id == telegram_id)))  # type: ignore[return-value]


async def _open_ann(chat: Conversation) -> dict:  # type: ignore[type-arg]
    """The owner opens People, searches "Ann" and opens her screen."""
    menu = (await chat.send(OWNER, "/workflow_recovery")).message("Workflow recovery")
    mid = menu["message_id"]
    search = (await chat.press(OWNER, buttons(menu)["People"], message_id=mid)).messages[-1]
    assert "send a name" in search["text"]
    found = (await chat.send(OWNER, "ann")).message("Found 1:")
    [label] = [b for b in buttons(found) if b.startswith("Ann")]
    person = await chat.press(OWNER, buttons(found)[label], message_id=found["message_id"])
    return person.messages[-1]


async def _confirm(chat: Conversation, screen: dict, label: str, reason: str) -> dict:  # type: ignore[type-arg]
    mid = screen["message_id"]
    question = (await chat.press(OWNER, buttons(screen)[label], message_id=mid)).messages[-1]
    return (await chat.press(OWNER, buttons(question)[reason], message_id=mid)).messages[-1]


def _menu_commands(replies: Replies) -> list[str]:
    [menu] = replies.of("setMyCommands")
    assert menu.params["scope"]["chat_id"] == ANN
    return [c["command"] for c in menu.params["commands"]]


async def test_a_granted_role_brings_its_menu_and_is_audited(
    conversation: StartConversation,
) -> None:
    chat = await conversation(admin_ids=[OWNER])
    await chat.send(ANN, "/start", first_name="Ann")
    person = await _open_ann(chat)
    assert "Roles: requester" in person["text"]
    after = await _confirm(chat, person, "Grant warehouse", "New staff member")
    assert after["text"].startswith("Granted warehouse.")
    assert "warehouse (granted here)" in after["text"]
    assert "stock" in _menu_commands(await chat.send(ANN, "/help", first_name="Ann"))
    entry = await chat.db.read(lambda s: s.scalar(
        select(TransactionLog).where(TransactionLog.operation == "user.role_granted")))
    assert entry is not None and entry.detail == "New staff member"

    # The Audit screen of this person shows it.
    audit = await chat.press(OWNER, buttons(after)["Audit of this person"],
                             message_id=after["message_id"])
    assert "user.role_granted" in audit.messages[-1]["text"]


async def test_a_granted_admin_survives_a_restart_and_a_revoked_one_is_refused_at_once(
    conversation: StartConversation,
) -> None:
    chat = await conversation(admin_ids=[OWNER])
    await chat.send(ANN, "/start", first_name="Ann")
    person = await _open_ann(chat)
    after = await _confirm(chat, person, "Grant admin", "Covering for a colleague")
    assert after["text"].startswith("Granted admin.")

    chat = await chat.restart()  # a new process on the same database, same ADMIN_IDS
    replies = await chat.send(ANN, "/workflow_recovery", first_name="Ann")
    assert "request" in _menu_commands(replies)
    replies.message("Workflow recovery")

    person = await _open_ann(chat)
    after = await _confirm(chat, person, "Revoke admin", "No longer needed")
    assert after["text"].startswith("Revoked admin.")
    refused = await chat.press(ANN, Nav(section="top").pack(), message_id=1)
    assert refused.answer["text"] == REFUSED
    # Her next update took the admin's menu away (back to everyone's default).
    assert [c.params["scope"]["chat_id"] for c in refused.of("deleteMyCommands")] == [ANN]
    assert "admin" not in await _roles(chat, ANN)


async def test_an_owner_cannot_be_revoked_from_the_menu(conversation: StartConversation) -> None:
    chat = await conversation(admin_ids=[OWNER])
    await chat.send(ANN, "/start", first_name="Ann")
    menu = (await chat.send(OWNER, "/workflow_recovery")).message("Workflow recovery")
    owner_id = await _user_id(chat, OWNER)
    mid = menu["message_id"]
    own = (await chat.press(OWNER, Nav(section="people", item=owner_id).pack(),
                            message_id=mid)).messages[-1]
    assert "admin (owner: ADMIN_IDS)" in own["text"]
    assert "Revoke admin" not in buttons(own)
    # A forged Revoke: the screen is redrawn, nothing asked, nothing changed.
    # (the screen is unchanged, so Telegram answers "message is not modified": harmless)
    forged = await chat.press(OWNER, Ask(op="role_revoke", target=owner_id,
                                         version=ADMIN_INDEX).pack(), message_id=mid,
                              allow_errors=True)
    assert forged.answer["text"] == "This changed in the meantime; here it is now."
    assert not any("Why?" in text for text in forged.texts)
    again = await chat.press(OWNER, Why(target=owner_id, reason=0).pack(), message_id=mid)
    assert again.answer["text"] == "This button is no longer valid."
    assert "admin" in await _roles(chat, OWNER)


async def test_a_non_admins_replayed_buttons_change_nothing(
    conversation: StartConversation,
) -> None:
    chat = await conversation(admin_ids=[OWNER])
    await chat.send(ANN, "/start", first_name="Ann")
    ann = await _user_id(chat, ANN)
    for data in (Nav(section="people", item=ann).pack(),
                 Ask(op="role_grant", target=ann, version=ADMIN_INDEX).pack(),
                 Why(target=ann, reason=0).pack(),
                 PersonAct(action="cap", user=ann, value=5).pack()):
        refused = await chat.press(ANN, data, message_id=1)
        assert refused.answer["text"] == REFUSED
    assert await _roles(chat, ANN) == "requester"
    assert await chat.db.read(lambda s: s.scalar(select(Provider.id))) is None


async def test_provider_settings_and_the_catalogue(conversation: StartConversation) -> None:
    chat = await conversation(admin_ids=[OWNER])
    await chat.send(ANN, "/start", first_name="Ann")
    menu = (await chat.send(OWNER, "/workflow_recovery")).message("Workflow recovery")
    mid = menu["message_id"]
    people = (await chat.press(OWNER, buttons(menu)["People"], message_id=mid)).messages[-1]
    services = (await chat.press(OWNER, buttons(people)["Service types"],
                                 message_id=mid)).messages[-1]
    await chat.press(OWNER, buttons(services)["Add"], message_id=mid)
    added = (await chat.send(OWNER, "plumb | Plumbing | Plomberie")).message("Added.")
    assert "French: Plomberie" in added["text"]
    retire = await _confirm(chat, added, "Retire", "Created by mistake")
    assert retire["text"].startswith("Retired.")
    assert await chat.db.read(lambda s: s.scalar(select(ServiceType.active))) is False
    await chat.press(OWNER, buttons(retire)["Reactivate"], message_id=added["message_id"])

    person = await _open_ann(chat)
    after = await _confirm(chat, person, "Grant provider", "New staff member")
    pid = after["message_id"]
    picker = (await chat.press(OWNER, buttons(after)["Services"], message_id=pid)).messages[-1]
    toggled = (await chat.press(OWNER, buttons(picker)["▫️ Plumbing"],
                                message_id=pid)).messages[-1]
    assert "✅ Plumbing" in buttons(toggled)
    screen = (await chat.press(OWNER, buttons(toggled)["« Back"], message_id=pid)).messages[-1]
    screen = (await chat.press(OWNER, buttons(screen)["Capacity +"],
                               message_id=pid)).messages[-1]
    screen = (await chat.press(OWNER, buttons(screen)["Set away"], message_id=pid)).messages[-1]
    assert "Provider: capacity 2, away; services: Plumbing" in screen["text"]
    provider = await chat.db.read(lambda s: s.scalar(select(Provider)))
    assert provider is not None and provider.capacity == 2 and not provider.available


async def test_people_inventory_and_audit_speak_french(conversation: StartConversation) -> None:
    chat = await conversation(admin_ids=[OWNER])
    menu = (await chat.send(OWNER, "/workflow_recovery", language_code="fr")).messages[-1]
    mid = menu["message_id"]
    people = await chat.press(OWNER, buttons(menu)["Personnes"], message_id=mid,
                              language_code="fr")
    assert people.messages[-1]["text"].startswith("Personnes : envoyez un nom")
    assert "Types de service" in buttons(people.messages[-1])
    stock = await chat.press(OWNER, Nav(section="inv").pack(), message_id=mid, language_code="fr")
    assert "le stock et le registre concordent" in stock.messages[-1]["text"]
    audit = await chat.press(OWNER, Nav(section="audit").pack(), message_id=mid,
                             language_code="fr")
    assert audit.messages[-1]["text"].startswith("Journal : les derniers changements")


async def test_the_audit_pages_and_filters_by_request(conversation: StartConversation) -> None:
    chat = await conversation(admin_ids=[OWNER])
    menu = (await chat.send(OWNER, "/workflow_recovery")).message("Workflow recovery")
    mid = menu["message_id"]
    now = chat.clock.now()
    async with chat.db.transaction() as session:
        session.add_all([TransactionLog(operation="request.test", entity_type="service_request",
                                        entity_id=str(i % 3), outcome="ok", at=now)
                         for i in range(12)])
    first = (await chat.press(OWNER, buttons(menu)["Audit"], message_id=mid)).messages[-1]
    assert "(page 1)" in first["text"] and first["text"].count("request.test") == 10
    second = (await chat.press(OWNER, buttons(first)["›"], message_id=mid)).messages[-1]
    assert "(page 2)" in second["text"] and "›" not in buttons(second)
    await chat.press(OWNER, buttons(second)["By request…"], message_id=mid)
    filtered = (await chat.send(OWNER, "#2")).message("Audit of request #2")
    assert filtered["text"].count("service_request#2 ") == 4
    assert "service_request#1 " not in filtered["text"]
