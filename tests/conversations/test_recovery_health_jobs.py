"""/workflow_recovery -> System health and Background jobs, through the production Dispatcher:
the health screen shows the overall status with its parts and the stored snapshots; the jobs
screen shows each job's latest run, and Run now runs a job at once, even within its
interval, recorded like any run."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from database.models import JobRun
from handlers.admin.recovery.callbacks import Nav
from services.scheduler import Scheduler
from tests.conversations.conftest import StartConversation
from tests.conversations.harness import buttons

ADMIN = 9000


async def test_the_admin_reads_system_health_and_its_snapshots(
    conversation: StartConversation,
) -> None:
    chat = await conversation(admin_ids=[ADMIN])
    menu = (await chat.send(ADMIN, "/workflow_recovery")).message("Workflow recovery")
    screen = (await chat.press(ADMIN, buttons(menu)["System health"],
                               message_id=menu["message_id"])).messages[-1]
    text = screen["text"]
    assert text.startswith("System health: 🟢 ok"), text
    for part in ("Database: 🟢 ok", "Outbox: 0 waiting", "Dead letters: 0 in the last 24 h",
                 "Stuck workflows: 0", "Inventory discrepancies: not measured yet"):
        assert part in text, text
    assert list(buttons(screen)) == ["Refresh", "Recent snapshots", "Background jobs", "« Back"]
    history = (await chat.press(ADMIN, buttons(screen)["Recent snapshots"],
                                message_id=menu["message_id"])).messages[-1]
    assert "No snapshot yet." in history["text"]
    assert buttons(history)["« Back"] == Nav(section="health").pack()


async def test_run_now_runs_a_job_within_its_interval(conversation: StartConversation) -> None:
    chat = await conversation(admin_ids=[ADMIN])
    calls: list[datetime] = []

    async def tidy(now: datetime) -> str:
        calls.append(now)
        return f"tidied {len(calls)}"

    # What bot/app.py attaches once the delivery engine (and its scheduler) is built.
    scheduler = Scheduler(chat.db, chat.clock, chat.dp["service_requests"].alerts, owner="t:1")
    scheduler.add_job("tidy", tidy, every=timedelta(hours=1))
    chat.dp["background_jobs"].scheduler = scheduler
    await scheduler.run_job("tidy")  # its timer ran it just now

    menu = (await chat.send(ADMIN, "/workflow_recovery")).message("Workflow recovery")
    jobs = (await chat.press(ADMIN, Nav(section="jobs").pack(),
                             message_id=menu["message_id"])).messages[-1]
    assert "tidy every 1h 0m:" in jobs["text"] and "✅ ok" in jobs["text"], jobs["text"]
    job = (await chat.press(ADMIN, buttons(jobs)["tidy"],
                            message_id=menu["message_id"])).messages[-1]
    assert "Job tidy: its latest runs." in job["text"]
    assert await scheduler.run_job("tidy") is None  # the timer would skip it now

    pressed = await chat.press(ADMIN, buttons(job)["Run now"], message_id=menu["message_id"])
    assert pressed.answer["text"] == "tidy ran: tidied 2"
    assert pressed.messages[-1]["text"].count("✅ ok") == 2
    runs = await chat.db.read(lambda s: s.scalars(select(JobRun.summary).where(
        JobRun.job == "tidy").order_by(JobRun.id)))
    assert list(runs) == ["tidied 1", "tidied 2"]


async def test_the_screens_speak_french(conversation: StartConversation) -> None:
    chat = await conversation(admin_ids=[ADMIN])
    await chat.send(ADMIN, "/language", language_code="fr")
    menu = (await chat.send(ADMIN, "/workflow_recovery", language_code="fr")).messages[-1]
    screen = (await chat.press(ADMIN, Nav(section="health").pack(), language_code="fr",
                               message_id=menu["message_id"])).messages[-1]
    # ok, or degraded when this machine is slow (the database part times the snapshot's reads)
    assert screen["text"].startswith(("État du système : 🟢 ok",
                                      "État du système : 🟡 dégradé")), screen["text"]
    assert "Base de données" in screen["text"]
    assert "Relevés récents" in buttons(screen)
