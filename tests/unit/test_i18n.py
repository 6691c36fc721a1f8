"""Every user-facing string has a French translation, and the compiled catalogues are current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from bot.i18n import LOCALES, build_i18n

ROOT = Path(__file__).resolve().parents[2]


def _extract(output: Path) -> set[str]:
    subprocess.run(
        [sys.executable, "-m", "babel.messages.frontend", "extract", "-k", "_", "-k", "__",
         "-k", "N_", "--no-location", "--input-dirs=handlers,middlewares,bot,services",
         "-o", str(output)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    with open(output, "rb") as f:
        return {m.id for m in read_po(f) if m.id}


def test_every_string_in_the_code_is_translated_to_french(tmp_path: Path) -> None:
    with open(LOCALES / "fr/LC_MESSAGES/messages.po", "rb") as f:
        catalogue = read_po(f)
    translated = {m.id for m in catalogue if m.id and m.string}
    missing = _extract(tmp_path / "messages.pot") - translated
    assert not missing, f"add French translations (./dev i18n): {sorted(missing)}"


def test_compiled_catalogues_match_their_sources() -> None:
    for language in ("en", "fr"):
        folder = LOCALES / language / "LC_MESSAGES"
        with open(folder / "messages.po", "rb") as f:
            source = {m.id: m.string for m in read_po(f) if m.id and m.string}
        with open(folder / "messages.mo", "rb") as f:
            compiled = {m.id: m.string for m in read_mo(f) if m.id}
        assert compiled == source, f"run ./dev i18n to recompile {language}"


def test_french_is_served_and_english_is_the_identity() -> None:
    i18n = build_i18n("en")
    assert set(i18n.available_locales) >= {"en", "fr"}
    text = "Choose your language:"
    assert i18n.gettext(text, locale="fr") == "Choisissez votre langue :"
    assert i18n.gettext(text, locale="en") == text
