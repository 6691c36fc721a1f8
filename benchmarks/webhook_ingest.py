"""How fast the production WhatsApp webhook stores inbound messages, against a raw floor.

`python -m benchmarks.webhook_ingest [--quick] [--requests N] [--rounds R] [--seconds S]`

PostgreSQL only (BENCH_DATABASE_URL=postgresql+asyncpg://...): without it, one line and exit
status 2.

1. One aiohttp server on loopback, in this process, serves two routes on the same database:
   - production: `POST /webhooks/whatsapp` exactly as the bot registers it
     (`bot.webhooks.register_webhooks`: signature on the raw body, the bounded read, the
     per-entry checks, `services.whatsapp_inbound.store`);
   - floor: `POST /floor/whatsapp`, the bare minimum of the same work with raw asyncpg: check the
     signature, parse the JSON, one `INSERT ... ON CONFLICT (wamid) DO NOTHING` per message.
2. A separate load process (this module with `--load`) sends signed POSTs of realistic Meta
   payloads (one text message each from one of 500 customers, with profile name and metadata;
   every 20th request is a redelivery of an earlier one) over keep-alive connections:
   - throughput: N requests, 16 in flight, on each route: requests_per_s, floor_requests_per_s;
   - latency: a fixed offered rate of 200 requests/s for S seconds on each route (open loop:
     each request starts at its scheduled time): p50_ms, p99_ms.
3. Rounds alternate production and floor, so a noisy moment hits both; rates are medians.
4. cpu_ms_per_request: the server process's CPU time per request during the throughput run
   (time.process_time), the figure least moved by other load on the machine.
5. stored: distinct production messages in inbound_messages; lost: messages answered 200 by
   production but not stored (target 0). Non-200 answers are counted in `errors`.

The inbound worker does not run: this measures the ingest (the part before the 200). The last
line is `RESULT {json}`; the exit status is 0 whether or not the targets are met.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import os
import statistics
import sys
import time
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from benchmarks.common import bench_database, print_result
from bot.memory import freeze_startup_objects
from bot.webhooks import WHATSAPP_PATH, register_webhooks
from database.models import InboundMessage
from services.clock import SystemClock

SECRET = "bench-app-secret"
FLOOR_PATH = "/floor/whatsapp"
CUSTOMERS = 500
IN_FLIGHT = 16  # below the pool size (20): connections are reused, not opened per burst
OFFERED_RATE = 200.0
RESEND_EVERY = 20
TARGETS = {"ratio": 0.5, "p99_ms": 50.0, "lost": 0}

FLOOR_INSERT = """
    INSERT INTO inbound_messages (wamid, sender, phone_number_id, profile_name, type, text,
        payload, sent_at, received_at, status, next_attempt_at, attempts)
    VALUES ($1, $2, $3, $4, $5, $6, $7::json, to_timestamp($8), now(), 'pending', now(), 0)
    ON CONFLICT (wamid) DO NOTHING"""


# --------------------------------------------------------------------------------- payloads


def payload(prefix: str, i: int) -> bytes:
    """Request i of a run: a text from one of the customers, as Meta sends it."""
    phone = f"3361{i % CUSTOMERS:07d}"
    message = {"from": phone, "id": f"wamid.{prefix}.{i}", "timestamp": str(1_767_225_600 + i),
               "type": "text",
               "text": {"body": f"Bonjour, la fuite sous l'évier continue (message {i})"}}
    body = {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [
        {"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "100100"},
            "contacts": [{"profile": {"name": f"Client {i % CUSTOMERS}"}, "wa_id": phone}],
            "messages": [message]}}]}]}
    return json.dumps(body, separators=(",", ":")).encode()


def request_index(i: int) -> int:
    """Which payload request i sends: every RESEND_EVERY-th is a redelivery of an earlier one."""
    return i // 2 if i and i % RESEND_EVERY == 0 else i


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


# ----------------------------------------------------------------------------- load process


async def load(url: str, prefix: str, mode: str, count: int, rate: float) -> dict[str, Any]:
    """Send `count` signed POSTs to `url`: all at once with IN_FLIGHT in flight ("max"), or
    one every 1/rate seconds ("rate"). Returns latencies, statuses and the elapsed time."""
    bodies = [(b, sign(b)) for b in (payload(prefix, request_index(i)) for i in range(count))]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    ok_indexes: set[int] = set()
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT * 4)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(i: int) -> None:
            body, signature = bodies[i]
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers={
                    "Content-Type": "application/json", "X-Hub-Signature-256": signature,
                }) as response:
                    await response.read()
                    status = str(response.status)
            except aiohttp.ClientError as exc:
                status = type(exc).__name__
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
            if status == "200":
                ok_indexes.add(request_index(i))

        started = time.perf_counter()
        if mode == "max":
            queue = iter(range(count))

            async def worker() -> None:
                for i in queue:
                    await send(i)

            await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        else:
            tasks = []
            for i in range(count):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(send(i)))
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return {"latencies_ms": latencies, "statuses": statuses, "elapsed": elapsed,
            "ok": sorted(ok_indexes)}


async def run_load(base: str, path: str, prefix: str, mode: str, count: int,
                   rate: float) -> dict[str, Any]:
    """The load, from a process of its own (so the server's event loop is not the client's)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.webhook_ingest", "--load", base + path, prefix, mode,
        str(count), str(rate), stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"load process failed with status {process.returncode}")
    return json.loads(out)


# ----------------------------------------------------------------------------------- server


