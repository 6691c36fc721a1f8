"""The one aiohttp web app: health endpoints; the webhooks and the rest are added to it.

/health/live: the process is serving. /health/ready: it can do its job (database reachable).
/health: `ok`, `degraded` or `down` with its reasons; 503 only when down. /metrics: the same
snapshot in Prometheus' text format, for trusted callers only. It serves the snapshot
of services/health.py, so the database is read at most once every HEALTH_CACHE_SECONDS however
many callers ask, and never under the writer's lock. Anyone sees the status and the reasons; the
components and their counts only a caller with `Authorization: Bearer <HEALTH_TOKEN>`, or one on
this machine that did not come through a proxy.
"""

from __future__ import annotations

import hmac
from ipaddress import ip_address

from aiohttp import web

from bot.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from bot.metrics import render as render_metrics
from database.engine import Database
from services.clock import Clock, SystemClock
from services.health import Check, HealthMonitor

HealthCheck = Check
APP_KEY_DB = web.AppKey("db", Database)
APP_KEY_CHECKS = web.AppKey("health_checks", dict)
APP_KEY_HEALTH = web.AppKey("health_monitor", HealthMonitor)
APP_KEY_HEALTH_TOKEN = web.AppKey("health_token", bytes)

# Headers a reverse proxy adds: a request carrying one came from outside, whatever its address.
_PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    ok = await request.app[APP_KEY_DB].ping()
    return web.json_response(
        {"status": "ok" if ok else "down", "database": "ok" if ok else "down"},
        status=200 if ok else 503,
    )


def _trusted(request: web.Request) -> bool:
    """True for a caller allowed to see counts: the right token, or loopback without a proxy."""
    token = request.app[APP_KEY_HEALTH_TOKEN]
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Bytes, so a header that is not ASCII compares (unequal) instead of raising.
    if (
        token
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token)
    ):
        return True
    if any(name in request.headers for name in _PROXY_HEADERS):
        return False
    try:
        return ip_address(request.remote or "").is_loopback
    except ValueError:  # a Unix socket, or no address at all
        return False


async def health(request: web.Request) -> web.Response:
    snapshot = await request.app[APP_KEY_HEALTH].snapshot()
    body = snapshot.full() if _trusted(request) else snapshot.public()
    return web.json_response(
        body,
        status=503 if snapshot.status == "down" else 200,
        headers={"Cache-Control": "no-store"},
    )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text (bot/metrics.py) from the same cached snapshot; only for a trusted
    caller (the HEALTH_TOKEN bearer, or loopback): 401 without credentials, 403 with wrong
    ones."""
    if not _trusted(request):
        if "Authorization" in request.headers:
            return web.Response(status=403, text="forbidden\n")
        return web.Response(status=401, text="unauthorized\n",
                            headers={"WWW-Authenticate": "Bearer"})
    snapshot = await request.app[APP_KEY_HEALTH].snapshot()
    return web.Response(
        body=render_metrics(snapshot),
        headers={"Content-Type": METRICS_CONTENT_TYPE, "Cache-Control": "no-store"},
    )


def build_web_app(
    db: Database,
    checks: dict[str, HealthCheck] | None = None,
    *,
    health_token: str | None = None,
    health_cache_seconds: float = 5.0,
    clock: Clock | None = None,
) -> web.Application:
    """`checks` may be added to `app[APP_KEY_CHECKS]` after this: each snapshot reads them."""
    app = web.Application(client_max_size=1024**2)
    app[APP_KEY_DB] = db
    app[APP_KEY_CHECKS] = dict(checks or {})
    app[APP_KEY_HEALTH] = HealthMonitor(
        db, app[APP_KEY_CHECKS], clock=clock or SystemClock(), max_age=health_cache_seconds
    )
    app[APP_KEY_HEALTH_TOKEN] = (health_token or "").encode()
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app
