"""The service desk over WhatsApp, end to end on both engines: signed webhooks from a customer
the bot does not know, processed by the production inbound worker (the desk, then the relay),
answered through the outbox and the real WhatsApp channel to the fake Graph API (lists and reply
buttons as Meta takes them), requests opened in the same workflow as Telegram's /new, their
notifications reaching the customer on WhatsApp, ordinary text relayed to the operators' chat
on the fake Bot API. Time moves with the test clock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiogram import Bot
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from bot.app import build_bot, workflow_config
from bot.delivery import Delivery, build_delivery
from bot.webhooks import WHATSAPP_PATH, register_webhooks
from database.models import Notification, Role, User
from handlers.buttons import pack_action
from services.demo import Demo
from services.whatsapp_desk import WhatsAppDesk
from services.whatsapp_inbound import InboundWorker
from services.workflow import RequestView, ServiceRequests, State
from services.workflow.views import Viewer
from tests.conversations.conftest import StartConversation
from tests.conversations.harness import Conversation
from tests.fakes.whatsapp import DEFAULT_PHONE_NUMBER_ID, DEFAULT_TOKEN, FakeWhatsApp, SentMessage
from tests.fakes.whatsapp import inbound_message as wa_message

APP_SECRET = "wa-app-secret"
OPS = -1_001_234_567_890  # the operators' supergroup
ANN = "33612345678"  # a WhatsApp customer the bot does not know yet
AMELIE = "33655554444"  # another one, who writes in French
PAUL = 1002  # demo provider: plumbing in the centre
T0 = 1_767_225_600  # 2026-01-01 00:00 UTC: the FakeClock's start


@dataclass
class Desk:
    chat: Conversation
    wa: FakeWhatsApp
    delivery: Delivery
    sender_bot: Bot
    client: TestClient
    at: int = T0

    @property
    def requests(self) -> ServiceRequests:
        service: ServiceRequests = self.chat.dp["service_requests"]
        return service

    async def write(self, phone: str, kind: str = "text", *, name: str = "Ann Lee",
                    **fields: Any) -> list[SentMessage]:
        """The customer sends one message; returns what the fake Graph API received since."""
        seen = len(self.wa.sent)
        self.at += 1
        self.chat.clock.advance(1)
        message = wa_message(kind, phone, timestamp=self.at, **fields)
        body = json.dumps(self.wa.make_inbound_webhook([message], names={phone: name})).encode()
        async with self.client.post(
            WHATSAPP_PATH, data=body,
            headers={"Content-Type": "application/json",
                     "X-Hub-Signature-256": self.wa.sign(body, APP_SECRET)},
        ) as response:
            assert response.status == 200
        await self.settle()
        return self.wa.sent[seen:]

    async def say(self, phone: str, text: str, **kwargs: Any) -> SentMessage:
        """The customer writes `text`; the desk's one answer."""
        [answer] = await self.write(phone, text=text, **kwargs)
        return answer

    async def tap(self, phone: str, offered: SentMessage, title: str) -> SentMessage:
        """The customer taps the row or button titled `title` of an interactive message."""
        options = choices(offered)
        assert title in options, f"no {title!r} in {list(options)}"
        reply_type = "list_reply" if offered.body["interactive"]["type"] == "list" else \
            "button_reply"
        [answer] = await self.write(phone, "interactive", reply_type=reply_type,
                                    reply_id=options[title], title=title)
        return answer

    async def settle(self) -> None:
        """Process what the webhook stored, then send everything that is due."""
        for _ in range(100):
            await self.delivery.inbound.drain()
            while await self.delivery.dispatcher.run_once():
                pass
            async with self.chat.db.transaction() as session:
                waiting = await session.scalar(select(Notification.id).where(
                    Notification.status.in_(("pending", "sending"))).limit(1))
            if waiting is None:
                return
            self.chat.clock.advance(3.2)  # the operators' group pace
        raise AssertionError("still sending")

    def relayed(self) -> list[str]:
        return [str(m.get("text") or m.get("caption") or "")
                for m in self.chat.fake.sent_messages(OPS)]

    async def customer(self, phone: str) -> User:
        async with self.chat.db.transaction() as session:
            user = await session.scalar(select(User).where(User.phone == f"+{phone}"))
        assert user is not None
        return user

    async def requests_of(self, phone: str) -> list[RequestView]:
        return await self.requests.list_for_requester((await self.customer(phone)).id)


def choices(sent: SentMessage) -> dict[str, str]:
    """The titles of an interactive message's rows or buttons -> their ids."""
    assert sent.body["type"] == "interactive", sent.body
    action = sent.body["interactive"]["action"]
    found = {b["reply"]["title"]: b["reply"]["id"] for b in action.get("buttons", ())}
    for section in action.get("sections", ()):
        found.update({row["title"]: row["id"] for row in section["rows"]})
    return found


def said(sent: SentMessage) -> str:
    """The words of a message the customer received."""
    if sent.body["type"] == "interactive":
        return str(sent.body["interactive"]["body"]["text"])
    assert sent.body["type"] == "text", sent.body
    return str(sent.body["text"]["body"])


