"""/dashboard through the production Dispatcher and the fake Bot API: an admin gets a one-time
sign-in link in the answer itself, link preview off, in their language, and the link signs
them in to the web app; anyone else is refused by the admin guard and no link exists."""

from __future__ import annotations

import re

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from bot.i18n import build_i18n
from bot.web import build_web_app
from database.models import DashboardLoginToken
from handlers.dashboard import setup_dashboard
from tests.conversations.conftest import StartConversation

ADMIN = 9000
ANN = 1001
BASE = "https://desk.example.com"
LINK = re.compile(re.escape(BASE) + r"/admin/login/([A-Za-z0-9_-]{43})")


async def test_an_admin_gets_a_link_that_signs_in_once(conversation: StartConversation) -> None:
    chat = await conversation(admin_ids=[ADMIN], public_base_url=BASE)
    replies = await chat.send(ADMIN, "/dashboard")
    sent = replies.of("sendMessage")
    assert len(sent) == 1 and not replies.of("editMessageText")
    params = sent[0].params
    assert params["link_preview_options"] == {"is_disabled": True}
    text = sent[0].result["text"]
    assert "It works once, within 10 minutes" in text, text
    token = LINK.search(text)
    assert token, text

    # The link, opened in the web app those services serve (bot/app.py wires it the same way).
    web_app = build_web_app(chat.db, clock=chat.clock)
    setup_dashboard(web_app, chat.dp.workflow_data, i18n=build_i18n("en"), timezone="UTC",
                    public_base_url=BASE, session_hours=12)
    async with TestClient(TestServer(web_app)) as client:
        path = f"/admin/login/{token.group(1)}"
        async with client.get(path) as page:
            assert page.status == 200
        async with client.post(path, allow_redirects=False) as signed:
            assert signed.status == 303 and signed.headers["Location"] == "/admin/"
        async with client.post(path, allow_redirects=False) as again:
            assert again.status == 410


async def test_the_link_comes_in_the_admins_language(conversation: StartConversation) -> None:
    chat = await conversation(admin_ids=[ADMIN], public_base_url=BASE)
    replies = await chat.send(ADMIN, "/dashboard", language_code="fr")
    text = replies.of("sendMessage")[0].result["text"]
    assert "Il fonctionne une fois, dans les 10 minutes" in text, text
    assert LINK.search(text)


async def test_anyone_else_is_refused_and_gets_no_link(conversation: StartConversation) -> None:
    chat = await conversation(admin_ids=[ADMIN], public_base_url=BASE)
    replies = await chat.send(ANN, "/dashboard")
    assert replies.texts == ["Only admins can do this."]
    tokens = await chat.db.read(
        lambda s: s.scalar(select(func.count()).select_from(DashboardLoginToken)))
    assert tokens == 0


async def test_in_a_group_chat_no_link_is_posted(conversation: StartConversation) -> None:
    """The operators' chat, say: a link there would sign in whoever opened it as the admin."""
    chat = await conversation(admin_ids=[ADMIN], public_base_url=BASE)
    replies = await chat.send(ADMIN, "/dashboard", chat_id=-100777)
    [sent] = replies.of("sendMessage")
    assert sent.params["chat_id"] == -100777
    assert "private chat" in sent.result["text"] and not LINK.search(sent.result["text"])
    assert await chat.db.run(
        lambda s: s.scalar(select(func.count()).select_from(DashboardLoginToken))) == 0
