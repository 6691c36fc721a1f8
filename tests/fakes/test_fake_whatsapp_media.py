"""The fake Graph API's media, phone-number probe, HTTP control interface and inbound payload
builder (issue 11), talked to with a plain aiohttp client as the bot does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.whatsapp import (
    DEFAULT_API_VERSION,
    DEFAULT_TOKEN,
    INBOUND_TYPES,
    FakeWhatsApp,
    inbound_message,
    sign,
)

AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeWhatsApp]:
    async with FakeWhatsApp(phone_number_ids=("100100", "100200")) as started:
        yield started


async def call(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as r:
        body = await r.read()
        try:
            return r.status, json.loads(body)
        except ValueError:
            return r.status, body


def graph(fake: FakeWhatsApp, path: str) -> str:
    return f"{fake.base_url}/{DEFAULT_API_VERSION}/{path}"


async def test_media_metadata_then_download_with_the_bearer_before_the_url_expires(
    fake: FakeWhatsApp,
) -> None:
    media_id = fake.add_media(b"\xff\xd8jpeg-bytes", "image/jpeg")
    status, meta = await call("GET", graph(fake, media_id), headers=AUTH)
    assert status == 200
    assert (meta["id"], meta["mime_type"], meta["file_size"]) == (media_id, "image/jpeg", "12")
    assert (await call("GET", meta["url"]))[0] == 401  # no bearer: refused
    assert await call("GET", meta["url"], headers=AUTH) == (200, b"\xff\xd8jpeg-bytes")

    fake.media_url_ttl = 0
    fake.file_size_as_string = False
    status, meta = await call("GET", graph(fake, media_id), headers=AUTH)
    assert meta["file_size"] == 12
    assert (await call("GET", meta["url"], headers=AUTH))[0] == 404  # expired
    assert fake.downloads == [media_id]

    status, body = await call("GET", graph(fake, "999"), headers=AUTH)
    assert (status, body["error"]["code"], body["error"]["error_subcode"]) == (400, 100, 33)
    assert (await call("GET", graph(fake, media_id)))[1]["error"]["code"] == 190


async def test_media_upload_checks_the_form_type_and_size(fake: FakeWhatsApp) -> None:
    form = aiohttp.FormData()
    form.add_field("messaging_product", "whatsapp")
    form.add_field("type", "image/png")
    form.add_field("file", b"png-bytes", filename="a.png", content_type="image/png")
    status, body = await call("POST", graph(fake, "100100/media"), data=form, headers=AUTH)
    assert status == 200 and fake.media[body["id"]].data == b"png-bytes"

    bad = aiohttp.FormData()
    bad.add_field("messaging_product", "whatsapp")
    bad.add_field("file", b"x" * 10, filename="a.exe", content_type="application/x-msdownload")
    assert (await call("POST", graph(fake, "100100/media"), data=bad, headers=AUTH))[0] == 400
    big = aiohttp.FormData()
    big.add_field("messaging_product", "whatsapp")
    big.add_field("file", b"x" * (500 * 1024 + 1), filename="s.webp", content_type="image/webp")
    assert (await call("POST", graph(fake, "100100/media"), data=big, headers=AUTH))[0] == 400
    no_product = aiohttp.FormData()
    no_product.add_field("file", b"x", filename="a.png", content_type="image/png")
    assert (await call("POST", graph(fake, "100100/media"), data=no_product,
                       headers=AUTH))[0] == 400


async def test_a_broken_number_refuses_sends_and_its_probe_says_so(fake: FakeWhatsApp) -> None:
    fake.break_number("100100", 133010)
    send = {"messaging_product": "whatsapp", "to": "15551234567", "type": "text",
            "text": {"body": "hi"}}
    status, body = await call("POST", fake.messages_url("100100"), json=send, headers=AUTH)
    assert (status, body["error"]["code"]) == (400, 133010)
    assert (await call("POST", fake.messages_url("100200"), json=send, headers=AUTH))[0] == 200
    status, node = await call("GET", graph(fake, "100100"),
                              params={"fields": "status,health_status"}, headers=AUTH)
    assert (node["status"], node["health_status"]["can_send_message"]) == (
        "DISCONNECTED", "BLOCKED")
    fake.heal_number("100100")
    node = (await call("GET", graph(fake, "100100"), headers=AUTH))[1]
    assert (node["status"], node["health_status"]["can_send_message"]) == (
        "CONNECTED", "AVAILABLE")
    assert fake.probes == ["100100", "100100"]


async def test_the_http_control_interface_scripts_faults_and_delivers_signed_webhooks(
    fake: FakeWhatsApp,
) -> None:
    received: list[tuple[bytes, str]] = []

    async def webhook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers["X-Hub-Signature-256"]))
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/hook", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        status, answer = await call("POST", f"{fake.base_url}/_control/webhook", json={
            "url": f"http://{host}:{port}/hook", "app_secret": "s", "from": "33612345678",
            "type": "text", "text": "STOP", "name": "Ann"})
        assert (status, answer["status"]) == (200, 200)
        body, signature = received[0]
        assert signature == sign(body, "s")
        value = json.loads(body)["entry"][0]["changes"][0]["value"]
        assert value["messages"][0]["text"] == {"body": "STOP"}
        assert value["contacts"] == [{"profile": {"name": "Ann"}, "wa_id": "33612345678"}]
    finally:
        await runner.cleanup()

    await call("POST", f"{fake.base_url}/_control/fail_next", json={"code": 131031})
    await call("POST", f"{fake.base_url}/_control/number",
               json={"phone_number_id": "100200", "broken_code": 131031})
    send = {"messaging_product": "whatsapp", "to": "15551234567", "type": "text",
            "text": {"body": "hi"}}
    assert (await call("POST", fake.messages_url("100100"), json=send,
                       headers=AUTH))[1]["error"]["code"] == 131031
    assert (await call("POST", fake.messages_url("100200"), json=send,
                       headers=AUTH))[1]["error"]["code"] == 131031
    await call("POST", f"{fake.base_url}/_control/reset")
    assert (await call("POST", fake.messages_url("100200"), json=send, headers=AUTH))[0] == 200
    sent = (await call("GET", f"{fake.base_url}/_control/sent"))[1]
    assert [m["phone_number_id"] for m in sent] == ["100200"]
    media = (await call("POST", f"{fake.base_url}/_control/media",
                        json={"data_base64": "aGVsbG8=", "mime_type": "audio/ogg"}))[1]
    assert fake.media[media["id"]].data == b"hello"


def test_the_builder_makes_every_type_and_refuses_shapes_meta_never_sends() -> None:
    for kind in INBOUND_TYPES:
        fields: dict[str, Any] = {"text": "hi"} if kind == "text" else {}
        if kind == "location":
            fields = {"latitude": 1.5, "longitude": 2.5}
        if kind == "reaction":
            fields = {"message_id": "wamid.X"}
        message = inbound_message(kind, "33612345678", **fields)
        assert message["type"] == kind and message["id"].startswith("wamid.")
    for kind, fields in [
        ("audio", {"caption": "no captions on audio"}),
        ("sticker", {"caption": "nor on stickers"}),
        ("image", {"mime_type": "image/gif"}),
        ("text", {"text": "x" * 4097}),
        ("text", {"text": ""}),
        ("location", {"latitude": 91, "longitude": 0}),
        ("interactive", {"title": "a title far too long for a button"}),
        ("reaction", {}),
        ("story", {}),
        ("text", {"text": "hi", "unknown_field": 1}),
    ]:
        with pytest.raises(ValueError):
            inbound_message(kind, "33612345678", **fields)
    with pytest.raises(ValueError):
        inbound_message("text", "+33612345678", text="the + is never in Meta's from")
