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
