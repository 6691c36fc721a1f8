"""The one aiohttp web app: health endpoints now; later the WhatsApp webhook, metrics, dashboard.

/health/live: the process is serving. /health/ready: it can do its job (database reachable).
/health: JSON with the overall status and its parts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from database.engine import Database

HealthCheck = Callable[[], Awaitable[dict[str, object]]]
APP_KEY_DB = web.AppKey("db", Database)
APP_KEY_CHECKS = web.AppKey("health_checks", dict)


async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    ok = await request.app[APP_KEY_DB].ping()
    return web.json_response(
        {"status": "ok" if ok else "down", "database": "ok" if ok else "down"},
        status=200 if ok else 503,
    )


async def health(request: web.Request) -> web.Response:
    components: dict[str, object] = {
        "database": {"status": "ok" if await request.app[APP_KEY_DB].ping() else "down"}
    }
    for name, check in request.app[APP_KEY_CHECKS].items():
        components[name] = await check()
    statuses = {c.get("status") for c in components.values() if isinstance(c, dict)}
    overall = "down" if "down" in statuses else "degraded" if "degraded" in statuses else "ok"
    return web.json_response(
        {"status": overall, "components": components}, status=503 if overall == "down" else 200
    )


def build_web_app(db: Database, checks: dict[str, HealthCheck] | None = None) -> web.Application:
    app = web.Application(client_max_size=1024**2)
    app[APP_KEY_DB] = db
    app[APP_KEY_CHECKS] = dict(checks or {})
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    return app