@pytest.fixture
async def desk(conversation: StartConversation) -> AsyncIterator[Desk]:
    async with FakeWhatsApp() as wa:
        chat = await conversation(
            operators_chat_id=OPS, admin_ids=[9001],
            whatsapp_token=DEFAULT_TOKEN, whatsapp_phone_number_ids=(DEFAULT_PHONE_NUMBER_ID,),
            whatsapp_app_secret=APP_SECRET, whatsapp_verify_token="verify",
            whatsapp_api_base=wa.base_url, whatsapp_recipient_interval_seconds=0,
            dispatcher_lease_seconds=1, send_retry_wait_seconds=0,
        )
        await Demo(chat.db, chat.clock).seed(admin_ids=[9001], default_language="en")
        # The delivery engine as `python main.py run` builds it, on a Bot of its own.
        sender_bot = build_bot(chat.settings)
        delivery = build_delivery(chat.settings, chat.db, sender_bot, chat.clock,
                                  public_base_url="http://127.0.0.1", pack_action=pack_action,
                                  relay=chat.dp["relay"], workflow=workflow_config(chat.settings))
        app = web.Application()
        register_webhooks(app, db=chat.db, clock=chat.clock, whatsapp_app_secret=APP_SECRET,
                          whatsapp_verify_token="verify", twilio_auth_token=None,
                          public_base_url="http://127.0.0.1", on_inbound=delivery.inbound.wake)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            yield Desk(chat, wa, delivery, sender_bot, client)
        finally:
            await client.close()
            await delivery.stop(0)
            await chat.dp["relay"].close()
            await sender_bot.session.close()


async def open_over_whatsapp(desk: Desk, phone: str, *, new: str = "new",
                             words: dict[str, str] | None = None) -> SentMessage:
    """The whole exchange, tapping what the bot offers; returns the bot's last answer."""
    words = words or {"service": "Plumbing", "area": "Centre", "urgent": "Not urgent",
                      "send": "Send request"}
    services = await desk.say(phone, new)
    areas = await desk.tap(phone, services, words["service"])
    address = await desk.tap(phone, areas, words["area"])
    assert address.body["type"] == "text"
    await desk.say(phone, "12 Rue Haute")
    urgency = await desk.say(phone, "Leaking pipe under sink")
    summary = await desk.tap(phone, urgency, words["urgent"])
    return await desk.tap(phone, summary, words["send"])


async def test_new_over_whatsapp_opens_a_request_that_status_lists_and_its_news_arrive(
    desk: Desk,
) -> None:
    services = await desk.say(ANN, "new")
    assert services.to == ANN and services.phone_number_id == DEFAULT_PHONE_NUMBER_ID
    assert services.body["interactive"]["type"] == "list"
    assert "What do you need?" in said(services)
    assert list(choices(services)) == ["Plumbing", "Electrical", "Heating"]
    areas = await desk.tap(ANN, services, "Plumbing")
    assert said(areas) == "Which area is it in?"
    assert list(choices(areas)) == ["North", "Centre", "South"]
    address = await desk.tap(ANN, areas, "Centre")
    assert said(address) == "What is the address where the work is needed?"
    description = await desk.say(ANN, "12 Rue Haute")
    assert "Describe the problem" in said(description)
    urgency = await desk.say(ANN, "Leaking pipe under sink")
    assert said(urgency) == "Is it urgent?"
    assert list(choices(urgency)) == ["Urgent", "Not urgent"]
    summary = await desk.tap(ANN, urgency, "Not urgent")
    for line in ("Please check your request:", "Service: Plumbing", "Area: Centre",
                 "Address: 12 Rue Haute", "Description: Leaking pipe under sink",
                 "Not urgent"):
        assert line in said(summary)
    sent = await desk.tap(ANN, summary, "Send request")

    [request] = await desk.requests_of(ANN)
    assert said(sent) == (f"Your request #{request.id} is sent. I am asking providers and will "
                          "tell you as soon as one accepts.")
    assert (request.service_type.code, request.area.code) == ("plumbing", "centre")
    assert (request.address, request.description, request.urgent) == (
        "12 Rue Haute", "Leaking pipe under sink", False)
    assert request.state is State.OFFERED
    assert request.requester_name == "Ann Lee"
    # The exchange with the desk is not the operators' business.
    assert desk.relayed() == []

    status = await desk.say(ANN, "Status")
    assert said(status) == (f"Your requests\n#{request.id} Plumbing, Centre: offered to "
                            "providers")

    # The provider accepts on Telegram: the customer, who has no Telegram, hears it on WhatsApp.
    async with desk.chat.db.transaction() as session:
        paul = await session.scalar(select(User).where(User.telegram_id == PAUL))
    assert paul is not None
    provider = Viewer(paul.id, frozenset(Role(r) for r in paul.roles.split(",")))
    [offer] = [o for o in await desk.requests.pending_offers(provider)
               if o.request.id == request.id]
    await desk.requests.accept_offer(offer.id, provider)
    seen = len(desk.wa.sent)
    await desk.settle()
    [news] = desk.wa.sent[seen:]
    assert news.to == ANN and news.body["type"] == "text"
    assert said(news).startswith(
        f"Paul Provider will take care of your request #{request.id} (Plumbing).")
    assert (await desk.requests_of(ANN))[0].state is State.ASSIGNED

    # Anything else goes to the operators, once, and the desk says nothing.
    assert await desk.write(ANN, text="Is the plumber coming today?") == []
    relayed = desk.relayed()
    assert len(relayed) == 1 and "Is the plumber coming today?" in relayed[0]


