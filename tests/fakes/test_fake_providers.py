"""Tests for the fake WhatsApp Cloud API and Twilio servers.

They talk to the fakes with a plain aiohttp client, the way the bot does, and
check the wire shapes, the error codes with their HTTP statuses, the scripting
controls, pacing, and the signatures of what the fakes send to the bot.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.twilio import DEFAULT_ACCOUNT_SID, FakeTwilio, count_segments, twilio_signature
from tests.fakes.whatsapp import FakeWhatsApp, sign

REPO_ROOT = Path(__file__).resolve().parents[2]
WA_TOKEN = "wa-test-token"
TW_AUTH = aiohttp.encode_basic_auth(DEFAULT_ACCOUNT_SID, "twilio-test-token")


def text_message(to: str = "15551234567", body: str = "hello") -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"preview_url": False, "body": body},
    }


async def post_wa(
    fake: FakeWhatsApp,
    payload: Any,
    *,
    token: str | None = WA_TOKEN,
    phone_number_id: str | None = None,
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers["Content-Type"] = "application/json"
    async with (
        aiohttp.ClientSession() as session,
        session.post(fake.messages_url(phone_number_id), data=data, headers=headers) as response,
    ):
        return response.status, await response.json()


async def post_sms(
    fake: FakeTwilio,
    form: dict[str, str] | list[tuple[str, str]],
    *,
    auth: str | None = TW_AUTH,
    url: str | None = None,
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": auth} if auth is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url or fake.messages_url, data=form, headers=headers) as response,
    ):
        return response.status, await response.json()


def sms_form(**overrides: str) -> dict[str, str]:
    form = {"To": "+15558675310", "From": "+15005550006", "Body": "Your request is ready"}
    form.update(overrides)
    return form


@asynccontextmanager
async def receiver(answer_status: int = 200) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A tiny server standing in for the bot; yields (url, received requests)."""
    received: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(
            {
                "headers": dict(request.headers),
                "raw": await request.read(),
                "form": dict(await request.post()),
            }
        )
        return web.Response(status=answer_status, text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/hook", received
    finally:
        await runner.cleanup()


def assert_graph_error(body: dict[str, Any], code: int) -> dict[str, Any]:
    error = body["error"]
    assert error["code"] == code
    assert error["type"] in ("OAuthException", "GraphMethodException")
    assert isinstance(error["message"], str) and error["message"]
    assert error["fbtrace_id"]
    return error


# --------------------------------------------------------------- WhatsApp


@pytest.mark.asyncio
async def test_text_send_answers_wamid_and_records_the_message() -> None:
    async with FakeWhatsApp() as fake:
        status, body = await post_wa(fake, text_message())

        assert status == 200
        assert body["messaging_product"] == "whatsapp"
        assert body["contacts"] == [{"input": "15551234567", "wa_id": "15551234567"}]
        wamid = body["messages"][0]["id"]
        assert wamid.startswith("wamid.")
        [sent] = fake.sent
        assert (sent.phone_number_id, sent.to, sent.type, sent.wamid) == (
            "100100",
            "15551234567",
            "text",
            wamid,
        )
        assert sent.body["text"]["body"] == "hello"
        assert [r.status for r in fake.requests] == [200]


@pytest.mark.asyncio
async def test_each_send_gets_a_unique_wamid() -> None:
    async with FakeWhatsApp() as fake:
        for _ in range(5):
            await post_wa(fake, text_message())
        assert len({m.wamid for m in fake.sent}) == 5


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("message_type", "content"),
    [
        (
            "template",
            {
                "name": "order_update",
                "language": {"code": "en_US", "policy": "deterministic"},
                "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ann"}]}],
            },
        ),
        ("template", {"name": "hello_world", "language": {"code": "en_US"}}),
        ("image", {"link": "https://example.com/a.jpg", "caption": "A"}),
        ("document", {"id": "1234567890", "caption": "Invoice"}),
        ("audio", {"id": "1234567890"}),
        ("video", {"link": "https://example.com/a.mp4"}),
        ("sticker", {"id": "1234567890"}),
        (
            "interactive",
            {
                "type": "button",
                "body": {"text": "Confirm?"},
                "action": {"buttons": [{"type": "reply", "reply": {"id": "y", "title": "Yes"}}]},
            },
        ),
    ],
)
async def test_supported_message_types_are_accepted(
    message_type: str, content: dict[str, Any]
) -> None:
    async with FakeWhatsApp() as fake:
        payload = {
            "messaging_product": "whatsapp",
            "to": "15551234567",
            "type": message_type,
            message_type: content,
        }
        status, body = await post_wa(fake, payload)
        assert status == 200, body
        assert fake.sent[0].type == message_type


