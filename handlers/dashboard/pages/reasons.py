"""The reason an action asks for, as the Telegram menus ask it: one of the menu's preset
reasons (a select, field `reason`: the preset's index) or one typed (field `reason_text`, which
wins when filled). A preset is stored as its English text, as the menus store it. Also the
paging every list shares. Not a page (handlers/dashboard/__init__.py loads only PAGES)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiogram.utils.i18n import gettext as _

from handlers.admin.recovery.confirm import MAX_REASON

PAGE_SIZE = 25


def reason_of(data: Mapping[str, str], presets: Sequence[str]) -> str | None:
    """The reason the form gave, or None when it gave none."""
    typed = data.get("reason_text", "").strip()[:MAX_REASON]
    if typed:
        return typed
    choice = data.get("reason", "").strip()
    if choice.isdigit() and int(choice) < len(presets):
        return presets[int(choice)]
    return None


def choices(presets: Sequence[str]) -> list[dict[str, str]]:
    """The presets as the reason select shows them: value (index) and translated label."""
    return [{"value": str(i), "label": _(text)} for i, text in enumerate(presets)]


@dataclass(frozen=True, slots=True)
class Pager:
    """Where a list is: `page` counts from 0 (the URL's `page`), `total` the rows in all."""

    page: int
    total: int
    size: int = PAGE_SIZE

    @property
    def offset(self) -> int:
        return self.page * self.size

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def previous(self) -> int | None:
        return self.page - 1 if self.page > 0 else None

    @property
    def next(self) -> int | None:
        return self.page + 1 if self.page + 1 < self.pages else None


def page_of(query: Mapping[str, str]) -> int:
    raw = query.get("page", "0")
    return max(0, min(int(raw), 100_000)) if raw.isdigit() else 0
