"""Does provider matching stay fast as providers and requests grow? (PostgreSQL)

`python -m benchmarks.matching [--quick]` with BENCH_DATABASE_URL pointing at PostgreSQL.

Seeds 1,000 providers and 10,000 requests, then 10,000 providers and 100,000 requests (--quick:
half of each), most requests closed, a few in progress or on offer, as a desk that has run for
months looks. At each size a stream of new requests (random service, random area, one in ten
urgent) is opened through the production path, `ServiceRequests.open_request`: the request is
created and matched (the tiered candidate query), offers and their notifications written, in
one unit of work. It reports the latency of the matching itself (`matching.find`: the
candidate query of each tier tried until one finds someone; p50_ms, p99_ms), of the whole unit
of work (open_p50_ms, open_p99_ms), and whether the plan of the exact-tier query uses the
indexes meant for it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

from benchmarks.common import bench_database, print_result
from database.engine import Database
from database.models import ServiceRequest
from services.alerts import Alerts
from services.clock import SystemClock
from services.workflow import NewRequest, ServiceRequests, WorkflowConfig, matching
from services.workflow.matching import Scope

SERVICE_TYPES = 20
AREAS = 50
REQUESTERS = 1000
STREAM = 300
ADMIN = 999_999_999  # a Telegram id: escalations alert someone, as in production
# The indexes the exact tier's plan should use: the area's providers, their load, their offers.
EXPECTED_INDEXES = ("ix_provider_areas_area", "ix_service_requests_active_assignee",
                    "ix_offers_pending_provider")


@dataclass
class Size:
    providers: int
    requests: int


async def seed(db: Database, size: Size, start_provider: int) -> None:
    """Grow to `size` with INSERT ... SELECT generate_series: providers (users first), each with
    two services and two areas, capacity 2, 90% available, 5% on call; requests 95% closed
    (each with its accepted offer), 3% with a provider, 2% on offer (two pending offers)."""
    n = size.providers
    async with db.transaction() as session:
        count, last = (await session.execute(
            text("SELECT count(*), coalesce(max(id), 0) FROM service_requests"))).one()
    params = {"p0": start_provider + 1, "p1": n, "r0": last + 1,
              "r1": last + max(0, size.requests - count), "n": n}
    statements = [
        """INSERT INTO users (id, telegram_id, display_name, language, language_chosen, roles,
               opt_outs, created_at, updated_at)
           SELECT g, g, 'provider ' || g, 'en', false, 'requester,provider', '', now(), now()
           FROM generate_series(CAST(:p0 AS int), CAST(:p1 AS int)) AS g""",
        """INSERT INTO providers (id, user_id, capacity, active, on_call, available,
               last_assigned_at, created_at, updated_at)
           SELECT g, g, 2, g % 50 <> 0, g % 20 = 0, g % 10 <> 0,
                  CASE WHEN g % 3 = 0 THEN NULL ELSE now() - (g % 1000) * interval '1 minute'
                  END, now(), now()
           FROM generate_series(CAST(:p0 AS int), CAST(:p1 AS int)) AS g""",
        f"""INSERT INTO provider_services (provider_id, service_type_id)
           SELECT g, s FROM generate_series(CAST(:p0 AS int), CAST(:p1 AS int)) AS g,
                LATERAL (VALUES (g % {SERVICE_TYPES} + 1), ((g / 7) % {SERVICE_TYPES} + 1)) AS v(s)
           GROUP BY g, s""",
        f"""INSERT INTO provider_areas (provider_id, area_id)
           SELECT g, a FROM generate_series(CAST(:p0 AS int), CAST(:p1 AS int)) AS g,
                LATERAL (VALUES (g % {AREAS} + 1), ((g / 3) % {AREAS} + 1)) AS v(a)
           GROUP BY g, a""",
        f"""INSERT INTO service_requests (id, requester_id, service_type_id, area_id, address,
               time_window, description, photos, urgent, state, acting_role, assignee_id,
               matching_tier, match_round, version, state_entered_at, created_at, updated_at)
           SELECT g, {1_000_000} + g % {REQUESTERS} + 1, g % {SERVICE_TYPES} + 1,
                  g % {AREAS} + 1, 'somewhere', '', 'seeded', '[]', false,
                  CASE WHEN g % 100 < 90 THEN 'confirmed' WHEN g % 100 < 95 THEN 'cancelled'
                       WHEN g % 100 < 97 THEN 'assigned' WHEN g % 100 < 98 THEN 'in_progress'
                       ELSE 'offered' END,
                  NULL,
                  CASE WHEN g % 100 < 90 OR g % 100 BETWEEN 95 AND 97
                       THEN (g * 7) % :n + 1 END,
                  'exact', 1, 5, now() - (g % 90) * interval '1 day', now(), now()
           FROM generate_series(CAST(:r0 AS bigint), CAST(:r1 AS bigint)) AS g""",
        """INSERT INTO offers (request_id, provider_id, round, tier, status, created_at,
               expires_at, answered_at)
           SELECT r.id, r.assignee_id, 1, 'exact', 'accepted', now(), now(), now()
           FROM service_requests r WHERE r.id >= :r0 AND r.assignee_id IS NOT NULL""",
        """INSERT INTO offers (request_id, provider_id, round, tier, status, created_at,
               expires_at)
           SELECT r.id, (r.id * k) % :n + 1, 1, 'exact', 'pending', now(),
                  now() + interval '1 day'
           FROM service_requests r, (VALUES (11), (13)) AS v(k)
           WHERE r.id >= :r0 AND r.state = 'offered'""",
    ]
    async with db.transaction() as session:
        if start_provider == 0:
            await session.execute(text(
                f"""INSERT INTO users (id, telegram_id, display_name, language, language_chosen,
                       roles, opt_outs, created_at, updated_at)
                   SELECT 1000000 + g, 1000000 + g, 'requester ' || g, 'en', false,
                          'requester', '', now(), now()
                   FROM generate_series(1, {REQUESTERS}) AS g"""))
            await session.execute(text(
                f"""INSERT INTO service_types (id, code, name_en, name_fr, active)
                   SELECT g, 'service' || g, 'Service ' || g, 'Service ' || g, true
                   FROM generate_series(1, {SERVICE_TYPES}) AS g"""))
            await session.execute(text(
                f"""INSERT INTO areas (id, code, name_en, name_fr, active)
                   SELECT g, 'area' || g, 'Area ' || g, 'Zone ' || g, true
                   FROM generate_series(1, {AREAS}) AS g"""))
            await session.execute(text(
                f"""INSERT INTO area_neighbours (area_id, neighbour_id)
                   SELECT g, (g + d + {AREAS} - 1) % {AREAS} + 1
                   FROM generate_series(1, {AREAS}) AS g, (VALUES (1), (-1)) AS v(d)"""))
        for statement in statements:
            await session.execute(text(statement), params)
        for table in ("users", "service_requests", "offers"):
            await session.execute(text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"))
    async with db.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE"))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def exact_plan(db: Database) -> str:
    """EXPLAIN ANALYZE of the exact-tier candidate query for a stream-like request."""
    statement = matching.candidate_query(Scope.AREA).params(
        service_type_id=3, area_id=7, requester_id=1_000_001, request_id=0, round=1, limit=3,
    )
    compiled = statement.compile(dialect=postgresql.dialect(),
                                 compile_kwargs={"literal_binds": True})
    async with db.engine.connect() as conn:
        rows = (await conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {compiled}")).all()
    return "\n".join(r[0] for r in rows)


async def stream(db: Database, seed_value: int) -> tuple[list[float], list[float]]:
    """Open STREAM requests through the production service; (unit-of-work ms, matching ms)."""
    clock = SystemClock()
    alerts = Alerts(admin_telegram_ids=(ADMIN,), window=timedelta(hours=1))
    requests = ServiceRequests(db, clock, alerts, WorkflowConfig())
    rng = random.Random(seed_value)
    whole: list[float] = []
    queries: list[float] = []
    original = matching.find

    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await original(*args, **kwargs)
        finally:
            queries.append((time.perf_counter() - started) * 1000)

    matching.find = timed  # type: ignore[assignment]
    try:
        for _ in range(STREAM):
            requester = _Requester(1_000_000 + rng.randint(1, REQUESTERS))
            form = NewRequest(
                service_type_id=rng.randint(1, SERVICE_TYPES), area_id=rng.randint(1, AREAS),
                address="1 bench street", description="bench", urgent=rng.random() < 0.1,
            )
            started = time.perf_counter()
            await requests.open_request(requester, form)
            whole.append((time.perf_counter() - started) * 1000)
    finally:
        matching.find = original  # type: ignore[assignment]
    return whole, queries


@dataclass(frozen=True)
class _Requester:
    id: int
    roles: frozenset[Any] = frozenset()


async def main(sizes: list[Size]) -> None:
    async with bench_database() as (db, _url):
        results: list[dict[str, Any]] = []
        plan_ok = True
        previous = Size(0, 0)
        for size in sizes:
            print(f"seeding to {size.providers:,} providers and {size.requests:,} requests",
                  flush=True)
            await seed(db, size, previous.providers)
            await stream(db, 0)  # warm up: connections, statement caches
            whole, queries = await stream(db, 1)
            plan = await exact_plan(db)
            used = [name for name in EXPECTED_INDEXES if name in plan]
            plan_ok = plan_ok and len(used) == len(EXPECTED_INDEXES)
            total = await db.read(lambda s: s.scalar(
                select(text("count(*)")).select_from(ServiceRequest)))
            print(f"--- exact-tier plan at {size.providers:,} providers ---\n{plan}\n", flush=True)
            print(f"{size.providers:,} providers, {total:,} requests: open_request p50 "
                  f"{statistics.median(whole):.2f} ms, p99 {percentile(whole, 0.99):.2f} ms; "
                  f"matching p50 {statistics.median(queries):.2f} ms, p99 "
                  f"{percentile(queries, 0.99):.2f} ms", flush=True)
            results.append({
                "providers": size.providers, "requests": total,
                "p50_ms": round(statistics.median(queries), 2),
                "p99_ms": round(percentile(queries, 0.99), 2),
                "open_p50_ms": round(statistics.median(whole), 2),
                "open_p99_ms": round(percentile(whole, 0.99), 2),
            })
            previous = size
    small, large = results
    print_result({
        **large,
        "stream": STREAM,
        "small_providers": small["providers"],
        "small_requests": small["requests"],
        "small_p50_ms": small["p50_ms"],
        "small_p99_ms": small["p99_ms"],
        "small_open_p99_ms": small["open_p99_ms"],
        "p99_ratio_large_to_small": round(large["p99_ms"] / small["p99_ms"], 2),
        "plan_uses_index": plan_ok,
        "target_met": large["p99_ms"] < 25 and plan_ok,
    })


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="5,000 providers and 50,000 requests at the larger size")
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL", "")
    if not url or make_url(url).get_backend_name() != "postgresql":
        print("benchmarks.matching needs PostgreSQL: set "
              "BENCH_DATABASE_URL=postgresql+asyncpg://...", file=sys.stderr)
        sys.exit(2)
    factor = 2 if args.quick else 1
    asyncio.run(main([Size(1_000 // factor, 10_000 // factor),
                      Size(10_000 // factor, 100_000 // factor)]))
