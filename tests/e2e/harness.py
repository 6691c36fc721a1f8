"""Runs the real bot as an OS process against the fakes, and reads what it printed."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "4242:AAF-e2e-secret-token-value"


@dataclass
class BotProcess:
    env: dict[str, str]
    args: tuple[str, ...] = ("run",)
    process: asyncio.subprocess.Process | None = None
    output: list[str] = field(default_factory=list)
    web_url: str | None = None
    _reader: asyncio.Task[None] | None = None
    _lines: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    async def start(self) -> BotProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "TELEGRAM_"))}
        env.update(self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.e2e.entry", *self.args,
            cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.output.append(line)
            self._lines.put_nowait(line)

    async def wait_for_line(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """Wait until the process prints a line matching `pattern`."""
        regex = re.compile(pattern)
        for line in self.output:
            if match := regex.search(line):
                return match
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await self._lines.get()
                    if match := regex.search(line):
                        return match
        except TimeoutError:
            raise AssertionError(
                f"bot never printed {pattern!r}; output:\n{self.text}"
            ) from None

    async def wait_ready(self) -> None:
        match = await self.wait_for_line(r"web server listening on (http://\S+)")
        self.web_url = match.group(1)
        await self.wait_for_line(r"(polling|webhook) mode")

    def signal(self, sig: signal.Signals = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def stop(self) -> int:
        if self.process is None or self.process.returncode is not None:
            return await self.wait_exit()
        self.signal(signal.SIGTERM)
        return await self.wait_exit()

    @property
    def text(self) -> str:
        return "\n".join(self.output)


def bot_env(fake_base_url: str, database_url: str, **extra: str) -> dict[str, str]:
    env = {
        "BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE": fake_base_url,
        "DATABASE_URL": database_url,
        "WEB_HOST": "127.0.0.1",
        "WEB_PORT": "0",
        "LOG_LEVEL": "DEBUG",
        "THROTTLE_RATE": "5",
        "THROTTLE_WINDOW_SECONDS": "3",
        "SHUTDOWN_TIMEOUT_SECONDS": "15",
    }
    env.update(extra)
    return env
