"""/workflow_recovery through the production Dispatcher: the top menu, navigation edited in
place with Back on every screen, sections not built yet saying so, and the admin guard: a
non-admin's command or replayed button is refused politely, logged, and changes nothing."""

from __future__ import annotations

import logging

import pytest

from handlers.admin.recovery.callbacks import Ask, Nav
from handlers.admin.recovery.registry import SECTIONS
from tests.conversations.conftest import StartConversation
from tests.conversations.harness import buttons

ADMIN = 9000
ANN = 1001

TOP = ["Stuck workflows", "Failed notifications", "Manual tasks", "Inventory", "Errors",
       "People", "Audit", "System health", "Background jobs"]


async def test_the_admin_opens_the_menu_and_every_entry_has_a_screen_with_back(
    conversation: StartConversation,
) -> None:
    chat = await conversation(admin_ids=[ADMIN])
    replies = await chat.send(ADMIN, "/workflow_recovery")
    menu = replies.message("Workflow recovery")
    assert list(buttons(menu)) == TOP
    for title, data in buttons(menu).items():
        opened = await chat.press(ADMIN, data, message_id=menu["message_id"])
        assert opened.of("editMessageText"), f"{title} was not edited in place"
        screen = opened.messages[-1]
        assert screen["message_id"] == menu["message_id"]
        assert buttons(screen).get("« Back") == Nav(section="top").pack(), title
        again = await chat.press(ADMIN, buttons(screen)["« Back"],
                                 message_id=menu["message_id"])
        assert again.messages[-1]["text"] == "Workflow recovery: what needs fixing?"
        assert list(buttons(again.messages[-1])) == TOP


async def test_the_menu_speaks_french(conversation: StartConversation) -> None:
    chat = await conversation(admin_ids=[ADMIN])
    await chat.send(ADMIN, "/language", language_code="fr")
    replies = await chat.send(ADMIN, "/workflow_recovery", language_code="fr")
    menu = replies.messages[-1]
    assert "Workflows bloqués" in buttons(menu)
    assert "Notifications en échec" in buttons(menu)
    stuck = await chat.press(ADMIN, buttons(menu)["Workflows bloqués"],
                             message_id=menu["message_id"], language_code="fr")
    assert stuck.messages[-1]["text"] == "Aucun workflow bloqué : toutes les demandes avancent."
    assert "« Retour" in buttons(stuck.messages[-1])


@pytest.mark.parametrize("data", [
    Nav(section="top").pack(), Nav(section="stuck").pack(), Nav(section="dead").pack(),
    Ask(op="wf.force", target=1, version=1).pack(),
    Ask(op="dl.retry", target=1, version=0).pack(),
])
async def test_a_non_admin_is_refused_politely_and_logged(
    conversation: StartConversation, caplog: pytest.LogCaptureFixture, data: str,
) -> None:
    chat = await conversation(admin_ids=[ADMIN])
    await chat.send(ANN, "/start")
    with caplog.at_level(logging.WARNING, logger="middlewares.admin"):
        command = await chat.send(ANN, "/workflow_recovery")
        pressed = await chat.press(ANN, data, message_id=1)
    assert command.texts == ["Only admins can do this."]
    assert pressed.answer["text"] == "Only admins can do this."
    assert not pressed.of("editMessageText")
    refused = [r.getMessage() for r in caplog.records if "not an admin" in r.getMessage()]
    assert any("/workflow_recovery" in line for line in refused)
    assert any(data in line for line in refused)


def test_every_section_of_the_registry_has_a_unique_code() -> None:
    assert len({s.code for s in SECTIONS}) == len(SECTIONS)
