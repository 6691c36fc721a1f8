"""The webhooks' edges, in-process on a real database (SQLite, and PostgreSQL when
TEST_DATABASE_URL is set): signed or unauthenticated input never gets a 500, one malformed entry
of Meta's batch does not cost the others, and a flood costs bounded work (refused before the
body is read, a trickling body cut off, a bounded number of updates handled at once, one log
line per kind of refusal and minute)."""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import urlencode

import pytest
from aiogram import Router
from aiogram.types import Message
from hypothesis import given
from hypothesis import strategies as st

from bot.app import serve, start
from bot.webhooks import (
    TELEGRAM_PATH,
    WHATSAPP_PATH,
    RefusalLog,
)
from services.clock import FakeClock
from tests.conversations.harness import ExplicitSettings
from tests.fakes.telegram import TEST_TOKEN, FakeTelegram
from tests.integration.webhook_app import (
    TG_SECRET,
    TWILIO_PATH,
    Edge,
    notification,
    sent_whatsapp,
    start_edge,
    status_entry,
    telegram_update,
    whatsapp_body,
)

# ------------------------------------------------------------ never a 500 (reproductions)


async def test_a_non_ascii_telegram_secret_is_refused_with_401(edge: Edge) -> None:
    for secret in ("é", "tg-secret_12é", "\u2603" * 300, ""):
        assert await edge.telegram(telegram_update(1), secret=secret) == 401
    assert await edge.telegram(telegram_update(1), secret=TG_SECRET[:-1]) == 401
    assert edge.handled == []


async def test_a_telegram_body_that_is_not_an_update_is_refused_with_400(edge: Edge) -> None:
    for body in (b"{not json", b"[1]", b"\xff\xfe", json.dumps({"update_id": "x"}).encode()):
        assert await edge.telegram(body) == 400
    assert await edge.telegram(telegram_update(7)) == 200


async def test_a_huge_timestamp_counts_as_no_timestamp(edge: Edge) -> None:
    clock = FakeClock()
    good = await sent_whatsapp(edge.db, clock, "wamid.GOOD", "update:1")
    huge = await sent_whatsapp(edge.db, clock, "wamid.HUGE", "update:2")
    body = whatsapp_body([status_entry("wamid.HUGE", "delivered", "9" * 5000),
                          status_entry("wamid.GOOD", "delivered", "\u0661\u0662")])
    assert await edge.whatsapp(body) == 200
    # An unusable timestamp means "when it arrived", as a missing one does.
    for notification_id in (good, huge):
        assert (await notification(edge.db, notification_id)).delivered_at is not None


async def test_a_huge_unquoted_number_spoils_only_its_entry(edge: Edge) -> None:
    clock = FakeClock()
    good = await sent_whatsapp(edge.db, clock, "wamid.GOOD", "update:1")
    body = whatsapp_body([status_entry("wamid.GOOD", "delivered")]).replace(
        b'"1700000000"', b"1700000000", 1)
    body = body.replace(b'"statuses": [', b'"statuses": [{"id": "wamid.X", "status": "read", '
                        b'"timestamp": ' + b"7" * 5000 + b"}, ", 1)
    assert await edge.whatsapp(body) == 200
    assert (await notification(edge.db, good)).delivered_at is not None


async def test_a_lone_surrogate_in_a_message_id_skips_only_that_entry(edge: Edge) -> None:
    clock = FakeClock()
    good = await sent_whatsapp(edge.db, clock, "wamid.GOOD", "update:1")
    body = whatsapp_body(
        [status_entry("wamid.\ud800", "delivered"), status_entry("wamid.GOOD", "read")],
        [{"from": "33612345678", "id": "wamid.\udfff", "timestamp": "1700000000",
          "type": "text", "text": {"body": "STOP"}},
         {"from": "3361234\ud8005678", "id": "wamid.M", "type": "text", "text": {"body": "x"}}],
    )
    assert b"\\ud800" in body
    assert await edge.whatsapp(body) == 200
    row = await notification(edge.db, good)
    assert row.read_at is not None
    async with edge.db.transaction() as session:
        from database.models import User

        user = await session.get_one(User, row.recipient_id)
    assert user.opt_outs == ""  # the STOP with a broken id was skipped