@pytest.mark.asyncio
async def test_mark_as_read_answers_success() -> None:
    async with FakeWhatsApp() as fake:
        payload = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X"}
        status, body = await post_wa(fake, payload)
        assert (status, body) == (200, {"success": True})
        assert fake.read_receipts == ["wamid.X"]
        assert fake.sent == []


@pytest.mark.asyncio
@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_missing_or_wrong_token_is_190_with_401(token: str | None) -> None:
    async with FakeWhatsApp() as fake:
        status, body = await post_wa(fake, text_message(), token=token)
        assert status == 401
        error = assert_graph_error(body, 190)
        assert error["type"] == "OAuthException"
        assert fake.sent == []


@pytest.mark.asyncio
async def test_unknown_phone_number_id_is_graph_method_exception() -> None:
    async with FakeWhatsApp() as fake:
        status, body = await post_wa(fake, text_message(), phone_number_id="999999")
        assert status == 400
        error = assert_graph_error(body, 100)
        assert error["type"] == "GraphMethodException"
        assert error["error_subcode"] == 33
        assert "'999999' does not exist" in error["message"]


@pytest.mark.asyncio
async def test_second_phone_number_id_is_served() -> None:
    async with FakeWhatsApp(phone_number_ids=("100100", "200200")) as fake:
        status, _ = await post_wa(fake, text_message(), phone_number_id="200200")
        assert status == 200
        assert fake.sent[0].phone_number_id == "200200"


@pytest.mark.asyncio
async def test_wrong_api_version_is_refused() -> None:
    async with FakeWhatsApp(api_version="v23.0") as fake, aiohttp.ClientSession() as session:
        url = f"{fake.base_url}/v99.0/100100/messages"
        headers = {"Authorization": f"Bearer {WA_TOKEN}"}
        async with session.post(url, json=text_message(), headers=headers) as response:
            assert response.status == 400
            assert_graph_error(await response.json(), 2500)


def _without(key: str) -> dict[str, Any]:
    payload = text_message()
    del payload[key]
    return payload


