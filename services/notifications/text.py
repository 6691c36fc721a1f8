"""Splitting long texts for channels that cap a message's length."""

from __future__ import annotations


def split_text(text: str, limit: int) -> list[str]:
    """Split `text` into parts of at most `limit` characters, preferring line breaks, then
    spaces, so a reader sees whole lines and words. An empty text is one empty part."""
    if limit <= 0:
        raise ValueError("limit must be positive")
    if len(text) <= limit:
        return [text]
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = window.rfind("\n")
        if cut < limit // 2:
            cut = window.rfind(" ")
        if cut < limit // 2:
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip("\n ") if cut < limit else rest[cut:]
    parts.append(rest)
    return [p for p in parts if p] or [""]
