"""A notification is rendered in its recipient's language, whoever caused it."""

from __future__ import annotations

from services.localization import available_languages, render


def test_renders_in_the_recipients_language_with_parameters() -> None:
    assert render("fr", "Phone: {phone}", phone="+33 •• 78") == "Téléphone : +33 •• 78"
    assert render("en", "Phone: {phone}", phone="+1 •• 12") == "Phone: +1 •• 12"


def test_unknown_language_falls_back_to_english() -> None:
    assert {"en", "fr"} <= available_languages()
    assert render("de", "Phone: {phone}", phone="x") == "Phone: x"
    assert render(None, "Phone: {phone}", phone="x") == "Phone: x"