def _with(**changes: Any) -> dict[str, Any]:
    payload = text_message()
    payload.update(changes)
    return payload


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        pytest.param(b"{not json", "JSON object", id="not-json"),
        pytest.param(b"[1, 2]", "JSON object", id="json-array"),
        pytest.param(_without("messaging_product"), "messaging_product", id="no-product"),
        pytest.param(_with(messaging_product="sms"), "messaging_product", id="wrong-product"),
        pytest.param(_without("to"), "to", id="no-to"),
        pytest.param(_with(to="+15551234567"), "digits only", id="plus-in-to"),
        pytest.param(_with(to="0033612345678"), "digits only", id="00-prefix"),
        pytest.param(_with(to="1555-123-4567"), "digits only", id="dashes"),
        pytest.param(_with(type="carrier_pigeon"), "Param type must be one of", id="bad-type"),
        pytest.param(_with(type="image"), "image", id="type-object-missing"),
        pytest.param(_with(text={"preview_url": False}), "text['body']", id="no-text-body"),
        pytest.param(_with(text={"body": "x" * 4097}), "at most 4096", id="text-too-long"),
        pytest.param(
            _with(text={"body": "hi", "previewUrl": True}), "Unexpected key", id="text-bad-key"
        ),
        pytest.param(_with(priority="high"), 'Unexpected key "priority"', id="unknown-field"),
        pytest.param(
            _with(type="template", template={"language": {"code": "en_US"}}),
            "template['name']",
            id="template-no-name",
        ),
        pytest.param(
            _with(type="template", template={"name": "t", "language": {}}),
            "template['language']['code']",
            id="template-no-language-code",
        ),
        pytest.param(
            _with(type="image", image={"caption": "no link"}),
            "image['link'] or image['id']",
            id="media-no-link-or-id",
        ),
        pytest.param(
            _with(type="interactive", interactive={"type": "button"}),
            "interactive['action']",
            id="interactive-no-action",
        ),
        pytest.param(
            {"messaging_product": "whatsapp", "status": "read"},
            "message_id",
            id="read-no-message-id",
        ),
    ],
)
async def test_invalid_requests_are_code_100_with_400(payload: Any, fragment: str) -> None:
    async with FakeWhatsApp() as fake:
        status, body = await post_wa(fake, payload)
        assert status == 400
        error = assert_graph_error(body, 100)
        assert error["error_data"]["messaging_product"] == "whatsapp"
        assert fragment in error["message"] + " " + error["error_data"]["details"]
        assert fake.sent == []
        assert [r.status for r in fake.requests] == [400]


@pytest.mark.asyncio
async def test_text_of_exactly_4096_characters_is_accepted() -> None:
    async with FakeWhatsApp() as fake:
        status, _ = await post_wa(fake, text_message(body="x" * 4096))
        assert status == 200


@pytest.mark.asyncio
async def test_type_defaults_to_text() -> None:
    async with FakeWhatsApp() as fake:
        status, _ = await post_wa(fake, _without("type"))
        assert status == 200
        assert fake.sent[0].type == "text"


@pytest.mark.asyncio
async def test_fail_next_scripts_errors_for_count_sends_then_recovers() -> None:
    async with FakeWhatsApp() as fake:
        fake.fail_next(code=131047, count=2)
        results = [await post_wa(fake, text_message()) for _ in range(3)]

        assert [status for status, _ in results] == [400, 400, 200]
        error = assert_graph_error(results[0][1], 131047)
        assert error["message"] == "(#131047) Re-engagement message"
        assert "24 hours" in error["error_data"]["details"]
        assert len(fake.sent) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("code", "http_status"),
    [(130429, 429), (131000, 500), (131026, 400), (131050, 400), (368, 403), (190, 401)],
)
async def test_fail_next_uses_the_http_status_meta_uses(code: int, http_status: int) -> None:
    async with FakeWhatsApp() as fake:
        fake.fail_next(code=code)
        status, body = await post_wa(fake, text_message())
        assert status == http_status
        assert_graph_error(body, code)


@pytest.mark.asyncio
async def test_fail_next_accepts_explicit_status_message_and_filters() -> None:
    async with FakeWhatsApp(phone_number_ids=("100100", "200200")) as fake:
        fake.fail_next(code=131056, http_status=429, message="slow down", to="15550000001")
        fake.fail_next(code=131000, phone_number_id="200200")

        status_other, _ = await post_wa(fake, text_message(to="15550000002"))
        status_target, body = await post_wa(fake, text_message(to="15550000001"))
        status_primary, _ = await post_wa(fake, text_message(to="15550000003"))
        status_second, _ = await post_wa(fake, text_message(), phone_number_id="200200")

        assert status_other == 200
        assert status_target == 429
        assert body["error"]["message"] == "slow down"
        assert status_primary == 200
        assert status_second == 500


@pytest.mark.asyncio
async def test_failure_rate_answers_transient_code_2() -> None:
    async with FakeWhatsApp() as fake:
        fake.failure_rate = 1.0
        status, body = await post_wa(fake, text_message())
        assert status == 503
        error = assert_graph_error(body, 2)
        assert error["is_transient"] is True
        fake.failure_rate = 0.0
        assert (await post_wa(fake, text_message()))[0] == 200


