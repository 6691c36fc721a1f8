"""Logging: text or JSON lines, with secrets and phone numbers masked in every record.

Masking happens in the formatter, after the message, its arguments and any traceback have been
rendered, so no code path (aiogram's, aiohttp's, ours) can leak a token by logging a URL.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable

# E.164 numbers (+ and 8 to 15 digits), also inside longer text.
_PHONE = re.compile(r"(?<![\w+])\+(\d{2})(\d{4,11})(\d{2})(?!\d)")


def mask_phone_numbers(text: str) -> str:
    """+33612345678 -> +33*******78: enough to tell numbers apart, not enough to call one."""
    return _PHONE.sub(lambda m: f"+{m.group(1)}{'*' * len(m.group(2))}{m.group(3)}", text)


class Redactor:
    """Replaces known secret values and phone numbers in text."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "[REDACTED]")
        return mask_phone_numbers(text)


class RedactingFormatter(logging.Formatter):
    def __init__(self, redact: Redactor, *, json_lines: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redact = redact
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        if not self.json_lines:
            return self.redact(super().format(record))
        payload = {
            "at": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(payload, ensure_ascii=False))


def setup_logging(level: str, fmt: str, secrets: Iterable[str | None] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(Redactor(secrets), json_lines=fmt == "json"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiosqlite logs every statement at DEBUG; that is noise, not insight.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, root.level))
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
    # APScheduler logs two INFO lines per job run: noise at a run a minute.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))
