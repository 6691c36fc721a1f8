"""Named leases in the database: a lock that expires, so a crashed holder never blocks for good.

Used to run each sweep once per cluster and, without Redis, to let exactly one process dispatch.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Lease


async def try_acquire(
    session: AsyncSession, *, name: str, owner: str, now: datetime, ttl: timedelta
) -> bool:
    """Take or renew the lease `name` for `owner`; False if someone else holds a live one."""
    result = await session.execute(
        update(Lease)
        .where(Lease.name == name, (Lease.owner == owner) | (Lease.lease_until <= now))
        .values(owner=owner, lease_until=now + ttl)
    )
    if result.rowcount:
        return True
    if await session.scalar(select(Lease.name).where(Lease.name == name)) is not None:
        return False
    try:
        async with session.begin_nested():
            session.add(Lease(name=name, owner=owner, lease_until=now + ttl))
    except IntegrityError:
        return False  # another process created it first
    return True


async def release(session: AsyncSession, *, name: str, owner: str) -> None:
    await session.execute(delete(Lease).where(Lease.name == name, Lease.owner == owner))


async def holder(session: AsyncSession, *, name: str, now: datetime) -> str | None:
    return await session.scalar(
        select(Lease.owner).where(Lease.name == name, Lease.lease_until > now)
    )