@pytest.mark.asyncio
async def test_invalid_number_is_undeliverable_131026() -> None:
    async with FakeWhatsApp() as fake:
        fake.set_invalid_number("15550009999")
        status, body = await post_wa(fake, text_message(to="15550009999"))
        assert status == 400
        assert_graph_error(body, 131026)
        assert (await post_wa(fake, text_message(to="15550009998")))[0] == 200


@pytest.mark.asyncio
async def test_throughput_limit_answers_130429_when_enforced() -> None:
    async with FakeWhatsApp(per_sender_rate=3, enforce_limits=True) as fake:
        statuses = [(await post_wa(fake, text_message(to=f"1555000000{i}")))[0] for i in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        assert fake.count_rate_limited == 2
        assert_graph_error(fake.requests[3].response, 130429)


@pytest.mark.asyncio
async def test_limits_are_not_applied_unless_enforced() -> None:
    async with FakeWhatsApp(per_sender_rate=1, per_recipient_interval=5.0) as fake:
        statuses = [(await post_wa(fake, text_message()))[0] for _ in range(3)]
        assert statuses == [200, 200, 200]
        assert fake.count_rate_limited == 0


@pytest.mark.asyncio
async def test_pair_rate_limit_answers_131056_per_recipient() -> None:
    async with FakeWhatsApp(per_recipient_interval=0.2, enforce_limits=True) as fake:
        first, _ = await post_wa(fake, text_message(to="15550000001"))
        again, body = await post_wa(fake, text_message(to="15550000001"))
        other, _ = await post_wa(fake, text_message(to="15550000002"))
        await asyncio.sleep(0.25)
        later, _ = await post_wa(fake, text_message(to="15550000001"))

        assert (first, again, other, later) == (200, 400, 200, 200)
        assert_graph_error(body, 131056)
        assert fake.count_rate_limited == 1


@pytest.mark.asyncio
async def test_delay_slows_answers_enough_to_time_out_a_client() -> None:
    async with FakeWhatsApp() as fake:
        fake.delay = 0.3
        with pytest.raises(asyncio.TimeoutError):
            async with asyncio.timeout(0.05):
                await post_wa(fake, text_message())


@pytest.mark.asyncio
async def test_wait_for_sent_returns_matching_messages() -> None:
    async with FakeWhatsApp() as fake:

        async def send_later() -> None:
            await asyncio.sleep(0.05)
            await post_wa(fake, text_message(to="15550000001"))
            await post_wa(fake, text_message(to="15550000002"))

        task = asyncio.create_task(send_later())
        [message] = await fake.wait_for_sent(lambda m: m.to == "15550000002", timeout=2)
        await task
        assert message.to == "15550000002"

        with pytest.raises(TimeoutError):
            await fake.wait_for_sent(count=3, timeout=0.05)


def test_sign_matches_the_published_test_vector() -> None:
    expected = "0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914"
    assert sign(b"test", "secret") == f"sha256={expected}"
    assert FakeWhatsApp.sign(b"test", "secret") == f"sha256={expected}"


def test_message_webhook_has_metas_shape() -> None:
    fake = FakeWhatsApp(phone_number_ids=("100100",))
    payload = fake.make_message_webhook(
        "15551230000", "Hi there", wamid="wamid.IN1", name="Lee", timestamp=1694427240
    )
    assert payload["object"] == "whatsapp_business_account"
    [change] = payload["entry"][0]["changes"]
    assert change["field"] == "messages"
    value = change["value"]
    assert value["messaging_product"] == "whatsapp"
    assert value["metadata"]["phone_number_id"] == "100100"
    assert value["contacts"] == [{"profile": {"name": "Lee"}, "wa_id": "15551230000"}]
    assert value["messages"] == [
        {
            "from": "15551230000",
            "id": "wamid.IN1",
            "timestamp": "1694427240",
            "type": "text",
            "text": {"body": "Hi there"},
        }
    ]


def test_status_webhooks_carry_pricing_or_errors() -> None:
    fake = FakeWhatsApp()
    delivered = fake.make_status_webhook("wamid.A", "delivered", "15551230000")
    [status] = delivered["entry"][0]["changes"][0]["value"]["statuses"]
    assert (status["id"], status["status"], status["recipient_id"]) == (
        "wamid.A",
        "delivered",
        "15551230000",
    )
    assert status["pricing"]["pricing_model"] == "CBP"
    assert "errors" not in status

    failed = fake.make_status_webhook("wamid.B", "failed", "15551230000")
    [status] = failed["entry"][0]["changes"][0]["value"]["statuses"]
    [error] = status["errors"]
    assert error["code"] == 131026
    assert {"title", "message", "error_data"} <= set(error)

    custom = [{"code": 131047, "title": "Re-engagement message", "message": "x"}]
    failed = fake.make_status_webhook("wamid.C", "failed", "15551230000", errors=custom)
    assert failed["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"] == custom

    with pytest.raises(ValueError):
        fake.make_status_webhook("wamid.D", "lost", "15551230000")


@pytest.mark.asyncio
async def test_deliver_signs_the_raw_body_so_the_receiver_can_verify_it() -> None:
    fake = FakeWhatsApp()
    payload = fake.make_message_webhook("15551230000", "Bonjour ça va ?")
    async with receiver() as (url, received):
        status, text = await fake.deliver(url, payload, app_secret="app-secret")
        assert (status, text) == (200, "ok")

        [request] = received
        header = request["headers"]["X-Hub-Signature-256"]
        expected = hmac.new(b"app-secret", request["raw"], hashlib.sha256).hexdigest()
        assert hmac.compare_digest(header.removeprefix("sha256="), expected)
        assert json.loads(request["raw"]) == payload

        await fake.deliver(url, payload, app_secret="app-secret", signature="sha256=bad")
        await fake.deliver(url, payload, app_secret="app-secret", signature="")
        assert received[1]["headers"]["X-Hub-Signature-256"] == "sha256=bad"
        assert "X-Hub-Signature-256" not in received[2]["headers"]


@pytest.mark.asyncio
async def test_verify_webhook_sends_metas_subscribe_query() -> None:
    async def handle(request: web.Request) -> web.Response:
        query = request.query
        if query.get("hub.mode") == "subscribe" and query.get("hub.verify_token") == "vt":
            return web.Response(text=query["hub.challenge"])
        return web.Response(status=403)

    app = web.Application()
    app.router.add_get("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        url = f"http://{host}:{port}/hook"
        fake = FakeWhatsApp()
        assert await fake.verify_webhook(url, verify_token="vt", challenge="42") == (200, "42")
        assert (await fake.verify_webhook(url, verify_token="wrong"))[0] == 403
    finally:
        await runner.cleanup()


# ----------------------------------------------------------------- Twilio


def test_twilio_signature_matches_twilios_documented_example() -> None:
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_segments_follow_gsm7_and_ucs2_limits() -> None:
    assert count_segments("a" * 160) == 1
    assert count_segments("a" * 161) == 2
    assert count_segments("a" * 306) == 2
    assert count_segments("a" * 307) == 3
    assert count_segments("[" * 80) == 1  # extension characters take two septets
    assert count_segments("[" * 81) == 2
    assert count_segments("é" * 160) == 1  # é is in the GSM basic set
    assert count_segments("ê" * 70) == 1  # ê is not: UCS-2
    assert count_segments("ê" * 71) == 2


@pytest.mark.asyncio
async def test_sms_send_answers_201_with_the_message_resource() -> None:
    async with FakeTwilio() as fake:
        form = sms_form(StatusCallback="https://bot.example/webhooks/twilio/status")
        status, body = await post_sms(fake, form)

        assert status == 201
        assert re.fullmatch(r"SM[0-9a-f]{32}", body["sid"])
        assert body["status"] == "queued"
        assert (body["to"], body["from"], body["body"]) == (
            "+15558675310",
            "+15005550006",
            "Your request is ready",
        )
        assert body["account_sid"] == DEFAULT_ACCOUNT_SID
        assert body["num_segments"] == "1"
        assert body["direction"] == "outbound-api"
        assert body["error_code"] is None
        assert parsedate_to_datetime(body["date_created"]).utcoffset() is not None
        assert body["uri"].endswith(f"/Messages/{body['sid']}.json")

        [sms] = fake.sent
        assert (sms.to, sms.from_, sms.body, sms.sid) == (
            "+15558675310",
            "+15005550006",
            "Your request is ready",
            body["sid"],
        )
        assert sms.status_callback == "https://bot.example/webhooks/twilio/status"


@pytest.mark.asyncio
async def test_sms_sids_are_unique_and_fetchable() -> None:
    async with FakeTwilio() as fake:
        sids = [(await post_sms(fake, sms_form()))[1]["sid"] for _ in range(3)]
        assert len(set(sids)) == 3
        async with (
            aiohttp.ClientSession(headers={"Authorization": TW_AUTH}) as session,
            session.get(fake.messages_url.removesuffix(".json") + f"/{sids[1]}.json") as response,
        ):
            assert response.status == 200
            assert (await response.json())["sid"] == sids[1]


@pytest.mark.asyncio
async def test_messaging_service_media_and_unknown_fields() -> None:
    async with FakeTwilio() as fake:
        service = {"To": "+15558675310", "MessagingServiceSid": "MG" + "a" * 32, "Body": "x"}
        status, body = await post_sms(fake, service)
        assert (status, body["status"], body["from"]) == (201, "accepted", None)

        media_only = [
            ("To", "+15558675310"),
            ("From", "+15005550006"),
            ("MediaUrl", "https://example.com/a.jpg"),
            ("MediaUrl", "https://example.com/b.jpg"),
        ]
        status, body = await post_sms(fake, media_only)
        assert (status, body["num_media"]) == (201, "2")

        status, _ = await post_sms(fake, sms_form(SomethingNew="ignored", ValidityPeriod="60"))
        assert status == 201


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "auth",
    [
        None,
        aiohttp.encode_basic_auth(DEFAULT_ACCOUNT_SID, "wrong-token"),
        aiohttp.encode_basic_auth("AC" + "f" * 32, "twilio-test-token"),
        "Basic not-base64!",
        "Bearer twilio-test-token",
    ],
    ids=["no-auth", "wrong-token", "wrong-sid", "garbled", "not-basic"],
)
async def test_bad_twilio_auth_is_20003_with_401(auth: str | None) -> None:
    async with FakeTwilio() as fake:
        status, body = await post_sms(fake, sms_form(), auth=auth)
        assert status == 401
        assert body["code"] == 20003
        assert body["status"] == 401
        assert body["more_info"] == "https://www.twilio.com/docs/errors/20003"
        assert fake.sent == []


@pytest.mark.asyncio
async def test_other_accounts_path_is_not_found() -> None:
    async with FakeTwilio() as fake:
        url = fake.messages_url.replace(DEFAULT_ACCOUNT_SID, "AC" + "f" * 32)
        status, body = await post_sms(fake, sms_form(), url=url)
        assert (status, body["code"]) == (404, 20404)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("form", "code"),
    [
        pytest.param({"From": "+15005550006", "Body": "x"}, 21604, id="no-to"),
        pytest.param(sms_form(To="5558675310"), 21211, id="to-not-e164"),
        pytest.param(sms_form(To="+1 555 867 5310"), 21211, id="to-with-spaces"),
        pytest.param({"To": "+15558675310", "Body": "x"}, 21603, id="no-from"),
        pytest.param(sms_form(From="+15550000000"), 21606, id="from-not-ours"),
        pytest.param({"To": "+15558675310", "From": "+15005550006"}, 21602, id="no-body"),
        pytest.param(sms_form(Body="x" * 1601), 21617, id="body-too-long"),
    ],
)
async def test_invalid_sms_requests_get_twilios_codes(form: dict[str, str], code: int) -> None:
    async with FakeTwilio() as fake:
        status, body = await post_sms(fake, form)
        assert status == 400
        assert body == {
            "code": code,
            "message": body["message"],
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": 400,
        }
        assert body["message"]
        assert fake.sent == []


