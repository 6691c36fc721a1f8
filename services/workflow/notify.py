"""What each transition tells whom: the texts, in each recipient's own language, enqueued in
the transition's unit of work (the outbox), each with a button back to the request."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import User
from services.actions import Action as ButtonAction
from services.actions import ActionName
from services.localization import N_, Localized, render
from services.notifications import outbox
from services.workflow.definition import Action, Party, State
from services.workflow.views import RequestView

STATE_LABELS: dict[State, str] = {
    State.NEW: N_("new"),
    State.MATCHING: N_("looking for a provider"),
    State.OFFERED: N_("offered to providers"),
    State.ASSIGNED: N_("assigned"),
    State.IN_PROGRESS: N_("in progress"),
    State.COMPLETED: N_("completed"),
    State.CONFIRMED: N_("confirmed"),
    State.DISPUTED: N_("disputed"),
    State.CANCELLED: N_("cancelled"),
    State.ESCALATED: N_("waiting for an operator"),
}

TIER_LABELS: dict[str, str] = {
    "exact": N_("in the area"),
    "broad": N_("nearby"),
    "emergency": N_("on call"),
}

OPEN_BUTTON = N_("Open request")


def open_request_button(request_id: int) -> dict[str, Any]:
    """The "Open request" button on an admin alert, labelled in each admin's language."""
    return {"text": Localized(OPEN_BUTTON), "action": ActionName.REQUEST_OPEN.value,
            "target": request_id}

ACCEPT_BUTTON = N_("Accept")
DECLINE_BUTTON = N_("Decline")

_MOVED = N_('An admin moved request #{id} to "{state}". {reason}')

# Who is told what when a transition happens (never the actor: their screen answers them).
# PROVIDER is the request's provider after the transition; REASSIGN also tells the previous one.
NOTICES: dict[Action, tuple[tuple[Party, str], ...]] = {
    Action.ESCALATE: ((Party.REQUESTER, N_(
        "We could not find a provider for your request #{id} ({service}) yet. An operator "
        "will find one for you.")),),
    Action.ACCEPT: ((Party.REQUESTER, N_(
        "{provider} will take care of your request #{id} ({service}). Use the Message button "
        "to talk to them.")),),
    Action.ASSIGN: (
        (Party.REQUESTER, N_(
            "{provider} will take care of your request #{id} ({service}). Use the Message "
            "button to talk to them.")),
        (Party.PROVIDER, N_(
            "You have been assigned request #{id}: {service} in {area}.\nAddress: {address}\n"
            "When: {window}\n{description}")),
    ),
    Action.START: ((Party.REQUESTER, N_("{provider} has started work on your request #{id}.")),),
    Action.COMPLETE: ((Party.REQUESTER, N_(
        "{provider} has completed your request #{id}. Please confirm it, or dispute it if "
        "something is wrong.")),),
    Action.CONFIRM: ((Party.PROVIDER, N_("The requester confirmed request #{id}. Thank you!")),),
    Action.AUTO_CONFIRM: (
        (Party.REQUESTER, N_("Request #{id} was confirmed automatically.")),
        (Party.PROVIDER, N_("Request #{id} was confirmed automatically.")),
    ),
    Action.DISPUTE: ((Party.PROVIDER, N_("The requester disputed request #{id}: {reason}")),),
    Action.RESOLVE_CONFIRM: (
        (Party.REQUESTER, N_(
            "An admin resolved the dispute on request #{id}: the work is confirmed. {reason}")),
        (Party.PROVIDER, N_(
            "An admin resolved the dispute on request #{id}: the work is confirmed. {reason}")),
    ),
    Action.RESOLVE_REWORK: (
        (Party.REQUESTER, N_(
            "An admin resolved the dispute on request #{id}: the work will be resumed. "
            "{reason}")),
        (Party.PROVIDER, N_(
            "An admin resolved the dispute on request #{id}: the work must be resumed. "
            "{reason}")),
    ),
    Action.CANCEL: (
        (Party.REQUESTER, N_("Your request #{id} was cancelled. {reason}")),
        (Party.PROVIDER, N_("Request #{id} was cancelled. {reason}")),
    ),
    Action.FORCE_NEXT: ((Party.REQUESTER, _MOVED), (Party.PROVIDER, _MOVED)),
    Action.RESET_PREVIOUS: ((Party.REQUESTER, _MOVED), (Party.PROVIDER, _MOVED)),
    Action.FORCE_COMPLETE: ((Party.REQUESTER, _MOVED), (Party.PROVIDER, _MOVED)),
    Action.REASSIGN: (
        (Party.REQUESTER, N_("{provider} will now take care of your request #{id}.")),
        (Party.PROVIDER, N_(
            "You have been assigned request #{id}: {service} in {area}.\nAddress: {address}\n"
            "When: {window}\n{description}")),
    ),
}
UNASSIGNED = N_("Request #{id} is no longer assigned to you. {reason}")
OFFER_TEXT = N_(
    "New job offer #{id}: {service} in {area}.\nWhen: {window}\n{description}\n"
    "Please answer within {minutes} minutes.")
