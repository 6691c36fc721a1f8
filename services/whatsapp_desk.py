"""The service desk over WhatsApp: customers open and follow service requests by chatting.

Promises (issue 11, item 6):
- An inbound processor (services.whatsapp_inbound.Processor) that runs before the relay, in
  the inbound message's unit of work: what the desk answers, the conversation's state, the
  request it opens and the message's "done" commit together, so a crash never opens a request
  twice nor answers twice (each answer's idempotency key is the inbound message's wamid).
- "new" (or the "New request" button) opens a short guided exchange: service type, area,
  address, description, urgency, confirm; the request is opened through the same workflow
  as Telegram's /new (services.workflow.matching.open_request). "status" lists the customer's
  requests; "menu" / "help" offers the two buttons; "cancel" abandons the exchange. STOP and
  START stay the inbound worker's (they end an exchange and are relayed as before). Anything
  else is relayed to the operators; the exchange itself is not (`ctx.relay = False`).
- Choices are offered as WhatsApp interactive messages (a list, or reply buttons) sent through
  the outbox on WhatsApp only; a typed number or name works as well.
- The exchange's state is kept in the database (`fsm_states`, key "whatsapp-desk:<user id>"),
  so it survives restarts; it is forgotten after `EXPIRY` without an answer.
- Words are the customer's language (their record): English or French. The desk answers only
  inside the 24 h window and never a customer who sent STOP: then the message is relayed.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import FsmState, Role, User
from services.alerts import Alerts
from services.localization import N_, render
from services.notifications import outbox
from services.notifications.channels.base import ChannelName
from services.whatsapp_inbound import InboundContext
from services.workflow import catalogue as catalogue_store
from services.workflow import manager, matching, queries
from services.workflow.config import WorkflowConfig
from services.workflow.definition import State
from services.workflow.errors import WorkflowError
from services.workflow.notify import STATE_LABELS
from services.workflow.service import MAX_ADDRESS, MAX_DESCRIPTION, NewRequest
from services.workflow.views import CatalogueEntry

log = logging.getLogger(__name__)

KIND = "whatsapp_desk"
KEY_PREFIX = "whatsapp-desk:"
EXPIRY = timedelta(hours=24)
WINDOW = timedelta(hours=24)
ID_PREFIX = "desk:"  # the ids of the interactive rows and buttons the desk offers
# Meta's limits on interactive messages.
MAX_LIST_ROWS = 10
ROW_TITLE = 24
ROW_DESCRIPTION = 72
BUTTON_TITLE = 20
BODY = 1024
STATUS_LIMIT = 10

NEW_WORDS = frozenset({"new", "new request", "nouveau", "nouvelle", "nouvelle demande"})
STATUS_WORDS = frozenset({"status", "my requests", "statut", "état", "etat", "mes demandes",
                          "suivi"})
MENU_WORDS = frozenset({"menu", "help", "aide"})
CANCEL_WORDS = frozenset({"cancel", "annuler", "annule"})
YES_WORDS = frozenset({"yes", "y", "oui", "o", "urgent", "urgente"})
NO_WORDS = frozenset({"no", "n", "non", "not urgent", "pas urgent"})
SKIP_WORDS = frozenset({"-", "skip", "passer"})
SEND_WORDS = frozenset({"yes", "y", "oui", "o", "ok", "send", "envoyer"})

SERVICE, AREA, ADDRESS, DESCRIPTION, URGENCY, CONFIRM = (
    "service", "area", "address", "description", "urgency", "confirm")

_NEW_BUTTON = N_("New request")
_STATUS_BUTTON = N_("My requests")
_CHOOSE = N_("Choose")
_MENU = N_(
    "Hello! Tap \"New request\" to ask for a service, \"My requests\" to follow yours, or "
    "just write to us: an operator will answer.")
_ASK_SERVICE = N_("What do you need? Choose a service (send \"cancel\" to stop):")
_ASK_AREA = N_("Which area is it in?")
_ASK_ADDRESS = N_("What is the address where the work is needed?")
_ASK_DESCRIPTION = N_("Describe the problem in a few words (or send \"-\" to skip).")
_ASK_URGENCY = N_("Is it urgent?")
_PICK_ONE = N_("Please choose one of the options.")
_NUMBERED = N_("Reply with the number of your choice.")
_SERVICES = N_("Services")
_AREAS = N_("Areas")
_CHECK = N_("Please check your request:")
_SEND = N_("Send request")
_CANCEL = N_("Cancel")
_URGENT = N_("Urgent")
_NOT_URGENT = N_("Not urgent")
_CANCELLED = N_("Cancelled: nothing was changed.")
_NO_SERVICES = N_("No services are available yet. Please try again later.")
_ADDRESS_LENGTH = N_("Please send the address in at most {limit} characters.")
_DESCRIPTION_LENGTH = N_("Please describe it in at most {limit} characters.")
_SENT = N_("Your request #{id} is sent. I am asking providers and will tell you as soon as one "
           "accepts.")
_ESCALATED = N_("Your request #{id} is saved. No provider is free right now: an operator has "
                "been told and will find one for you.")
_NONE_YET = N_("You have no requests yet. Send \"new\" to open one.")
_YOUR_REQUESTS = N_("Your requests")
_STATUS_LINE = N_("#{id} {service}, {area}: {state}")
_ON_IT = N_("({name} is on it)")
_REFUSED = N_("Your request could not be opened: {reason}")


def normalize(text: str | None) -> str:
    """A typed word as the desk compares it: NFC, case-folded, trimmed, spaces collapsed."""
    if not text:
        return ""
    folded = unicodedata.normalize("NFC", text).casefold().strip().strip(".!?¡¿").strip()
    return re.sub(r"\s+", " ", folded)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class _Said:
    """What the customer sent, as the desk reads it."""

    word: str  # the text, normalized ("" when none)
    text: str  # the text as typed (stripped)
    choice: str | None  # the id of a desk button or row they tapped
    location: str | None  # a shared location, as an address


def _read(ctx: InboundContext) -> _Said:
    row = ctx.message
    payload = row.payload if isinstance(row.payload, dict) else {}
    choice = None
    if row.type == "interactive":
        interactive = payload.get("interactive")
        if isinstance(interactive, dict):
            reply = interactive.get(str(interactive.get("type")))
            found = reply.get("id") if isinstance(reply, dict) else None
            if isinstance(found, str) and found.startswith(ID_PREFIX):
                choice = found.removeprefix(ID_PREFIX)
    location = None
    if row.type == "location" and isinstance(payload.get("location"), dict):
        place = payload["location"]
        parts = [str(place[k]) for k in ("name", "address") if place.get(k)]
        if not parts and place.get("latitude") is not None:
            parts = [f"{place.get('latitude')}, {place.get('longitude')}"]
        location = ", ".join(parts)[:MAX_ADDRESS] or None
    # A tapped row or button counts by its id only: one the desk did not offer (an old
    # template's, say) is the operators' business whatever its title.
    text = (row.text or "").strip() if row.type in ("text", "button") else ""
    return _Said(normalize(text), text, choice, location)


class WhatsAppDesk:
    """The inbound processor (`process`); see the module docstring."""

    def __init__(self, alerts: Alerts, config: WorkflowConfig | None = None) -> None:
        self.alerts = alerts
        self.config = config or WorkflowConfig()

    async def process(self, session: AsyncSession, ctx: InboundContext) -> None:
        user, row = ctx.user, ctx.message
        if user is None:
            return
        key = f"{KEY_PREFIX}{user.id}"
        if row.keyword is not None:  # STOP / START: the worker's; an exchange ends there
            await _forget(session, key)
            return
        if not self._can_answer(ctx, user):
            return
        said = _read(ctx)
        state = await _load(session, key, ctx.now)
        command = self._command(said)
        if command == "new":
            await self._start(session, ctx, user, key)
        elif command == "status":
            await _forget(session, key)
            await self._status(session, ctx, user)
        elif command == "menu":
            await _forget(session, key)
            await self._menu(session, ctx, user)
        elif state is None:
            return  # ordinary chatter: relayed
        elif command == "cancel":
            await _forget(session, key)
            await _say(session, ctx, user, text=render(user.language, _CANCELLED))
        else:
            step, data = state
            if not await self._answer(session, ctx, user, key, step, data, said):
                return  # not an answer (a photo, a contact...): relayed, the exchange waits
        ctx.relay = False

    @staticmethod
    def _can_answer(ctx: InboundContext, user: User) -> bool:
        if ChannelName.WHATSAPP.value in (user.opt_outs or "").split(","):
            return False
        opened = user.whatsapp_inbound_at
        return opened is not None and ctx.now - opened < WINDOW and \
            ctx.now - ctx.message.sent_at < WINDOW

    @staticmethod
    def _command(said: _Said) -> str | None:
        if said.choice in ("new", "status", "menu", "cancel"):
            return said.choice
        for name, words in (("new", NEW_WORDS), ("status", STATUS_WORDS),
                            ("menu", MENU_WORDS), ("cancel", CANCEL_WORDS)):
            if said.word in words:
                return name
        return None

    # ------------------------------------------------------------------------- screens

    async def _menu(self, session: AsyncSession, ctx: InboundContext, user: User) -> None:
        language = user.language
        await _say(session, ctx, user, interactive=_buttons(
            render(language, _MENU),
            [("new", render(language, _NEW_BUTTON)), ("status", render(language, _STATUS_BUTTON))],
        ))

    async def _status(self, session: AsyncSession, ctx: InboundContext, user: User) -> None:
        language = user.language
        views = await queries.for_requester(session, user.id, limit=STATUS_LIMIT)
        if not views:
            await _say(session, ctx, user, text=render(language, _NONE_YET))
            return
        lines = [render(language, _YOUR_REQUESTS)]
        for view in views:
            line = render(language, _STATUS_LINE, id=view.id,
                          service=view.service_type.name(language),
                          area=view.area.name(language),
                          state=render(language, STATE_LABELS[view.state]))
            if view.assignee_name:
                line += " " + render(language, _ON_IT, name=view.assignee_name)
            lines.append(line)
        await _say(session, ctx, user, text="\n".join(lines))

    async def _start(self, session: AsyncSession, ctx: InboundContext, user: User,
                     key: str) -> None:
        services = await catalogue_store.service_types(session)
        areas = await catalogue_store.areas(session)
        if not services or not areas:
            await _forget(session, key)
            await _say(session, ctx, user, text=render(user.language, _NO_SERVICES))
            return
        await _save(session, key, SERVICE, {}, ctx.now)
        await self._ask(session, ctx, user, SERVICE, {})

    async def _ask(self, session: AsyncSession, ctx: InboundContext, user: User, step: str,
                   data: dict[str, Any], *, again: bool = False) -> None:
        """The question of `step` (again: after an answer that did not fit)."""
        language = user.language
        prefix = render(language, _PICK_ONE) + "\n" if again else ""
        if step in (SERVICE, AREA):
            entries = await (catalogue_store.service_types(session) if step == SERVICE
                             else catalogue_store.areas(session))
            question = render(language, _ASK_SERVICE if step == SERVICE else _ASK_AREA)
            title = render(language, _SERVICES if step == SERVICE else _AREAS)
            await _say(session, ctx, user, **_choices(
                prefix + question, title, render(language, _CHOOSE), step, entries, language))
        elif step == ADDRESS:
            await _say(session, ctx, user, text=prefix + render(language, _ASK_ADDRESS))
        elif step == DESCRIPTION:
            await _say(session, ctx, user, text=prefix + render(language, _ASK_DESCRIPTION))
        elif step == URGENCY:
            await _say(session, ctx, user, interactive=_buttons(
                prefix + render(language, _ASK_URGENCY),
                [("urgent:yes", render(language, _URGENT)),
                 ("urgent:no", render(language, _NOT_URGENT))]))
        else:
            await _say(session, ctx, user, interactive=_buttons(
                prefix + await self._summary(session, language, data),
                [("send", render(language, _SEND)), ("cancel", render(language, _CANCEL))]))

    async def _summary(self, session: AsyncSession, language: str, data: dict[str, Any]) -> str:
        services = {e.id: e for e in await catalogue_store.service_types(session)}
        areas = {e.id: e for e in await catalogue_store.areas(session)}
        service, area = services.get(data.get("service_type_id")), areas.get(data.get("area_id"))
        lines = [
            render(language, _CHECK),
            render(language, N_("Service: {name}"),
                   name=service.name(language) if service else "?"),
            render(language, N_("Area: {name}"), name=area.name(language) if area else "?"),
            render(language, N_("Address: {address}"), address=data.get("address", "")),
            render(language, N_("Description: {text}"), text=data.get("description") or "-"),
            render(language, _URGENT if data.get("urgent") else _NOT_URGENT),
        ]
        return "\n".join(lines)

    # ------------------------------------------------------------------------- answers

    async def _answer(self, session: AsyncSession, ctx: InboundContext, user: User, key: str,
                      step: str, data: dict[str, Any], said: _Said) -> bool:
        """Take `said` as the answer to `step`; False when it is not an answer at all."""
        language = user.language
        if step in (SERVICE, AREA):
            if not said.word and said.choice is None:
                return False
            entries = await (catalogue_store.service_types(session) if step == SERVICE
                             else catalogue_store.areas(session))
            chosen = _pick(entries, step, said)
            if chosen is None:
                await self._ask(session, ctx, user, step, data, again=True)
                return True
            data = {**data, ("service_type_id" if step == SERVICE else "area_id"): chosen.id}
            return await self._next(session, ctx, user, key,
                                    AREA if step == SERVICE else ADDRESS, data)
        if step == ADDRESS:
            address = said.location or said.text
            if not address:
                return False
            if len(address) > MAX_ADDRESS:
                await _say(session, ctx, user,
                           text=render(language, _ADDRESS_LENGTH, limit=MAX_ADDRESS))
                return True
            return await self._next(session, ctx, user, key, DESCRIPTION,
                                    {**data, "address": address})
        if step == DESCRIPTION:
            if not said.text:
                return False
            if len(said.text) > MAX_DESCRIPTION:
                await _say(session, ctx, user,
                           text=render(language, _DESCRIPTION_LENGTH, limit=MAX_DESCRIPTION))
                return True
            description = "" if said.word in SKIP_WORDS else said.text
            return await self._next(session, ctx, user, key, URGENCY,
                                    {**data, "description": description})
        if step == URGENCY:
            if not said.word and said.choice is None:
                return False
            if said.choice in ("urgent:yes", "urgent:no"):
                urgent: bool | None = said.choice == "urgent:yes"
            else:
                urgent = True if said.word in YES_WORDS else (
                    False if said.word in NO_WORDS else None)
            if urgent is None:
                await self._ask(session, ctx, user, step, data, again=True)
                return True
            return await self._next(session, ctx, user, key, CONFIRM, {**data, "urgent": urgent})
        # CONFIRM
        if not said.word and said.choice is None:
            return False
        if said.choice == "send" or said.word in SEND_WORDS:
            await _forget(session, key)
            await self._open(session, ctx, user, data)
        elif said.word in NO_WORDS:
            await _forget(session, key)
            await _say(session, ctx, user, text=render(language, _CANCELLED))
        else:
            await self._ask(session, ctx, user, step, data, again=True)
        return True

    async def _next(self, session: AsyncSession, ctx: InboundContext, user: User, key: str,
                    step: str, data: dict[str, Any]) -> bool:
        await _save(session, key, step, data, ctx.now)
        await self._ask(session, ctx, user, step, data)
        return True

    async def _open(self, session: AsyncSession, ctx: InboundContext, user: User,
                    data: dict[str, Any]) -> None:
        """The request, opened and matched as Telegram's /new does it."""
        language = user.language
        form = NewRequest(
            service_type_id=int(data.get("service_type_id") or 0),
            area_id=int(data.get("area_id") or 0),
            address=str(data.get("address") or ""),
            description=str(data.get("description") or ""),
            urgent=bool(data.get("urgent")),
        )
        roles = frozenset(Role(r) for r in (user.roles or "").split(",")
                          if r in Role._value2member_map_)
        actor = manager.ActorRef(user.id, roles | {Role.REQUESTER})
        try:
            # A savepoint: a refusal undoes the request's writes, not the message's.
            async with session.begin_nested():
                view = await matching.open_request(
                    manager.Context(session, ctx.now, self.alerts, self.config),
                    actor, form.checked())
        except WorkflowError as exc:
            reason = exc.render(language)
            await _say(session, ctx, user, text=render(language, _REFUSED, reason=reason))
            return
        log.info("WhatsApp customer %s opened request %s", user.id, view.id)
        note = _ESCALATED if view.state is State.ESCALATED else _SENT
        await _say(session, ctx, user, text=render(language, note, id=view.id))


