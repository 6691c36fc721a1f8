"""The sections of /workflow_recovery, in the top menu's order. A section is a module of this
package named here, with `setup() -> Router`; until its module exists its entry says "not
available yet"."""

from __future__ import annotations

from dataclasses import dataclass

from services.localization import N_


@dataclass(frozen=True, slots=True)
class Section:
    code: str  # Nav(section=code) opens it; short, it travels in callback data
    module: str  # handlers.admin.recovery.<module>
    title: str  # msgid of its top-menu button


SECTIONS: tuple[Section, ...] = (
    Section("stuck", "stuck", N_("Stuck workflows")),
    Section("dead", "notifications", N_("Failed notifications")),
    Section("tasks", "tasks", N_("Manual tasks")),
    Section("inv", "inventory", N_("Inventory")),
    Section("err", "errors", N_("Errors")),
    Section("people", "people", N_("People")),
    Section("audit", "audit", N_("Audit")),
    Section("health", "health", N_("System health")),
    Section("jobs", "jobs", N_("Background jobs")),
)
