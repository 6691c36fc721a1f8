"""Every button of /workflow_recovery: the CallbackData classes of all its sections, in one
place, so prefixes stay unique and every pack stays under Telegram's 64 bytes
(tests/unit/test_callback_data.py packs each with its largest values: at most two int fields
beside one short string, or three ints with nothing else).

A section adds its own classes in a block of its own at the end (prefix "r" + letters, unused
so far). Navigation between screens is `Nav`; destructive actions go through the confirmation
flow (`Ask`, `Choose`, `Why`: handlers/admin/recovery/confirm.py).
"""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData

# --- skeleton: navigation and the confirmation flow ---------------------------------------------


class Nav(CallbackData, prefix="rn"):
    """Open a section's screen: `section` is its code in the registry ("top" is the menu),
    `page` the page of its list, `item` what a detail screen shows (0: the list)."""

    section: str
    page: int = 0
    item: int = 0


class Ask(CallbackData, prefix="ra"):
    """A destructive action's button: `op` names it (confirm.register), `target` what it acts
    on, `version` what the screen showed (a stale one is refreshed, not acted on). It asks for
    the reason; nothing runs before one is given."""

    op: str
    target: int
    version: int = 0


class Choose(CallbackData, prefix="rh"):
    """A choice a confirmation needs before its reason (the provider to reassign to)."""

    target: int
    value: int


class Why(CallbackData, prefix="ry"):
    """A reason for the pending action on `target`: a preset's index, or -1 for "Other" (the
    admin types it)."""

    target: int
    reason: int


# --- stuck workflows ------------------------------------------------------------------------


class Stuck(CallbackData, prefix="rw"):
    """Stuck request `request` (detail with its recovery actions); `page` of the list to go
    back to."""

    request: int
    page: int = 0


class StuckPick(CallbackData, prefix="rwp"):
    """The eligible providers to reassign request `request` to, as its `version` stood."""

    request: int
    version: int


# --- failed notifications, channels, manual tasks ---------------------------------------------


class DeadLetter(CallbackData, prefix="rd"):
    """Dead letter `notification`, with its attempts; `page` of the list to go back to."""

    notification: int
    page: int = 0


class DeadFilter(CallbackData, prefix="rdf"):
    """Set one filter of the dead-letter list: `field` "kind" (`ref` is a notification of that
    kind), "chan" or "cls" (`ref` indexes the channels or failure classes), "clear"; `ref` -1
    removes that filter. 0..n otherwise."""

    field: str
    ref: int


class ChannelToggle(CallbackData, prefix="rcp"):
    """Pause (1) or resume (0) channel number `channel` (index in ChannelName)."""

    channel: int
    pause: int


class Task(CallbackData, prefix="rt"):
    """Manual task `task`; `reveal` 1 shows the recipient's contact unmasked (audited)."""

    task: int
    reveal: int = 0


# --- errors ---------------------------------------------------------------------------------


class ErrorGroupScreen(CallbackData, prefix="re"):
    """Error group `group`, with its latest support code and Resolve."""

    group: int


class ErrorGroupResolve(CallbackData, prefix="rer"):
    """Mark error group `group` resolved, from the recovery Errors screen (redrawn after)."""

    group: int


# --- system health and background jobs ----------------------------------------------------------


class JobScreen(CallbackData, prefix="rj"):
    """Background job number `job` (index in the sorted names of this process's jobs): its
    latest runs and Run now."""

    job: int


class JobRunNow(CallbackData, prefix="rjn"):
    """Run background job number `job` now (even within its interval)."""

    job: int
