"""A fake Telegram Bot API server that speaks the real wire format.

End-to-end tests point the real aiogram ``Bot`` at it over HTTP::

    async with FakeTelegram() as fake:
        session = AiohttpSession(api=TelegramAPIServer.from_base(fake.base_url))
        bot = Bot(TEST_TOKEN, session=session)
        fake.message(1001, "/start")          # a user writes to the bot
        msg = await fake.wait_for_text(1001, "Welcome")

URLs are ``{base_url}/bot{token}/{method}``; parameters are read from the query
string, urlencoded or multipart forms (nested objects JSON-encoded, as aiogram
sends them) or a JSON body. Answers are real Bot API objects and real error
bodies (400/401/403/404/409/429/500), so aiogram raises its real exceptions.
Method names are case-insensitive, as on Telegram.

What it promises: message ids increase per chat (shared by the user and the
bot, as in a private chat), ``getUpdates`` long-polls and forgets updates
confirmed by ``offset``, edits keep the current state of each message,
``parse_mode=HTML`` is checked the way Telegram checks it, and with
``enforce_limits=True`` Telegram's flood limits answer 429 with ``retry_after``.
Faults can be scripted (``fail_next``, ``block_user``, ``failure_rate``,
``delay``, ``set_unauthorized``). A webhook set with ``setWebhook`` receives
the queued updates by POST (http is accepted too, unlike Telegram).

Media (issue 11): sendPhoto, sendDocument, sendAudio, sendVideo, sendVoice and
sendSticker take a file id or an upload (multipart, kept with its bytes; photos
up to 10 MB, other files 50 MB), sendLocation a point; ``getFile`` answers a
``file_path`` that ``GET /file/bot<token>/<file_path>`` downloads (up to 20 MB,
as Telegram). ``add_file`` holds a file a user sent, ``file_data`` gives back
what was uploaded. Chats and topics: ``getChat``; ``set_forum(chat_id)`` makes a
supergroup a forum, where ``createForumTopic`` opens topics; every send takes
``message_thread_id`` (refused for a topic that does not exist) and
``reply_parameters`` / ``reply_to_message_id``.

Not emulated: Markdown parsing, "bot can't initiate
conversation" for users who never wrote, automatic url/mention entities.

Run it by hand (no token needed; any ``<digits>:<text>`` token is accepted)::

    python -m tests.fakes.telegram --port 8081              # server only
    python -m tests.fakes.telegram --port 8081 --chat 1001  # and chat as user 1001

In chat mode the bot's messages are printed with their inline and reply keyboards; ``!press``
presses an inline button, ``!contact +33612345678`` shares the user's own contact (a
request_contact button), ``!help`` lists the commands (``chat_line`` handles each line).

then start the bot with ``TELEGRAM_API_BASE=http://127.0.0.1:8081`` and write to
it with ``curl -X POST http://127.0.0.1:8081/_control/message -H
'Content-Type: application/json' -d '{"user_id": 1001, "text": "/start"}'``.
Also: ``POST /_control/callback`` ``{"user_id", "data", "message_id"}``,
``POST /_control/update`` (a raw update), ``GET /_control/calls[?method=]``,
``GET /_control/messages[?chat_id=]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import html
import json
import math
import random
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, NoReturn

import aiohttp
from aiohttp import web

from tests.fakes.control import control_json

BOT_ID = 42000
TEST_TOKEN = f"{BOT_ID}:TEST-token"
BOT_USER: dict[str, Any] = {
    "id": BOT_ID,
    "is_bot": True,
    "first_name": "Desk Bot",
    "username": "desk_test_bot",
}
ME: dict[str, Any] = {
    **BOT_USER,
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
    "can_connect_to_business": False,
    "has_main_web_app": False,
}

MAX_TEXT_UTF16 = 4096
MAX_CALLBACK_DATA_BYTES = 64
SEND_METHODS = frozenset((
    "sendmessage", "sendphoto", "senddocument", "sendvideo", "sendaudio", "sendvoice",
    "sendanimation", "sendsticker", "sendvideonote", "sendmediagroup", "sendlocation",
    "sendvenue", "sendcontact", "sendpoll", "senddice", "copymessage", "forwardmessage",
))  # fmt: skip
EDIT_METHODS = frozenset(
    ("editmessagetext", "editmessagereplymarkup", "editmessagecaption", "editmessagemedia")
)
FAULTY_METHODS = SEND_METHODS | EDIT_METHODS  # what failure_rate and delay apply to
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
BAD_QUERY_ID = "Bad Request: query is too old and response timeout expired or query ID is invalid"
WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
POLL_CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
DEFAULT_UPDATE_TYPES_EXCLUDED = frozenset(
    ("chat_member", "message_reaction", "message_reaction_count")
)

_TOKEN_RE = re.compile(r"\d+:\S+")
_INT_RE = re.compile(r"-?\d+")
_INT_FIELDS = frozenset((
    "chat_id", "message_id", "offset", "limit", "timeout", "user_id", "cache_time",
    "message_thread_id", "max_connections", "from_chat_id", "reply_to_message_id",
))  # fmt: skip
_BOOL_FIELDS = frozenset((
    "disable_notification", "protect_content", "show_alert", "drop_pending_updates",
    "disable_web_page_preview", "allow_paid_broadcast", "allow_sending_without_reply",
))  # fmt: skip
_JSON_FIELDS = {  # parameter -> how Telegram names it in "can't parse ... JSON object"
    "reply_markup": "reply keyboard markup",
    "entities": "entities",
    "link_preview_options": "link preview options",
    "reply_parameters": "reply parameters",
    "allowed_updates": "allowed updates",
    "commands": "commands",
    "scope": "bot command scope",
}
_BUTTON_ACTIONS = frozenset((
    "url", "callback_data", "web_app", "login_url", "switch_inline_query",
    "switch_inline_query_current_chat", "switch_inline_query_chosen_chat", "copy_text",
    "callback_game", "pay",
))  # fmt: skip
_HTML_TAGS = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic",
    "u": "underline", "ins": "underline",
    "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough",
    "span": "spoiler", "tg-spoiler": "spoiler", "a": "text_link",
    "code": "code", "pre": "pre", "blockquote": "blockquote",
    "tg-emoji": "custom_emoji", "tg-time": "date_time",
}  # fmt: skip
_HTML_ENTITY_RE = re.compile(r"&(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")
_TAG_NAME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9-]*")
_ATTR_RE = re.compile(r"""([a-zA-Z_-]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""")
_COMMAND_RE = re.compile(r"[a-z0-9_]{1,32}")


class ApiError(Exception):
    """An error answer of the Bot API: HTTP status = error_code."""

    def __init__(self, status: int, description: str, retry_after: int | None = None):
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


PHOTO_UPLOAD_LIMIT = 10 * 1024 * 1024
FILE_UPLOAD_LIMIT = 50 * 1024 * 1024
DOWNLOAD_LIMIT = 20 * 1024 * 1024  # what getFile lets a bot download


class UploadedFile(str):
    """A multipart upload: reads as "<file name>" in a call's parameters, keeps its bytes."""

    data: bytes
    filename: str
    content_type: str

    def __new__(cls, shown: str, *, data: bytes, filename: str,
                content_type: str) -> UploadedFile:
        value = super().__new__(cls, shown)
        value.data, value.filename, value.content_type = data, filename, content_type
        return value

    def __deepcopy__(self, memo: dict[int, Any]) -> UploadedFile:
        return self  # immutable


@dataclass
class StoredFile:
    """A file the fake holds: uploaded by the bot, or sent by a user (`add_file`)."""

    file_id: str
    data: bytes
    mime_type: str
    file_name: str | None = None


@dataclass
class Call:
    """One Bot API request the fake answered."""

    method: str  # as in the URL, e.g. "sendMessage"
    params: dict[str, Any]  # decoded: ints, bools and nested JSON objects
    at: float  # time.monotonic() when it arrived
    status: int  # HTTP status answered
    token: str
    result: Any = None  # the "result" answered when ok
    description: str | None = None


def utf16_len(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def parse_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Parse Telegram HTML into (plain text, entities) or raise ApiError 400 as Telegram does."""

    def fail(reason: str, pos: int | None = None) -> ApiError:
        where = "" if pos is None else f" at byte offset {len(text[:pos].encode())}"
        return ApiError(400, f"Bad Request: can't parse entities: {reason.format(where=where)}")

    out: list[str] = []
    size = 0  # UTF-16 offset in the plain text
    stack: list[tuple[str, int, dict[str, str]]] = []
    entities: list[dict[str, Any]] = []
    i = 0
    while i < len(text):
        if text[i] == "<":
            closing = text.startswith("</", i)
            end = text.find(">", i)
            if end == -1:
                raise fail("Unclosed " + ("end" if closing else "start") + " tag{where}", i)
            body = text[i + (2 if closing else 1) : end]
            match = _TAG_NAME_RE.match(body)
            name = match.group(0).lower() if match else ""
            if closing:
                if not stack:
                    raise fail("Unexpected end tag{where}", i)
                top, start, attrs = stack.pop()
                if name != top:
                    raise fail(
                        f'Unmatched end tag{{where}}, expected "</{top}>", found "</{name}>"', i
                    )
                if top == "code" and stack and stack[-1][0] == "pre":
                    language = attrs.get("class") or attrs.get("language") or ""
                    stack[-1][2].setdefault("language", language.removeprefix("language-"))
                elif size > start:
                    entities.append(_html_entity(top, start, size - start, attrs))
            else:
                if name not in _HTML_TAGS:
                    raise fail(f'Unsupported start tag "{name}"{{where}}', i)
                attrs = {
                    m.group(1).lower(): next((g for g in m.groups()[1:] if g is not None), "")
                    for m in _ATTR_RE.finditer(body[len(name) :])
                }
                if name == "span" and attrs.get("class") != "tg-spoiler":
                    raise fail('Tag "span" must have class "tg-spoiler"{where}', i)
                if name == "tg-emoji" and not attrs.get("emoji-id"):
                    raise fail('Tag "tg-emoji" must have attribute "emoji-id"{where}', i)
                if name == "tg-time" and not _INT_RE.fullmatch(attrs.get("unix", "")):
                    raise fail('Tag "tg-time" must have attribute "unix"{where}', i)
                stack.append((name, size, attrs))
            i = end + 1
            continue
        match = _HTML_ENTITY_RE.match(text, i) if text[i] == "&" else None
        piece = html.unescape(match.group(0)) if match else text[i]
        i = match.end() if match else i + 1
        out.append(piece)
        size += utf16_len(piece)
    if stack:
        raise fail(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _html_entity(tag: str, offset: int, length: int, attrs: dict[str, str]) -> dict[str, Any]:
    entity: dict[str, Any] = {"offset": offset, "length": length, "type": _HTML_TAGS[tag]}
    if tag == "a":
        entity["url"] = attrs.get("href", "")
    elif tag == "pre" and attrs.get("language"):
        entity["language"] = attrs["language"]
    elif tag == "blockquote" and "expandable" in attrs:
        entity["type"] = "expandable_blockquote"
    elif tag == "tg-emoji":
        entity["custom_emoji_id"] = attrs["emoji-id"]
    elif tag == "tg-time":
        entity["unix_time"] = int(attrs["unix"])
        if attrs.get("format"):
            entity["date_time_format"] = attrs["format"]
    return entity


def _update_type(update: dict[str, Any]) -> str:
    return next((key for key in update if key != "update_id"), "")


class FakeTelegram:
    """The fake server plus the test-side control API. See the module docstring."""

    def __init__(
        self,
        *,
        token: str | None = None,
        enforce_limits: bool = False,
        global_rate: float = 30.0,
        per_chat_rate: float = 1.0,
        group_per_minute: int = 20,
        failure_rate: float = 0.0,
        delay: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.token = token
        self.enforce_limits = enforce_limits
        self.global_rate = global_rate
        self.per_chat_rate = per_chat_rate
        self.group_per_minute = group_per_minute
        self.failure_rate = failure_rate
        self.delay = delay
        self.fail_all_methods = False  # let failure_rate hit getUpdates/getMe and friends too
        self.accept_unknown_callback_ids = False  # answerCallbackQuery for ids never queued
        self.webhook_retry_delay = 0.5
        self.calls: list[Call] = []
        self.count_429 = 0
        self._random = random.Random(seed)
        self._unauthorized = False
        self._blocked: set[int] = set()
        self._scripted: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []
        self._next_update_id = 1
        self._allowed_updates: list[str] | None = None
        self._poll_generation = 0
        self._known_callbacks: set[str] = set()
        self._users: dict[int, dict[str, Any]] = {}
        self._messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._last_message_id: dict[int, int] = {}
        self._sent: list[dict[str, Any]] = []
        self._commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._webhook: dict[str, Any] | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self._global_window: deque[float] = deque()
        self._group_windows: dict[int, deque[float]] = {}
        self._last_private_send: dict[int, float] = {}
        self._waiters: set[asyncio.Future[None]] = set()
        self._files: dict[str, StoredFile] = {}
        self._forums: set[int] = set()
        self._topics: dict[int, dict[int, str]] = {}  # chat id -> thread id -> name
        self._closing = False
        self._current_token = token or TEST_TOKEN
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self._methods: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "getme": self._get_me,
            "getupdates": self._get_updates,
            "sendmessage": self._send_message,
            "sendphoto": self._send_photo,
            "senddocument": self._send_document,
            "sendaudio": self._send_audio,
            "sendvideo": self._send_video,
            "sendvoice": self._send_voice,
            "sendsticker": self._send_sticker,
            "sendlocation": self._send_location,
            "getfile": self._get_file,
            "getchat": self._get_chat,
            "createforumtopic": self._create_forum_topic,
            "sendmediagroup": self._send_media_group,
            "editmessagetext": self._edit_message_text,
            "editmessagereplymarkup": self._edit_message_reply_markup,
            "deletemessage": self._delete_message,
            "answercallbackquery": self._answer_callback_query,
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "setmycommands": self._set_my_commands,
            "deletemycommands": self._delete_my_commands,
            "getmycommands": self._get_my_commands,
            "close": self._true,
            "logout": self._true,
        }

    # ----------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/_control/message", self._control_message)
        app.router.add_post("/_control/callback", self._control_callback)
        app.router.add_post("/_control/update", self._control_update)
        app.router.add_get("/_control/calls", self._control_calls)
        app.router.add_get("/_control/messages", self._control_messages)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.*}", self._download_file)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._closing = False
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self._host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self._port = self._runner.addresses[0][1]

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def stop(self) -> None:
        self._closing = True
        self._notify()
        webhook_task = self._webhook_task
        self._stop_webhook_delivery()
        if webhook_task is not None:
            await asyncio.wait([webhook_task])
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ control (tests)

    def queue_update(self, update: dict[str, Any]) -> int:
        """Queue a raw update; assigns update_id when missing. Returns the update_id."""
        update = self._register(update)
        self._pending.append(update)
        self._notify()
        return update["update_id"]

    def _register(self, update: dict[str, Any]) -> dict[str, Any]:
        """Everything queueing an update does but queueing it: its update_id, its callback
        query id made known, its message stored. Returns the (copied) update."""
        update = copy.deepcopy(update)
        update_id = update.setdefault("update_id", self._next_update_id)
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            raise ValueError(f"update_id must be an int, not {update_id!r}")
        self._next_update_id = max(self._next_update_id, update_id + 1)
        if query := update.get("callback_query"):
            self._known_callbacks.add(str(query.get("id")))
        message = update.get("message")
        if isinstance(message, dict) and "chat" in message and "message_id" in message:
            chat_id, message_id = message["chat"]["id"], message["message_id"]
            self._messages.setdefault((chat_id, message_id), copy.deepcopy(message))
            last = self._last_message_id.get(chat_id, 0)
            self._last_message_id[chat_id] = max(last, message_id)
        return update

    def message(
        self,
        user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        first_name: str = "User",
        language_code: str = "en",
        username: str | None = None,
        contact: dict[str, Any] | None = None,
    ) -> int:
        """Queue a message from a user (private chat unless chat_id says otherwise)."""
        update = self.message_update(
            user_id, text, chat_id=chat_id, first_name=first_name,
            language_code=language_code, username=username, contact=contact,
        )
        return self.queue_update(update)

    def message_update(
        self,
        user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        first_name: str = "User",
        language_code: str = "en",
        username: str | None = None,
        contact: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The update `message()` queues, without queueing it: for tests that feed a Dispatcher
        in-process (`Update.model_validate(update, context={"bot": bot})`). The message is
        stored and its id taken, as if it had been queued, so the bot can edit or reply to it."""
        user: dict[str, Any] = {
            "id": user_id,
            "is_bot": False,
            "first_name": first_name,
            "language_code": language_code,
        }
        if username:
            user["username"] = username
        self._users[user_id] = user
        content: dict[str, Any] = {}
        if text or contact is None:
            content["text"] = text
            command = text.split(maxsplit=1)[0] if text.strip() else ""
            if command.startswith("/") and len(command) > 1:
                entity = {"offset": 0, "length": utf16_len(command), "type": "bot_command"}
                content["entities"] = [entity]
        if contact is not None:
            content["contact"] = {"first_name": first_name, "user_id": user_id, **contact}
        stored = self._store_message(user_id if chat_id is None else chat_id, user, content)
        return self._register({"message": stored})

    def callback(
        self,
        user_id: int,
        data: str,
        *,
        message_id: int,
        chat_id: int | None = None,
        language_code: str | None = None,
    ) -> int:
        """Queue a button press on message_id. Its query id is callback_query_id(update_id)."""
        update = self.callback_update(
            user_id, data, message_id=message_id, chat_id=chat_id, language_code=language_code
        )
        return self.queue_update(update)

    def callback_update(
        self,
        user_id: int,
        data: str,
        *,
        message_id: int,
        chat_id: int | None = None,
        language_code: str | None = None,
    ) -> dict[str, Any]:
        """The update `callback()` queues, without queueing it (see `message_update`); its
        query id is known, so the bot may answer it."""
        chat_id = user_id if chat_id is None else chat_id
        user = dict(self._users.get(user_id) or {"id": user_id, "is_bot": False})
        user.setdefault("first_name", "User")
        user["language_code"] = language_code or user.get("language_code") or "en"
        stored = self._messages.get((chat_id, message_id))
        message = stored or {"chat": self._chat(chat_id), "message_id": message_id, "date": 0}
        update_id = self._next_update_id
        query = {
            "id": self.callback_query_id(update_id),
            "from": user,
            "message": message,
            "chat_instance": str(abs(chat_id) * 7 + 3),
            "data": data,
        }
        return self._register({"update_id": update_id, "callback_query": query})

    @staticmethod
    def callback_query_id(update_id: int) -> str:
        """The callback query id callback() gives the update with this update_id."""
        return str(4_000_000_000_000_000_000 + update_id)

    def sent_messages(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        """Messages the bot sent successfully, as answered at send time, in order."""
        return [
            copy.deepcopy(m) for m in self._sent if chat_id is None or m["chat"]["id"] == chat_id
        ]

    def chat_messages(self, chat_id: int) -> list[dict[str, Any]]:
        """The bot's messages in a chat as they are now: edits applied, deleted ones gone."""
        return [
            copy.deepcopy(m)
            for (chat, _), m in sorted(self._messages.items())
            if chat == chat_id and m.get("from", {}).get("id") == BOT_ID
        ]

    async def wait_for_call(
        self,
        method: str,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 10.0,
        *,
        since: int = 0,
    ) -> Call:
        """First successful call of method (matching predicate(params)) among calls[since:]."""
        deadline = time.monotonic() + timeout
        while True:
            for call in self.calls[since:]:
                if (
                    call.status == 200
                    and call.method.lower() == method.lower()
                    and (predicate is None or predicate(call.params))
                ):
                    return call
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = ", ".join(f"{c.method}->{c.status}" for c in self.calls[-15:])
                which = " matching the predicate" if predicate else ""
                raise AssertionError(
                    f"no successful {method} call{which} within {timeout}s; "
                    f"last calls: {seen or 'none'}"
                )
            await self._wait_change(remaining)

    async def wait_for_text(
        self, chat_id: int, substring: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first message sent or edited into chat_id whose text contains substring."""

        def texts() -> list[dict[str, Any]]:
            return [
                c.result
                for c in self.calls
                if c.status == 200
                and c.method.lower() in ("sendmessage", "editmessagetext")
                and isinstance(c.result, dict)
                and c.result["chat"]["id"] == chat_id
            ]

        deadline = time.monotonic() + timeout
        while True:
            for message in texts():
                if substring in message.get("text", ""):
                    return copy.deepcopy(message)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [m.get("text", "")[:80] for m in texts()[-10:]]
                raise AssertionError(
                    f"no message containing {substring!r} in chat {chat_id} within {timeout}s; "
                    f"texts there: {seen}"
                )
            await self._wait_change(remaining)

    def reset_calls(self) -> None:
        self.calls.clear()
        self.count_429 = 0

    def fail_next(
        self,
        method: str,
        *,
        status: int,
        description: str,
        retry_after: int | None = None,
        count: int = 1,
    ) -> None:
        """Answer the next `count` calls of method ("*" for any) with this error."""
        self._scripted.append(
            {
                "method": method.lower(),
                "error": ApiError(status, description, retry_after),
                "count": count,
            }
        )

    def block_user(self, chat_id: int) -> None:
        self._blocked.add(chat_id)

    def unblock_user(self, chat_id: int) -> None:
        self._blocked.discard(chat_id)

    def set_unauthorized(self, value: bool = True) -> None:
        self._unauthorized = value

    def add_file(self, data: bytes, mime_type: str = "image/jpeg",
                 file_name: str | None = None) -> str:
        """Hold a file a user sent (a photo, a document); returns its file id."""
        file_id = f"AgAC{len(self._files) + 1:06d}{BOT_ID}"
        self._files[file_id] = StoredFile(file_id, data, mime_type, file_name)
        return file_id

    def file_data(self, file_id: str) -> bytes:
        """The bytes of a file uploaded by the bot (or added by a test)."""
        return self._files[file_id].data

    def set_forum(self, chat_id: int, forum: bool = True) -> None:
        """Make a supergroup a forum (topics on) or not."""
        if chat_id > -1_000_000_000_000:
            raise ValueError("only a supergroup (id <= -10**12) can be a forum")
        (self._forums.add if forum else self._forums.discard)(chat_id)

    def topics(self, chat_id: int) -> dict[int, str]:
        """The forum topics created in a chat: thread id -> name."""
        return dict(self._topics.get(chat_id, {}))

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._pending)

    # ------------------------------------------------------------------ plumbing

    def _notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def _wait_change(self, timeout: float | None) -> None:
        """Sleep until a call is answered or an update queued (or timeout)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout)
        finally:
            self._waiters.discard(waiter)

    async def _handle_api(self, request: web.Request) -> web.Response:
        token, method = request.match_info["token"], request.match_info["method"]
        raw = await _read_params(request)
        status, body = await self.process(token, method, raw)
        return web.json_response(body, status=status)

    async def process(
        self, token: str, method: str, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """Answer one Bot API call (status, body) and record it in calls."""
        at = time.monotonic()
        try:
            params = _normalize(params)
            body = {"ok": True, "result": await self._execute(token, method.lower(), params)}
            if isinstance(body["result"], _Described):
                body["description"] = body["result"].description
                body["result"] = body["result"].result
            status = 200
        except ApiError as error:
            status, body = error.status, error.body()
        if status == 429:
            self.count_429 += 1
        self.calls.append(
            Call(method, params, at, status, token, body.get("result"), body.get("description"))
        )
        self._notify()
        return status, body

    async def _execute(self, token: str, method: str, params: dict[str, Any]) -> Any:
        if self._unauthorized or not _TOKEN_RE.fullmatch(token) or self.token not in (None, token):
            raise ApiError(401, "Unauthorized")
        handler = self._methods.get(method)
        if handler is None:
            raise ApiError(404, "Not Found")
        faulty = method in FAULTY_METHODS
        if faulty and self.delay > 0:
            await asyncio.sleep(self.delay)
        for rule in self._scripted:
            if rule["method"] in (method, "*"):
                rule["count"] -= 1
                if rule["count"] <= 0:
                    self._scripted.remove(rule)
                raise rule["error"]
        if (faulty or self.fail_all_methods) and self._random.random() < self.failure_rate:
            raise ApiError(500, "Internal Server Error")
        self._current_token = token
        return await handler(params)

    def _chat(self, chat_id: int) -> dict[str, Any]:
        if chat_id > 0:
            user = self._users.get(chat_id, {})
            chat: dict[str, Any] = {"id": chat_id, "first_name": user.get("first_name", "User")}
            if "username" in user:
                chat["username"] = user["username"]
            return {**chat, "type": "private"}
        kind = "supergroup" if chat_id <= -1_000_000_000_000 else "group"
        chat = {"id": chat_id, "title": f"Test {kind} {chat_id}", "type": kind}
        return {**chat, "is_forum": True} if chat_id in self._forums else chat

    def _store_message(
        self, chat_id: int, sender: dict[str, Any], content: dict[str, Any]
    ) -> dict[str, Any]:
        message_id = self._last_message_id.get(chat_id, 0) + 1
        self._last_message_id[chat_id] = message_id
        message = {
            "message_id": message_id,
            "from": dict(sender),
            "chat": self._chat(chat_id),
            "date": int(time.time()),
            **content,
        }
        self._messages[(chat_id, message_id)] = message
        return copy.deepcopy(message)

    def _deliverable(self, allowed: list[str] | None) -> list[dict[str, Any]]:
        """Pending updates of the allowed types; others are forgotten, as Telegram does."""

        def wanted(update: dict[str, Any]) -> bool:
            kind = _update_type(update)
            return kind in allowed if allowed else kind not in DEFAULT_UPDATE_TYPES_EXCLUDED

        self._pending = [u for u in self._pending if wanted(u)]
        return self._pending

    def _check_limits(self, chat_id: int) -> None:
        """Telegram's flood limits; raises 429. A rejected send does not count."""
        if not self.enforce_limits:
            return
        now = time.monotonic()
        window = self._global_window
        while window and now - window[0] >= 1.0:
            window.popleft()
        if len(window) >= self.global_rate:
            _too_many(window[0] + 1.0 - now)
        group = self._group_windows.setdefault(chat_id, deque()) if chat_id < 0 else None
        if group is None:
            last = self._last_private_send.get(chat_id)
            interval = 1.0 / self.per_chat_rate
            if last is not None and now - last < interval:
                _too_many(last + interval - now)
            self._last_private_send[chat_id] = now
        else:
            while group and now - group[0] >= 60.0:
                group.popleft()
            if len(group) >= self.group_per_minute:
                _too_many(group[0] + 60.0 - now)
            group.append(now)
        window.append(now)

    def _format(self, text: Any, params: dict[str, Any]) -> dict[str, Any]:
        """text + entities as Telegram stores them, after parse_mode; validates length."""
        if text is None or text == "":
            raise ApiError(400, "Bad Request: message text is empty")
        text = str(text)
        mode = str(params.get("parse_mode") or "").lower()
        if mode == "html":
            text, entities = parse_html(text)
        elif mode in ("", "markdown", "markdownv2"):  # Markdown is passed through unparsed
            given = params.get("entities")
            entities = given if isinstance(given, list) and not mode else []
        else:
            raise ApiError(400, "Bad Request: unsupported parse_mode")
        if not text.strip():
            raise ApiError(400, "Bad Request: text must be non-empty")
        if utf16_len(text) > MAX_TEXT_UTF16:
            raise ApiError(400, "Bad Request: message is too long")
        return {"text": text, "entities": entities}

    def _chat_id(self, params: dict[str, Any]) -> int:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise ApiError(400, "Bad Request: chat_id is empty")
        if not isinstance(chat_id, int) or isinstance(chat_id, bool):
            raise ApiError(400, "Bad Request: chat not found")  # @usernames are unknown here
        return chat_id

    def _find_message(self, params: dict[str, Any], action: str) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        message_id = params.get("message_id")
        if not isinstance(message_id, int):
            raise ApiError(400, "Bad Request: message identifier is not specified")
        message = self._messages.get((chat_id, message_id))
        if message is None:
            raise ApiError(400, f"Bad Request: message to {action} not found")
        if action == "edit" and message.get("from", {}).get("id") != BOT_ID:
            raise ApiError(400, "Bad Request: message can't be edited")
        if action == "edit" and chat_id in self._blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return message

    # ------------------------------------------------------------------- methods

    async def _true(self, params: dict[str, Any]) -> bool:
        return True

    async def _get_me(self, params: dict[str, Any]) -> dict[str, Any]:
        return dict(ME)

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self._webhook is not None:
            raise ApiError(409, WEBHOOK_CONFLICT)
        offset = params.get("offset") or 0
        limit = min(max(_as_int(params.get("limit"), 100), 1), 100)
        timeout = max(_as_float(params.get("timeout"), 0.0), 0.0)
        if isinstance(params.get("allowed_updates"), list):
            self._allowed_updates = params["allowed_updates"]
        if isinstance(offset, int) and offset > 0:
            self._pending = [u for u in self._pending if u["update_id"] >= offset]
        elif isinstance(offset, int) and offset < 0:
            self._pending = self._pending[offset:]
        self._poll_generation += 1
        generation = self._poll_generation
        self._notify()  # an older long poll still waiting gets its 409
        deadline = time.monotonic() + timeout
        while True:
            if generation != self._poll_generation:
                raise ApiError(409, POLL_CONFLICT)
            batch = self._deliverable(self._allowed_updates)[:limit]
            remaining = deadline - time.monotonic()
            if batch or remaining <= 0 or self._closing:
                return copy.deepcopy(batch)
            await self._wait_change(remaining)

    async def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        content = self._format(params.get("text"), params)
        markup = _check_markup(params.get("reply_markup"), inline_only=False)
        self._place(chat_id, params, content)
        if chat_id in self._blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        self._check_limits(chat_id)
        content["reply_markup"] = markup
        message = self._store_message(chat_id, BOT_USER, _drop_empty(content))
        self._sent.append(copy.deepcopy(message))
        return message

    def _photo(self, file_id: Any) -> list[dict[str, Any]]:
        """A photo sent again by its file id (the only kind of photo this fake takes)."""
        if not isinstance(file_id, str) or not file_id:
            raise ApiError(400, "Bad Request: wrong remote file identifier specified")
        return [{"file_id": file_id, "file_unique_id": file_id[-16:], "width": 90, "height": 90}]

    def _caption(self, params: dict[str, Any]) -> dict[str, Any]:
        caption = params.get("caption")
        if not caption:
            return {}
        content = self._format(caption, params)
        return {"caption": content["text"], "caption_entities": content["entities"]}

    async def _send_photo(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._send_media(params, "photo")

    async def _send_document(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._send_media(params, "document")

    async def _send_audio(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._send_media(params, "audio")

    async def _send_video(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._send_media(params, "video")

    async def _send_voice(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._send_media(params, "voice")

    async def _send_sticker(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._send_media(params, "sticker")

    def _media_object(self, kind: str, value: Any) -> Any:
        """The message's media field for a file id or an upload (stored with its bytes)."""
        if isinstance(value, UploadedFile):
            limit = PHOTO_UPLOAD_LIMIT if kind == "photo" else FILE_UPLOAD_LIMIT
            if len(value.data) > limit:
                raise ApiError(413, "Request Entity Too Large")
            if not value.data:
                raise ApiError(400, "Bad Request: file must be non-empty")
            file_id = f"{kind[:2].upper()}AC{len(self._files) + 1:06d}{BOT_ID}"
            self._files[file_id] = StoredFile(file_id, value.data, value.content_type,
                                              value.filename)
            value = file_id
        if kind == "photo":
            return self._photo(value)
        if not isinstance(value, str) or not value:
            raise ApiError(400, "Bad Request: wrong remote file identifier specified")
        stored = self._files.get(value)
        media: dict[str, Any] = {"file_id": value, "file_unique_id": value[-16:]}
        if stored is not None:
            media["file_size"] = len(stored.data)
            if kind in ("document", "audio", "video", "voice"):
                media["mime_type"] = stored.mime_type
            if kind in ("document", "audio") and stored.file_name:
                media["file_name"] = stored.file_name
        if kind in ("audio", "video", "voice"):
            media["duration"] = 1
        if kind in ("video", "sticker"):
            media.update(width=90, height=90)
        if kind == "sticker":
            media.update(type="regular", is_animated=False, is_video=False)
        return media

    async def _send_media(self, params: dict[str, Any], kind: str) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        if params.get(kind) in (None, ""):
            raise ApiError(400, f"Bad Request: there is no {kind} in the request")
        value = params.get(kind)
        if isinstance(value, str) and value.startswith("attach://"):  # the upload's field
            value = params.get(value.removeprefix("attach://"))
            if not isinstance(value, UploadedFile):
                raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
        content = {kind: self._media_object(kind, value)}
        if kind != "sticker":
            content.update(self._caption(params))
        self._place(chat_id, params, content)
        return self._deliver(chat_id, params, content)

    async def _send_location(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        try:
            latitude = float(params["latitude"])
            longitude = float(params["longitude"])
        except (KeyError, TypeError, ValueError):
            raise ApiError(400, "Bad Request: wrong latitude or longitude specified") from None
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise ApiError(400, "Bad Request: wrong latitude or longitude specified")
        content: dict[str, Any] = {"location": {"latitude": latitude, "longitude": longitude}}
        self._place(chat_id, params, content)
        return self._deliver(chat_id, params, content)

    def _deliver(
        self, chat_id: int, params: dict[str, Any], content: dict[str, Any]
    ) -> dict[str, Any]:
        """What every send ends with: markup checked, the chat's limits, stored and answered."""
        content["reply_markup"] = _check_markup(params.get("reply_markup"), inline_only=False)
        if chat_id in self._blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        self._check_limits(chat_id)
        message = self._store_message(chat_id, BOT_USER, _drop_empty(content))
        self._sent.append(copy.deepcopy(message))
        return message

    def _place(self, chat_id: int, params: dict[str, Any], content: dict[str, Any]) -> None:
        """A send's topic (message_thread_id) and the message it replies to, as Telegram
        checks them."""
        thread_id = params.get("message_thread_id")
        if thread_id not in (None, ""):
            if not isinstance(thread_id, int) or thread_id not in self._topics.get(chat_id, {}):
                raise ApiError(400, "Bad Request: message thread not found")
            content["message_thread_id"] = thread_id
            content["is_topic_message"] = True
        reply = params.get("reply_parameters")
        reply = reply if isinstance(reply, dict) else {}
        reply_to_id = reply.get("message_id") or params.get("reply_to_message_id")
        if reply_to_id:
            replied = self._messages.get((reply.get("chat_id") or chat_id, reply_to_id))
            lenient = reply.get("allow_sending_without_reply") or params.get(
                "allow_sending_without_reply"
            )
            if replied is not None:
                content["reply_to_message"] = copy.deepcopy(replied)
                content["reply_to_message"].pop("reply_to_message", None)
            elif not lenient:
                raise ApiError(400, "Bad Request: message to be replied not found")

    async def _get_file(self, params: dict[str, Any]) -> dict[str, Any]:
        stored = self._files.get(str(params.get("file_id") or ""))
        if stored is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        if len(stored.data) > DOWNLOAD_LIMIT:
            raise ApiError(400, "Bad Request: file is too big")
        return {"file_id": stored.file_id, "file_unique_id": stored.file_id[-16:],
                "file_size": len(stored.data), "file_path": f"files/{stored.file_id}"}

    async def _download_file(self, request: web.Request) -> web.Response:
        token, path = request.match_info["token"], request.match_info["path"]
        stored = self._files.get(path.removeprefix("files/"))
        if not _TOKEN_RE.fullmatch(token) or self.token not in (None, token) or stored is None:
            return web.json_response(ApiError(404, "Not Found").body(), status=404)
        return web.Response(body=stored.data, content_type=stored.mime_type)

    async def _get_chat(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        if chat_id > 0 and chat_id not in self._users:
            raise ApiError(400, "Bad Request: chat not found")
        return {**self._chat(chat_id), "accent_color_id": 0, "max_reaction_count": 11,
                "accepted_gift_types": {"unlimited_gifts": False, "limited_gifts": False,
                                        "unique_gifts": False, "premium_subscription": False,
                                        "gifts_from_channels": False}}

    async def _create_forum_topic(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        if chat_id not in self._forums:
            raise ApiError(400, "Bad Request: the chat is not a forum")
        name = str(params.get("name") or "")
        if not 1 <= utf16_len(name) <= 128:
            raise ApiError(400, "Bad Request: TOPIC_TITLE_EMPTY" if not name
                           else "Bad Request: TOPIC_TITLE_INVALID")
        topic = {"name": name, "icon_color": 7322096}
        created = self._store_message(chat_id, BOT_USER, {"forum_topic_created": dict(topic)})
        thread_id = created["message_id"]
        self._messages[(chat_id, thread_id)].update(message_thread_id=thread_id,
                                                     is_topic_message=True)
        self._topics.setdefault(chat_id, {})[thread_id] = name
        return {"message_thread_id": thread_id, **topic}

    async def _send_media_group(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        chat_id = self._chat_id(params)
        media = params.get("media")
        if isinstance(media, str):
            media = json.loads(media)
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            raise ApiError(400, "Bad Request: wrong number of media specified")
        if any(not isinstance(m, dict) or m.get("type") != "photo" for m in media):
            raise ApiError(400, "Bad Request: this fake sends photo albums only")
        if chat_id in self._blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        self._check_limits(chat_id)
        group = str(len(self._sent) + 1)
        sent = []
        for item in media:
            content = {"photo": self._photo(item.get("media")), "media_group_id": group,
                       **self._caption(item)}
            message = self._store_message(chat_id, BOT_USER, _drop_empty(content))
            self._sent.append(copy.deepcopy(message))
            sent.append(message)
        return sent

    async def _edit_message_text(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        content = self._format(params.get("text"), params)
        content["reply_markup"] = _check_markup(params.get("reply_markup"), inline_only=True)
        if params.get("inline_message_id"):
            return True
        message = self._find_message(params, "edit")
        if "text" not in message:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        return self._apply_edit(message, _drop_empty(content), ("text", "entities"))

    async def _edit_message_reply_markup(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        markup = _check_markup(params.get("reply_markup"), inline_only=True)
        if params.get("inline_message_id"):
            return True
        message = self._find_message(params, "edit")
        return self._apply_edit(message, _drop_empty({"reply_markup": markup}), ())

    def _apply_edit(
        self, message: dict[str, Any], content: dict[str, Any], keep_keys: tuple[str, ...]
    ) -> dict[str, Any]:
        keys = ("reply_markup", *keep_keys)
        if all(message.get(key) == content.get(key) for key in keys):
            raise ApiError(400, NOT_MODIFIED)
        for key in keys:
            message.pop(key, None)
        message.update(content)
        message["edit_date"] = int(time.time())
        return copy.deepcopy(message)

    async def _delete_message(self, params: dict[str, Any]) -> bool:
        message = self._find_message(params, "delete")
        del self._messages[(message["chat"]["id"], message["message_id"])]
        return True

    async def _answer_callback_query(self, params: dict[str, Any]) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        if not query_id or (
            query_id not in self._known_callbacks and not self.accept_unknown_callback_ids
        ):
            raise ApiError(400, BAD_QUERY_ID)
        if utf16_len(str(params.get("text") or "")) > 200:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        return True

    async def _set_webhook(self, params: dict[str, Any]) -> _Described:
        url = str(params.get("url") or "")
        if not url:
            return await self._delete_webhook(params)
        if not url.startswith(("https://", "http://")):
            raise ApiError(
                400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
            )
        secret = str(params.get("secret_token") or "")
        if secret and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        if params.get("drop_pending_updates"):
            self._pending.clear()
        self._stop_webhook_delivery()
        allowed = params.get("allowed_updates")
        self._webhook = {
            "url": url,
            "secret_token": secret,
            "allowed_updates": allowed if isinstance(allowed, list) else None,
            "max_connections": _as_int(params.get("max_connections"), 40),
            "token": self._current_token,  # a webhook reply's method runs as this
        }
        self._webhook_task = asyncio.create_task(self._deliver_webhook(self._webhook))
        return _Described(True, "Webhook was set")

    async def _delete_webhook(self, params: dict[str, Any]) -> _Described:
        if params.get("drop_pending_updates"):
            self._pending.clear()
        was_set = self._webhook is not None
        self._stop_webhook_delivery()
        return _Described(True, "Webhook was deleted" if was_set else "Webhook is already deleted")

    async def _get_webhook_info(self, params: dict[str, Any]) -> dict[str, Any]:
        hook = self._webhook or {}
        allowed = hook.get("allowed_updates") if hook else self._allowed_updates
        info: dict[str, Any] = {
            "url": hook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self._deliverable(allowed)),
        }
        if hook:
            info["max_connections"] = hook["max_connections"]
            info["ip_address"] = "127.0.0.1"
            for key in ("allowed_updates", "last_error_date", "last_error_message"):
                if hook.get(key):
                    info[key] = hook[key]
        return info

    async def _set_my_commands(self, params: dict[str, Any]) -> bool:
        commands = params.get("commands") or []
        if not isinstance(commands, list) or len(commands) > 100:
            raise ApiError(400, "Bad Request: can't parse commands JSON object")
        for command in commands:
            name = str(command.get("command", "")) if isinstance(command, dict) else ""
            if not _COMMAND_RE.fullmatch(name.removeprefix("/")):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", "")).strip()) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        self._commands[_commands_key(params)] = [
            {"command": str(c["command"]).removeprefix("/"), "description": c["description"]}
            for c in commands
        ]
        return True

    async def _delete_my_commands(self, params: dict[str, Any]) -> bool:
        self._commands.pop(_commands_key(params), None)
        return True

    async def _get_my_commands(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return copy.deepcopy(self._commands.get(_commands_key(params), []))

    # ------------------------------------------------------------------- webhook

    def _stop_webhook_delivery(self) -> None:
        self._webhook = None
        if self._webhook_task is not None:
            self._webhook_task.cancel()
            self._webhook_task = None

    async def _deliver_webhook(self, hook: dict[str, Any]) -> None:
        """POST pending updates one by one to the webhook; retry until it answers 2xx."""
        if self._client is None:
            self._client = aiohttp.ClientSession()
        headers = {"X-Telegram-Bot-Api-Secret-Token": hook["secret_token"]}
        headers = headers if hook["secret_token"] else {}
        while self._webhook is hook and not self._closing:
            batch = self._deliverable(hook["allowed_updates"])
            if not batch:
                await self._wait_change(None)
                continue
            update = batch[0]
            try:
                async with self._client.post(
                    hook["url"], json=update, headers=headers, timeout=aiohttp.ClientTimeout(10)
                ) as response:
                    reply = await response.text()
                    error = (
                        None if response.status < 300 else f"{response.status} {response.reason}"
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                reply, error = "", f"Connection failed: {type(exc).__name__}"
            if error is not None:
                hook["last_error_date"] = int(time.time())
                hook["last_error_message"] = f"Wrong response from the webhook: {error}"
                await asyncio.sleep(self.webhook_retry_delay)
                continue
            if update in self._pending:
                self._pending.remove(update)
            try:  # the webhook may answer with a method call, which Telegram then runs
                answer = json.loads(reply) if reply.strip() else None
            except ValueError:
                answer = None
            if isinstance(answer, dict) and isinstance(answer.get("method"), str):
                params = {k: v for k, v in answer.items() if k != "method"}
                await self.process(hook["token"], answer["method"], params)

    # --------------------------------------------------------- control over HTTP

    async def _control_message(self, request: web.Request) -> web.Response:
        data = await control_json(request)
        try:
            update_id = self.message(
                int(data["user_id"]),
                str(data.get("text", "")),
                chat_id=int(data["chat_id"]) if data.get("chat_id") is not None else None,
                first_name=str(data.get("first_name", "User")),
                language_code=str(data.get("language_code", "en")),
                username=data.get("username"),
                contact=data.get("contact"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"ok": False, "description": repr(exc)}, status=400)
        return web.json_response({"ok": True, "update_id": update_id})

    async def _control_callback(self, request: web.Request) -> web.Response:
        data = await control_json(request)
        try:
            update_id = self.callback(
                int(data["user_id"]),
                str(data["data"]),
                message_id=int(data["message_id"]),
                chat_id=int(data["chat_id"]) if data.get("chat_id") is not None else None,
                language_code=data.get("language_code"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"ok": False, "description": repr(exc)}, status=400)
        query_id = self.callback_query_id(update_id)
        return web.json_response(
            {"ok": True, "update_id": update_id, "callback_query_id": query_id}
        )

    async def _control_update(self, request: web.Request) -> web.Response:
        try:
            update_id = self.queue_update(await control_json(request))
        except ValueError as exc:
            return web.json_response({"ok": False, "description": str(exc)}, status=400)
        return web.json_response({"ok": True, "update_id": update_id})

    async def _control_calls(self, request: web.Request) -> web.Response:
        method = request.query.get("method", "").lower()
        calls = [asdict(c) for c in self.calls if not method or c.method.lower() == method]
        return web.json_response(calls)

    async def _control_messages(self, request: web.Request) -> web.Response:
        chat_id = request.query.get("chat_id")
        if chat_id is None:
            chats = sorted({chat for chat, _ in self._messages})
            return web.json_response([m for c in chats for m in self.chat_messages(c)])
        if not _INT_RE.fullmatch(chat_id):
            error = {"ok": False, "description": "chat_id must be an integer"}
            return web.json_response(error, status=400)
        return web.json_response(self.chat_messages(int(chat_id)))

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.json_response(ApiError(404, "Not Found").body(), status=404)


@dataclass
class _Described:
    """An ok result that Telegram answers with a description too (setWebhook etc.)."""

    result: Any
    description: str


def _too_many(wait: float) -> NoReturn:
    retry_after = max(1, math.ceil(wait))
    raise ApiError(429, f"Too Many Requests: retry after {retry_after}", retry_after)


def _drop_empty(content: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in content.items() if value not in (None, [], {})}


def _as_int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _as_float(value: Any, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _commands_key(params: dict[str, Any]) -> tuple[str, str]:
    scope = params.get("scope") or {"type": "default"}
    return json.dumps(scope, sort_keys=True), str(params.get("language_code") or "")


def _check_markup(markup: Any, *, inline_only: bool) -> dict[str, Any] | None:
    """Validate reply_markup as Telegram does; return what a Message echoes (inline only)."""
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise ApiError(400, "Bad Request: object expected as reply markup")
    if "inline_keyboard" not in markup:
        if inline_only:
            raise ApiError(400, "Bad Request: inline keyboard expected")
        if not {"keyboard", "remove_keyboard", "force_reply"} & markup.keys():
            raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
        return None  # reply keyboards are not part of the Message object
    rows = markup["inline_keyboard"]
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise ApiError(400, 'Bad Request: field "inline_keyboard" must be an Array of Arrays')
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                raise ApiError(
                    400,
                    "Bad Request: can't parse inline keyboard button: Can't find field \"text\"",
                )
            actions = {k for k in _BUTTON_ACTIONS & button.keys() if button[k] not in (None, "")}
            if not actions:
                raise ApiError(
                    400,
                    "Bad Request: can't parse inline keyboard button: "
                    "Text buttons are unallowed in the inline keyboard",
                )
            data = button.get("callback_data")
            if data and len(str(data).encode()) > MAX_CALLBACK_DATA_BYTES:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    echoed = [[dict(button) for button in row] for row in rows if row]
    return {"inline_keyboard": echoed} if echoed else None


def _normalize(params: dict[str, Any]) -> dict[str, Any]:
    """Decode form strings: known ints and bools, and nested JSON objects."""
    decoded: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, str):
            if key in _JSON_FIELDS:
                if not value:
                    continue
                try:
                    value = json.loads(value)
                except ValueError:
                    reason = f"can't parse {_JSON_FIELDS[key]} JSON object"
                    raise ApiError(400, f"Bad Request: {reason}") from None
            elif key in _INT_FIELDS and _INT_RE.fullmatch(value):
                value = int(value)
            elif key in _BOOL_FIELDS:
                value = value.lower() in ("true", "1")
        decoded[key] = value
    return decoded


async def _read_params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            body = None
        if isinstance(body, dict):
            params.update(body)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        for key, value in (await request.post()).items():
            if isinstance(value, str):
                params[key] = value
            else:  # an upload: shown as "<file name>", its bytes kept
                params[key] = UploadedFile(
                    f"<file {value.filename}>", data=value.file.read(),
                    filename=value.filename, content_type=value.content_type,
                )
    return params


# ----------------------------------------------------------------------- CLI


def describe_call(call: Call, chat_id: int) -> list[str]:
    """What the person chatting as chat_id sees of one call."""
    result, method = call.result, call.method.lower()
    if call.status != 200:
        if call.params.get("chat_id") == chat_id or method == "answercallbackquery":
            return [f"[error {call.status} on {call.method}] {call.description}"]
        return []
    if method == "answercallbackquery" and call.params.get("text"):
        return [f"[popup] {call.params['text']}"]
    if method == "deletemessage" and call.params.get("chat_id") == chat_id:
        return [f"[bot deleted #{call.params.get('message_id')}]"]
    if not isinstance(result, dict) or result.get("chat", {}).get("id") != chat_id:
        return []
    edited = " edited" if method.startswith("edit") else ""
    lines = [f"[bot #{result['message_id']}{edited}] {result.get('text', '')}"]
    for row in result.get("reply_markup", {}).get("inline_keyboard", []):
        for button in row:
            if "callback_data" in button:
                action = f"!press {button['callback_data']} {result['message_id']}"
            else:
                action = button.get("url", "(not a callback button)")
            lines.append(f"    [{button['text']}] -> {action}")
    # A reply keyboard is not part of the Message Telegram answers: read it from the call.
    return lines + _reply_keyboard(call.params.get("reply_markup"))


def _reply_keyboard(markup: Any) -> list[str]:
    """What a reply keyboard (or its removal) shows the person, with how to press each button
    here: a text button sends its text; a contact button shares their own phone number."""
    if not isinstance(markup, dict):
        return []
    if markup.get("remove_keyboard"):
        return ["    (keyboard removed)"]
    if markup.get("force_reply"):
        return ["    (the bot asks for a reply: type it)"]
    lines = []
    for row in markup.get("keyboard") or []:
        for button in row:
            text = button.get("text", "") if isinstance(button, dict) else str(button)
            if isinstance(button, dict) and button.get("request_contact"):
                action = "!contact <your phone number>, e.g. !contact +33612345678"
            elif isinstance(button, dict) and set(button) - {"text"}:
                action = "(not supported here)"
            else:
                action = f"type: {text}"
            lines.append(f"    [{text}] (keyboard) -> {action}")
    return lines


CHAT_HELP = """\
Type a message to send it to the bot as this user. Commands:
  !press <callback_data> <message_id>  press an inline button (both are printed under it)
  !contact <phone number>              share your own contact, as Telegram's "share my phone
                                       number" button does (e.g. !contact +33612345678)
  !help                                this list
Ctrl-D quits."""

_PHONE_RE = re.compile(r"\+?[0-9][0-9 .()-]{4,30}")


def chat_line(fake: FakeTelegram, user_id: int, line: str) -> list[str]:
    """Act on one line typed in chat mode as user_id: a command, or a message to the bot.
    Returns what to print at once (help, usage); the bot's answers are printed as they come."""
    command, _, rest = line.strip().partition(" ")
    rest = rest.strip()
    if command == "!help":
        return CHAT_HELP.splitlines()
    if command == "!press":
        parts = rest.rsplit(maxsplit=1)
        if len(parts) != 2 or not _INT_RE.fullmatch(parts[1]):
            return ["usage: !press <callback_data> <message_id>"]
        fake.callback(user_id, parts[0], message_id=int(parts[1]))
        return []
    if command == "!contact":
        if not _PHONE_RE.fullmatch(rest):
            return ["usage: !contact <phone number>, e.g. !contact +33612345678"]
        # As Telegram sends one's own contact: the phone, the name, and the user's own id.
        fake.message(user_id, "", contact={"phone_number": rest, "user_id": user_id})
        return []
    if command.startswith("!"):
        return [f"unknown command {command}; !help lists them"]
    if line.strip():
        fake.message(user_id, line)
    return []


async def _interactive(fake: FakeTelegram, user_id: int) -> None:
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read_stdin() -> None:  # a daemon thread, so Ctrl-C is never stuck on readline
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\n"))
        loop.call_soon_threadsafe(lines.put_nowait, None)

    async def show_bot_output() -> None:
        seen = len(fake.calls)
        while True:
            await fake._wait_change(None)
            for call in fake.calls[seen:]:
                for text in describe_call(call, user_id):
                    print(text, flush=True)
            seen = len(fake.calls)

    threading.Thread(target=read_stdin, daemon=True).start()
    printer = asyncio.create_task(show_bot_output())
    print(f"Chatting as user {user_id}: type a message; !help lists the commands (!press, "
          "!contact); Ctrl-D quits.", flush=True)  # fmt: skip
    try:
        while (line := await lines.get()) is not None:
            for text in chat_line(fake, user_id, line):
                print(text, flush=True)
    finally:
        printer.cancel()


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeTelegram(token=args.token, enforce_limits=args.enforce_limits)
    await fake.start(args.host, args.port)
    try:
        print(f"Fake Telegram Bot API at {fake.base_url} (TELEGRAM_API_BASE={fake.base_url})")
        body = json.dumps({"user_id": args.chat or 1001, "text": "/start"})
        print(
            f"Chat: curl -X POST {fake.base_url}/_control/message "
            f"-H 'Content-Type: application/json' -d '{body}'",
            flush=True,
        )
        if args.chat is not None:
            await _interactive(fake, args.chat)
        else:
            await asyncio.Event().wait()  # until Ctrl-C
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Telegram Bot API server for trying the bot")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--token", default=None, help="accept only this token (default: any)")
    parser.add_argument("--enforce-limits", action="store_true", help="answer 429 like Telegram")
    parser.add_argument("--chat", type=int, metavar="USER_ID", help="chat as this user on stdin")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
