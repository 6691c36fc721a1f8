"""aiogram FSM storage in the database, for the embedded default (REDIS_URL unset).

A half-finished form (/new, /profile's e-mail step) survives a restart. Without REDIS_URL only
one process receives updates, so this process's memory is the truth: every row is read once, on
first use, and every change is written through before the handler goes on. Reading a state
(which aiogram does on every update) costs no database trip. Only a conversation with a state
or data has a row; clearing it deletes the row.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from aiogram.exceptions import DataNotDictLikeError
from aiogram.fsm.state import State
from aiogram.fsm.storage.base import BaseStorage, DefaultKeyBuilder, StateType, StorageKey
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import FsmState
from services.clock import Clock

log = logging.getLogger(__name__)

Record = tuple[str | None, dict[str, Any]]
_EMPTY: Record = (None, {})


class DatabaseStorage(BaseStorage):
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self.keys = DefaultKeyBuilder(
            with_bot_id=True, with_business_connection_id=True, with_destiny=True
        )
        self._records: dict[str, Record] = {}
        self._names: dict[StorageKey, str] = {}
        self._loaded = False
        self._load_lock = asyncio.Lock()
        # One write at a time per conversation, each writing the latest record: the row
        # always ends as memory is.
        self._write_locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        async with self._load_lock:
            if self._loaded:
                return

            async def load(session: AsyncSession) -> list[tuple[str, str | None, Any]]:
                rows = await session.execute(select(FsmState.key, FsmState.state, FsmState.data))
                return [tuple(row) for row in rows]  # type: ignore[misc]

            for key, state, data in await self.db.read(load):
                self._records[key] = (state, dict(data or {}))
            self._loaded = True
            log.info("FSM storage: database (%d conversation(s) in progress)", len(self._records))

    async def _get(self, key: StorageKey) -> tuple[str, Record]:
        if not self._loaded:
            await self._ensure_loaded()
        name = self._names.get(key)
        if name is None:
            # Built once per conversation: reading the state is on every update's path.
            name = self._names[key] = self.keys.build(key)
        return name, self._records.get(name, _EMPTY)

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        name, (current, data) = await self._get(key)
        value = state.state if isinstance(state, State) else state
        if value == current:
            return
        await self._put(name, (value, data))

    async def get_state(self, key: StorageKey) -> str | None:
        return (await self._get(key))[1][0]

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        if not isinstance(data, dict):
            raise DataNotDictLikeError(
                f"Data must be a dict or dict-like object, got {type(data).__name__}"
            )
        name, (state, current) = await self._get(key)
        # As it will read back after a restart (tuples become lists): no surprise then.
        value = json.loads(json.dumps(data))
        if value == current:
            return
        await self._put(name, (state, value))

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        return json.loads(json.dumps((await self._get(key))[1][1]))

    async def _put(self, name: str, record: Record) -> None:
        if record[0] is None and not record[1]:
            self._records.pop(name, None)
        else:
            self._records[name] = record
        lock, users = self._write_locks.get(name) or (asyncio.Lock(), 0)
        self._write_locks[name] = (lock, users + 1)
        try:
            async with lock:
                latest = self._records.get(name, _EMPTY)
                await self.db.run(lambda session: self._save(session, name, latest))
        finally:
            lock, users = self._write_locks[name]
            if users == 1:
                del self._write_locks[name]
            else:
                self._write_locks[name] = (lock, users - 1)

    async def _save(self, session: AsyncSession, name: str, record: Record) -> None:
        state, data = record
        if state is None and not data:
            await session.execute(delete(FsmState).where(FsmState.key == name))
            return
        insert = pg_insert if self.db.dialect == "postgresql" else sqlite_insert
        values = {"key": name, "state": state, "data": data, "updated_at": self.clock.now()}
        statement = insert(FsmState).values(**values)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[FsmState.key],
                set_={"state": state, "data": data, "updated_at": values["updated_at"]},
            )
        )

    async def close(self) -> None:
        """The database belongs to the application, which closes it."""
