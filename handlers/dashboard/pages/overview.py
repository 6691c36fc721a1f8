"""Overview: the overall status with its reasons (the snapshot /health serves), channel states
and circuits, outbox depth and oldest due age, dead letters in 24 h, stuck workflows, error
rate. /admin/overview.json returns the same snapshot; dashboard.js refreshes the page's
figures from it every 10 seconds."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from handlers.dashboard.common import render, service
from services.health import Snapshot, SystemHealth

routes = web.RouteTableDef()

REFRESH_SECONDS = 10


def figures(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot as the page and its JSON show it: status, reasons, each part's status and
    figures (what /health shows a trusted caller)."""
    full = snapshot.full()
    parts = full["components"]
    errors = parts.get("errors", {}).get("last_hour_by_severity", {})
    return {
        **full,
        "summary": {
            "errors_last_hour": sum(errors.values()),
            "critical_errors_last_hour": errors.get("critical", 0),
        },
    }


async def _snapshot(request: web.Request) -> dict[str, Any]:
    system_health: SystemHealth = service(request, "system_health")
    return figures(await system_health.snapshot())


@routes.get("/admin/")
async def overview(request: web.Request) -> web.Response:
    return render(request, "overview.html", {"health": await _snapshot(request),
                                             "refresh": REFRESH_SECONDS})


@routes.get("/admin/overview.json")
async def overview_json(request: web.Request) -> web.Response:
    return web.json_response(await _snapshot(request))
