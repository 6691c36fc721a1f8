"""The workflow's settings, as the services see them (built from bot/config.py's Settings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta


def _default_stuck_after() -> dict[str, timedelta]:
    return {
        "stuck_after_new": timedelta(minutes=10),
        "stuck_after_matching": timedelta(minutes=10),
        "stuck_after_offered": timedelta(hours=2),
        "stuck_after_assigned": timedelta(hours=24),
        "stuck_after_in_progress": timedelta(hours=72),
        "stuck_after_completed": timedelta(hours=96),
        "stuck_after_disputed": timedelta(hours=48),
        "stuck_after_escalated": timedelta(hours=1),
    }


@dataclass(frozen=True, slots=True)
class WorkflowConfig:
    # Offers go to the best `offer_candidates` providers at a time.
    offer_candidates: int = 3
    offer_expiry: timedelta = timedelta(minutes=30)
    completion_reminder_after: timedelta = timedelta(hours=24)
    auto_confirm_after: timedelta = timedelta(hours=72)
    # Per state (StateSpec.stuck_setting -> threshold): read by the recovery menus.
    stuck_after: dict[str, timedelta] = field(default_factory=_default_stuck_after)
    # How often the offer-expiry and completion jobs look for due work.
    job_interval: timedelta = timedelta(minutes=1)
