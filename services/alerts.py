"""The one alerting path (docs/architecture.md, principle 10).

Every "tell the admins" goes through `Alerts.alert`: deduplicated by key within a window, and
delivered through the outbox to every admin on a channel chain that never ends in a manual task.
An alert that cannot be delivered is logged loudly (notifications.dead_letters), never alerted
about.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import AlertRecord, Role, RoleGrant, RoleGrantSource, User
from services.localization import Localized
from services.masking import mask_text
from services.notifications import outbox
from services.notifications.destinations import ALERT_WEBHOOK

log = logging.getLogger(__name__)

ALERT_KIND = "alert"


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    HIGH = "high"
    CRITICAL = "critical"


_ICON = {Severity.INFO: "ℹ️", Severity.WARNING: "⚠️", Severity.HIGH: "🔴", Severity.CRITICAL: "🚨"}


class Alerts:
    def __init__(
        self,
        *,
        admin_telegram_ids: Sequence[int],
        window: timedelta,
        default_language: str = "en",
        webhook: bool = False,
    ) -> None:
        """`webhook`: ALERT_WEBHOOK_URL is set, so high and critical alerts also go there."""
        self.admin_telegram_ids = tuple(admin_telegram_ids)
        self.window = window
        self.default_language = default_language
        self.webhook = webhook

    async def alert(
        self,
        session: AsyncSession,
        *,
        key: str,
        severity: Severity | str,
        text: str | Localized,
        now: datetime,
        button: dict[str, Any] | None = None,
        support_code: str | None = None,
        link: str | None = None,
    ) -> bool:
        """Tell every admin, unless the same key was alerted within the window.

        Returns True when the alert was enqueued, False when it was deduplicated. Runs in the
        caller's unit of work: the alert leaves only if the caller's change commits.
        `button` is an action the admin can take from the alert, as
        `services.actions.Action.as_payload(text)` makes it. High and critical alerts are also
        sent to the alert webhook when one is configured, with `support_code` and `link` as
        fields beside the text. Texts are masked (services.masking) before they are stored.
        """
        severity = Severity(severity)
        localized, text = text, text.render(None) if isinstance(text, Localized) else text
        text = mask_text(text)
        record = await session.get(AlertRecord, key, with_for_update=True)
        if record is not None and record.last_sent_at > now - self.window:
            record.suppressed += 1
            return False
        if record is None:
            try:
                async with session.begin_nested():
                    record = AlertRecord(
                        key=key, severity=severity.value, text=text, last_sent_at=now, suppressed=0
                    )
                    session.add(record)
            except IntegrityError:
                return False  # another process raised the same alert at the same moment
        else:
            record.severity, record.text, record.last_sent_at = severity.value, text, now
        paged = False
        if self.webhook and severity in (Severity.HIGH, Severity.CRITICAL):
            await self._page(session, key=key, severity=severity, text=text, now=now,
                             support_code=support_code, link=link)
            paged = True
        admins = await self._admins(session, now)
        if not admins:
            log.error("alert %s (%s) has no admin to go to: %s", key, severity.value, text)
            return paged
        for admin in admins:
            # A Localized text (and button label) is rendered in each admin's language.
            words = (
                mask_text(localized.render(admin.language))
                if isinstance(localized, Localized) else text
            )
            body = f"{_ICON[severity]} {severity.value.upper()}: {words}"
            shown = button
            if button is not None and isinstance(button.get("text"), Localized):
                shown = {**button, "text": button["text"].render(admin.language)}
            await outbox.enqueue(
                session,
                recipient_id=admin.id,
                kind=ALERT_KIND,
                idempotency_key=f"alert:{key}:{now.isoformat()}:{admin.id}"[:200],
                text=body,
                buttons=[shown] if shown else None,
                priority=1,
                manual=False,
                now=now,
            )
        return True

    async def _page(
        self, session: AsyncSession, *, key: str, severity: Severity, text: str, now: datetime,
        support_code: str | None, link: str | None,
    ) -> None:
        """The alert webhook's copy: through the outbox to the "webhook:alerts" destination,
        retried, paced and dead-lettered like any send; its failures are only logged."""
        await outbox.enqueue(
            session,
            destination=ALERT_WEBHOOK,
            kind=ALERT_KIND,
            idempotency_key=f"alert:{key}:{now.isoformat()}:webhook"[:200],
            text=f"{_ICON[severity]} {severity.value.upper()}: {text}",
            fields={"severity": severity.value, "key": key, "support_code": support_code,
                    "link": link},
            priority=1,
            now=now,
        )

    async def _admins(self, session: AsyncSession, now: datetime) -> list[User]:
        """The users behind ADMIN_IDS (the owners), with rows made for admins who never talked
        to the bot, so the alert still has a recipient; then the admins granted in the menu."""
        granted = list(await session.scalars(
            select(User).join(RoleGrant, RoleGrant.user_id == User.id)
            .where(RoleGrant.role == Role.ADMIN.value,
                   RoleGrant.source == RoleGrantSource.MENU.value)
            .order_by(User.id)
        ))
        owners = await self._owners(session, now)
        seen = {u.id for u in owners}
        return owners + [u for u in granted if u.id not in seen]

    async def _owners(self, session: AsyncSession, now: datetime) -> list[User]:
        if not self.admin_telegram_ids:
            return []
        users = {
            u.telegram_id: u
            for u in await session.scalars(
                select(User).where(User.telegram_id.in_(self.admin_telegram_ids))
            )
        }
        for telegram_id in self.admin_telegram_ids:
            if telegram_id not in users:
                user = User(
                    telegram_id=telegram_id, display_name="", language=self.default_language,
                    roles=f"{Role.REQUESTER.value},{Role.ADMIN.value}", created_at=now,
                    updated_at=now,
                )
                try:
                    async with session.begin_nested():
                        session.add(user)
                except IntegrityError:  # another process made the row first
                    user = await session.scalar(
                        select(User).where(User.telegram_id == telegram_id)
                    )
                if user is not None:
                    users[telegram_id] = user
        return [users[t] for t in self.admin_telegram_ids if t in users]
