"""The fake Graph API takes reply buttons and lists as Meta does, and refuses what Meta refuses
(the WhatsApp desk sends both, so a shape Meta would refuse must fail the tests)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.test_fake_providers import assert_graph_error, post_wa
from tests.fakes.whatsapp import FakeWhatsApp


def interactive(content: dict[str, Any]) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "recipient_type": "individual",
            "to": "15551234567", "type": "interactive", "interactive": content}


def buttons(*titles: str, body: str = "Is it urgent?") -> dict[str, Any]:
    return {"type": "button", "body": {"text": body}, "action": {"buttons": [
        {"type": "reply", "reply": {"id": f"b{i}", "title": t}} for i, t in enumerate(titles)]}}


def rows(*titles: str, label: str = "Choose", ids: list[str] | None = None) -> dict[str, Any]:
    ids = ids or [f"r{i}" for i in range(len(titles))]
    return {"type": "list", "body": {"text": "Which service?"}, "action": {
        "button": label, "sections": [{"title": "Services", "rows": [
            {"id": i, "title": t} for i, t in zip(ids, titles, strict=True)]}]}}


@pytest.mark.parametrize("content", [
    buttons("Urgent", "Not urgent"),
    buttons("A", "B", "C"),
    rows("Plumbing", "Electrical", "Heating"),
    rows(*(f"Row {i}" for i in range(10))),
])
async def test_buttons_and_lists_within_metas_limits_are_accepted(content: dict[str, Any]
                                                                   ) -> None:
    async with FakeWhatsApp() as fake:
        status, body = await post_wa(fake, interactive(content))
        assert status == 200, body
        assert fake.sent[0].body["interactive"] == content


@pytest.mark.parametrize(("content", "fragment"), [
    (buttons("A", "B", "C", "D"), "1 to 3"),
    (buttons("x" * 21), "max: 20"),
    (buttons("Same", "Same"), "unique"),
    (buttons("Yes", body=""), "body"),
    (buttons("Yes", body="x" * 1025), "1024"),
    (rows(*(f"Row {i}" for i in range(11))), "1 to 10 rows"),
    (rows("x" * 25), "max: 24"),
    (rows("A", label="x" * 21), "1-20"),
    (rows("A", "B", ids=["same", "same"]), "unique"),
    ({"type": "carousel", "action": {}}, "invalid"),
])
async def test_shapes_meta_refuses_are_refused(content: dict[str, Any], fragment: str) -> None:
    async with FakeWhatsApp() as fake:
        status, body = await post_wa(fake, interactive(content))
        assert status == 400
        error = assert_graph_error(body, 100)
        assert fragment in error["message"] + " " + error["error_data"]["details"]
        assert fake.sent == []
