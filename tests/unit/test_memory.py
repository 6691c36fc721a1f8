"""Start-up objects leave the cyclic collector's sight; start-up garbage does not stay."""

from __future__ import annotations

import gc
import weakref

from bot.memory import freeze_startup_objects


class Node:
    me: object = None


def test_startup_objects_are_frozen_and_garbage_is_collected_first() -> None:
    garbage = Node()
    garbage.me = garbage  # a cycle: only the cyclic collector can free it
    gone = weakref.ref(garbage)
    del garbage
    try:
        freeze_startup_objects()
        assert gone() is None  # collected, not frozen forever
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual


def test_response_models_survive_full_collections() -> None:
    """aiogram asks pydantic for Response[Message] on every call; pydantic caches it weakly.
    Kept alive, the class asked for after a full collection is the one built before it."""
    from aiogram.methods.base import Response
    from aiogram.types import Message

    from bot.memory import keep_response_models

    keep_response_models()
    before = id(Response[Message])
    gc.collect()
    assert id(Response[Message]) == before
