"""A person's data: what is stored about them (/mydata), and erasing it (/forget, and the daily
clean-up of WhatsApp customers nobody heard from for WHATSAPP_CUSTOMER_RETENTION_MONTHS).

Promises:
- `export` gathers what is stored about one person and nothing about anyone else beyond what
  they were shown: their user row, contacts, requests (with their history and the messages
  they sent and received), the notifications addressed to them, their WhatsApp messages,
  their support threads and the audit entries about them. Every list is capped
  (`EXPORT_LIMIT`) and the document says which ones were.
- `erase` is the one erasure, used by /forget and by the clean-up. Names, phone, e-mail,
  Telegram id, contact preferences and the free texts of their requests are blanked wherever
  they were stored. Their requests stay (states, times, parts and provider kept). Every
  notification to them or about their requests and relayed messages is blanked, and the unsent
  ones are cancelled: the outbox never sends to an erased address. Inbound WhatsApp messages
  and relay threads keep only their ids. The user row stays, named "erased user #<id>", so
  the requests and their history still add up. Audited as "user.erased", naming who asked,
  without the erased values. Erasing twice erases once.
- The Telegram id is let go: a person who writes again after /forget starts afresh (/start).
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    and_,
    cast,
    delete,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import (
    AlertRecord,
    Area,
    CommandMenu,
    DeliveryAttempt,
    ErrorOccurrence,
    FsmState,
    InboundMessage,
    InboundStatus,
    ManualTask,
    Notification,
    NotificationStatus,
    Offer,
    Provider,
    RelayMessage,
    RelayThread,
    RequestMessage,
    Role,
    RoleGrant,
    ServiceRequest,
    ServiceType,
    TransactionLog,
    User,
    WorkflowRecoveryLog,
    WorkflowTransition,
)
from services import audit
from services.clock import Clock
from services.errors import DomainError
from services.localization import N_
from services.whatsapp_desk import KEY_PREFIX
from services.workflow.definition import STATES

# What replaces a free text that was erased (an address, a message, a notification's text).
ERASED = "[erased]"
# Each list of the /mydata document holds at most this many entries, newest first.
EXPORT_LIMIT = 200
# Customers erased per unit of work by the clean-up.
ERASE_BATCH = 20
# The desk's half-finished WhatsApp exchange (services.whatsapp_desk.KEY_PREFIX).
_DESK_KEY = KEY_PREFIX + "{user_id}"
_FINAL_STATES = tuple(state.value for state, spec in STATES.items() if spec.final)
_UNSENT = (NotificationStatus.PENDING.value, NotificationStatus.SENDING.value,
           NotificationStatus.FAILED.value)


class PrivacyError(DomainError):
    user_message = N_("This cannot be done right now.")


class UnknownPerson(PrivacyError):
    user_message = N_("You are not known here.")


class OwnerCannotBeErased(PrivacyError):
    """ADMIN_IDS names the owners by their Telegram id: the bot would make them admins again
    on their next message, so their erasure starts with taking the id out of the settings."""

    user_message = N_(
        "You are an owner of this bot (ADMIN_IDS): your data cannot be erased while your id "
        "is in ADMIN_IDS. Take it out of the settings first, then send /forget again.")


class OpenWork(PrivacyError):
    """Blanking the address of a request a provider is on would leave them without it."""

    user_message = N_(
        "You still have {count} request(s) or job(s) under way. Cancel them (/cancel) or wait "
        "until they are closed, then send /forget again.")


@dataclass(frozen=True, slots=True)
class Erasure:
    user_id: int
    already: bool  # erased before: nothing changed this time
    counts: dict[str, int]


def months_before(moment: datetime, months: int) -> datetime:
    """The same day and time `months` calendar months earlier (the 31st -> the month's last)."""
    total = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(total, 12)
    month += 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


# ------------------------------------------------------------------------------------- export


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def payload_text(payload: dict[str, Any] | None) -> str | None:
    """The words a notification carried: its text, a media caption, or a template's values."""
    if not isinstance(payload, dict):
        return None
    if payload.get("text"):
        return str(payload["text"])
    media = payload.get("media")
    if isinstance(media, dict) and media.get("caption"):
        return str(media["caption"])
    template = payload.get("template")
    if isinstance(template, dict):
        values = ", ".join(str(p) for p in template.get("params") or ())
        return f"{template.get('name', '')}({values})"
    return None


async def _capped(session: AsyncSession, query: Select[Any], name: str,
                  cut: dict[str, dict[str, int]], limit: int) -> list[Any]:
    """At most `limit` rows of `query`; when there are more, `cut[name]` says how many."""
    rows = list((await session.execute(query.limit(limit + 1))).all())
    if len(rows) > limit:
        total = await session.scalar(
            select(func.count()).select_from(query.order_by(None).subquery())
        ) or 0
        cut[name] = {"shown": limit, "total": int(total)}
        rows = rows[:limit]
    return rows


async def export(session: AsyncSession, user_id: int, *, now: datetime,
                 limit: int = EXPORT_LIMIT) -> dict[str, Any]:
    """What is stored about the person, as a JSON-ready document (see the module's promise)."""
    user = await session.get(User, user_id)
    if user is None:
        raise UnknownPerson(user_id)
    language = user.language
    cut: dict[str, dict[str, int]] = {}
    document: dict[str, Any] = {
        "generated_at": _iso(now),
        "order": "lists newest first; a request's history and messages oldest first",
        "user": {
            "id": user.id, "telegram_id": user.telegram_id, "name": user.display_name,
            "username": user.username, "language": user.language,
            "roles": sorted(r.value for r in user.role_set),
            "created_at": _iso(user.created_at), "updated_at": _iso(user.updated_at),
        },
        "contacts": {
            "phone": user.phone, "email": user.email,
            # None: the default order.
            "channel_order": user.channel_order.split(",") if user.channel_order else None,
            "opted_out_of": [c for c in user.opt_outs.split(",") if c],
            "last_whatsapp_message_at": _iso(user.whatsapp_inbound_at),
        },
    }
    r = ServiceRequest
    requests = await _capped(
        session,
        select(r, ServiceType, Area).join(ServiceType, ServiceType.id == r.service_type_id)
        .join(Area, Area.id == r.area_id).where(r.requester_id == user_id)
        .order_by(r.id.desc()), "requests", cut, limit,
    )
    request_ids = [row[0].id for row in requests]
    history: dict[int, list[dict[str, Any]]] = {i: [] for i in request_ids}
    messages: dict[int, list[dict[str, Any]]] = {i: [] for i in request_ids}
    if request_ids:
        t = WorkflowTransition
        for (step,) in await _capped(
            session, select(t).where(t.request_id.in_(request_ids)).order_by(t.id.desc()),
            "request_history", cut, limit * 5,
        ):
            by_you = step.actor_id == user_id
            history[step.request_id].append({
                "action": step.action, "from": step.from_state, "to": step.to_state,
                "at": _iso(step.at), "by_you": by_you,
                # Someone else's reason is theirs to give; the person saw it in a notice.
                **({"reason": step.reason} if by_you and step.reason else {}),
            })
        m = RequestMessage
        for (message,) in await _capped(
            session,
            select(m).where(m.request_id.in_(request_ids),
                            or_(m.sender_id == user_id, m.recipient_id == user_id))
            .order_by(m.id.desc()), "request_messages", cut, limit * 5,
        ):
            messages[message.request_id].append({
                "direction": "sent" if message.sender_id == user_id else "received",
                "text": message.text, "at": _iso(message.at),
            })
    document["requests"] = [
        {
            "id": req.id, "state": req.state, "service": service.name_fr
            if language == "fr" and service.name_fr else service.name_en,
            "area": area.name_fr if language == "fr" and area.name_fr else area.name_en,
            "address": req.address, "time_window": req.time_window,
            "description": req.description, "photos": len(req.photos or ()),
            "urgent": req.urgent, "created_at": _iso(req.created_at),
            "updated_at": _iso(req.updated_at), "state_entered_at": _iso(req.state_entered_at),
            "provider_assigned": req.assignee_id is not None,
            "history": list(reversed(history[req.id])),
            "messages": list(reversed(messages[req.id])),
        }
        for req, service, area in requests
    ]
    n = Notification
    document["notifications"] = [
        {
            "id": row.id, "kind": row.kind, "channel": row.channel, "status": row.status,
            "created_at": _iso(row.created_at), "sent_at": _iso(row.sent_at),
            "delivered_at": _iso(row.delivered_at), "read_at": _iso(row.read_at),
            "failed_at": _iso(row.failed_at), "text": payload_text(row.payload),
        }
        for (row,) in await _capped(
            session, select(n).where(n.recipient_id == user_id).order_by(n.id.desc()),
            "notifications", cut, limit,
        )
    ]
    i = InboundMessage
    document["whatsapp_messages"] = [
        {
            "type": row.type, "text": row.text, "sent_at": _iso(row.sent_at),
            "received_at": _iso(row.received_at), "status": row.status,
        }
        for (row,) in await _capped(
            session, select(i).where(i.user_id == user_id).order_by(i.id.desc()),
            "whatsapp_messages", cut, limit,
        )
    ]
    document["support_threads"] = [
        {"channel": thread.channel, "created_at": _iso(thread.created_at),
         "updated_at": _iso(thread.updated_at)}
        for (thread,) in await _capped(
            session, select(RelayThread).where(RelayThread.user_id == user_id)
            .order_by(RelayThread.id.desc()), "support_threads", cut, limit,
        )
    ]
    log = TransactionLog
    document["audit"] = [
        # Contact values are stored masked there (services.audit); an admin's notes are theirs.
        {"operation": row.operation, "at": _iso(row.at), "before": row.before,
         "after": row.after}
        for (row,) in await _capped(
            session, select(log).where(log.entity_type == "user",
                                       log.entity_id == str(user_id))
            .order_by(log.id.desc()), "audit", cut, limit,
        )
    ]
    if user.erased_at is not None:
        document["erased_at"] = _iso(user.erased_at)
    if cut:
        document["truncated"] = cut
        document["note"] = (
            "Some lists were too long to send whole: each one named under 'truncated' holds "
            "only its newest entries."
        )
    return document


def as_json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8")


# --------------------------------------------------------------------------------------- erase


def _open_requests_of(user_id: Any) -> ColumnElement[bool]:
    r = ServiceRequest
    return and_(r.requester_id == user_id, r.state.not_in(_FINAL_STATES))


def _open_jobs_of(user_id: Any) -> ColumnElement[bool]:
    r = ServiceRequest
    return and_(r.assignee_id == Provider.id, Provider.user_id == user_id,
                r.state.not_in(_FINAL_STATES))


async def open_work(session: AsyncSession, user_id: int) -> int:
    """Requests of theirs, and jobs they hold as a provider, that are not closed yet: /forget
    waits for them, and the clean-up passes such a person by."""
    r = ServiceRequest
    mine = await session.scalar(
        select(func.count()).select_from(r).where(_open_requests_of(user_id))) or 0
    jobs = await session.scalar(
        select(func.count()).select_from(r).join(Provider, Provider.id == r.assignee_id)
        .where(_open_jobs_of(user_id))) or 0
    return int(mine) + int(jobs)


async def _notifications_about(session: AsyncSession, user_id: int,
                               request_ids: list[int]) -> list[int]:
    """Every notification that carries something of theirs: addressed to them, about one of
    their requests (the provider's notices and offers, the messages, dispute alerts), or a
    relay of their messages to the operators' chat."""
    n = Notification
    keys = []
    for request_id in request_ids:
        keys += [n.idempotency_key.like(f"req:{request_id}:%"),
                 n.idempotency_key.like(f"alert:request_disputed:{request_id}:%")]
    if request_ids:
        offers = [o for o in await session.scalars(
            select(Offer.id).where(Offer.request_id.in_(request_ids)))]
        for offer_id in offers:
            keys += [n.idempotency_key == f"offer:{offer_id}",
                     n.idempotency_key.like(f"offer:{offer_id}:%")]
        for message_id in await session.scalars(
                select(RequestMessage.id).where(RequestMessage.request_id.in_(request_ids))):
            keys.append(n.idempotency_key == f"reqmsg:{message_id}")
    relayed = select(RelayMessage.notification_id).join(
        RelayThread, RelayThread.id == RelayMessage.thread_id
    ).where(RelayThread.user_id == user_id, RelayMessage.notification_id.is_not(None))
    ids: set[int] = set(await session.scalars(select(n.id).where(n.recipient_id == user_id)))
    ids |= set(await session.scalars(select(n.id).where(n.id.in_(relayed))))
    # In slices: a customer with many requests must not make one statement too large.
    for start in range(0, len(keys), 200):
        ids |= set(await session.scalars(select(n.id).where(or_(*keys[start:start + 200]))))
    return sorted(ids)


def _in_slices(ids: list[int], size: int = 500) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


async def erase(session: AsyncSession, *, user_id: int, now: datetime, actor_id: int | None,
                reason: str) -> Erasure:
    """Erase the person's data (see the module's promise). `actor_id`: who asked (the person
    themselves; None for the clean-up); `reason` goes to the audit trail."""
    user = await session.get(User, user_id, with_for_update=True)
    if user is None:
        raise UnknownPerson(user_id)
    if user.erased_at is not None:
        return Erasure(user_id, True, {})
    counts: dict[str, int] = {}

    def count(name: str, result: Any) -> None:
        counts[name] = counts.get(name, 0) + (result.rowcount or 0)

    telegram_id, number = user.telegram_id, user.phone
    r = ServiceRequest
    request_ids = list(await session.scalars(select(r.id).where(r.requester_id == user_id)))
    notification_ids = await _notifications_about(session, user_id, request_ids)

    if request_ids:
        # States, times, the provider and the parts stay: the desk's records still add up.
        count("requests", await session.execute(
            update(r).where(r.id.in_(request_ids))
            .values(address=ERASED, time_window="", description="", photos=[])))
        t = WorkflowTransition
        await session.execute(update(t).where(t.request_id.in_(request_ids),
                                              t.reason.is_not(None)).values(reason=ERASED))
        log = TransactionLog
        await session.execute(
            update(log).where(log.entity_type == "service_request",
                              log.entity_id.in_([str(i) for i in request_ids]),
                              log.detail.is_not(None)).values(detail=ERASED))
        w = WorkflowRecoveryLog
        await session.execute(update(w).where(w.request_id.in_(request_ids)).values(
            reason=ERASED))
        for request_id in request_ids:
            await session.execute(
                update(AlertRecord).where(AlertRecord.key.like(f"request_disputed:{request_id}:%"))
                .values(text=ERASED))
    m = RequestMessage
    count("messages", await session.execute(
        update(m).where(or_(m.request_id.in_(request_ids), m.sender_id == user_id))
        .values(text=ERASED)))
    await session.execute(update(WorkflowTransition).where(
        WorkflowTransition.actor_id == user_id, WorkflowTransition.reason.is_not(None)
    ).values(reason=ERASED))

    n = Notification
    for ids in _in_slices(notification_ids):
        count("notifications", await session.execute(
            update(n).where(n.id.in_(ids)).values(payload={"text": ERASED}, updated_at=now)))
        count("notifications_cancelled", await session.execute(
            update(n).where(n.id.in_(ids), n.status.in_(_UNSENT))
            .values(status=NotificationStatus.CANCELLED.value, lease_until=None,
                    lease_owner=None)))
        await session.execute(
            update(DeliveryAttempt).where(DeliveryAttempt.notification_id.in_(ids))
            .values(address=None))
        await session.execute(
            update(ManualTask).where(ManualTask.notification_id.in_(ids)).values(text=ERASED))
    task = ManualTask
    await session.execute(update(task).where(task.user_id == user_id).values(text=ERASED))
    await session.execute(
        update(task).where(task.user_id == user_id, task.status == "open")
        .values(status="closed", closed_at=now, note="the person's data was erased"))

    i = InboundMessage
    theirs = [i.user_id == user_id]
    if number:
        theirs.append(i.sender == number.removeprefix("+"))
    count("whatsapp_messages", await session.execute(
        update(i).where(or_(*theirs)).values(sender="", profile_name=None, text=None,
                                             payload={})))
    await session.execute(
        update(i).where(i.user_id == user_id,
                        i.status.in_((InboundStatus.PENDING.value, InboundStatus.PROCESSING.value)))
        .values(status=InboundStatus.DONE.value, processed_at=now, lease_until=None,
                lease_owner=None, last_error="erased"))
    await session.execute(delete(FsmState).where(FsmState.key == _DESK_KEY.format(user_id=user_id)))
    await _forget_in_error_contexts(session, user_id, telegram_id)
    if telegram_id is not None:
        await session.execute(delete(CommandMenu).where(CommandMenu.telegram_id == telegram_id))
    await session.execute(delete(RoleGrant).where(RoleGrant.user_id == user_id))
    await session.execute(update(Provider).where(Provider.user_id == user_id)
                          .values(active=False, available=False, updated_at=now))

    user.display_name = f"erased user #{user.id}"
    user.username = user.phone = user.email = user.telegram_id = None
    user.channel_order = user.whatsapp_inbound_at = None
    user.opt_outs = ""
    user.roles = Role.REQUESTER.value
    user.erased_at = user.updated_at = now
    audit.record(
        session, operation="user.erased", entity_type="user", entity_id=user.id,
        after={"erased": True, **counts}, actor_id=actor_id, detail=reason, at=now,
    )
    return Erasure(user_id, False, counts)


async def _forget_in_error_contexts(session: AsyncSession, user_id: int,
                                    telegram_id: int | None) -> None:
    """Error occurrences keep who was talking to the bot: their Telegram id goes."""
    o = ErrorOccurrence
    matches = [cast(o.context["user_id"].as_string(), BigInteger) == user_id]
    if telegram_id is not None:
        # BigInteger: Telegram ids pass 2**31 (as_integer() casts to a 32-bit INTEGER on
        # PostgreSQL, and one large id anywhere in the table would fail the whole erasure).
        matches.append(cast(o.context["telegram_user_id"].as_string(), BigInteger) == telegram_id)
    for occurrence in await session.scalars(select(o).where(or_(*matches))):
        context = dict(occurrence.context or {})
        context.pop("telegram_user_id", None)
        if telegram_id is not None and context.get("chat_id") == telegram_id:
            context.pop("chat_id")
        occurrence.context = context


# ------------------------------------------------------------------------- the daily clean-up


def inactive_customers(cutoff: datetime) -> Select[tuple[int]]:
    """WhatsApp customers (no Telegram account) with nothing in or out since `cutoff`: no
    message from them, none to them, no request of theirs touched, no change to their record,
    and nothing of theirs still open."""
    u, n, r, i = User, Notification, ServiceRequest, InboundMessage
    return (
        select(u.id)
        .where(
            u.telegram_id.is_(None), u.phone.is_not(None), u.erased_at.is_(None),
            u.updated_at < cutoff,
            or_(u.whatsapp_inbound_at.is_(None), u.whatsapp_inbound_at < cutoff),
            ~exists().where(i.user_id == u.id, i.received_at >= cutoff),
            ~exists().where(n.recipient_id == u.id,
                            or_(n.created_at >= cutoff, n.sent_at >= cutoff)),
            ~exists().where(r.requester_id == u.id, r.updated_at >= cutoff),
            # Work still open waits for a person, as /forget does: its address is needed.
            ~exists().where(_open_requests_of(u.id)),
            ~exists().select_from(ServiceRequest).where(_open_jobs_of(u.id)),
        )
        .order_by(u.id)
    )


async def erase_inactive_customers(session: AsyncSession, *, cutoff: datetime, now: datetime,
                                   limit: int = ERASE_BATCH) -> int:
    """One batch of the clean-up: erase up to `limit` inactive WhatsApp customers."""
    ids = list(await session.scalars(inactive_customers(cutoff).limit(limit)))
    for user_id in ids:
        await erase(session, user_id=user_id, now=now, actor_id=None,
                    reason=f"no activity since {cutoff.date().isoformat()} (clean-up)")
    return len(ids)


# ------------------------------------------------------------------------ what handlers call


class Privacy:
    """What /mydata and /forget call (aiogram DI: `privacy`); each method is one unit of work
    that has committed when it returns."""

    def __init__(self, db: Database, clock: Clock, *, owner_ids: Iterable[int]) -> None:
        self.db = db
        self.clock = clock
        self.owner_ids = frozenset(owner_ids)

    async def export(self, user_id: int) -> bytes:
        """The /mydata document, UTF-8 JSON."""
        now = self.clock.now()
        return as_json(await self.db.read(lambda s: export(s, user_id, now=now)))

    async def _check(self, session: AsyncSession, user_id: int) -> User:
        user = await session.get(User, user_id)
        if user is None:
            raise UnknownPerson(user_id)
        if user.telegram_id is not None and user.telegram_id in self.owner_ids:
            raise OwnerCannotBeErased(user_id)
        if (busy := await open_work(session, user_id)) > 0:
            raise OpenWork(user_id, count=busy)
        return user

    async def check_forget(self, user_id: int) -> None:
        """Raises the PrivacyError /forget would raise now; the confirmation is asked only
        when there is none."""

        async def work(session: AsyncSession) -> None:
            await self._check(session, user_id)

        await self.db.read(work)

    async def forget(self, user_id: int) -> Erasure:
        """The person asked to be forgotten and confirmed. Raises OwnerCannotBeErased or
        OpenWork (nothing changed); a second time changes nothing."""

        async def work(session: AsyncSession) -> Erasure:
            user = await session.get(User, user_id)
            if user is not None and user.erased_at is not None:
                return Erasure(user_id, True, {})
            await self._check(session, user_id)
            return await erase(session, user_id=user_id, now=self.clock.now(),
                               actor_id=user_id, reason="asked by the person (/forget)")

        return await self.db.run(work)
