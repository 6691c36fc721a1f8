"""Background jobs: each job of this process with its latest runs and their outcomes; Run now
(at once, even within its interval; never twice at the same time across processes: the
scheduler's lease decides), through BackgroundJobs as the Telegram screen does."""

from __future__ import annotations

from aiogram.utils.i18n import gettext as _
from aiohttp import web

from handlers.dashboard.common import form, redirect, render, service
from services.recovery_jobs import BackgroundJobs

routes = web.RouteTableDef()

RUNS_SHOWN = 5
PAGE = "/admin/jobs"


@routes.get(PAGE)
async def jobs(request: web.Request) -> web.Response:
    background_jobs: BackgroundJobs = service(request, "background_jobs")
    views = await background_jobs.jobs()
    runnable = set(background_jobs.specs())
    shown = [
        {"job": job, "runs": await background_jobs.runs(job.name, limit=RUNS_SHOWN),
         "runnable": job.name in runnable}
        for job in views
    ]
    return render(request, "jobs.html", {"jobs": shown})


@routes.post(f"{PAGE}/run")
async def run_now(request: web.Request) -> web.Response:
    background_jobs: BackgroundJobs = service(request, "background_jobs")
    name = (await form(request)).get("job", "")
    try:
        run = await background_jobs.run_now(name)
    except KeyError:
        raise redirect(request, PAGE, _("This job is not run by this process."),
                       kind="error") from None
    if run is None:
        notice, kind = _("{name} is running already; it was not started twice.").format(
            name=name), "error"
    elif run.outcome == "ok":
        notice, kind = _("{name} ran: {summary}").format(name=name, summary=run.summary or "-"), \
            "ok"
    else:
        notice, kind = _("{name} failed: {error}").format(name=name, error=run.error_code or "-"), \
            "error"
    raise redirect(request, PAGE, notice, kind=kind)
