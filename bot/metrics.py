"""GET /metrics: the health snapshot's figures in Prometheus' text format (prometheus_client).

The figures are those of the cached /health snapshot (services/health.py), so a scrape reads the
database at most once every HEALTH_CACHE_SECONDS, whatever the scrape rate. Delivery figures
cover the last hour (gauges named `..._last_hour`), so they need no counter kept in memory and
agree across processes; the wait histogram is of the notifications sent in that hour.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from services.health import Snapshot

PREFIX = "servicedesk"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_STATUSES = ("ok", "degraded", "down")


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


class SnapshotCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        parts = {name: dict(c.details) for name, c in self.snapshot.components.items()}
        status = _gauge("health_status", "1 for the overall status now (ok, degraded, down)",
                        ["status"])
        for name in _STATUSES:
            status.add_metric([name], 1.0 if self.snapshot.status == name else 0.0)
        yield status
        part_status = _gauge("component_ok", "1 when a part of the bot is ok", ["component"])
        for name, component in self.snapshot.components.items():
            part_status.add_metric([name], 1.0 if component.status == "ok" else 0.0)
        yield part_status
        if "latency_ms" in parts.get("database", {}):
            latency = _gauge("database_latency_seconds", "Time for the database to answer")
            latency.add_metric([], parts["database"]["latency_ms"] / 1000)
            yield latency
        yield from _outbox(parts.get("outbox", {}))
        yield from _channels(parts.get("channels", {}))
        yield from _workflows(parts.get("workflows", {}))
        yield from _errors(parts.get("errors", {}))
        yield from _jobs(parts.get("jobs", {}))
        inventory = parts.get("inventory", {})
        if inventory.get("discrepancies") is not None:
            found = _gauge("inventory_discrepancies",
                           "Open inventory discrepancies (latest health snapshot)")
            found.add_metric([], inventory["discrepancies"])
            yield found


def _outbox(figures: dict[str, Any]) -> Iterator[Metric]:
    if not figures:
        return
    depth = _gauge("outbox_depth", "Notifications by status and current channel",
                   ["status", "channel"])
    for status, per in figures.get("depth", {}).items():
        for channel, count in per.items():
            depth.add_metric([status, channel], count)
    yield depth
    oldest = _gauge("outbox_oldest_due_age_seconds", "Age of the oldest notification due")
    oldest.add_metric([], figures.get("oldest_due_age_seconds", 0.0))
    yield oldest
    dead = _gauge("dead_letters", "Dead letters waiting for an admin")
    dead.add_metric([], figures.get("dead_letters", 0))
    yield dead
    dead_day = _gauge("dead_letters_last_24h", "Notifications dead-lettered in the last 24 h")
    dead_day.add_metric([], figures.get("dead_letters_24h", 0))
    yield dead_day
    tasks = _gauge("manual_tasks_open", "Manual tasks waiting for a person")
    tasks.add_metric([], figures.get("open_manual_tasks", 0))
    yield tasks
    sends = _gauge("sends_last_hour", "Sends accepted by a provider in the last hour",
                   ["channel"])
    for channel, count in figures.get("sends_1h", {}).items():
        sends.add_metric([channel], count)
    yield sends
    failures = _gauge("send_failures_last_hour", "Failed sends in the last hour",
                      ["channel", "failure_class"])
    for channel, per in figures.get("failures_1h", {}).items():
        for kind, count in per.items():
            failures.add_metric([channel, kind], count)
    yield failures
    wait = figures.get("wait_1h")
    if wait:
        buckets = [(le, float(count)) for le, count in wait["buckets"].items()]
        buckets.append(("+Inf", float(wait["count"])))
        yield HistogramMetricFamily(
            f"{PREFIX}_enqueue_to_send_seconds",
            "Wait from enqueue (or an admin's retry) to send, notifications sent in the last hour",
            buckets=buckets, sum_value=wait["sum"],
        )


def _channels(figures: dict[str, Any]) -> Iterator[Metric]:
    channels = figures.get("channels", {})
    if not channels:
        return
    circuit = _gauge("channel_circuit_open", "1 while a channel's circuit is open", ["channel"])
    paused = _gauge("channel_paused", "1 while an admin has paused a channel", ["channel"])
    for name, state in channels.items():
        circuit.add_metric([name], 1.0 if state["circuit"] == "open" else 0.0)
        paused.add_metric([name], 1.0 if state["paused"] else 0.0)
    yield circuit
    yield paused


def _workflows(figures: dict[str, Any]) -> Iterator[Metric]:
    if not figures:
        return
    stuck = _gauge("stuck_workflows", "Requests stuck past their state's threshold, or escalated",
                   ["state"])
    for state, count in figures.get("by_state", {}).items():
        stuck.add_metric([state], count)
    yield stuck


def _errors(figures: dict[str, Any]) -> Iterator[Metric]:
    if not figures:
        return
    errors = _gauge("errors_last_hour", "Error occurrences in the last hour",
                    ["category", "severity"])
    for category, per in figures.get("last_hour_by_category", {}).items():
        for severity, count in per.items():
            errors.add_metric([category, severity], count)
    yield errors


def _jobs(figures: dict[str, Any]) -> Iterator[Metric]:
    jobs = figures.get("jobs", {})
    if not jobs:
        return
    outcome = _gauge("job_last_outcome", "1 for the outcome of each job's latest run",
                     ["job", "outcome"])
    failures = _gauge("job_consecutive_failures", "Failed runs in a row, per job", ["job"])
    for name, last in jobs.items():
        if last.get("outcome") is None:
            continue
        for value in ("ok", "failed", "running"):
            outcome.add_metric([name, value], 1.0 if last["outcome"] == value else 0.0)
        failures.add_metric([name], last.get("consecutive_failures", 0))
    yield outcome
    yield failures


def render(snapshot: Snapshot) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)