# ------------------------------------------------------------------------------- helpers


def _pick(entries: list[CatalogueEntry], step: str, said: _Said) -> CatalogueEntry | None:
    """The entry tapped (its id), typed by number (1-based, in the order offered) or named."""
    if said.choice is not None and said.choice.startswith(f"{step}:"):
        wanted = said.choice.removeprefix(f"{step}:")
        return next((e for e in entries if str(e.id) == wanted), None)
    if said.word.isdigit():
        index = int(said.word) - 1
        return entries[index] if 0 <= index < len(entries) else None
    for entry in entries:
        if said.word in (normalize(entry.name_en), normalize(entry.name_fr), entry.code.lower()):
            return entry
    return None


def _choices(body: str, title: str, label: str, step: str, entries: list[CatalogueEntry],
             language: str) -> dict[str, Any]:
    """A list message to tap in; a numbered text when there are more than a list holds."""
    names = [entry.name(language) for entry in entries]
    if len(entries) > MAX_LIST_ROWS:
        lines = [body, *(f"{i}. {name}" for i, name in enumerate(names, 1)),
                 render(language, _NUMBERED)]
        return {"text": "\n".join(lines)}
    rows = [{"id": f"{ID_PREFIX}{step}:{entry.id}", "title": _cut(name, ROW_TITLE)}
            for entry, name in zip(entries, names, strict=True)]
    for row, name in zip(rows, names, strict=True):
        if len(name) > ROW_TITLE:
            row["description"] = _cut(name, ROW_DESCRIPTION)
    return {"interactive": {
        "type": "list",
        "body": {"text": _cut(body, BODY)},
        "action": {"button": _cut(label, BUTTON_TITLE),
                   "sections": [{"title": _cut(title, ROW_TITLE), "rows": rows}]},
    }}


