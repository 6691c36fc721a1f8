"""Delivery: sent, failed and retried attempts per minute over the last hour and per hour over
the last seven days, by channel (uPlot charts, drawn by static/charts.js from the page's JSON
data block), with each window's totals and the enqueue-to-send wait percentiles as tables;
all from DeliveryStats (services/delivery_stats.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from handlers.dashboard.common import render, service
from services.delivery_stats import MEASURES, DeliveryStats, Series

routes = web.RouteTableDef()


def chart_data(series: Series) -> dict[str, Any]:
    """What charts.js draws: x as epoch seconds, one line per active channel per measure."""
    channels = series.active_channels()
    return {
        "x": [int(start.timestamp()) for start in series.starts],
        "step": int(series.step.total_seconds()),
        "measures": {
            measure: {channel: series.counts[channel][measure] for channel in channels}
            for measure in MEASURES
        },
    }


def totals(series: Series) -> list[dict[str, Any]]:
    return [
        {"channel": channel, **{m: series.total(channel, m) for m in MEASURES}}
        for channel in series.active_channels()
    ]


@routes.get("/admin/delivery")
async def delivery(request: web.Request) -> web.Response:
    delivery_stats: DeliveryStats = service(request, "delivery_stats")
    stats = await delivery_stats.statistics()
    return render(request, "delivery.html", {
        "stats": stats,
        "measures": MEASURES,
        "charts": {"hour": chart_data(stats.per_minute), "week": chart_data(stats.per_hour)},
        "totals": {"hour": totals(stats.per_minute), "week": totals(stats.per_hour)},
    })
