"""Refusal warnings at a bounded rate: a flood of bad requests (forged webhook signatures,
made-up dashboard sign-in links) costs a log line a minute per kind, not a line a request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class _Window:
    ends: float
    more: int = 0
    timer: asyncio.TimerHandle | None = None


class RefusalLog:
    """Refusal warnings at a bounded rate, one kind at a time: the first refusal of a kind is
    logged at once; the ones after it within `window` seconds are only counted, and one line
    says how many there were ("N more refused in the last minute") when the window ends. A
    flood of bad requests costs a line a minute per kind, not a line a request.

    A kind is (source, reason), e.g. ("WhatsApp webhook", "wrong X-Hub-Signature-256"); details
    that vary between requests go in `detail`, logged with the first one only.
    """

    def __init__(
        self,
        logger: logging.Logger = log,
        *,
        window: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._window = window
        self._now = monotonic
        self._windows: dict[tuple[str, str], _Window] = {}

    def refused(self, source: str, reason: str, detail: str = "") -> None:
        kind = (source, reason)
        now = self._now()
        window = self._windows.get(kind)
        if window is not None and now < window.ends:
            window.more += 1
            if window.timer is None:
                window.timer = self._summary_timer(kind, window.ends - now)
            return
        if window is not None:
            self._summarize(kind)
        self._log.warning("%s refused: %s%s", source, reason, detail)
        self._windows[kind] = _Window(ends=now + self._window)

    def _summary_timer(self, kind: tuple[str, str], delay: float) -> asyncio.TimerHandle | None:
        # Without it, the count of a flood's last minute would wait for the next refusal.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return loop.call_later(max(delay, 0.0), self._summarize, kind)

    def _summarize(self, kind: tuple[str, str]) -> None:
        window = self._windows.pop(kind, None)
        if window is None:
            return
        if window.timer is not None:
            window.timer.cancel()
        if window.more:
            self._log.warning("%s: %d more refused in the last minute (%s)",
                              kind[0], window.more, kind[1])
