"""Every button the bot draws fits Telegram's 64 bytes of callback data, whatever the ids in it.

Every CallbackData class of every handler module is packed with its largest values: ids at the
largest BigInteger, strings at their longest legitimate value (listed below for the classes
whose strings are a known vocabulary; otherwise a 16-character word, the most a short code in
callback data should take). A class that would not fit fails here, not in front of a user
whose button was silently dropped. Buttons built from services' actions are checked in
test_buttons.py.
"""

from __future__ import annotations

import enum
import importlib
import pkgutil
import typing
from typing import Any

import pytest
from aiogram.filters.callback_data import CallbackData

import handlers

LARGEST_ID = -(2**63)  # the longest BigInteger when written out (20 characters)
SHORT_CODE = "x" * 16
# Classes the bot only decodes (buttons drawn by older versions), never packs.
DECODED_ONLY = {"LegacyRetryDeadLetters"}
# Longest legitimate value of string fields, by class and field.
LONGEST: dict[str, dict[str, str]] = {
    "LanguageChoice": {"code": "en"},
    "ProfileAction": {"action": "optin", "channel": "whatsapp"},
    "OrderMove": {"channel": "whatsapp", "seen": "0123"},
}


def _all_callback_data() -> list[type[CallbackData]]:
    for module in pkgutil.walk_packages(handlers.__path__, "handlers."):
        importlib.import_module(module.name)
    found, todo = [], list(CallbackData.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("handlers.") and cls.__name__ not in DECODED_ONLY:
            found.append(cls)
    return sorted(found, key=lambda c: c.__qualname__)


def _largest(cls: type[CallbackData], name: str, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return max(typing.get_args(annotation), key=lambda v: len(str(v)))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return max(annotation, key=lambda v: len(str(v.value)))
    if annotation is bool:
        return True
    if annotation is int:
        return LARGEST_ID
    if annotation is float:
        return -1.7976931348623157e308
    return LONGEST.get(cls.__name__, {}).get(name, SHORT_CODE)


@pytest.mark.parametrize("cls", _all_callback_data(), ids=lambda c: c.__qualname__)
def test_every_callback_data_fits_in_64_bytes_with_its_largest_values(
    cls: type[CallbackData],
) -> None:
    hints = typing.get_type_hints(cls)
    values = {name: _largest(cls, name, hints[name]) for name in cls.model_fields}
    packed = cls(**values).pack()
    assert len(packed.encode()) <= 64, f"{cls.__qualname__}: {len(packed.encode())} bytes"


def test_the_error_buttons_are_among_those_checked() -> None:
    names = {cls.__name__ for cls in _all_callback_data()}
    assert {"OpenError", "ResolveError", "RetryDeadLettersLike"} <= names
