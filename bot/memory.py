"""Process-wide memory settings."""

from __future__ import annotations

import gc
from typing import Any

# Strong references to the response models aiogram validates Bot API answers with.
_response_models: list[Any] = []


def keep_response_models() -> None:
    """Build every `Response[T]` aiogram parses Bot API answers into, and keep them alive.

    aiogram builds `Response[method.__returning__]` on each call, and pydantic caches such
    parametrized classes only weakly. A class lives in reference cycles, so every full
    garbage collection drops the cached ones and the next answer rebuilds its class, which
    takes milliseconds: that was the p99 of an update (benchmarks/updates.py). There are
    about forty distinct return types; building them all takes about 50 ms, once. Call it
    before `freeze_startup_objects`, so they are frozen with the rest.
    """
    # Imported here: a process that never talks to Telegram (a benchmark of the outbox) should
    # not pay aiogram's memory for it.
    import aiogram.methods
    from aiogram.methods.base import Response, TelegramMethod

    if _response_models:
        return
    returning = {}
    for name in aiogram.methods.__all__:
        method = getattr(aiogram.methods, name)
        if (
            isinstance(method, type)
            and issubclass(method, TelegramMethod)
            and method is not TelegramMethod  # its __returning__ is abstract
        ):
            kind = getattr(method, "__returning__", None)
            if kind is not None:
                returning[repr(kind)] = kind
    _response_models.extend(Response[kind] for kind in returning.values())


def freeze_startup_objects() -> None:
    """Take everything allocated during start-up out of the cyclic garbage collector's sight.

    Start-up leaves tens of thousands of long-lived objects (aiogram's models, SQLAlchemy's
    metadata and compiled statements, the locales); every full collection would scan them
    again. Frozen, they are never scanned; they are still freed by reference counting if they
    ever die. Garbage is collected first so none of it is frozen. With outbox_throughput the
    collector took 13 % of the dispatcher's CPU before, 4 % after.
    """
    gc.collect()
    gc.freeze()
