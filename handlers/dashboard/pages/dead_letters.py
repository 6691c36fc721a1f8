"""Dead letters: filtered by channel, kind and failure class (query parameters; the facets as
selects), a page of them at a time; a dead letter's detail with every attempt; Retry and
Archive (each with a reason, as the menu asks), and Retry all of the filter after a page that
shows the count. All through FailedNotifications, the Failed notifications menu's service,
with the menu's preset reasons. A POST acts on what is true then: a letter no longer dead,
or a count that changed since the confirmation, is said and nothing is done."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from aiogram.utils.i18n import gettext as _
from aiohttp import web

from handlers.admin.recovery.notifications import (
    ARCHIVE_REASONS,
    CHANNELS,
    CLASSES,
    RETRY_REASONS,
)
from handlers.dashboard.common import actor_id, form, redirect, render, service
from handlers.dashboard.pages.reasons import PAGE_SIZE, Pager, choices, page_of, reason_of
from services.notifications.dead_letters import DeadLetterFilter, FailedNotifications

routes = web.RouteTableDef()

PAGE = "/admin/dead-letters"
ALL_ATTEMPTS = 1000  # a notification's budgets keep it far below this


def _filters(values: Mapping[str, str]) -> DeadLetterFilter:
    """The filter a query string or form names; unknown channels and classes mean "any"."""
    kind = values.get("kind", "").strip()[:64] or None
    channel = values.get("channel", "")
    failure_class = values.get("failure_class", "")
    return DeadLetterFilter(kind, channel if channel in CHANNELS else None,
                            failure_class if failure_class in CLASSES else None)


def _query(filters: DeadLetterFilter, **extra: Any) -> str:
    values = {"kind": filters.kind, "channel": filters.channel,
              "failure_class": filters.failure_class, **extra}
    text = urlencode({k: v for k, v in values.items() if v not in (None, "")})
    return f"?{text}" if text else ""


def _service(request: web.Request) -> FailedNotifications:
    failed: FailedNotifications = service(request, "failed_notifications")
    return failed


@routes.get(PAGE)
async def dead_letters(request: web.Request) -> web.Response:
    failed = _service(request)
    filters = _filters(request.query)
    page = page_of(request.query)
    items, total = await failed.list_dead(filters, limit=PAGE_SIZE, offset=page * PAGE_SIZE)
    pager = Pager(page, total)
    if page and not items and total:  # past the end (rows went away): the last page
        pager = Pager(pager.pages - 1, total)
        items, total = await failed.list_dead(filters, limit=pager.size, offset=pager.offset)
    return render(request, "dead_letters.html", {
        "items": items, "total": total, "pager": pager, "filters": filters,
        "facets": await failed.facets(), "filtered": filters != DeadLetterFilter(),
        "page_url": lambda n: PAGE + _query(filters, page=n or None),
        "retry_all_url": f"{PAGE}/retry-all" + _query(filters),
    })


@routes.get(PAGE + "/retry-all")
async def confirm_retry_all(request: web.Request) -> web.Response:
    filters = _filters(request.query)
    count = await _service(request).count(filters)
    if not count:
        raise redirect(request, PAGE + _query(filters),
                       _("No dead letter matches this filter any more."), kind="error")
    return render(request, "dead_letters_retry_all.html", {
        "filters": filters, "count": count, "reasons": choices(RETRY_REASONS),
        "back_url": PAGE + _query(filters),
    })


@routes.post(PAGE + "/retry-all")
async def retry_all(request: web.Request) -> web.Response:
    data = await form(request)
    filters = _filters(data)
    failed = _service(request)
    back = PAGE + _query(filters)
    seen = data.get("count", "")
    count = await failed.count(filters)
    if not seen.isdigit() or int(seen) != count:
        raise redirect(request, f"{PAGE}/retry-all" + _query(filters) if count else back, _(
            "The number of dead letters changed in the meantime (now {count}); nothing was "
            "sent. Check it and confirm again.").format(count=count), kind="error")
    reason = reason_of(data, RETRY_REASONS)
    if reason is None:
        raise redirect(request, f"{PAGE}/retry-all" + _query(filters),
                       _("Say why: pick a reason or type one."), kind="error")
    sent = await failed.retry_matching(filters, actor_id=actor_id(request), reason=reason)
    raise redirect(request, back, _("Sent {count} notification(s) again.").format(count=sent))


def _detail_url(notification_id: int) -> str:
    return f"{PAGE}/{notification_id}"


@routes.get(PAGE + r"/{id:\d+}")
async def dead_letter(request: web.Request) -> web.Response:
    notification_id = int(request.match_info["id"])
    found = await _service(request).detail(notification_id, attempts=ALL_ATTEMPTS)
    if found is None:
        raise redirect(request, PAGE, _("This notification no longer exists."), kind="error")
    view, attempts = found
    return render(request, "dead_letter.html", {
        "view": view, "attempts": attempts,
        "retry_reasons": choices(RETRY_REASONS), "archive_reasons": choices(ARCHIVE_REASONS),
    })


async def _act(request: web.Request, action: str) -> web.Response:
    notification_id = int(request.match_info["id"])
    data = await form(request)
    reason = reason_of(data, RETRY_REASONS if action == "retry" else ARCHIVE_REASONS)
    if reason is None:
        raise redirect(request, _detail_url(notification_id),
                       _("Say why: pick a reason or type one."), kind="error")
    failed = _service(request)
    if await failed.kind_of(notification_id) is None:
        raise redirect(request, PAGE, _("This notification no longer exists."), kind="error")
    if action == "retry":
        done = await failed.retry_one(notification_id, actor_id=actor_id(request), reason=reason)
        notice = _("Sent again: it is back in the queue with a fresh budget.")
    else:
        done = await failed.archive_one(notification_id, actor_id=actor_id(request),
                                        reason=reason)
        notice = _("Archived.")
    if not done:
        raise redirect(request, _detail_url(notification_id),
                       _("Nothing done: it is no longer a dead letter."), kind="error")
    raise redirect(request, _detail_url(notification_id), notice)


@routes.post(PAGE + r"/{id:\d+}/retry")
async def retry(request: web.Request) -> web.Response:
    return await _act(request, "retry")


@routes.post(PAGE + r"/{id:\d+}/archive")
async def archive(request: web.Request) -> web.Response:
    return await _act(request, "archive")
