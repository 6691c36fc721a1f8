"""Which occurrences are "the same error": exception type + place + category.

The place is the innermost frame of the project's own code (module:function, no line number,
so an unrelated edit above it does not split a group); library frames are skipped, since the
same library call fails for many reasons in many places.
"""

from __future__ import annotations

import hashlib
import traceback

from services.errors.categories import ErrorCategory

OUR_PACKAGES = frozenset(
    {"bot", "handlers", "middlewares", "services", "database", "main", "tests", "benchmarks"}
)
_STACK_LIMIT = 8000


def exception_type(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"[-128:]


def place(exc: BaseException) -> str:
    """module:function of the innermost frame of our code (or of any code, if none is ours)."""
    frames = _frames(exc)
    ours = [name for name in frames if _package(name) in OUR_PACKAGES]
    return (ours[-1] if ours else frames[-1] if frames else "unknown")[:200]


def handler(exc: BaseException) -> str | None:
    """module:function of the outermost handler frame (handlers/, or a test's own handler)."""
    for name in _frames(exc):
        if _package(name) in ("handlers", "tests") and not name.startswith("handlers.errors"):
            return name[:200]
    return None


def _frames(exc: BaseException) -> list[str]:
    names = []
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        names.append(f"{frame.f_globals.get('__name__', '?')}:{frame.f_code.co_name}")
        tb = tb.tb_next
    return names


def _package(name: str) -> str:
    return name.split(":", 1)[0].split(".", 1)[0]


def fingerprint(exc_type: str, where: str, category: ErrorCategory) -> str:
    """A stable 40-character key for the group."""
    key = f"{exc_type}|{where}|{category.value}".encode()
    return hashlib.sha1(key, usedforsecurity=False).hexdigest()


def stack(exc: BaseException) -> str:
    """The traceback as text, its end kept when it is long (the end is where it broke)."""
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= _STACK_LIMIT else "…" + text[-_STACK_LIMIT:]