@pytest.mark.asyncio
async def test_body_of_exactly_1600_characters_is_accepted() -> None:
    async with FakeTwilio() as fake:
        status, body = await post_sms(fake, sms_form(Body="x" * 1600))
        assert (status, body["num_segments"]) == (201, "11")


@pytest.mark.asyncio
async def test_sms_fail_next_and_opt_out() -> None:
    async with FakeTwilio() as fake:
        fake.fail_next(code=21614, count=2, to="+15558675310")
        fake.set_opted_out("+15550001111")

        first, body = await post_sms(fake, sms_form())
        other, _ = await post_sms(fake, sms_form(To="+15550002222"))
        second, _ = await post_sms(fake, sms_form())
        third, _ = await post_sms(fake, sms_form())
        opted_out, stop_body = await post_sms(fake, sms_form(To="+15550001111"))

        assert (first, other, second, third) == (400, 201, 400, 201)
        assert body["code"] == 21614
        assert (opted_out, stop_body["code"]) == (400, 21610)


@pytest.mark.asyncio
async def test_sms_failure_rate_answers_500_code_20500() -> None:
    async with FakeTwilio() as fake:
        fake.failure_rate = 1.0
        status, body = await post_sms(fake, sms_form())
        assert (status, body["code"], body["status"]) == (500, 20500, 500)


