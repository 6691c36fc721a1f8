"""Service requests end to end in chat: a requester's form, the provider's offer, the job, the
parts, the confirmation; disputes, races, stale buttons, matching tiers, escalation, cancelling,
relayed messages, the timed sweeps and French. Each test drives the production Dispatcher and
checks what the fake Telegram received (the outbox delivered through the real Telegram channel)
and what the database holds, read through the services."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from database.models import AlertRecord, Role
from services import menus
from services.demo import Demo
from services.inventory import Inventory
from services.workflow import ServiceRequests, State, catalogue
from tests.conversations.conftest import StartConversation
from tests.conversations.harness import Conversation, Replies, buttons

ANN = 1001  # requester (demo)
PAUL = 1002  # provider: plumbing, heating; centre
FATOU = 1003  # provider, French, on call: plumbing, electrical; north
SAM = 1004  # provider: electrical, heating; south
WENDY = 1005  # warehouse
ADMIN = 9001
STALE = "This request changed in the meantime"
PEOPLE = {ANN: ("Ann Requester", "en"), PAUL: ("Paul Provider", "en"),
          FATOU: ("Fatou Prestataire", "fr"), SAM: ("Sam Provider", "en"),
          WENDY: ("Wendy Warehouse", "en"), ADMIN: ("Ada Admin", "en")}


async def say(chat: Conversation, user: int, text: str, **kwargs: Any) -> Replies:
    """`user` writes `text`, under the name and in the language the demo gave them."""
    name, language = PEOPLE.get(user, ("User", "en"))
    kwargs.setdefault("language_code", language)
    return await chat.send(user, text, first_name=name, **kwargs)


async def _bot(conversation: StartConversation, **options: Any) -> Conversation:
    chat = await conversation(admin_ids=[ADMIN], **options)
    await Demo(chat.db, chat.clock).seed(admin_ids=[ADMIN], default_language="en")
    for user, (name, language) in PEOPLE.items():
        chat.known_user(user, name, language)
    return chat


def _requests(chat: Conversation) -> ServiceRequests:
    service: ServiceRequests = chat.dp["service_requests"]
    return service


def _last(replies: Replies, substring: str = "") -> dict[str, Any]:
    found = [m for m in replies.messages if substring in m.get("text", "")]
    assert found, f"no message with {substring!r}: {replies.texts}"
    return found[-1]


async def _press(chat: Conversation, user: int, message: dict[str, Any], label: str,
                 **kwargs: Any) -> Replies:
    data = buttons(message)
    assert label in data, f"no button {label!r} in {list(data)}"
    return await chat.press(user, data[label], message_id=message["message_id"], **kwargs)


async def open_request(
    chat: Conversation, user: int = ANN, *, service: str = "Plumbing", area: str = "Centre",
    urgent: bool = False, photos: int = 0, language: str = "en",
    labels: dict[str, str] | None = None,
) -> int:
    """Fill in /new as `user` and send it; returns the request id."""
    words = labels or {
        "done": "Done", "urgent": "Urgent: as soon as possible", "not_urgent": "Not urgent",
        "send": "Send request",
    }
    replies = await say(chat, user, "/new", language_code=language)
    screen = replies.messages[-1]
    screen = (await _press(chat, user, screen, service)).messages[-1]
    await _press(chat, user, screen, area)
    await say(chat, user, "12 Rue Haute", language_code=language)
    await say(chat, user, "weekdays after 17:00", language_code=language)
    if photos:
        replies = await chat.send_photo(user, "photo-file-1", caption="Leaking pipe under sink",
                                        language_code=language, first_name=PEOPLE[user][0])
        for index in range(2, photos + 1):
            replies = await chat.send_photo(user, f"photo-file-{index}", language_code=language,
                                            first_name=PEOPLE[user][0])
    else:
        replies = await say(chat, user, "Leaking pipe under sink", language_code=language)
    screen = replies.messages[-1]
    screen = (await _press(chat, user, screen, words["done"])).messages[-1]
    screen = (await _press(chat, user, screen,
                           words["urgent"] if urgent else words["not_urgent"])).messages[-1]
    sent = (await _press(chat, user, screen, words["send"])).messages[-1]
    mine = await _requests(chat).list_for_requester(await _user_id(chat, user))
    assert mine, sent["text"]
    assert f"#{mine[0].id}" in sent["text"] or f"n°{mine[0].id}" in sent["text"]
    return mine[0].id


async def _user_id(chat: Conversation, telegram_id: int) -> int:
    users = chat.dp["users"]
    view = await users.ensure(telegram_id=telegram_id, display_name="", client_language=None)
    return int(view.id)


def _to(replies: Replies, chat_id: int) -> list[dict[str, Any]]:
    return [m for m in replies.messages if m["chat"]["id"] == chat_id]


def _photos_to(replies: Replies, chat_id: int) -> list[str]:
    return [
        c.result["photo"][-1]["file_id"] for c in replies.of("sendPhoto")
        if c.status == 200 and c.result["chat"]["id"] == chat_id
    ]


async def _stock(chat: Conversation) -> dict[str, int]:
    return {i.sku: i.on_hand for i in await Inventory(chat.db, chat.clock).list_stock()}


async def _record_part(chat: Conversation, user: int, screen: dict[str, Any], part: str,
                       quantity: int) -> dict[str, Any]:
    picker = (await _press(chat, user, screen, "Record parts used")).messages[-1]
    [label] = [b for b in buttons(picker) if b.startswith(part)]
    await _press(chat, user, picker, label)
    return (await say(chat, user, str(quantity))).message("Recorded")


# ------------------------------------------------------------------------------------ tests


async def test_happy_path_with_two_parts_and_confirmation(
    conversation: StartConversation,
) -> None:
    chat = await _bot(conversation)
    request_id = await open_request(chat, photos=2)

    delivered = await chat.deliver()
    offer = _last(Replies(delivered), "New job offer")
    assert offer["chat"]["id"] == PAUL
    assert "Plumbing in Centre" in offer["text"] and "Leaking pipe under sink" in offer["text"]
    assert "12 Rue Haute" not in offer["text"]  # the address once accepted
    assert _photos_to(delivered, PAUL) == ["photo-file-1", "photo-file-2"]

    # The offer again from /jobs, with its photos as an album.
    jobs = (await say(chat, PAUL, "/jobs")).message("Your jobs")
    replies = await _press(chat, PAUL, jobs, f"Offer #{request_id}: Plumbing in Centre")
    screen = replies.message(f"Job offer #{request_id}")
    assert "address once you accept" in screen["text"] and "Photos: 2" in screen["text"]
    [album] = replies.of("sendMediaGroup")
    assert [p["file_id"] for m in album.result for p in m["photo"][-1:]] == [
        "photo-file-1", "photo-file-2"
    ]

    job = (await _press(chat, PAUL, offer, "Accept")).message("You accepted this job")
    assert "Address: 12 Rue Haute" in job["text"]
    told = _to(await chat.deliver(), ANN)
    assert any("will take care of your request" in m["text"] for m in told)

    job = (await _press(chat, PAUL, job, "Start work")).messages[-1]
    assert "in progress" in job["text"]
    await _record_part(chat, PAUL, job, "Copper pipe", 2)
    job = await _record_part(chat, PAUL, job, "Ball valve", 1)
    assert "Copper pipe 15 mm: 2 m" in job["text"] and "Ball valve: 1 pcs" in job["text"]
    job = (await _press(chat, PAUL, job, "Mark completed")).messages[-1]
    assert "completed" in job["text"]

    [completed] = [m for m in _to(await chat.deliver(), ANN) if "has completed" in m["text"]]
    screen = (await _press(chat, ANN, completed, "Open request")).messages[-1]
    assert {"Confirm", "Dispute"} <= set(buttons(screen))
    screen = (await _press(chat, ANN, screen, "Confirm")).messages[-1]
    assert "confirmed" in screen["text"]
    thanks = _to(await chat.deliver(), PAUL)
    assert any("confirmed request" in m["text"] for m in thanks)

    stock = await _stock(chat)
    assert stock["PIPE-15"] == 38 and stock["VALVE-1"] == 11
    history = await _requests(chat).history(request_id)
    assert history.request.state is State.CONFIRMED
    assert [t.to_state for t in history.transitions][-4:] == [
        State.ASSIGNED, State.IN_PROGRESS, State.COMPLETED, State.CONFIRMED
    ]
    assert sorted((p.sku, p.quantity) for p in history.parts) == [("PIPE-15", -2),
                                                                  ("VALVE-1", -1)]


async def _assigned(chat: Conversation, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """A request of Ann's, accepted by Paul: (request id, Paul's job screen)."""
    request_id = await open_request(chat, **kwargs)
    offer = _last(Replies(await chat.deliver()), "New job offer")
    job = (await _press(chat, PAUL, offer, "Accept")).message("You accepted this job")
    return request_id, job


async def _completed(chat: Conversation) -> tuple[int, dict[str, Any]]:
    """A request of Ann's that Paul completed: (request id, the screen Ann opens from the
    notice)."""
    request_id, job = await _assigned(chat)
    job = (await _press(chat, PAUL, job, "Start work")).messages[-1]
    await _press(chat, PAUL, job, "Mark completed")
    [completed] = [m for m in _to(await chat.deliver(), ANN) if "has completed" in m["text"]]
    screen = (await _press(chat, ANN, completed, "Open request")).messages[-1]
    return request_id, screen


async def test_dispute_resolved_by_an_admin(conversation: StartConversation) -> None:
    chat = await _bot(conversation)
    request_id, screen = await _completed(chat)
    (await _press(chat, ANN, screen, "Dispute")).message("What is wrong with the work")
    recorded = (await say(chat, ANN, "The pipe still leaks")).message("Your dispute is recorded")
    assert "disputed" in recorded["text"]

    delivered = await chat.deliver()
    assert any("The pipe still leaks" in m["text"] for m in _to(delivered, PAUL))
    assert any(f"#{request_id}" in m["text"] for m in _to(delivered, ADMIN))

    screen = (await say(chat, ADMIN, f"/request {request_id}")).messages[-1]
    assert "Requester: Ann Requester" in screen["text"]
    (await _press(chat, ADMIN, screen, "Resolve: resume the work")).message("Your reason")
    resolved = (await say(chat, ADMIN, "Redo the joint")).message("The dispute is resolved")
    assert "in progress" in resolved["text"]

    delivered = await chat.deliver()
    assert any("Redo the joint" in m["text"] for m in _to(delivered, ANN))
    assert any("Redo the joint" in m["text"] for m in _to(delivered, PAUL))
    history = await _requests(chat).history(request_id)
    assert history.request.state is State.IN_PROGRESS
    assert [t.to_state for t in history.transitions][-2:] == [State.DISPUTED, State.IN_PROGRESS]
    assert history.transitions[-1].reason == "Redo the joint"


async def test_broad_tier_and_two_accepts_at_once_make_one_assignment(
    conversation: StartConversation,
) -> None:
    chat = await _bot(conversation)
    # Nobody does electrical work in the centre: its neighbours' providers are offered it.
    request_id = await open_request(chat, service="Electrical", area="Centre")
    view = await _requests(chat).get(request_id)
    assert view.matching_tier == "broad" and view.state is State.OFFERED

    delivered = Replies(await chat.deliver())
    offers = {m["chat"]["id"]: m for m in delivered.messages
              if buttons(m) and list(buttons(m).values())[0].startswith("ofa:a:")}
    assert set(offers) == {FATOU, SAM}
    assert "Électricité" in offers[FATOU]["text"]  # she reads French

    def accept(user: int) -> Any:
        message = offers[user]
        return chat.press(user, list(buttons(message).values())[0],
                          message_id=message["message_id"])

    seen = len(chat.fake.calls)
    await asyncio.gather(accept(FATOU), accept(SAM))
    calls = chat.fake.calls[seen:]
    view = await _requests(chat).get(request_id)
    assert view.state is State.ASSIGNED
    winner, loser = (FATOU, SAM) if view.assignee_name == "Fatou Prestataire" else (SAM, FATOU)
    edits = {c.params["chat_id"]: c.params["text"] for c in calls
             if c.method == "editMessageText"}
    assert "12 Rue Haute" in edits[winner] and "12 Rue Haute" not in edits[loser]
    alerts = [c.params for c in calls
              if c.method == "answerCallbackQuery" and c.params.get("show_alert")]
    assert len(alerts) == 1  # the polite "already taken", to the one who lost
    history = await _requests(chat).history(request_id)
    assert [t.to_state for t in history.transitions].count(State.ASSIGNED) == 1


async def test_a_stale_button_is_refused_with_a_refreshed_view(
    conversation: StartConversation,
) -> None:
    chat = await _bot(conversation)
    request_id, job = await _assigned(chat)
    # The same job on a second screen, from /jobs: started there.
    jobs = (await say(chat, PAUL, "/jobs")).message("Your jobs")
    again = (await _press(chat, PAUL, jobs, [b for b in buttons(jobs) if "#" in b][0]))
    await _press(chat, PAUL, again.messages[-1], "Start work")
    before = await _requests(chat).history(request_id)

    replies = await _press(chat, PAUL, job, "Start work")  # the first screen's button
    assert STALE in replies.answer["text"] and replies.answer["show_alert"] is True
    redrawn = replies.messages[-1]
    assert redrawn["message_id"] == job["message_id"]
    assert "in progress" in redrawn["text"] and "Start work" not in buttons(redrawn)
    after = await _requests(chat).history(request_id)
    assert after.request.version == before.request.version
    assert len(after.transitions) == len(before.transitions)


async def test_nobody_available_escalates_and_alerts_admins_once(
    conversation: StartConversation,
) -> None:
    chat = await _bot(conversation)
    for provider in (PAUL, SAM):  # the heating providers
        (await say(chat, provider, "/away")).message("You are away")
    await open_request(chat, service="Heating", area="North")
    mine = await _requests(chat).list_for_requester(await _user_id(chat, ANN))
    assert mine[0].state is State.ESCALATED and mine[0].matching_tier is None

    # Ann's own screen tells her (the bot's messages in her chat as they are now).
    assert any("No provider is free right now" in m.get("text", "")
               for m in chat.fake.chat_messages(ANN))
    delivered = await chat.deliver()
    [alert] = [m for m in _to(delivered, ADMIN) if f"#{mine[0].id}" in m["text"]]
    # The alert opens the request: the admin is one tap from its screen.
    opened = await _press(chat, ADMIN, alert, "Open request")
    assert f"#{mine[0].id}" in opened.messages[-1]["text"]
    async with chat.db.transaction() as session:
        alerts = await session.scalar(
            select(func.count()).select_from(AlertRecord)
            .where(AlertRecord.key.like(f"request_escalated:{mine[0].id}:%"))
        )
    assert alerts == 1


async def test_cancel_in_progress_after_parts_writes_reversals(
    conversation: StartConversation,
) -> None:
    chat = await _bot(conversation)
    request_id, job = await _assigned(chat)
    job = (await _press(chat, PAUL, job, "Start work")).messages[-1]
    await _record_part(chat, PAUL, job, "Copper pipe", 2)
    assert (await _stock(chat))["PIPE-15"] == 38

    pick = (await say(chat, ANN, "/cancel")).message("Which request do you want to cancel?")
    [label] = list(buttons(pick))
    ask = (await _press(chat, ANN, pick, label)).message("Cancel this request?")
    done = await _press(chat, ANN, ask, "Yes, cancel it")
    assert done.answer["text"] == "Request cancelled."

    assert (await _stock(chat))["PIPE-15"] == 40
    history = await _requests(chat).history(request_id)
    assert history.request.state is State.CANCELLED
    assert sorted((p.sku, p.quantity, p.kind) for p in history.parts) == [
        ("PIPE-15", -2, "issue"), ("PIPE-15", 2, "reversal")
    ]
    assert any("was cancelled" in m["text"] for m in _to(await chat.deliver(), PAUL))
    # Nothing is left to cancel; a completed or cancelled request is never offered.
    (await say(chat, ANN, "/cancel")).message("no request that can still be cancelled")


async def test_cancel_inside_a_form_abandons_it(conversation: StartConversation) -> None:
    chat = await _bot(conversation)
    replies = await say(chat, ANN, "/new")
    await _press(chat, ANN, replies.messages[-1], "Plumbing")
    (await say(chat, ANN, "/cancel")).message("Cancelled: nothing was changed.")
    (await say(chat, ANN, "12 Rue Haute")).message("I did not understand that")
    assert await _requests(chat).list_for_requester(await _user_id(chat, ANN)) == []


async def test_message_relayed_both_ways(conversation: StartConversation) -> None:
    chat = await _bot(conversation)
    request_id, job = await _assigned(chat)
    [told] = [m for m in _to(await chat.deliver(), ANN) if "will take care" in m["text"]]
    screen = (await _press(chat, ANN, told, "Open request")).messages[-1]
    (await _press(chat, ANN, screen, "Message")).message("Send your message")
    (await say(chat, ANN, "Is 18:00 ok?")).message("Sent.")

    [relayed] = [m for m in _to(await chat.deliver(), PAUL) if "Is 18:00 ok?" in m["text"]]
    assert "Ann Requester" in relayed["text"]
    (await _press(chat, PAUL, job, "Message")).message("Send your message")
    (await say(chat, PAUL, "Yes, see you then")).message("Sent.")
    [answer] = [m for m in _to(await chat.deliver(), ANN) if "see you then" in m["text"]]
    assert "Paul Provider" in answer["text"]

    history = await _requests(chat).history(request_id)
    assert [m.text for m in history.messages] == ["Is 18:00 ok?", "Yes, see you then"]


async def test_completed_request_reminded_then_confirmed_after_72_hours(
    conversation: StartConversation,
) -> None:
    chat = await _bot(conversation)
    request_id, _ = await _completed(chat)
    chat.clock.advance(hours=24, minutes=1)
    assert await _requests(chat).sweep_completed() == (1, 0)
    assert any("Please confirm request" in m["text"] for m in _to(await chat.deliver(), ANN))
    chat.clock.advance(hours=48)
    assert await _requests(chat).sweep_completed() == (0, 1)
    assert (await _requests(chat).get(request_id)).state is State.CONFIRMED
    delivered = await chat.deliver()
    assert any("confirmed automatically" in m["text"] for m in _to(delivered, ANN))
    assert any("confirmed automatically" in m["text"] for m in _to(delivered, PAUL))


async def test_an_expired_offer_goes_to_the_next_candidate(
    conversation: StartConversation,
) -> None:
    chat = await _bot(conversation, offer_candidates=1, offer_expiry_minutes=30)
    request_id = await open_request(chat, service="Electrical", area="Centre")
    [first] = [m for m in Replies(await chat.deliver()).messages if buttons(m)]
    assert first["chat"]["id"] == FATOU

    chat.clock.advance(minutes=31)
    assert await _requests(chat).expire_offers() == 1
    [second] = [m for m in Replies(await chat.deliver()).messages if buttons(m)]
    assert second["chat"]["id"] == SAM
    # Fatou's button is too late now.
    late = await chat.press(FATOU, list(buttons(first).values())[0],
                            message_id=first["message_id"])
    assert late.answer["show_alert"] is True
    job = (await _press(chat, SAM, second, "Accept")).message("You accepted this job")
    assert "Address: 12 Rue Haute" in job["text"]
    assert (await _requests(chat).get(request_id)).assignee_name == "Sam Provider"


async def test_warehouse_sees_low_stock_and_receives(conversation: StartConversation) -> None:
    chat = await _bot(conversation)
    stock = (await say(chat, WENDY, "/stock")).message("Stock on hand")
    assert "\u26a0\ufe0f FUSE-10 Fuse 10 A: 3 pcs" in stock["text"]
    assert "\u26a0\ufe0f PIPE-15" not in stock["text"]
    picker = (await _press(chat, WENDY, stock, "Receive stock")).messages[-1]
    [label] = [b for b in buttons(picker) if b.startswith("FUSE-10")]
    await _press(chat, WENDY, picker, label)
    (await say(chat, WENDY, "10")).message("Received 10 pcs of Fuse 10 A: 13 on hand now.")
    assert (await _stock(chat))["FUSE-10"] == 13
    (await say(chat, ANN, "/stock")).message("This is for the warehouse staff.")


async def test_menus_and_help_follow_the_roles(conversation: StartConversation) -> None:
    chat = await _bot(conversation)
    replies = await say(chat, PAUL, "/help")
    [menu] = replies.of("setMyCommands")
    assert menu.params["scope"]["chat_id"] == PAUL
    commands = [c["command"] for c in menu.params["commands"]]
    assert "jobs" in commands and "new" in commands and "stock" not in commands
    text = replies.message("Here is what I can do")["text"]
    assert "/jobs" in text and "/new" in text and "/stock" not in text
    # Once set, the menu is not set again; a plain requester keeps the default one.
    assert (await say(chat, PAUL, "/help")).of("setMyCommands") == []
    assert (await say(chat, ANN, "/help")).of("setMyCommands") == []
    # A restart remembers which menu each person has.
    chat = await chat.restart()
    assert (await say(chat, PAUL, "/help")).of("setMyCommands") == []
    wendy = await say(chat, WENDY, "/help", language_code="fr")
    [menu] = wendy.of("setMyCommands")
    assert "stock" in [c["command"] for c in menu.params["commands"]]

    # Ann's roles change: her next update brings her a menu of her own.
    ann = await _user_id(chat, ANN)
    await chat.db.run(lambda s: catalogue.ensure_provider(
        s, user_id=ann, service_type_ids=[1], area_ids=[1], now=chat.clock.now()))
    replies = await say(chat, ANN, "/help")
    [menu] = replies.of("setMyCommands")
    assert menu.params["scope"] == {"type": "chat", "chat_id": ANN}
    assert "away" in [c["command"] for c in menu.params["commands"]]
    assert "/away" in replies.message("Here is what I can do")["text"]


async def test_a_release_that_adds_a_command_gives_holders_of_the_role_the_new_menu(
    conversation: StartConversation, monkeypatch: pytest.MonkeyPatch,
) -> None:
    chat = await _bot(conversation)
    assert (await say(chat, PAUL, "/help")).of("setMyCommands")  # his provider's menu, recorded
    # The next release adds a provider's command; Paul's recorded menu is now out of date.
    monkeypatch.setitem(menus.BY_ROLE, Role.PROVIDER,
                        (*menus.BY_ROLE[Role.PROVIDER], ("holiday", "plan time off")))
    menus.menu_key.cache_clear()
    chat = await chat.restart()
    [menu] = (await say(chat, PAUL, "/help")).of("setMyCommands")
    assert "holiday" in [c["command"] for c in menu.params["commands"]]
    menus.menu_key.cache_clear()


async def test_a_french_requester_and_provider_see_french_throughout(
    conversation: StartConversation,
) -> None:
    chat = await _bot(conversation)
    marie = 3001
    PEOPLE[marie] = ("Marie", "fr")
    french = {"done": "Terminé", "urgent": "Urgent : dès que possible",
              "not_urgent": "Pas urgent", "send": "Envoyer la demande"}
    try:
        first = (await say(chat, marie, "/new")).messages[-1]
        assert first["text"].startswith("De quoi avez-vous besoin")
        request_id = await open_request(chat, marie, service="Électricité", area="Nord",
                                        language="fr", labels=french)
        sent = await _requests(chat).get(request_id)
        assert sent.matching_tier == "exact"  # Fatou does electrical work in the north

        [offer] = [m for m in _to(await chat.deliver(), FATOU) if buttons(m)]
        assert "Électricité" in offer["text"] and "Nord" in offer["text"]
        accept = list(buttons(offer).values())[0]
        replies = await chat.press(FATOU, accept, message_id=offer["message_id"])
        assert replies.answer["text"] == "L'intervention est pour vous."
        job = replies.message("Vous avez accepté cette intervention.")
        assert "Adresse : 12 Rue Haute" in job["text"] and "État : " in job["text"]
        assert {"Commencer le travail", "Message"} <= set(buttons(job))
        [told] = [m for m in _to(await chat.deliver(), marie) if "Fatou" in m["text"]]
        assert "va s'occuper de votre demande" in told["text"]
        job = (await _press(chat, FATOU, job, "Commencer le travail")).messages[-1]
        assert "Enregistrer les pièces utilisées" in buttons(job)

        (await _press(chat, FATOU, job, "Message")).message("Envoyez votre message")
        (await say(chat, FATOU, "J'arrive à 18h")).message("Envoyé.")
        delivered = _to(await chat.deliver(), marie)
        assert any("J'arrive à 18h" in m["text"] for m in delivered)
        assert not any("will take care" in m["text"] or "has started" in m["text"]
                       for m in delivered)
        status = (await say(chat, marie, "/status")).message("Vos demandes")
        assert f"n°{request_id} Électricité, Nord" in status["text"]
        assert "(Fatou Prestataire s'en occupe)" in status["text"]
        help_text = (await say(chat, FATOU, "/help")).message("Voici ce que je sais faire")
        assert "En tant que prestataire :" in help_text["text"]
    finally:
        del PEOPLE[marie]


async def test_a_declined_offer_goes_to_the_next_candidate(
    conversation: StartConversation,
) -> None:
    chat = await _bot(conversation, offer_candidates=1)
    request_id = await open_request(chat, service="Electrical", area="Centre")
    [first] = [m for m in Replies(await chat.deliver()).messages if buttons(m)]
    assert first["chat"]["id"] == FATOU
    decline = list(buttons(first).values())[1]
    assert decline.startswith("ofa:d:")
    replies = await chat.press(FATOU, decline, message_id=first["message_id"])
    assert "Vous avez refusé l'offre" in replies.messages[-1]["text"]
    [second] = [m for m in Replies(await chat.deliver()).messages if buttons(m)]
    assert second["chat"]["id"] == SAM
    assert (await _requests(chat).get(request_id)).state is State.OFFERED
