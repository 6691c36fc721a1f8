"""The last channel: a task for an admin to reach the person by hand.

A send opens one ManualTask per notification, in its own unit of work and idempotently: the
unique notification_id decides (INSERT ... ON CONFLICT DO NOTHING on both engines), so a retried
or concurrent send returns the task that already exists instead of opening a second one.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import ManualTask
from services.clock import Clock
from services.notifications.channels.base import (
    ChannelName,
    Outgoing,
    Recipient,
    SendResult,
    render_text,
)


def describe(recipient: Recipient, message: Outgoing) -> str:
    """What the admin reads: who to contact, how, and what to tell them."""
    who = recipient.display_name or f"user #{recipient.user_id}"
    lines = [f"Please contact {who} (user #{recipient.user_id}) about: {message.kind}"]
    if recipient.phone:
        lines.append(f"Phone: {recipient.phone}")
    if recipient.email:
        lines.append(f"E-mail: {recipient.email}")
    if recipient.telegram_id is not None:
        lines.append(f"Telegram id: {recipient.telegram_id}")
    lines.append(f"Language: {recipient.language}")
    lines.append("")
    lines.append("Message:")
    lines.append(render_text(message))
    return "\n".join(lines)


class ManualChannel:
    name = ChannelName.MANUAL
    # One task holds the whole text: large enough that nothing is ever split.
    max_text_length = 100_000

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    @property
    def enabled(self) -> bool:
        return True

    def can_reach(self, recipient: Recipient) -> bool:
        return True

    async def close(self) -> None:
        """The database belongs to the application."""

    async def send(self, recipient: Recipient, message: Outgoing) -> SendResult:
        async def work(session: AsyncSession) -> int:
            return await self._open_task(session, recipient, message)

        task_id = await self.db.run(work)
        return SendResult(provider_message_id=f"task:{task_id}", sender="manual")

    async def _open_task(
        self, session: AsyncSession, recipient: Recipient, message: Outgoing
    ) -> int:
        text = describe(recipient, message)
        values = {
            "notification_id": message.notification_id,
            "user_id": recipient.user_id,
            "kind": message.kind[:64],
            "text": text,
            "status": "open",
            "created_at": self.clock.now(),
        }
        insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
        statement = (
            insert(ManualTask)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[ManualTask.notification_id])
            .returning(ManualTask.id)
        )
        task_id = (await session.execute(statement)).scalar_one_or_none()
        if task_id is not None:
            return task_id
        existing = (
            await session.execute(
                select(ManualTask.id, ManualTask.text).where(
                    ManualTask.notification_id == message.notification_id
                )
            )
        ).one()
        part_text = render_text(message)
        if message.part and part_text and part_text not in existing.text:
            # A later part of a split text: the admin needs it in the same task.
            await session.execute(
                update(ManualTask)
                .where(ManualTask.id == existing.id)
                .values(text=f"{existing.text}\n{part_text}")
            )
        return existing.id