def floor_route(pool: asyncpg.Pool) -> Any:
    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        expected = sign(body)
        if not hmac.compare_digest(request.headers.get("X-Hub-Signature-256", "").encode(),
                                   expected.encode()):
            return web.json_response({"error": "wrong signature"}, status=403)
        data = json.loads(body)
        rows = []
        for entry in data["entry"]:
            for change in entry["changes"]:
                value = change["value"]
                names = {c["wa_id"]: c["profile"]["name"] for c in value.get("contacts", ())}
                number = value["metadata"]["phone_number_id"]
                for m in value.get("messages", ()):
                    rows.append((m["id"], m["from"], number, names.get(m["from"]), m["type"],
                                 m.get("text", {}).get("body"), json.dumps(m),
                                 float(m["timestamp"])))
        async with pool.acquire() as conn:
            for row in rows:
                await conn.execute(FLOOR_INSERT, *row)
        return web.json_response({"status": "ok"})

    return handle


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


async def main(requests: int, rounds: int, seconds: float) -> None:
    async with bench_database() as (db, url):
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        pool = await asyncpg.create_pool(dsn, min_size=4, max_size=20)
        app = web.Application()
        register_webhooks(app, db=db, clock=SystemClock(), whatsapp_app_secret=SECRET,
                          whatsapp_verify_token="bench", twilio_auth_token=None,
                          public_base_url="http://127.0.0.1")
        app.router.add_post(FLOOR_PATH, floor_route(pool))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        base = f"http://{host}:{port}"

        rates: dict[str, list[float]] = {"prod": [], "floor": []}
        cpu: dict[str, list[float]] = {"prod": [], "floor": []}  # server CPU ms per request
        latencies: dict[str, list[float]] = {"prod": [], "floor": []}
        errors = 0
        sent_ok: set[str] = set()
        at_rate = int(OFFERED_RATE * seconds)
        await run_load(base, WHATSAPP_PATH, "warm", "max", 200, 0)  # connections, caches
        freeze_startup_objects()  # as the bot does once it has started (bot/memory.py)
        for r in range(rounds):
            sides = [("prod", WHATSAPP_PATH), ("floor", FLOOR_PATH)]
            for side, path in sides if r % 2 == 0 else sides[::-1]:
                prefix = f"{side}{r}"
                cpu_before = time.process_time()
                burst = await run_load(base, path, prefix + "m", "max", requests, 0)
                cpu[side].append((time.process_time() - cpu_before) * 1000 / requests)
                steady = await run_load(base, path, prefix + "r", "rate", at_rate, OFFERED_RATE)
                rates[side].append(requests / burst["elapsed"])
                latencies[side] += steady["latencies_ms"]
                for outcome, tag in ((burst, prefix + "m"), (steady, prefix + "r")):
                    errors += sum(n for s, n in outcome["statuses"].items() if s != "200")
                    if side == "prod":
                        sent_ok |= {f"wamid.{tag}.{i}" for i in outcome["ok"]}

        async with db.transaction() as session:
            stored_ids = set(await session.scalars(
                select(InboundMessage.wamid).where(InboundMessage.wamid.like("wamid.prod%"))))
            total = await session.scalar(select(func.count()).select_from(InboundMessage))
        await runner.cleanup()
        await pool.close()

    prod_rate = statistics.median(rates["prod"])
    floor_rate = statistics.median(rates["floor"])
    result = {
        "engine": "postgresql",
        "requests": requests, "rounds": rounds, "offered_rate": OFFERED_RATE,
        "requests_at_rate": at_rate,
        "requests_per_s": round(prod_rate, 1),
        "floor_requests_per_s": round(floor_rate, 1),
        "ratio": round(prod_rate / floor_rate, 3),
        "requests_per_s_rounds": [round(x, 1) for x in rates["prod"]],
        "floor_requests_per_s_rounds": [round(x, 1) for x in rates["floor"]],
        "cpu_ms_per_request": round(statistics.median(cpu["prod"]), 3),
        "floor_cpu_ms_per_request": round(statistics.median(cpu["floor"]), 3),
        "p50_ms": round(percentile(latencies["prod"], 0.50), 2),
        "p99_ms": round(percentile(latencies["prod"], 0.99), 2),
        "floor_p50_ms": round(percentile(latencies["floor"], 0.50), 2),
        "floor_p99_ms": round(percentile(latencies["floor"], 0.99), 2),
        "stored": len(stored_ids),
        "lost": len(sent_ok - stored_ids),
        "rows_in_table": total,
        "errors": errors,
        "resend_every": RESEND_EVERY,
    }
    for key, target in TARGETS.items():
        value = result[key]
        met = value >= target if key == "ratio" else (
            value < target if key == "p99_ms" else value == target)
        print(f"target {key} {'>=' if key == 'ratio' else '<' if key == 'p99_ms' else '=='} "
              f"{target}: {value} ({'met' if met else 'NOT met'})")
    print_result(result)


def cli() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        url, prefix, mode, count, rate = sys.argv[2:7]
        print(json.dumps(asyncio.run(load(url, prefix, mode, int(count), float(rate)))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, 2,000 requests, 3 s")
    parser.add_argument("--requests", type=int, help="requests per side and round (throughput)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3)")
    parser.add_argument("--seconds", type=float, help="seconds at 200 requests/s per round")
    args = parser.parse_args()
    base = os.environ.get("BENCH_DATABASE_URL")
    if not base or make_url(base).get_backend_name() != "postgresql":
        print("webhook_ingest needs PostgreSQL: set BENCH_DATABASE_URL=postgresql+asyncpg://...")
        raise SystemExit(2)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(
        requests=args.requests or (2_000 if args.quick else 5_000),
        rounds=args.rounds or (1 if args.quick else 3),
        seconds=args.seconds or (3.0 if args.quick else 5.0),
    ))


if __name__ == "__main__":
    cli()
