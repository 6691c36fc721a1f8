"""Helpers shared by tests: users in the database and a scriptable in-memory channel.

The scripted channel stands in for a provider only in tests of the dispatcher's own decisions
(budgets, fallback, circuits) where time is moved by a FakeClock; the real channels are tested
against the fake providers over HTTP.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from database.engine import Database
from database.models import User
from services.clock import Clock
from services.notifications.channels.base import ChannelName, Outgoing, Recipient, SendResult
from services.notifications.failures import ChannelError, Failure, FailureClass


async def make_user(
    db: Database,
    clock: Clock,
    *,
    telegram_id: int | None = 1001,
    phone: str | None = None,
    email: str | None = None,
    roles: str = "requester",
    language: str = "en",
    channel_order: str | None = None,
) -> int:
    async def work(session) -> int:
        user = User(
            telegram_id=telegram_id, phone=phone, email=email, display_name=f"User {telegram_id}",
            language=language, roles=roles, channel_order=channel_order,
            created_at=clock.now(), updated_at=clock.now(),
        )
        session.add(user)
        await session.flush()
        return user.id

    return await db.run(work)


def failure(kind: FailureClass, code: str = "x", *, retry_after: float | None = None,
            opt_out: bool = False, provider: str = "test") -> Failure:
    return Failure(kind, provider, code, f"scripted {kind.value}", retry_after=retry_after,
                   opt_out=opt_out)


@dataclass
class ScriptedChannel:
    """Fails as scripted (one entry per send: a Failure, or None for success), then succeeds."""

    name: ChannelName
    max_text_length: int = 4096
    script: deque[Failure | None] = field(default_factory=deque)
    sent: list[tuple[int, Outgoing]] = field(default_factory=list)
    calls: int = 0
    reach: str | None = None  # the Recipient field that must be set, e.g. "phone"
    enabled: bool = True

    def fail(self, *failures: Failure | None) -> ScriptedChannel:
        self.script.extend(failures)
        return self

    def can_reach(self, recipient: Recipient) -> bool:
        return self.reach is None or getattr(recipient, self.reach) is not None

    async def send(self, recipient: Recipient, message: Outgoing) -> SendResult:
        self.calls += 1
        if self.script:
            scripted = self.script.popleft()
            if scripted is not None:
                raise ChannelError(scripted)
        self.sent.append((recipient.user_id, message))
        return SendResult(provider_message_id=f"{self.name}-{len(self.sent)}", sender="test",
                          address=str(recipient.user_id))

    async def close(self) -> None:
        return None

    def texts(self) -> list[str | None]:
        return [m.text for _, m in self.sent]