async def test_a_french_customer_is_answered_in_french(desk: Desk) -> None:
    # Their first words tell their language; it is kept on their record, and relayed.
    assert await desk.write(AMELIE, text="Bonjour, j'ai une fuite", name="Amélie") == []
    assert (await desk.customer(AMELIE)).language == "fr"
    assert "Bonjour, j'ai une fuite" in desk.relayed()[0]

    menu = await desk.say(AMELIE, "menu")
    assert said(menu).startswith("Bonjour !")
    services = await desk.tap(AMELIE, menu, "Nouvelle demande")
    assert said(services).startswith("De quoi avez-vous besoin ?")
    assert list(choices(services)) == ["Plomberie", "Électricité", "Chauffage"]
    areas = await desk.tap(AMELIE, services, "Plomberie")
    assert said(areas) == "Dans quel secteur ?"
    await desk.tap(AMELIE, areas, "Centre")
    await desk.say(AMELIE, "3 place du Marché")
    urgency = await desk.say(AMELIE, "-")
    summary = await desk.tap(AMELIE, urgency, "Urgent")
    assert "Vérifiez votre demande :" in said(summary)
    assert "Service : Plomberie" in said(summary) and "Description : -" in said(summary)
    sent = await desk.tap(AMELIE, summary, "Envoyer la demande")
    [request] = await desk.requests_of(AMELIE)
    assert said(sent).startswith(f"Votre demande n°{request.id} est envoyée.")
    assert request.urgent and request.description == ""
    status = await desk.say(AMELIE, "statut")
    assert said(status).startswith(f"Vos demandes\nn°{request.id} Plomberie, Centre : ")
    # Only her first message went to the operators.
    assert len(desk.relayed()) == 1


async def test_typed_answers_work_and_cancel_abandons_the_exchange(desk: Desk) -> None:
    services = await desk.say(ANN, "New")
    # A number, or a name, does what a tap does; something else asks again.
    again = await desk.say(ANN, "a bicycle")
    assert said(again).startswith("Please choose one of the options.")
    assert choices(again) == choices(services)
    areas = await desk.say(ANN, "1")
    assert said(areas) == "Which area is it in?"
    assert said(await desk.say(ANN, "north")).startswith("What is the address")
    cancelled = await desk.say(ANN, "cancel")
    assert said(cancelled) == "Cancelled: nothing was changed."
    assert await desk.requests_of(ANN) == []
    # The exchange is over: the next words are the operators' again.
    assert await desk.write(ANN, text="12 Rue Haute") == []
    assert len(desk.relayed()) == 1 and "12 Rue Haute" in desk.relayed()[0]
    # Nothing opened yet: "status" says how to start.
    assert said(await desk.say(ANN, "status")) == (
        'You have no requests yet. Send "new" to open one.')


async def test_the_exchange_survives_a_restart_and_stop_ends_it(desk: Desk) -> None:
    await desk.say(ANN, "new")
    await desk.say(ANN, "Plumbing")
    # Another worker (a restarted process) picks up where the conversation was.
    desk.delivery.inbound = InboundWorker(
        desk.chat.db, desk.chat.clock, owner="restarted",
        processors=[WhatsAppDesk(desk.delivery.alerts).process, desk.chat.dp["relay"].process])
    assert said(await desk.say(ANN, "South")).startswith("What is the address")
    # STOP: honoured, relayed as before, and the exchange is forgotten.
    assert await desk.write(ANN, text="STOP") == []
    assert "whatsapp" in (await desk.customer(ANN)).opt_outs
    assert await desk.write(ANN, text="START") == []
    assert await desk.write(ANN, text="1 Main Street") == []
    assert [t.split("\n")[-1] for t in desk.relayed()][-3:] == ["STOP", "START", "1 Main Street"]


async def test_an_exchange_left_for_a_day_is_forgotten(desk: Desk) -> None:
    await desk.say(ANN, "new")
    await desk.say(ANN, "Plumbing")
    desk.chat.clock.advance(hours=25)
    desk.at += 25 * 3600
    # Starting again the next day starts afresh ...
    services = await desk.say(ANN, "new")
    assert list(choices(services)) == ["Plumbing", "Electrical", "Heating"]
    assert said(await desk.say(ANN, "Heating")) == "Which area is it in?"
    desk.chat.clock.advance(hours=25)
    desk.at += 25 * 3600
    # ... and an answer that comes too late is not one any more: the operators read it.
    assert await desk.write(ANN, text="North") == []
    assert "North" in desk.relayed()[-1]