async def test_a_malformed_entry_in_a_batch_does_not_cost_the_valid_ones(
    edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    good = await sent_whatsapp(edge.db, clock, "wamid.GOOD", "update:1")
    body = whatsapp_body([{"status": "read"}, 5, {"id": 5, "status": "read"},
                          status_entry("wamid.GOOD", "delivered"),
                          status_entry("wamid.NUL\x00", "read")])
    with caplog.at_level(logging.INFO, logger="bot.webhooks"):
        assert await edge.whatsapp(body) == 200
    assert (await notification(edge.db, good)).delivered_at is not None
    skipped = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1 and "4 malformed" in skipped[0].getMessage()


async def test_a_batch_with_nothing_usable_is_still_refused_with_400(edge: Edge) -> None:
    body = whatsapp_body([{"status": "read"}])
    assert await edge.whatsapp(body) == 400


async def test_a_huge_twilio_error_code_is_refused_not_a_500(edge: Edge) -> None:
    for fields in (
        {"MessageSid": "SM" + "a" * 32, "MessageStatus": "undelivered", "ErrorCode": "9" * 5000},
        {"MessageSid": "SM" + "a" * 32, "MessageStatus": "undelivered", "ErrorCode": "²"},
        {"MessageSid": "SM\u00e9", "MessageStatus": "delivered"},
        {"MessageSid": "SM\x00", "MessageStatus": "delivered"},
        {"MessageSid": "SM1", "MessageStatus": "deliv\x00ered"},
    ):
        assert await edge.twilio(urlencode(fields).encode()) == 400, fields
    ok = {"MessageSid": "SM" + "a" * 32, "MessageStatus": "undelivered", "ErrorCode": "30003"}
    assert await edge.twilio(urlencode(ok).encode()) == 200


# ------------------------------------------------------------------- bounded work (floods)


async def raw_request(edge: Edge, path: str, headers: dict[str, str], body: bytes = b"",
                      *, wait: float = 3.0) -> int:
    """Send headers (and maybe part of a body) on a raw connection; the status answered within
    `wait` seconds, 0 when none came."""
    url = edge.client.make_url(path)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        head = f"POST {path} HTTP/1.1\r\nHost: {url.host}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        try:
            line = await asyncio.wait_for(reader.readline(), wait)
        except TimeoutError:
            return 0
        return int(line.split()[1]) if line else 0
    finally:
        writer.close()


@pytest.mark.parametrize("path", [WHATSAPP_PATH, TWILIO_PATH])
async def test_an_unsigned_request_is_refused_before_its_body_arrives(
    edge: Edge, path: str
) -> None:
    # The body is announced and never sent: only a check made before reading can answer.
    assert await raw_request(edge, path, {"Content-Length": "100000"}) == 401
    header = "X-Hub-Signature-256" if path == WHATSAPP_PATH else "X-Twilio-Signature"
    assert await raw_request(
        edge, path, {header: "sha256=00", "Content-Length": str(50 * 1024 * 1024)}) == 413


async def test_a_telegram_update_without_the_secret_is_refused_before_its_body_arrives(
    edge: Edge
) -> None:
    assert await raw_request(edge, TELEGRAM_PATH, {"Content-Length": "1000"}) == 401
    assert await raw_request(edge, TELEGRAM_PATH, {
        "X-Telegram-Bot-Api-Secret-Token": TG_SECRET, "Content-Length": str(50 * 1024 * 1024),
    }) == 413


@pytest.mark.parametrize("path", [WHATSAPP_PATH, TWILIO_PATH, TELEGRAM_PATH])
async def test_a_body_that_trickles_in_is_cut_off_after_the_read_timeout(
    db_url: str, path: str
) -> None:
    edge, bot = await start_edge(db_url, read_timeout=0.3)
    try:
        header = {WHATSAPP_PATH: ("X-Hub-Signature-256", "sha256=00"),
                  TWILIO_PATH: ("X-Twilio-Signature", "AAAA"),
                  TELEGRAM_PATH: ("X-Telegram-Bot-Api-Secret-Token", TG_SECRET)}[path]
        status = await raw_request(edge, path, {header[0]: header[1], "Content-Length": "500"},
                                   b'{"entry": [', wait=5.0)
        assert status == 408
    finally:
        await edge.client.close()
        await bot.session.close()
        await edge.db.dispose()


async def test_webhook_updates_are_handled_at_most_the_limit_at_once(db_url: str) -> None:
    gate = asyncio.Event()
    edge, bot = await start_edge(db_url, max_concurrent_updates=2, handler_gate=gate)
    try:
        posts = [asyncio.create_task(edge.telegram(telegram_update(n))) for n in range(1, 6)]
        await asyncio.sleep(0.5)
        assert edge.running == [2, 2]  # two handlers run, the other updates wait their turn
        gate.set()
        assert await asyncio.gather(*posts) == [200] * 5
        for _ in range(100):
            if len(edge.handled) == 5:
                break
            await asyncio.sleep(0.02)
        assert sorted(edge.handled) == [1, 2, 3, 4, 5]
        assert edge.running[1] == 2
    finally:
        gate.set()
        await edge.client.close()
        await bot.session.close()
        await edge.db.dispose()


async def test_a_flood_of_refused_requests_logs_one_line_per_kind(
    edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    body = whatsapp_body([status_entry("wamid.X", "read")])
    with caplog.at_level(logging.INFO):
        for _ in range(30):
            assert await edge.whatsapp(body, headers={"X-Hub-Signature-256": "sha256=00"}) == 403
            assert await edge.telegram(telegram_update(1), secret="wrong") == 401
            assert await edge.twilio(b"MessageSid=SM1&MessageStatus=delivered\xff") == 400
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 3, warnings


def test_refusals_are_logged_once_then_counted_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    refusals = RefusalLog(logging.getLogger("test.refusals"), monotonic=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.refusals"):
        for _ in range(500):
            refusals.refused("WhatsApp webhook", "wrong X-Hub-Signature-256")
        refusals.refused("WhatsApp webhook", "no X-Hub-Signature-256")
        now[0] += 61
        refusals.refused("WhatsApp webhook", "wrong X-Hub-Signature-256")
    assert [r.getMessage() for r in caplog.records] == [
        "WhatsApp webhook refused: wrong X-Hub-Signature-256",
        "WhatsApp webhook refused: no X-Hub-Signature-256",
        "WhatsApp webhook: 499 more refused in the last minute (wrong X-Hub-Signature-256)",
        "WhatsApp webhook refused: wrong X-Hub-Signature-256",
    ]


async def test_the_count_of_a_floods_last_minute_is_logged_when_the_minute_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusals = RefusalLog(logging.getLogger("test.refusals"), window=0.1)
    with caplog.at_level(logging.WARNING, logger="test.refusals"):
        for _ in range(3):
            refusals.refused("Telegram webhook", "wrong secret")
        await asyncio.sleep(0.3)
    assert [r.getMessage() for r in caplog.records] == [
        "Telegram webhook refused: wrong secret",
        "Telegram webhook: 2 more refused in the last minute (wrong secret)",
    ]


async def test_polling_handles_at_most_the_limit_of_updates_at_once(db_url: str) -> None:
    gate = asyncio.Event()
    running = [0, 0]
    handled: list[str] = []
    router = Router(name="gated")

    @router.message()
    async def gated(message: Message) -> None:
        running[0] += 1
        running[1] = max(running)
        try:
            await gate.wait()
            handled.append(message.text or "")
        finally:
            running[0] -= 1

    async with FakeTelegram() as fake:
        settings = ExplicitSettings(
            bot_token=TEST_TOKEN, telegram_api_base=fake.base_url, database_url=db_url,
            web_port=0, dispatcher_enabled=False, throttle_rate=100, max_concurrent_updates=2,
        )
        app = await start(settings, extra_routers=[router])
        serving = asyncio.create_task(serve(app))
        try:
            for n in range(5):
                fake.message(100 + n, f"hello {n}")
            for _ in range(100):
                if running[0] == 2:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            assert running == [2, 2]  # the other three wait their turn
            gate.set()
            for _ in range(200):
                if len(handled) == 5:
                    break
                await asyncio.sleep(0.02)
            assert sorted(handled) == [f"hello {n}" for n in range(5)]
            assert running[1] == 2
        finally:
            gate.set()
            app.stopping.set()
            await serving


# --------------------------------------------------------------- property: never a 500

_ANY_CHAR = st.characters(exclude_categories=())  # lone surrogates included
_SPECIAL = st.sampled_from([
    "9" * 5000, "\x00", "²", "\u0661", "\ud800", "wamid.A", "delivered", "read", "failed",
    "undelivered", "33612345678", "+33612345678", "30003", "131026", "", " ", "1700000000",
])
_TEXT = st.text(_ANY_CHAR, max_size=12) | _SPECIAL
_SCALAR = (st.none() | st.booleans() | st.integers(-10**30, 10**30)
           | st.floats(allow_nan=False) | _TEXT)
_JSON = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_FIELD = _SCALAR | _JSON

_STATUS = st.fixed_dictionaries(
    {"id": _FIELD, "status": _FIELD},
    optional={"timestamp": _FIELD, "biz_opaque_callback_data": _FIELD,
              "errors": st.lists(st.fixed_dictionaries(
                  {}, optional={"code": _FIELD, "title": _FIELD, "message": _FIELD,
                                "error_data": st.fixed_dictionaries({"details": _FIELD})}),
                  max_size=2)},
)
_MESSAGE = st.fixed_dictionaries(
    {"from": _FIELD, "id": _FIELD},
    optional={"timestamp": _FIELD, "type": st.sampled_from(["text", "button", "image"]) | _FIELD,
              "text": st.fixed_dictionaries({"body": _FIELD}) | _FIELD,
              "button": st.fixed_dictionaries({"text": _FIELD})},
)
_VALUE = st.fixed_dictionaries({}, optional={
    "statuses": st.lists(_STATUS | _JSON, max_size=3) | _FIELD,
    "messages": st.lists(_MESSAGE | _JSON, max_size=3) | _FIELD,
    "errors": st.lists(_JSON, max_size=2),
})
_META = st.fixed_dictionaries({"entry": st.lists(st.fixed_dictionaries({"changes": st.lists(
    st.fixed_dictionaries({"value": _VALUE | _JSON},
                          optional={"field": st.just("messages") | _TEXT}),
    max_size=2) | _FIELD}) | _JSON, max_size=2) | _FIELD})


def _dumps(value: object) -> bytes:
    return json.dumps(value).encode()  # ensure_ascii: a lone surrogate travels as "\ud800"


@given(body=st.one_of(_META.map(_dumps), _JSON.map(_dumps), st.binary(max_size=64)))
async def test_signed_whatsapp_bodies_never_get_a_500(edge: Edge, body: bytes) -> None:
    assert await edge.whatsapp(body) in (200, 400)


_TWILIO_FORM = st.fixed_dictionaries({}, optional={
    "MessageSid": _TEXT, "SmsSid": _TEXT, "MessageStatus": _TEXT, "ErrorCode": _TEXT,
    "ErrorMessage": _TEXT, "AccountSid": _TEXT,
}).map(lambda form: urlencode(form, errors="surrogatepass").encode())


@given(body=st.one_of(_TWILIO_FORM, st.binary(max_size=64)))
async def test_signed_twilio_callbacks_never_get_a_500(edge: Edge, body: bytes) -> None:
    assert await edge.twilio(body) in (200, 400)


_UPDATE = st.fixed_dictionaries({"update_id": st.integers(-10**20, 10**20) | _FIELD}, optional={
    "message": st.fixed_dictionaries(
        {"message_id": _FIELD, "date": _FIELD, "chat": _FIELD},
        optional={"text": _FIELD, "from": _FIELD}) | _JSON,
    "callback_query": _JSON,
})
_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, exclude_categories=("Cs", "Cc")),
                       max_size=12)


# An update with no known field is valid Telegram input; aiogram warns that it knows no type.
@pytest.mark.filterwarnings("ignore:Detected unknown update type:RuntimeWarning")
@given(body=st.one_of(_UPDATE.map(_dumps), _JSON.map(_dumps), st.binary(max_size=64)),
       secret=st.just(TG_SECRET) | _HEADER_TEXT)
async def test_telegram_updates_never_get_a_500(edge: Edge, body: bytes, secret: str) -> None:
    expected = (200, 400) if secret == TG_SECRET else (401,)
    assert await edge.telegram(body, secret=secret) in expected