URGENT_OFFER_TEXT = N_(
    "URGENT job offer #{id}: {service} in {area}.\nWhen: {window}\n{description}\n"
    "Please answer within {minutes} minutes.")
OFFER_WITHDRAWN = N_("Job offer #{id} has been taken by someone else or withdrawn.")
REMINDER = N_(
    "Please confirm request #{id} ({service}), or dispute it if something is wrong. Without "
    "an answer it will be confirmed automatically.")
RELAYED = N_("Message from {name} about request #{id}:\n{text}")


@dataclass(frozen=True, slots=True)
class Recipient:
    id: int
    language: str
    display_name: str


async def recipients(session: AsyncSession, user_ids: Iterable[int]) -> dict[int, Recipient]:
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    rows = await session.execute(
        select(User.id, User.language, User.display_name).where(User.id.in_(ids))
    )
    return {i: Recipient(i, lang, name) for i, lang, name in rows}


def params(view: RequestView, language: str, **extra: object) -> dict[str, object]:
    return {
        "id": view.id,
        "service": view.service_type.name(language),
        "area": view.area.name(language),
        "address": view.address,
        "window": view.time_window or "-",
        "description": view.description or "-",
        "provider": view.assignee_name or "-",
        "state": render(language, STATE_LABELS[view.state]),
        **extra,
    }


def open_button(language: str, request_id: int) -> dict[str, object]:
    return ButtonAction(ActionName.REQUEST_OPEN, request_id).as_payload(
        render(language, OPEN_BUTTON)
    )


async def send(
    session: AsyncSession, recipient: Recipient, message: str, *, key: str, now: datetime,
    view: RequestView, button: bool = True, priority: int = outbox.PRIORITY_NORMAL,
    **extra: object,
) -> None:
    text = render(recipient.language, message, **params(view, recipient.language, **extra))
    await outbox.enqueue(
        session, recipient_id=recipient.id, kind="service_request",
        idempotency_key=key[:200], text=text.strip(), now=now, priority=priority,
        buttons=[open_button(recipient.language, view.id)] if button else None,
    )


async def transition_notices(
    session: AsyncSession, action: Action, view: RequestView, *, actor_id: int | None,
    reason: str | None, now: datetime, previous_provider_user_id: int | None = None,
    answered: int | None = None,
) -> None:
    """Tell the parties of `view` (the request after the transition) what happened: not the
    actor, nor `answered` (whose own screen tells them)."""
    provider_user_id = view.assignee_user_id
    notices = NOTICES.get(action, ())
    targets: list[tuple[int, str]] = []
    for party, message in notices:
        user_id = view.requester_id if party is Party.REQUESTER else provider_user_id
        if user_id is not None and user_id not in (actor_id, answered):
            targets.append((user_id, message))
    if (
        previous_provider_user_id is not None
        and previous_provider_user_id != provider_user_id
        and previous_provider_user_id != actor_id
    ):
        targets.append((previous_provider_user_id, UNASSIGNED))
    people = await recipients(session, [u for u, _ in targets])
    for user_id, message in targets:
        await send(
            session, people[user_id], message, now=now, view=view, reason=reason or "",
            key=f"req:{view.id}:v{view.version}:{user_id}",
        )
