"""Background jobs: each job of this process with its latest outcome; a job's recent runs and
Run now (at once, even within its interval; never twice at the same time across processes:
the scheduler's lease decides)."""

from __future__ import annotations

from typing import Any

from aiogram import F, Router
from aiogram.types import CallbackQuery
from aiogram.utils.i18n import gettext as _

from bot.config import Settings
from handlers.admin.recovery.callbacks import JobRunNow, JobScreen, Nav
from handlers.admin.recovery.screens import Screen, back, button, show, when
from handlers.times import duration
from services.localization import N_
from services.recovery_jobs import BackgroundJobs, RunView

OUTCOME = {"ok": N_("ok"), "failed": N_("failed"), "running": N_("running")}
_ICON = {"ok": "✅", "failed": "❌", "running": "⏳"}


def _outcome(value: str) -> str:
    return f"{_ICON.get(value, '')} {_(OUTCOME[value]) if value in OUTCOME else value}".strip()


def _run_line(run: RunView, timezone: str) -> str:
    took = (
        duration((run.finished_at - run.started_at).total_seconds())
        if run.finished_at is not None else "…"
    )
    what = run.summary if run.outcome == "ok" else (run.error_code or "")
    return f"{when(run.started_at, timezone)} {_outcome(run.outcome)} ({took}) {what or ''}".strip()


async def show_jobs(query: CallbackQuery, background_jobs: BackgroundJobs, settings: Settings,
                    **_data: Any) -> None:
    jobs = await background_jobs.jobs()
    lines = [_("Background jobs: the latest run of each."), ""]
    screen = Screen("")
    for index, job in enumerate(jobs):
        every = _(" every {every}").format(every=duration(job.every_seconds)) \
            if job.every_seconds else ""
        last = _run_line(job.last, settings.timezone) if job.last else _("never ran")
        lines.append(f"{job.name}{every}: {last}")
        screen.button(job.name, JobScreen(job=index))
    if not jobs:
        lines.append(_("No background job in this process."))
    screen.text = "\n".join(lines)
    screen.rows.append(back())
    await show(query, screen)


def render_job(name: str, index: int, runs: list[RunView], timezone: str,
               can_run: bool) -> Screen:
    lines = [_("Job {name}: its latest runs.").format(name=name), ""]
    lines += [_run_line(run, timezone) for run in runs] or [_("never ran")]
    failing = runs[0].consecutive_failures if runs else 0
    if failing:
        lines += ["", _("Failed {count} time(s) in a row.").format(count=failing)]
    screen = Screen("\n".join(lines))
    if can_run:
        screen.rows.append([button(_("Run now"), JobRunNow(job=index))])
    screen.rows.append([button(_("Refresh"), JobScreen(job=index))])
    screen.rows.append(back(Nav(section="jobs")))
    return screen


def _name(background_jobs: BackgroundJobs, index: int) -> str | None:
    names = sorted(background_jobs.specs())
    return names[index] if 0 <= index < len(names) else None


async def show_job(query: CallbackQuery, callback_data: JobScreen,
                   background_jobs: BackgroundJobs, settings: Settings, **_data: Any) -> None:
    name = _name(background_jobs, callback_data.job)
    if name is None:
        await show(query, Screen(_("This job is not run by this process."), [back(
            Nav(section="jobs"))]))
        return
    runs = await background_jobs.runs(name)
    await show(query, render_job(name, callback_data.job, runs, settings.timezone, True))


async def run_now(query: CallbackQuery, callback_data: JobRunNow,
                  background_jobs: BackgroundJobs, settings: Settings, **_data: Any) -> None:
    name = _name(background_jobs, callback_data.job)
    if name is None:
        await show(query, Screen(_("This job is not run by this process."), [back(
            Nav(section="jobs"))]))
        return
    run = await background_jobs.run_now(name)
    if run is None:
        notice = _("{name} is running already; it was not started twice.").format(name=name)
    elif run.outcome == "ok":
        notice = _("{name} ran: {summary}").format(name=name, summary=run.summary or "-")
    else:
        notice = _("{name} failed: {error}").format(name=name, error=run.error_code or "-")
    runs = await background_jobs.runs(name)
    await show(query, render_job(name, callback_data.job, runs, settings.timezone, True),
               notice=notice)


def setup() -> Router:
    router = Router(name="recovery-jobs")
    router.callback_query.register(show_jobs, Nav.filter(F.section == "jobs"))
    router.callback_query.register(show_job, JobScreen.filter())
    router.callback_query.register(run_now, JobRunNow.filter())
    return router
