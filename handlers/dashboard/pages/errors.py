"""Errors: occurrences by category and severity over the last hour, day and week (the
recorder's statistics, as the Errors menu and /error show them), search by support code, the
open groups seen last first, a group's detail (masked message and stack, its occurrences) and
Resolve, through ErrorRecorder as the menus do. Resolving a group resolved meanwhile is said,
and nothing is done."""

from __future__ import annotations

from typing import Any

from aiogram.utils.i18n import gettext as _
from aiohttp import web

from handlers.dashboard.common import actor_id, redirect, render, service
from handlers.dashboard.pages.reasons import PAGE_SIZE, Pager, page_of
from services.errors import ErrorRecorder, ErrorStatistics, normalize_code

routes = web.RouteTableDef()

PAGE = "/admin/errors"
SEVERITIES = ("low", "medium", "high", "critical")


def _service(request: web.Request) -> ErrorRecorder:
    recorder: ErrorRecorder = service(request, "error_recorder")
    return recorder


def _table(stats: ErrorStatistics) -> dict[str, Any]:
    """Rows per category, columns per severity, for each window."""
    windows = {}
    for window in ("1h", "24h", "7d"):
        counts = stats.counts.get(window, {})
        categories = sorted({category for category, _severity in counts})
        windows[window] = {
            "total": stats.total(window),
            "rows": [{"category": c, "counts": [counts.get((c, s), 0) for s in SEVERITIES],
                      "total": sum(counts.get((c, s), 0) for s in SEVERITIES)}
                     for c in categories],
            "severities": [stats.by_severity(window).get(s, 0) for s in SEVERITIES],
        }
    return windows


@routes.get(PAGE)
async def errors(request: web.Request) -> web.Response:
    recorder = _service(request)
    code = request.query.get("code", "").strip()
    notice = None
    if code:
        found = await recorder.find(code)
        if found is not None:
            raise web.HTTPSeeOther(f"{PAGE}/{found.group.id}?code={found.code}")
        notice = {"text": _("No error has the support code {code}.").format(code=code[:16]),
                  "kind": "error"}
    page = page_of(request.query)
    show_resolved = request.query.get("resolved") == "1"
    groups, total = await recorder.groups(limit=PAGE_SIZE, offset=page * PAGE_SIZE,
                                          resolved=show_resolved)
    stats = await recorder.statistics()
    suffix = "&resolved=1" if show_resolved else ""
    context: dict[str, Any] = {
        "stats": stats, "windows": _table(stats), "severities": SEVERITIES,
        "groups": groups, "total": total, "pager": Pager(page, total), "code": code,
        "resolved": show_resolved,
        "page_url": lambda n: f"{PAGE}?page={n}{suffix}",
    }
    if notice is not None:
        context["notice"] = notice
    return render(request, "errors.html", context)


@routes.get(PAGE + r"/{id:\d+}")
async def error_group(request: web.Request) -> web.Response:
    group_id = int(request.match_info["id"])
    recorder = _service(request)
    group = await recorder.group(group_id)
    if group is None:
        raise redirect(request, PAGE, _("This error no longer exists."), kind="error")
    page = page_of(request.query)
    occurrences, total = await recorder.occurrences(group_id, limit=PAGE_SIZE,
                                                    offset=page * PAGE_SIZE)
    return render(request, "error.html", {
        "group": group, "occurrences": occurrences, "total": total,
        "pager": Pager(page, total), "code": normalize_code(request.query.get("code", "")),
        "page_url": lambda n: f"{PAGE}/{group_id}?page={n}",
    })


@routes.post(PAGE + r"/{id:\d+}/resolve")
async def resolve(request: web.Request) -> web.Response:
    group_id = int(request.match_info["id"])
    recorder = _service(request)
    back = f"{PAGE}/{group_id}"
    current = await recorder.group(group_id)
    if current is None:
        raise redirect(request, PAGE, _("This error no longer exists."), kind="error")
    if current.resolved:
        raise redirect(request, back, _("Already resolved; nothing done."), kind="error")
    group = await recorder.resolve(group_id, actor_id=actor_id(request))
    if group is None:
        raise redirect(request, PAGE, _("This error no longer exists."), kind="error")
    raise redirect(request, back, _("Marked resolved: {count} occurrence(s) of {type}.").format(
        count=group.count, type=group.exception_type))
