"""System health: the overall status (as GET /health says it) with its reasons, and each part's
figures; the recent stored snapshots. Read-only: nothing here changes anything."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiogram import F, Router
from aiogram.types import CallbackQuery
from aiogram.utils.i18n import gettext as _

from bot.config import Settings
from handlers.admin.recovery.callbacks import Nav
from handlers.admin.recovery.screens import Screen, back, button, show, when
from handlers.times import duration
from services.health import Snapshot, SystemHealth
from services.localization import N_

HISTORY = 1  # Nav(section="health", item=HISTORY): the recent snapshots

STATUS = {"ok": N_("ok"), "degraded": N_("degraded"), "down": N_("down")}
_ICON = {"ok": "🟢", "degraded": "🟡", "down": "🔴"}


def _status(value: str) -> str:
    return f"{_ICON.get(value, '')} {_(STATUS[value]) if value in STATUS else value}".strip()


def _parts(snapshot: Snapshot, timezone: str) -> list[str]:
    c = {name: dict(part.details) for name, part in snapshot.components.items()}
    s = {name: part.status for name, part in snapshot.components.items()}
    lines = []
    if "database" in c:
        latency = c["database"].get("latency_ms")
        lines.append(_("Database: {status}{latency}").format(
            status=_status(s["database"]),
            latency=f" ({latency:g} ms)" if latency is not None else ""))
    channels = c.get("channels", {}).get("channels", {})
    if channels:
        described = []
        for name, state in channels.items():
            if state["paused"]:
                word = _("paused")
            elif state["circuit"] == "open":
                word = _("circuit open")
            elif state["enabled"]:
                word = _("on")
            else:
                word = _("off")
            described.append(f"{name} {word}")
        lines.append(_("Channels: {channels}").format(channels=", ".join(described)))
    if "outbox" in c:
        o = c["outbox"]
        lines.append(_("Outbox: {due} waiting, oldest due for {age}").format(
            due=o.get("due", 0), age=duration(o.get("oldest_due_age_seconds", 0.0))))
        lines.append(_("Dead letters: {day} in the last 24 h, {all} in all").format(
            day=o.get("dead_letters_24h", 0), all=o.get("dead_letters", 0)))
        lines.append(_("Open manual tasks: {count}").format(count=o.get("open_manual_tasks", 0)))
    if "workflows" in c:
        lines.append(_("Stuck workflows: {count}").format(count=c["workflows"].get("stuck", 0)))
    if "errors" in c:
        by = c["errors"].get("last_hour_by_severity", {})
        lines.append(_("Errors in the last hour: {critical} critical, {high} high, {other} other")
                     .format(critical=by.get("critical", 0), high=by.get("high", 0),
                             other=sum(v for k, v in by.items() if k not in ("critical", "high"))))
    if "inventory" in c:
        inv = c["inventory"]
        if inv.get("discrepancies") is None:
            lines.append(_("Inventory discrepancies: not measured yet"))
        else:
            lines.append(_("Inventory discrepancies: {count} (as of {at})").format(
                count=inv["discrepancies"],
                at=when(datetime.fromisoformat(inv["as_of"]), timezone) if inv.get("as_of")
                else "-"))
    jobs = c.get("jobs", {}).get("jobs", {})
    if jobs:
        failed = [name for name, last in jobs.items() if last.get("outcome") == "failed"]
        lines.append(_("Background jobs: {ok} of {total} fine; failing: {failing}").format(
            ok=len(jobs) - len(failed), total=len(jobs), failing=", ".join(failed) or "-"))
    return lines


def render(snapshot: Snapshot, timezone: str) -> Screen:
    lines = [
        _("System health: {status}").format(status=_status(snapshot.status)),
        _("Checked at {at}").format(at=when(snapshot.checked_at, timezone)),
        "",
        *_parts(snapshot, timezone),
    ]
    if snapshot.reasons:
        lines += ["", _("Why:")] + [f"• {reason}" for reason in snapshot.reasons]
    screen = Screen("\n".join(lines))
    screen.rows.append([button(_("Refresh"), Nav(section="health")),
                        button(_("Recent snapshots"), Nav(section="health", item=HISTORY))])
    screen.rows.append([button(_("Background jobs"), Nav(section="jobs"))])
    screen.rows.append(back())
    return screen


def render_history(history: list[tuple[datetime, str, list[str]]], timezone: str) -> Screen:
    lines = [_("Recent health snapshots (every few minutes):"), ""]
    for at, status, reasons in history:
        lines.append(f"{when(at, timezone)} {_status(status)}")
        lines += [f"   • {reason}" for reason in reasons[:3]]
    if not history:
        lines.append(_("No snapshot yet."))
    screen = Screen("\n".join(lines))
    screen.rows.append(back(Nav(section="health")))
    return screen


async def show_health(query: CallbackQuery, callback_data: Nav, system_health: SystemHealth,
                      settings: Settings, **_data: Any) -> None:
    if callback_data.item == HISTORY:
        await show(query, render_history(await system_health.history(), settings.timezone))
        return
    await show(query, render(await system_health.snapshot(), settings.timezone))


def setup() -> Router:
    router = Router(name="recovery-health")
    router.callback_query.register(show_health, Nav.filter(F.section == "health"))
    return router
