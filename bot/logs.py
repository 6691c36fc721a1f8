"""Logging: one line per event, as text or JSON (LOG_FORMAT), every value masked.

Each line carries its level, logger, and what it happened in: the update's id, the user's id
masked (services.masking.mask_id) and the support code where there is one. Those come from
`log_context` (a context variable: everything logged while an update is handled carries them;
`LogContextMiddleware` sets the update and user, the error handler adds the support code) or
from a call's own `extra={"support_code": ...}`.

Masking (services.masking.mask_text) is applied to every value before it is encoded, so a
secret with a quote or a backslash cannot slip through JSON escaping, and to every record
whichever library wrote it (one handler on the root logger). Warnings, uncaught exceptions and
whatever else the process prints to stdout or stderr go through masking as well
(`setup_logging`, `MaskedStream`).
"""

from __future__ import annotations

import contextvars
import io
import json
import logging
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, TextIO

from services import masking

# The fields a line may carry beside its message, in the order they are shown.
CONTEXT_FIELDS = ("update_id", "user_id", "support_code")

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "log_context", default=_EMPTY
)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Everything logged inside carries these fields (None values are left out); nested
    contexts add to the outer one. `user_id` is masked when written, never stored masked."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def bind_log_context(**fields: Any) -> None:
    """Add fields to the current context until the task (the update) ends: for code that cannot
    wrap what follows in `log_context`, such as an error handler that learns the support code."""
    _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})


def current_log_context() -> dict[str, Any]:
    return dict(_context.get())


class LogContextMiddleware:
    """Outer update middleware: the update's id and its user's id on every line logged while
    the update is handled. (A plain callable, as aiogram allows: this module is imported before
    aiogram, so a configuration error is printed without waiting for aiogram to load.)"""

    async def __call__(
        self,
        handler: Callable[[Any, dict[str, Any]], Awaitable[Any]],
        event: Any,
        data: dict[str, Any],
    ) -> Any:
        user = data.get("event_from_user")
        update_id = getattr(event, "update_id", None)
        with log_context(update_id=update_id, user_id=getattr(user, "id", None)):
            return await handler(event, data)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The context fields of a record: the call's `extra` wins over the context."""
    fields = dict(_context.get())
    for name in CONTEXT_FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            fields[name] = value
    if "user_id" in fields:
        fields["user_id"] = masking.mask_id(fields["user_id"])
    return {name: fields[name] for name in CONTEXT_FIELDS if fields.get(name) is not None}


class Redactor:
    """Masks text: the process's configured secrets, these extra ones, and every pattern of
    services.masking."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self.extra = [s for s in secrets if s]

    def __call__(self, text: str) -> str:
        for secret in self.extra:
            for variant in masking.secret_variants(secret):
                text = text.replace(variant, masking.REDACTED)
        return masking.mask_text(text)


class RedactingFormatter(logging.Formatter):
    """One line per event (text: a traceback follows on its own lines; JSON: inside the line),
    with every value masked before it is encoded."""

    def __init__(self, redact: Redactor | None = None, *, json_lines: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s")
        self.redact = redact or Redactor()
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        message = self.redact(record.getMessage())
        exception = None
        if record.exc_info:
            exception = self.redact(self.formatException(record.exc_info))
        elif record.exc_text:
            exception = self.redact(record.exc_text)
        if record.stack_info:
            stack = self.redact(self.formatStack(record.stack_info))
            exception = f"{exception}\n{stack}" if exception else stack
        if self.json_lines:
            payload: dict[str, Any] = {
                "at": self.formatTime(record),
                "level": record.levelname,
                "logger": record.name,
                **{k: v if isinstance(v, int) else self.redact(str(v)) for k, v in fields.items()},
                "message": message,
            }
            if exception:
                payload["exception"] = exception
            return json.dumps(payload, ensure_ascii=False)
        context = "".join(f" {k}={self.redact(str(v))}" for k, v in fields.items())
        line = "{} {} {}{}: {}".format(
            self.formatTime(record), record.levelname, record.name,
            f" [{context.strip()}]" if context else "", message,
        )
        return f"{line}\n{exception}" if exception else line


class MaskedStream(io.TextIOBase):
    """A text stream that masks each line before passing it on: what the process prints
    (print, a library writing to stderr) gets the same masking as its log records. A partial
    line waits for its end, or for a flush."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._buffer = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._buffer += text
            if "\n" in self._buffer:
                complete, _, self._buffer = self._buffer.rpartition("\n")
                self.stream.write(
                    "\n".join(masking.mask_text(line) for line in complete.split("\n")) + "\n"
                )
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._buffer:
                self.stream.write(masking.mask_text(self._buffer))
                self._buffer = ""
        self.stream.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


@contextmanager
def masked_output() -> Iterator[None]:
    """Inside, what the process writes to stdout and stderr is masked line by line (the entry
    point wraps the whole run in it); the streams are put back on the way out."""
    saved = sys.stdout, sys.stderr
    sys.stdout = MaskedStream(saved[0])  # type: ignore[assignment]
    sys.stderr = MaskedStream(saved[1])  # type: ignore[assignment]
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = saved


def _log_uncaught(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("uncaught").critical("uncaught exception", exc_info=(exc_type, exc, tb))


def setup_logging(level: str, fmt: str, secrets: Iterable[str | None] = ()) -> None:
    """One masked handler on the root logger for the whole process; `secrets` (the settings
    marked secret) are masked in every text from now on, logs and stored errors alike."""
    masking.configure_secrets(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(Redactor(), json_lines=fmt == "json"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # A library's own handler would write around the masking: every record goes to the root.
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            logger.handlers.clear()
            logger.propagate = True
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = lambda args: _log_uncaught(
        args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback
    )
    # aiosqlite logs every statement at DEBUG; that is noise, not insight.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, root.level))
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
    # APScheduler logs two INFO lines per job run: noise at a run a minute.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))
