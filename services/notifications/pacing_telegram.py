"""Telegram's flood limits kept by construction: the pacing policy, free of aiogram.

docs/architecture.md, principle 6: a 429 is a bug in our pacing, not a normal event. Telegram allows
about 30 messages per second overall, 1 per second in a private chat and 20 per minute in a
group (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this). The
aiogram session middleware that every Bot API call passes through (bot/telegram_pacing.py)
asks `TelegramPacer` for a slot before each send, so handler replies and outbox deliveries
share one budget; with a `RedisRateLimiter` that budget is shared by every process of the bot
too.

How a send is paced (`TelegramPacer.slot`):

1. One send per chat at a time in this process (a lock per chat), so messages to a chat
   leave in the order they were asked for and never compete with each other.
2. Sends queue (FIFO) for their *turn*; only the task whose turn it is asks the limiter for
   the global slot, so waiting sends do not all poll the limiter (no thundering herd).
3. At its turn a send first takes the chat's slot without waiting. If the chat is not free
   (a message to it left less than a chat interval ago, perhaps from another process), it gives
   up the turn, sleeps until the chat is free and queues again: it never holds the global
   budget hostage. Otherwise it waits for the global slot, then restarts the chat's interval
   from that moment (`block`), because the chat's slot was taken a little earlier than the
   message leaves. Taking the chat first and the global slot at once keeps the moment a slot
   is taken and the moment the message leaves close together, which is what a sliding-window
   counter such as Telegram's sees.
4. The global limit runs at `margin` (97 %) of the configured rate. GCRA spaces events evenly,
   so 30 messages span 29 intervals of 1/29.1 s and the 31st comes 1/0.97 - 1 = 31 ms after
   the one-second window of a sliding counter like Telegram's has moved past the first: that
   slack absorbs the jitter between taking a slot and the message reaching Telegram. Chat
   limits run at `chat_margin` (95 %): two messages to a private chat leave 1.053 s apart, so
   the first may reach Telegram up to 52 ms later than the second and still be a second
   apart (the benchmark saw gaps down to 1.007 s at 97 % on a loaded machine). It costs
   throughput only when fewer than 31 chats share the traffic (30 x 0.95 = 28.5/s).
5. A sleeping task wakes a little late (asyncio rounds timers up to the millisecond, and a busy
   loop adds more); with a strict GCRA every late wake-up is lost for good, which alone costs
   3-4 % of the rate. The global key therefore gets a tolerance of `catch_up_seconds` (5 ms,
   expressed as a fractional burst of 1 + 5 ms x rate): a slot may be taken up to 5 ms before
   its time, so a wake-up late by less than that loses nothing. It spends 5 ms of the 31 ms
   slack; the rest still covers jitter. Chat keys keep a strict GCRA: they are rarely the
   bottleneck, and their slack is all left for jitter.
6. Slack covers ordinary jitter, not a message that took much longer than usual to reach
   Telegram: one delayed 40 ms (a new connection, the process paused by the OS) lands
   together with the messages after it, and the 31st message after it then shares its
   one-second window. So each send reports how long it took from its slot to its answer
   (`sent`). The time beyond the fastest recent send bounds how late it may have arrived;
   when that excess is more than a key's slack, the key's schedule moves back by the
   difference (`block`). Steady latency, however long, costs nothing. Only outliers pause
   the schedule, and only by what they could have eaten into the window.

A send with `broadcast=False` (a paid broadcast) skips the global limit (Telegram lifts it
for paid broadcasts) but keeps the chat limit; a send of several messages (an album) counts
once per message.

On a 429 (`retry_after`) the chat is blocked for `retry_after` seconds. Telegram does not say
which limit a 429 is about; when two different chats get one within `global_evidence_seconds`
the overall budget is the one exhausted, so the global key is blocked as well.

`max_wait` bounds how long a send may wait for its slot: a send that would wait longer raises
`SlotUnavailable` at once, with an estimate of when a slot will be free.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.clock import Clock
from services.notifications.pacing import RateLimiter, acquire

log = logging.getLogger(__name__)

DEFAULT_MARGIN = 0.97
DEFAULT_CHAT_MARGIN = 0.95
DEFAULT_CATCH_UP = 0.005  # seconds a global slot may be taken early (see 5. above)


class SlotUnavailable(Exception):
    """No slot within the caller's max_wait; `retry_after` estimates when one will be free."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"no sending slot for {retry_after:.1f} s")
        self.retry_after = retry_after


