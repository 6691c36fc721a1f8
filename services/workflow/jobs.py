"""The workflow's timed work on the scheduler base (services/scheduler.py): offers that
expired move on to the next candidates; completed requests are reminded and confirmed."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.scheduler import Scheduler
from services.workflow.service import ServiceRequests


def register_workflow_jobs(scheduler: Scheduler, requests: ServiceRequests) -> None:
    interval = requests.config.job_interval

    async def offer_expiry(now: datetime) -> str:
        return f"expired {await requests.expire_offers(now)}"

    async def completed_requests(now: datetime) -> str:
        reminded, confirmed = await requests.sweep_completed(now)
        return f"reminded {reminded}, confirmed {confirmed}"

    lease = max(interval, timedelta(minutes=1))
    scheduler.add_job("offer_expiry", offer_expiry, every=interval, lease=lease)
    scheduler.add_job("completed_requests", completed_requests, every=interval, lease=lease)
