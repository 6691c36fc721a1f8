"""The relay between customers and the operators' Telegram chat (OPERATORS_CHAT_ID).

Promises (issue 11):
- Every inbound WhatsApp message is relayed exactly once: `process` runs in the inbound
  message's unit of work (services.whatsapp_inbound), so the relay's outbox row (or the text
  appended to one), the `relay_messages` row (unique on the inbound message) and the inbound
  row's "done" commit together or not at all.
- Each person has one thread in the chat (`relay_threads`): a forum topic when the chat is a
  forum (getChat's is_forum; createForumTopic the first time), else a reply chain under the
  first message relayed for them. The thread is placed when the message is sent, by the
  Telegram channel calling this service's hooks (`place`, `fetch`, `sent`), so nothing here
  talks to Telegram inside a database transaction.
- Relays go through the outbox to the destination "telegram_chat:<chat_id>", paced at the
  group limit by the Telegram pacer. When more wait for the chat than the group's pace sends
  at once, a new relay is held back (`delay`) until about when its turn comes; while a
  person's text relay is waiting, their next messages are appended to it instead of queueing
  one message each, so a burst never queues without end.
- Media are fetched from the Graph API when they are sent; one that cannot be fetched is
  retried for `media_retry` and then relayed as a notice with the reason (at once when trying
  again cannot help: too large, gone).
- Operators' answers in a thread go back to the person: over WhatsApp through the outbox
  (never SMS or e-mail), free-form inside the 24 h window, the WHATSAPP_REPLY_TEMPLATE template
  outside it, else nothing is sent and the operator is told; over Telegram for /support
  conversations. Who answered, and who revealed a number, is audited.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import (
    Notification,
    NotificationStatus,
    RelayMessage,
    RelayThread,
    Role,
    User,
)
from services import audit
from services.actions import Action, ActionName
from services.clock import Clock
from services.localization import N_, render
from services.notifications import destinations, outbox
from services.notifications.channels.base import ChannelName, Outgoing
from services.notifications.channels.telegram import ChatApi, Fetched, Placement
from services.notifications.failures import ChannelError, Failure, FailureClass
from services.relay import render as text
from services.relay.media import MediaError, WhatsAppMedia
from services.whatsapp_inbound import InboundContext

log = logging.getLogger(__name__)

KIND_TEXT = "relay_text"
KIND_MEDIA = "relay_media"
KIND_REPLY = "relay_reply"
MEDIA_SOURCE = "whatsapp-media:"
# A waiting text relay takes more of the same person's messages up to this length, so the
# combined message stays one Telegram message (4096).
COMBINE_LIMIT = 3500
WINDOW = timedelta(hours=24)
_PENDING = NotificationStatus.PENDING.value


@dataclass(frozen=True, slots=True)
class RelayConfig:
    chat_id: int | None
    language: str = "en"  # the operators' language
    reply_template: str | None = None
    media_retry: timedelta = timedelta(minutes=10)
    forum_cache: timedelta = timedelta(minutes=10)
    group_per_minute: float = 20.0  # Telegram's pace in a group (TELEGRAM_GROUP_PER_MINUTE)


class ReplyOutcome(enum.StrEnum):
    SENT = "sent"  # free-form, enqueued
    TEMPLATE = "template"  # outside the window: the reply template, enqueued
    WINDOW_CLOSED = "window_closed"  # outside the window, no template: nothing enqueued
    MEDIA_OUTSIDE_WINDOW = "media_outside_window"  # a file cannot go in a template
    OPTED_OUT = "opted_out"  # the customer sent STOP: nothing enqueued
    MEDIA_FAILED = "media_failed"  # the file could not be uploaded
    NO_THREAD = "no_thread"  # not an answer to anyone: ordinary chatter


@dataclass(frozen=True, slots=True)
class Reply:
    outcome: ReplyOutcome
    reason: str = ""
    notification_id: int | None = None


@dataclass(frozen=True, slots=True)
class OperatorFile:
    """A photo or document an operator sent; `download` fetches its bytes (from Telegram)."""

    kind: str  # "image" | "document"
    file_id: str
    filename: str
    mime_type: str
    size: int | None
    download: Callable[[], Awaitable[bytes]]


class NotAllowed(Exception):
    """Revealing a number needs the operator or admin role."""


@dataclass(frozen=True, slots=True)
class _Thread:
    id: int
    chat_id: int
    user_id: int
    channel: str
    topic_id: int | None
    root_message_id: int | None
    name: str
    phone: str | None
    language: str
    whatsapp_inbound_at: datetime | None
    opt_outs: str


class Relay:
    def __init__(self, db: Database, clock: Clock, config: RelayConfig,
                 media: WhatsAppMedia | None = None) -> None:
        self.db = db
        self.clock = clock
        self.config = config
        self.media = media
        self._forum: dict[int, tuple[bool, float]] = {}
        self._topic_locks: dict[int, asyncio.Lock] = {}

    @property
    def chat_id(self) -> int | None:
        return self.config.chat_id

    @property
    def enabled(self) -> bool:
        return self.config.chat_id is not None

    # ------------------------------------------------------------------ relaying in

    async def process(self, session: AsyncSession, ctx: InboundContext) -> None:
        """Inbound processor (services.whatsapp_inbound.Processor): relay the message.

        A step before this one may set `ctx.relay = False` (a message the desk answered)."""
        chat_id = self.config.chat_id
        user = ctx.user
        if chat_id is None or user is None or ctx.relay is False:
            return
        row = ctx.message
        thread = await self._thread(session, chat_id, user, "whatsapp", ctx.now)
        language = self.config.language
        head = text.header(language, row.profile_name or user.display_name, user.phone,
                           "whatsapp")
        payload = row.payload if isinstance(row.payload, dict) else {}
        body = text.describe(language, row.type, payload, row.text)
        buttons = [self._reveal_button(user.id)]
        media = text.media_kind(row.type, payload)
        key = f"relay:wa:{row.wamid}"[:200]
        if media is not None:
            kind, fields = media
            notification_id = await self._enqueue_media(
                session, chat_id, key, ctx.now, kind=kind,
                source=MEDIA_SOURCE + fields.pop("media_id"),
                caption="\n".join(p for p in (head, body) if p), fetch=True,
                buttons=buttons, **fields,
            )
        else:
            notification_id = await self._enqueue_text(session, thread, chat_id, key, ctx.now,
                                                       head, body, buttons)
        session.add(RelayMessage(thread_id=thread.id, notification_id=notification_id,
                                 inbound_message_id=row.id, created_at=ctx.now))

    async def _thread(self, session: AsyncSession, chat_id: int, user: User, channel: str,
                      now: datetime) -> RelayThread:
        thread = await session.scalar(
            select(RelayThread).where(RelayThread.chat_id == chat_id,
                                      RelayThread.user_id == user.id).with_for_update()
        )
        if thread is None:
            thread = RelayThread(chat_id=chat_id, user_id=user.id, channel=channel,
                                 created_at=now, updated_at=now)
            session.add(thread)
            await session.flush()
        elif thread.channel != channel:  # answers go where the person last wrote from
            thread.channel = channel
            thread.updated_at = now
        return thread

    def _reveal_button(self, user_id: int) -> dict[str, Any]:
        label = render(self.config.language, N_("Show number"))
        return Action(ActionName.REVEAL_NUMBER, user_id).as_payload(label)

    async def _enqueue_text(
        self, session: AsyncSession, thread: RelayThread, chat_id: int, key: str,
        now: datetime, head: str, body: str, buttons: list[dict[str, Any]],
    ) -> int:
        """A new text relay, or `body` appended to the person's relay still waiting."""
        waiting = await self._waiting_text(session, thread.id)
        if waiting is not None:
            current = str(waiting.payload.get("text") or "")
            if len(current) + len(body) + 1 <= COMBINE_LIMIT:
                waiting.payload = {**waiting.payload, "text": f"{current}\n{body}"}
                waiting.updated_at = now
                return waiting.id
        enqueued = await outbox.enqueue(
            session, destination=destinations.telegram_chat(chat_id), kind=KIND_TEXT,
            idempotency_key=key, now=now, text=f"{head}\n{body}" if body else head,
            buttons=buttons or None, priority=outbox.PRIORITY_INTERACTIVE,
            delay=await self._turn(session, chat_id),
        )
        return enqueued.id

    async def _turn(self, session: AsyncSession, chat_id: int) -> timedelta:
        """How long a new relay waits before the dispatcher may take it: about when its turn
        at the group's pace comes, given the relays already waiting for the chat. Waiting
        unclaimed, it can take the same person's next messages."""
        waiting = await session.scalar(
            select(func.count()).select_from(Notification).where(
                Notification.destination == destinations.telegram_chat(chat_id),
                Notification.kind.in_((KIND_TEXT, KIND_MEDIA)),
                Notification.status.in_((_PENDING, NotificationStatus.SENDING.value)),
            )
        ) or 0
        interval = 60.0 / self.config.group_per_minute
        return timedelta(seconds=max(waiting - 1, 0) * interval)

    async def _waiting_text(self, session: AsyncSession, thread_id: int) -> Notification | None:
        last = await session.scalar(
            select(RelayMessage.notification_id)
            .where(RelayMessage.thread_id == thread_id, RelayMessage.notification_id.is_not(None))
            .order_by(RelayMessage.id.desc()).limit(1)
        )
        if last is None:
            return None
        query = select(Notification).where(
            Notification.id == last, Notification.kind == KIND_TEXT,
            Notification.status == _PENDING, Notification.parts_sent == 0,
        )
        if session.get_bind().dialect.name == "postgresql":
            # A row a dispatcher is claiming is left to it: the message gets a row of its own.
            query = query.with_for_update(skip_locked=True)
        return await session.scalar(query)

    async def _enqueue_media(
        self, session: AsyncSession, chat_id: int, key: str, now: datetime, *, kind: str,
        source: str, caption: str, fetch: bool, buttons: list[dict[str, Any]] | None,
        **fields: Any,
    ) -> int:
        media: dict[str, Any] = {"type": kind, "source": source, "caption": caption, **fields}
        if fetch:
            media["fetch"] = True
            media["fetch_until"] = (now + self.config.media_retry).isoformat()
        enqueued = await outbox.enqueue(
            session, destination=destinations.telegram_chat(chat_id), kind=KIND_MEDIA,
            idempotency_key=key, now=now, media=media, buttons=buttons or None,
            priority=outbox.PRIORITY_INTERACTIVE, delay=await self._turn(session, chat_id),
        )
        return enqueued.id

    # ------------------------------------------------------------ /support (Telegram)

    async def open_support(self, user_id: int) -> bool:
        """Open (or reopen) a Telegram user's thread; False when the relay is off."""
        chat_id = self.config.chat_id
        if chat_id is None:
            return False

        async def work(session: AsyncSession) -> bool:
            user = await session.get(User, user_id)
            if user is None:
                return False
            await self._thread(session, chat_id, user, "telegram", self.clock.now())
            return True

        return await self.db.run(work)

    async def from_telegram_user(
        self, user_id: int, message_id: int, *, body: str = "",
        media: tuple[str, str] | None = None,
    ) -> bool:
        """Relay a Telegram user's message (text, or `media` = (kind, file id) with `body` as
        its caption) to their thread; False when the relay is off."""
        chat_id = self.config.chat_id
        if chat_id is None:
            return False

        async def work(session: AsyncSession) -> bool:
            user = await session.get(User, user_id)
            if user is None or user.telegram_id is None:
                return False
            now = self.clock.now()
            thread = await self._thread(session, chat_id, user, "telegram", now)
            head = text.header(self.config.language, user.display_name, None, "telegram")
            key = f"relay:tg:{user.telegram_id}:{message_id}"
            if media is not None:
                notification_id = await self._enqueue_media(
                    session, chat_id, key, now, kind=media[0], source=media[1],
                    caption="\n".join(p for p in (head, body) if p), fetch=False, buttons=None,
                )
            else:
                notification_id = await self._enqueue_text(session, thread, chat_id, key, now,
                                                           head, body, [])
            session.add(RelayMessage(thread_id=thread.id, notification_id=notification_id,
                                     created_at=now))
            return True

        return await self.db.run(work)

    # ------------------------------------------------------------------ operators

    async def reveal(self, customer_id: int, *, actor_id: int, roles: frozenset[Role]) -> str:
        """The customer's full number, for an operator or an admin; audited."""
        if Role.OPERATOR not in roles and Role.ADMIN not in roles:
            raise NotAllowed

        async def work(session: AsyncSession) -> str:
            user = await session.get(User, customer_id)
            phone = user.phone if user is not None else None
            audit.record(session, operation="relay.reveal_number", entity_type="user",
                         entity_id=customer_id, actor_id=actor_id, at=self.clock.now(),
                         outcome="ok" if phone else "no_number")
            return phone or ""

        return await self.db.run(work)

    async def find_thread(self, chat_id: int, *, topic_id: int | None,
                          reply_to: int | None) -> _Thread | None:
        """The thread an operator's message answers: its forum topic, or the relayed message
        (or reply chain root) it replies to."""
        if chat_id != self.config.chat_id:
            return None

        async def work(session: AsyncSession) -> _Thread | None:
            found: RelayThread | None = None
            if topic_id is not None:
                found = await session.scalar(select(RelayThread).where(
                    RelayThread.chat_id == chat_id, RelayThread.topic_id == topic_id).limit(1))
            if found is None and reply_to is not None:
                found = await session.scalar(
                    select(RelayThread).join(RelayMessage, RelayMessage.thread_id == RelayThread.id)
                    .where(RelayThread.chat_id == chat_id,
                           RelayMessage.telegram_message_id == reply_to)
                    .order_by(RelayMessage.id.desc()).limit(1)
                ) or await session.scalar(select(RelayThread).where(
                    RelayThread.chat_id == chat_id, RelayThread.root_message_id == reply_to
                ).limit(1))
            return await self._snapshot(session, found) if found is not None else None

        return await self.db.read(work)

    async def _snapshot(self, session: AsyncSession, thread: RelayThread) -> _Thread:
        user = await session.get(User, thread.user_id)
        assert user is not None  # the foreign key cascades
        return _Thread(thread.id, thread.chat_id, thread.user_id, thread.channel,
                       thread.topic_id, thread.root_message_id, user.display_name, user.phone,
                       user.language, user.whatsapp_inbound_at, user.opt_outs or "")

    async def reply(
        self, *, chat_id: int, message_id: int, topic_id: int | None, reply_to: int | None,
        operator_id: int, body: str = "", file: OperatorFile | None = None,
    ) -> Reply:
        """An operator's message in the chat: sent to the person whose thread it is in."""
        thread = await self.find_thread(chat_id, topic_id=topic_id, reply_to=reply_to)
        if thread is None:
            return Reply(ReplyOutcome.NO_THREAD)
        origin = (message_id, operator_id)
        if thread.channel == ChannelName.TELEGRAM:
            return await self._reply_telegram(thread, origin, body, file)
        return await self._reply_whatsapp(thread, origin, body, file)

    async def _reply_telegram(self, thread: _Thread, origin: tuple[int, int], body: str,
                              file: OperatorFile | None) -> Reply:
        said = render(thread.language, N_("An operator answers:"))
        if file is not None:
            media = {"type": file.kind, "source": file.file_id,
                     "caption": f"{said}\n{body}".strip()}
            return await self._enqueue_reply(thread, origin, ReplyOutcome.SENT,
                                             "telegram", media=media)
        return await self._enqueue_reply(thread, origin, ReplyOutcome.SENT,
                                         "telegram", text=f"{said}\n{body}")

    async def _reply_whatsapp(self, thread: _Thread, origin: tuple[int, int], body: str,
                              file: OperatorFile | None) -> Reply:
        if ChannelName.WHATSAPP.value in thread.opt_outs.split(","):
            return Reply(ReplyOutcome.OPTED_OUT)
        now = self.clock.now()
        opened = thread.whatsapp_inbound_at
        inside = opened is not None and now - opened < WINDOW
        if not inside:
            if file is not None:
                return Reply(ReplyOutcome.MEDIA_OUTSIDE_WINDOW)
            if not self.config.reply_template or not body:
                return Reply(ReplyOutcome.WINDOW_CLOSED)
            template = {"name": self.config.reply_template, "language": thread.language,
                        "params": [body]}
            return await self._enqueue_reply(thread, origin, ReplyOutcome.TEMPLATE,
                                             "whatsapp", template=template)
        if file is None:
            return await self._enqueue_reply(thread, origin, ReplyOutcome.SENT,
                                             "whatsapp", text=body)
        if self.media is None:
            return Reply(ReplyOutcome.MEDIA_FAILED, "WhatsApp is not configured")
        try:
            data = await file.download()
            media_id = await self.media.upload(data, mime_type=file.mime_type,
                                               filename=file.filename)
        except MediaError as exc:
            return Reply(ReplyOutcome.MEDIA_FAILED, exc.reason)
        media: dict[str, Any] = {"type": file.kind, "id": media_id, "source": "",
                                 "caption": body or None}
        if file.kind == "document":
            media["filename"] = file.filename
        return await self._enqueue_reply(thread, origin, ReplyOutcome.SENT,
                                         "whatsapp", media=media)

    async def _enqueue_reply(self, thread: _Thread, origin: tuple[int, int],
                             outcome: ReplyOutcome, channel: str, **content: Any) -> Reply:
        """The answer (operator message `origin` = (message id, operator id)) in the outbox,
        audited; a reply to the operator's message still belongs to the thread."""
        message_id, operator_id = origin

        async def work(session: AsyncSession) -> int:
            now = self.clock.now()
            enqueued = await outbox.enqueue(
                session, recipient_id=thread.user_id, kind=KIND_REPLY,
                idempotency_key=f"relay-reply:{thread.chat_id}:{message_id}", now=now,
                channels=[channel], allow_fallback=False, manual=False,
                priority=outbox.PRIORITY_INTERACTIVE, **content,
            )
            if enqueued.created:
                session.add(RelayMessage(thread_id=thread.id, telegram_message_id=message_id,
                                         created_at=now))
                audit.record(session, operation="relay.reply", entity_type="user",
                             entity_id=thread.user_id, actor_id=operator_id, at=now,
                             after={"channel": channel, "mode": outcome.value,
                                    "notification": enqueued.id,
                                    "media": "media" in content})
            return enqueued.id

        return Reply(outcome, notification_id=await self.db.run(work))

    # ------------------------------------------- hooks of the Telegram channel (sending)

    def handles(self, message: Outgoing) -> bool:
        return message.kind in (KIND_TEXT, KIND_MEDIA)

    async def _sent_thread(self, notification_id: int) -> _Thread | None:
        async def work(session: AsyncSession) -> _Thread | None:
            thread = await session.scalar(
                select(RelayThread).join(RelayMessage, RelayMessage.thread_id == RelayThread.id)
                .where(RelayMessage.notification_id == notification_id).limit(1)
            )
            return await self._snapshot(session, thread) if thread is not None else None

        return await self.db.read(work)

    async def place(self, chats: ChatApi, chat_id: int, message: Outgoing) -> Placement:
        """The person's forum topic (created the first time), or a reply to their first
        relayed message; nothing for their very first message in a reply chain."""
        thread = await self._sent_thread(message.notification_id)
        if thread is None:
            return Placement()
        if thread.topic_id is not None:
            return Placement(thread_id=thread.topic_id)
        if not await self._is_forum(chats, chat_id):
            return Placement(reply_to=thread.root_message_id)
        lock = self._topic_locks.setdefault(thread.id, asyncio.Lock())
        async with lock:
            thread = await self._sent_thread(message.notification_id) or thread
            if thread.topic_id is not None:
                return Placement(thread_id=thread.topic_id)
            topic = await chats.create_topic(chat_id, text.topic_title(thread.name, thread.phone))
            if topic is None:  # topics refused: a reply chain it is, for this chat
                self._forum[chat_id] = (False, self.clock.monotonic()
                                        + self.config.forum_cache.total_seconds())
                return Placement(reply_to=thread.root_message_id)

            async def store(session: AsyncSession) -> int:
                await session.execute(
                    update(RelayThread)
                    .where(RelayThread.id == thread.id, RelayThread.topic_id.is_(None))
                    .values(topic_id=topic, updated_at=self.clock.now())
                )
                stored = await session.scalar(
                    select(RelayThread.topic_id).where(RelayThread.id == thread.id))
                return int(stored if stored is not None else topic)

            topic = await self.db.run(store)
        self._topic_locks.pop(thread.id, None)
        return Placement(thread_id=topic)

    async def _is_forum(self, chats: ChatApi, chat_id: int) -> bool:
        now = self.clock.monotonic()
        known = self._forum.get(chat_id)
        if known is not None and now < known[1]:
            return known[0]
        forum = await chats.is_forum(chat_id)
        self._forum[chat_id] = (forum, now + self.config.forum_cache.total_seconds())
        return forum

    async def fetch(self, message: Outgoing) -> Fetched | str:
        media = message.media or {}
        kind = str(media.get("type") or "document")
        media_id = str(media.get("source") or "").removeprefix(MEDIA_SOURCE)
        try:
            if self.media is None:
                raise MediaError("WhatsApp is not configured", transient=False)
            downloaded = await self.media.fetch(media_id, kind)
        except MediaError as exc:
            until = media.get("fetch_until")
            retry = exc.transient and isinstance(until, str) and \
                self.clock.now() < datetime.fromisoformat(until)
            if retry:
                raise ChannelError(Failure(FailureClass.TRANSIENT, "whatsapp_media",
                                           "media_fetch", exc.reason[:200])) from exc
            log.warning("notification %s: a %s could not be fetched (%s); relaying a notice",
                        message.notification_id, kind, exc.reason)
            notice = "📎 " + render(self.config.language,
                                   N_("The customer sent a file ({kind}) that could not be "
                                      "relayed: {reason}"), kind=kind, reason=exc.reason)
            caption = str(media.get("caption") or "")
            return f"{caption}\n{notice}" if caption else notice
        return Fetched(downloaded.data, str(media.get("filename") or kind))

    async def sent(self, chat_id: int, message: Outgoing, message_id: int) -> None:
        """Remember the Telegram message id (operators reply to it); the first one of a reply
        chain becomes its root."""

        async def work(session: AsyncSession) -> None:
            await session.execute(
                update(RelayMessage)
                .where(RelayMessage.notification_id == message.notification_id)
                .values(telegram_message_id=message_id)
            )
            thread_id = await session.scalar(
                select(RelayMessage.thread_id)
                .where(RelayMessage.notification_id == message.notification_id).limit(1))
            if thread_id is not None:
                await session.execute(
                    update(RelayThread)
                    .where(RelayThread.id == thread_id, RelayThread.topic_id.is_(None),
                           RelayThread.root_message_id.is_(None))
                    .values(root_message_id=message_id, updated_at=self.clock.now())
                )

        await self.db.run(work)

    async def topic_gone(self, chat_id: int, message: Outgoing) -> None:
        """The person's topic was deleted: forgotten, so the next try opens a new one."""

        async def work(session: AsyncSession) -> None:
            thread_id = await session.scalar(
                select(RelayMessage.thread_id)
                .where(RelayMessage.notification_id == message.notification_id).limit(1))
            if thread_id is not None:
                await session.execute(update(RelayThread).where(RelayThread.id == thread_id)
                                      .values(topic_id=None, updated_at=self.clock.now()))
                log.warning("relay thread %s: its forum topic is gone; a new one will be "
                            "opened", thread_id)

        await self.db.run(work)

    async def close(self) -> None:
        if self.media is not None:
            await self.media.close()
