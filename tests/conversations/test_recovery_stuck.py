"""Stuck workflows from /workflow_recovery, through the production Dispatcher: escalated
requests first, then the oldest past their threshold; forcing, reassigning (with a typed
reason), a stale screen refreshed instead of acting, the recovery log, and both parties told
in their language."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from database.models import WorkflowRecoveryLog
from handlers.admin.recovery.callbacks import Nav
from services.workflow import State
from tests.conversations.conftest import StartConversation
from tests.conversations.harness import Conversation, Replies, buttons
from tests.conversations.test_requests import (
    ADMIN,
    ANN,
    FATOU,
    PAUL,
    SAM,
    _assigned,
    _bot,
    _press,
    _requests,
    _to,
    _user_id,
    open_request,
    say,
)


async def _log(chat: Conversation) -> list[WorkflowRecoveryLog]:
    async with chat.db.transaction() as session:
        return list(await session.scalars(select(WorkflowRecoveryLog)
                                           .order_by(WorkflowRecoveryLog.id)))


async def _open_stuck(chat: Conversation, request_id: int) -> tuple[dict[str, Any], int]:
    """Admin: menu -> Stuck workflows -> the request. (detail screen, taps so far)"""
    menu = (await say(chat, ADMIN, "/workflow_recovery")).message("Workflow recovery")
    listing = (await _press(chat, ADMIN, menu, "Stuck workflows")).messages[-1]
    [label] = [t for t in buttons(listing) if t.startswith(f"#{request_id} ")]
    detail = (await _press(chat, ADMIN, listing, label)).messages[-1]
    return detail, 2


async def test_a_forced_transition_is_logged_and_tells_both_parties(
    conversation: StartConversation,
) -> None:
    chat = await _bot(conversation)
    request_id, _job = await _assigned(chat)
    await chat.deliver()
    chat.clock.advance(hours=25)  # ASSIGNED counts as stuck after 24 h

    detail, taps = await _open_stuck(chat, request_id)
    text = detail["text"]
    assert f"Request #{request_id}" in text and "State: assigned; acting role: provider" in text
    assert "Requester: Ann Requester" in text and "Assignee: Paul Provider" in text
    assert "In this state for 1d 1h (threshold 1d 0h)" in text
    assert "History:" in text and "offered → assigned (accept, Paul Provider)" in text

    # A non-admin replaying the admin's button changes nothing.
    refused = await chat.press(PAUL, buttons(detail)["Force to the next state"],
                               message_id=detail["message_id"])
    assert refused.answer["text"] == "Only admins can do this."

    asked = (await _press(chat, ADMIN, detail, "Force to the next state")).messages[-1]
    taps += 1
    assert taps <= 4
    assert f"Force request #{request_id} from assigned to the next state?" in asked["text"]
    assert "Other…" in buttons(asked) and "Cancel" in buttons(asked)
    assert (await _requests(chat).get(request_id)).state is State.ASSIGNED  # not before a reason

    done = (await _press(chat, ADMIN, asked, "The provider cannot be reached")).messages[-1]
    assert done["message_id"] == detail["message_id"]  # edited in place
    assert "Done: assigned → in_progress" in done["text"]
    assert (await _requests(chat).get(request_id)).state is State.IN_PROGRESS
    [entry] = await _log(chat)
    assert (entry.admin_id, entry.action, entry.request_id, entry.from_state, entry.to_state,
            entry.reason) == (await _user_id(chat, ADMIN), "force_next", request_id,
                              "assigned", "in_progress", "The provider cannot be reached")

    delivered = await chat.deliver()
    assert _to(delivered, ANN) and _to(delivered, PAUL), Replies(delivered).texts
    # The reason buttons of that confirmation are spent.
    again = await chat.press(ADMIN, buttons(asked)["The provider cannot be reached"],
                             message_id=asked["message_id"])
    assert again.answer["text"] == "This button is no longer valid."
    assert len(await _log(chat)) == 1


async def test_reassign_to_another_provider_with_a_typed_reason(
    conversation: StartConversation,
) -> None:
    chat = await _bot(conversation)
    request_id, _job = await _assigned(chat)
    await chat.deliver()
    chat.clock.advance(hours=25)
    detail, _taps = await _open_stuck(chat, request_id)
    pick = (await _press(chat, ADMIN, detail, "Reassign")).messages[-1]
    assert "to whom?" in pick["text"]
    [fatou] = [t for t in buttons(pick) if t.startswith("Fatou Prestataire")]
    assert not [t for t in buttons(pick) if t.startswith("Paul Provider")]
    asked = (await _press(chat, ADMIN, pick, fatou)).messages[-1]
    assert "from Paul Provider to Fatou Prestataire?" in asked["text"]
    typing = (await _press(chat, ADMIN, asked, "Other…")).messages[-1]
    assert "Type the reason" in typing["text"]
    typed = await say(chat, ADMIN, "Paul broke his wrist")
    [edited] = typed.of("editMessageText")
    assert edited.result["message_id"] == detail["message_id"]
    assert "Done: assigned → assigned" in edited.result["text"]
    assert "Assignee: Fatou Prestataire" in edited.result["text"]

    view = await _requests(chat).get(request_id)
    assert view.assignee_name == "Fatou Prestataire" and view.state is State.ASSIGNED
    [entry] = await _log(chat)
    assert (entry.action, entry.reason, entry.provider_id) == (
        "reassign", "Paul broke his wrist", view.assignee_provider_id)
    delivered = await chat.deliver()
    assert _to(delivered, FATOU) and _to(delivered, PAUL) and _to(delivered, ANN)


async def test_a_stale_screen_refreshes_instead_of_acting(
    conversation: StartConversation,
) -> None:
    chat = await _bot(conversation)
    request_id, job = await _assigned(chat)
    chat.clock.advance(hours=25)
    detail, _taps = await _open_stuck(chat, request_id)
    asked = (await _press(chat, ADMIN, detail, "Force to the next state")).messages[-1]

    await _press(chat, PAUL, job, "Start work")  # the request moves on meanwhile
    done = (await _press(chat, ADMIN, asked, "Fixing a mistake")).messages[-1]
    assert "This request changed in the meantime" in done["text"]
    assert "State: in_progress" in done["text"]
    assert await _log(chat) == []

    # A button of the old detail screen: the screen is redrawn, nothing asked or done.
    refreshed = await _press(chat, ADMIN, detail, "Reset to the previous state")
    assert "changed in the meantime" in refreshed.answer["text"]
    assert "State: in_progress" in refreshed.messages[-1]["text"]
    assert (await _requests(chat).get(request_id)).state is State.IN_PROGRESS
    assert await _log(chat) == []


async def test_escalated_requests_come_first_then_the_oldest(
    conversation: StartConversation,
) -> None:
    chat = await _bot(conversation)
    old, _job = await _assigned(chat)
    chat.clock.advance(hours=25)
    for provider in (PAUL, SAM):  # the heating providers
        await say(chat, provider, "/away")
    escalated = await open_request(chat, service="Heating", area="North")
    assert (await _requests(chat).get(escalated)).state is State.ESCALATED

    menu = (await say(chat, ADMIN, "/workflow_recovery")).message("Workflow recovery")
    listing = (await chat.press(ADMIN, Nav(section="stuck").pack(),
                                message_id=menu["message_id"])).messages[-1]
    assert "Stuck workflows: 2" in listing["text"]
    labels = [t for t in buttons(listing) if t.startswith("#")]
    assert labels == [f"#{escalated} escalated · 0s", f"#{old} assigned · 1d 1h"]
    assert list(buttons(listing))[-1] == "« Back"


async def test_reset_to_previous_and_complete_go_through_the_state_manager(
    conversation: StartConversation,
) -> None:
    chat = await _bot(conversation)
    request_id, job = await _assigned(chat)
    await _press(chat, PAUL, job, "Start work")
    await chat.deliver()
    chat.clock.advance(hours=73)  # IN_PROGRESS counts as stuck after 72 h

    detail, _taps = await _open_stuck(chat, request_id)
    asked = (await _press(chat, ADMIN, detail, "Reset to the previous state")).messages[-1]
    assert f"Reset request #{request_id} from in_progress to the previous state?" in asked[
        "text"]
    cancelled = (await _press(chat, ADMIN, asked, "Cancel")).messages[-1]
    assert "State: in_progress" in cancelled["text"]  # Cancel: back, nothing done
    assert await _log(chat) == []

    asked = (await _press(chat, ADMIN, cancelled, "Reset to the previous state")).messages[-1]
    reset = (await _press(chat, ADMIN, asked, "Fixing a mistake")).messages[-1]
    assert "Done: in_progress → assigned" in reset["text"]
    asked = (await _press(chat, ADMIN, reset, "Complete")).messages[-1]
    assert f"Complete request #{request_id} (now assigned) as confirmed?" in asked["text"]
    done = (await _press(chat, ADMIN, asked, "The customer asked for it")).messages[-1]
    assert "Done: assigned → confirmed" in done["text"]
    assert (await _requests(chat).get(request_id)).state is State.CONFIRMED
    assert [(e.action, e.from_state, e.to_state) for e in await _log(chat)] == [
        ("reset_previous", "in_progress", "assigned"),
        ("force_complete", "assigned", "confirmed"),
    ]
    delivered = await chat.deliver()
    assert _to(delivered, ANN) and _to(delivered, PAUL)
