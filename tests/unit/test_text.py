"""Splitting texts longer than a channel allows."""

from __future__ import annotations

import pytest

from services.notifications.text import split_text


def test_a_text_within_the_limit_is_one_part_unchanged() -> None:
    assert split_text("Your request #12 was accepted.", 4096) == [
        "Your request #12 was accepted."
    ]
    assert split_text("x" * 4096, 4096) == ["x" * 4096]
    assert split_text("", 4096) == [""]


def test_a_long_text_is_cut_at_line_breaks_then_spaces() -> None:
    lines = [f"line {i:03d} " + "word " * 10 for i in range(40)]
    text = "\n".join(lines)
    parts = split_text(text, 200)
    assert all(len(part) <= 200 for part in parts)
    # Whole lines: every part ends where a line ended.
    assert all(part.split("\n")[-1].strip() in {line.strip() for line in lines} for part in parts)
    assert " ".join(" ".join(parts).split()) == " ".join(text.split())


def test_unicode_heavy_text_is_counted_in_characters_and_nothing_is_lost() -> None:
    text = "🙂é漢 " * 3000  # 12,000 characters, many multi-byte
    parts = split_text(text, 4096)
    assert len(parts) == 3
    assert all(len(part) <= 4096 for part in parts)
    assert "".join(part + " " for part in parts).split() == text.split()


def test_a_text_without_spaces_is_cut_at_the_limit() -> None:
    parts = split_text("a" * 10_000, 4096)
    assert [len(p) for p in parts] == [4096, 4096, 1808]


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        split_text("x", 0)