class _KeyedLocks:
    """An asyncio.Lock per key, forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def acquire(self, key: str, deadline: float | None) -> None:
        """Take the key's lock (before the loop time `deadline`, else TimeoutError)."""
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        acquired = False
        try:
            async with asyncio.timeout_at(deadline):
                acquired = await lock.acquire()
        finally:
            if not acquired:
                self._forget(key)

    def release(self, key: str) -> None:
        self._locks[key][0].release()
        self._forget(key)

    def ahead(self, key: str) -> int:
        return self._locks[key][1] if key in self._locks else 0

    def _forget(self, key: str) -> None:
        lock, users = self._locks[key]
        if users == 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class TelegramPacer:
    """Waits until a message may go to a chat without breaking Telegram's limits.

    Rates are Telegram's (or the settings'); the pacer runs at `margin` of the global rate and
    `chat_margin` of the chat rates (see the module docstring). Keys in the
    limiter are `{prefix}:{bot_id}:global` and `{prefix}:{bot_id}:chat:{chat_id}`, so two bots
    (tokens) have separate budgets and all processes of one bot share theirs.
    """

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        clock: Clock,
        rate_per_second: float = 30.0,
        per_chat_per_second: float = 1.0,
        group_per_minute: float = 20.0,
        margin: float = DEFAULT_MARGIN,
        chat_margin: float = DEFAULT_CHAT_MARGIN,
        catch_up_seconds: float = DEFAULT_CATCH_UP,
        global_evidence_seconds: float = 1.0,
        prefix: str = "tg",
    ) -> None:
        if not (0 < margin <= 1 and 0 < chat_margin <= 1):
            raise ValueError(f"margins must be in (0, 1], got {margin} and {chat_margin}")
        if catch_up_seconds < 0 or (catch_up_seconds > 0 and catch_up_seconds >= 1 / margin - 1):
            raise ValueError(
                f"catch_up_seconds must be below the margin's slack ({1 / margin - 1:.3f} s)"
            )
        self.limiter = limiter
        self.clock = clock
        self.global_rate = rate_per_second * margin
        # GCRA's tolerance is (burst - 1) intervals; a fractional burst expresses it in seconds.
        self.global_burst = 1.0 + catch_up_seconds * self.global_rate
        self.catch_up_seconds = catch_up_seconds
        # How much later than the schedule a message may reach Telegram and still keep the
        # limit (see 6. above): the margin's spare time over one period, less the tolerance.
        self.global_slack = (1 / margin - 1) - catch_up_seconds
        self.chat_margin = chat_margin
        self._latencies: deque[float] = deque(maxlen=64)
        self.private_rate = per_chat_per_second * chat_margin  # per 1 s
        self.group_rate = group_per_minute * chat_margin  # per 60 s
        self.global_evidence_seconds = global_evidence_seconds
        self.prefix = prefix
        self._chat_locks = _KeyedLocks()
        self._turns = _KeyedLocks()
        self._recent_429: deque[tuple[float, str]] = deque()

    @property
    def busy_chats(self) -> int:
        """Chats with a send waiting or in flight in this process."""
        return len(self._chat_locks)

    def global_key(self, bot_id: int) -> str:
        return f"{self.prefix}:{bot_id}:global"

    def chat_key(self, bot_id: int, chat_id: int | str) -> str:
        return f"{self.prefix}:{bot_id}:chat:{chat_id}"

    def chat_limit(self, chat_id: int | str) -> tuple[float, float]:
        """(rate, per) for a chat: private chats have positive ids; groups, supergroups and
        channels negative ids (or an @username, which only channels and groups have)."""
        if isinstance(chat_id, int) and chat_id > 0:
            return self.private_rate, 1.0
        return self.group_rate, 60.0

    @asynccontextmanager
    async def slot(
        self,
        bot_id: int,
        chat_id: int | str,
        *,
        messages: int = 1,
        broadcast: bool = True,
        max_wait: float | None = None,
    ) -> AsyncIterator[None]:
        """Wait until `messages` messages may go to `chat_id`; send them inside the block.

        The chat stays held (in this process) until the block ends, so a 429 answer can be
        reported (`retry_after`) before the next message to that chat is considered.
        `broadcast=False` (a paid broadcast) skips the global limit. If the slot is more than
        `max_wait` seconds away, raises SlotUnavailable instead of waiting that long.
        """
        loop = asyncio.get_running_loop()
        deadline = None if max_wait is None else loop.time() + max_wait
        chat_key = self.chat_key(bot_id, chat_id)
        rate, per = self.chat_limit(chat_id)
        try:
            await self._chat_locks.acquire(chat_key, deadline)
        except TimeoutError:  # messages to this chat queued ahead, one chat interval each
            raise SlotUnavailable(self._chat_locks.ahead(chat_key) * per / rate) from None
        try:
            await self._wait_turn(bot_id, chat_key, rate, per, max(messages, 1), broadcast,
                                  deadline)  # fmt: skip
            yield
        finally:
            self._chat_locks.release(chat_key)

    async def _wait_turn(
        self,
        bot_id: int,
        chat_key: str,
        rate: float,
        per: float,
        messages: int,
        broadcast: bool,
        deadline: float | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        global_key = self.global_key(bot_id)
        while True:
            try:
                await self._turns.acquire(global_key, deadline)
            except TimeoutError:  # sends queued ahead for the global budget
                raise SlotUnavailable(self._turns.ahead(global_key) / self.global_rate) from None
            try:
                wait = await self.limiter.try_acquire(chat_key, rate, per)
                if wait <= 0:
                    waited = 0.0
                    for _ in range(messages if broadcast else 0):
                        remaining = None if deadline is None else max(deadline - loop.time(), 0)
                        took = await acquire(
                            self.limiter, global_key, self.global_rate,
                            burst=self.global_burst,
                            max_wait=remaining,
                        )  # fmt: skip
                        if took < 0:
                            raise SlotUnavailable(-took)
                        waited += took
                    if waited > 0 or messages > 1:
                        # The message leaves now, not when the chat's slot was taken.
                        await self.limiter.block(chat_key, messages * per / rate)
                    return
            finally:
                self._turns.release(global_key)
            if deadline is not None and loop.time() + wait > deadline:
                raise SlotUnavailable(wait)
            await asyncio.sleep(wait)

    async def sent(
        self, bot_id: int, chat_id: int | str, took: float, *, broadcast: bool = True
    ) -> None:
        """A send to `chat_id` was answered `took` seconds after its slot was taken.

        If it may have reached Telegram late enough to share a window with messages paced
        after it, move the schedules of its keys back by the excess (see 6. above).
        """
        excess = took - min(self._latencies, default=0.0)
        self._latencies.append(took)
        rate, per = self.chat_limit(chat_id)
        keys = [(self.chat_key(bot_id, chat_id), per / rate, 0.0, per * (1 / self.chat_margin - 1),
                 per)]  # fmt: skip
        if broadcast:
            keys.append((self.global_key(bot_id), 1 / self.global_rate, self.catch_up_seconds,
                         self.global_slack, 1.0))  # fmt: skip
        for key, interval, tolerance, slack, period in keys:
            if excess > slack:
                delay = interval + tolerance + min(excess - slack, period)
                log.debug("send took %.3f s (%.3f s over the fastest): %s held %.3f s",
                          took, excess, key, delay)  # fmt: skip
                await self.limiter.block(key, delay)

    async def retry_after(self, bot_id: int, chat_id: int | str, seconds: float) -> None:
        """Telegram answered 429: keep the chat (and, on evidence, everything) quiet."""
        chat_key = self.chat_key(bot_id, chat_id)
        await self.limiter.block(chat_key, seconds)
        now = self.clock.monotonic()
        recent = self._recent_429
        while recent and now - recent[0][0] > self.global_evidence_seconds:
            recent.popleft()
        other_chat = any(key != chat_key for _, key in recent)
        recent.append((now, chat_key))
        if other_chat:
            await self.limiter.block(self.global_key(bot_id), seconds)
        log.warning(
            "Telegram flood control: 429 for chat %s, retry after %s s; blocked %s "
            "(pacing should prevent this: is something else sending as this bot?)",
            chat_id, seconds, "the chat and all sends" if other_chat else "the chat",
        )  # fmt: skip