def _buttons(body: str, choices: list[tuple[str, str]]) -> dict[str, Any]:
    """Reply buttons (at most 3)."""
    return {
        "type": "button",
        "body": {"text": _cut(body, BODY)},
        "action": {"buttons": [
            {"type": "reply", "reply": {"id": f"{ID_PREFIX}{ident}",
                                        "title": _cut(title, BUTTON_TITLE)}}
            for ident, title in choices[:3]
        ]},
    }


def plain(interactive: dict[str, Any]) -> str:
    """An interactive message as text, for a channel that cannot show it."""
    lines = [str(interactive.get("body", {}).get("text", ""))]
    action = interactive.get("action", {})
    for button in action.get("buttons", ()):
        lines.append(f"- {button['reply']['title']}")
    for section in action.get("sections", ()):
        lines.extend(f"- {row['title']}" for row in section.get("rows", ()))
    return "\n".join(lines)


async def _say(session: AsyncSession, ctx: InboundContext, user: User, *,
               text: str | None = None, interactive: dict[str, Any] | None = None) -> None:
    """The desk's one answer to this inbound message, on WhatsApp only (the customer is
    there, inside the window)."""
    content: dict[str, Any] = {"text": text} if text is not None else {
        "media": {"type": "interactive", "interactive": interactive,
                  "caption": plain(interactive or {})}}
    await outbox.enqueue(
        session, recipient_id=user.id, kind=KIND,
        idempotency_key=f"wadesk:{ctx.message.wamid}"[:200], now=ctx.now,
        channels=[ChannelName.WHATSAPP.value], allow_fallback=False, manual=False,
        priority=outbox.PRIORITY_INTERACTIVE, **content,
    )


async def _load(session: AsyncSession, key: str, now: datetime
                ) -> tuple[str, dict[str, Any]] | None:
    row = await session.get(FsmState, key)
    if row is None or row.state is None:
        return None
    if now - row.updated_at >= EXPIRY:
        await session.delete(row)
        await session.flush()  # gone before `_save` may write the key again
        return None
    return row.state, dict(row.data or {})


async def _save(session: AsyncSession, key: str, step: str, data: dict[str, Any],
                now: datetime) -> None:
    row = await session.get(FsmState, key)
    if row is None:
        session.add(FsmState(key=key, state=step, data=data, updated_at=now))
    else:
        row.state, row.data, row.updated_at = step, data, now


async def _forget(session: AsyncSession, key: str) -> None:
    row = await session.get(FsmState, key)
    if row is not None:
        await session.delete(row)
