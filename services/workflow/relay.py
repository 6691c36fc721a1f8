"""Messages between a request's requester and provider, relayed by the bot so neither needs
the other's phone number, and kept in the request's history."""

from __future__ import annotations

from database.models import RequestMessage
from services.workflow import notify, queries
from services.workflow.definition import CONVERSING
from services.workflow.errors import EmptyMessage, NobodyToMessage, NotAllowed
from services.workflow.manager import ActorRef, Context
from services.workflow.views import MessageView

MAX_MESSAGE = 3000


async def relay_message(ctx: Context, request_id: int, sender: ActorRef, text: str
                        ) -> MessageView:
    text = text.strip()
    if not text:
        raise EmptyMessage()
    view = await queries.view(ctx.session, request_id)
    if sender.id is None or view.party_of(sender.id) is None:
        raise NotAllowed()
    if view.assignee_user_id is None or view.state not in CONVERSING:
        raise NobodyToMessage()
    recipient_id = (
        view.assignee_user_id if sender.id == view.requester_id else view.requester_id
    )
    message = RequestMessage(
        request_id=view.id, sender_id=sender.id, recipient_id=recipient_id,
        text=text[:MAX_MESSAGE], at=ctx.now,
    )
    ctx.session.add(message)
    await ctx.session.flush()
    people = await notify.recipients(ctx.session, [sender.id, recipient_id])
    await notify.send(
        ctx.session, people[recipient_id], notify.RELAYED, now=ctx.now, view=view,
        key=f"reqmsg:{message.id}", name=people[sender.id].display_name or "?",
        text=message.text,
    )
    return MessageView(message.id, view.id, sender.id, recipient_id, message.text, message.at)