@pytest.mark.asyncio
async def test_status_callback_is_signed_like_twilio() -> None:
    async with FakeTwilio() as fake, receiver() as (url, received):
        _, created = await post_sms(fake, sms_form(StatusCallback=url))
        status, _ = await fake.send_status_callback(created["sid"], "undelivered", 30003)
        assert status == 200

        [request] = received
        form = request["form"]
        assert form["MessageSid"] == created["sid"]
        assert form["MessageStatus"] == "undelivered"
        assert form["ErrorCode"] == "30003"
        assert form["AccountSid"] == DEFAULT_ACCOUNT_SID
        expected = twilio_signature("twilio-test-token", url, form)
        assert request["headers"]["X-Twilio-Signature"] == expected
        assert fake.message(created["sid"]).status == "undelivered"


@pytest.mark.asyncio
async def test_delivery_failure_codes_arrive_later_in_a_callback() -> None:
    async with FakeTwilio() as fake, receiver() as (url, received):
        fake.fail_next(code=30005)
        status, created = await post_sms(fake, sms_form(StatusCallback=url))
        assert (status, created["status"]) == (201, "queued")

        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.01)
        [request] = received
        assert request["form"]["MessageStatus"] == "undelivered"
        assert request["form"]["ErrorCode"] == "30005"


@pytest.mark.asyncio
async def test_sms_wait_for_sent() -> None:
    async with FakeTwilio() as fake:
        task = asyncio.create_task(post_sms(fake, sms_form(Body="code 1234")))
        [sms] = await fake.wait_for_sent(lambda m: "1234" in m.body, timeout=2)
        await task
        assert sms.to == "+15558675310"


# ------------------------------------------------------------- standalone


@pytest.mark.asyncio
@pytest.mark.parametrize("module", ["tests.fakes.whatsapp", "tests.fakes.twilio"])
async def test_fakes_run_standalone_and_print_their_base_url(module: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        "--port",
        "0",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=5)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", line.decode().strip())
    finally:
        process.terminate()
        await process.wait()
