"""Masking: the one place that decides what of a secret, a phone number or an e-mail address
may be written to a log, stored in an error record or shown on a screen.

One display format per kind of value, used everywhere (logs, error records, delivery attempts,
alerts, /profile, the audit trail):

- phone: '+33 6 12 34 56 78' -> '+•••••••••78', only the last two digits kept;
- e-mail: 'ann.lee@example.com' -> 'a•••@e•••.com', the first letter of the mailbox and of the
  domain and the top-level domain kept; the lengths are not;
- a secret (a configured token or password, a bot token, a bearer token, the password of a URL,
  a value under a key such as "access_token" or "password"): '[REDACTED]'.

`mask_text` masks free text. A phone number is found by its "+" (or its URL-encoded "%2B"):
"+" then 8 to 15 digits, single spaces, dots or dashes allowed between them. A bare run of digits
is masked only where a field is known to hold a number (WhatsApp's from / wa_id / to /
recipient_id, Twilio's To / From, "phone"), so Telegram ids, chat ids and timestamps stay
readable. The configured secrets (`configure_secrets`, called at start-up with every setting
marked secret) are masked as exact values, however short.

Cost: input longer than `TEXT_LIMIT` is cut first (at a space near the limit, so no value is
cut in two and half shown), and no pattern has nested or unbounded repetition that can
backtrack, so masking a text costs time linear in its length.

Masking a masked value gives it back unchanged, and None stays None.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

HIDDEN = "•"
_ELLIPSIS = HIDDEN * 3
REDACTED = "[REDACTED]"
# Longer text is cut before any pattern runs; the mark says where.
TEXT_LIMIT = 32 * 1024
TRUNCATED = " …[truncated]"
# How far back from the limit a cut looks for a space to cut at.
_CUT_WINDOW = 256
# Fewer characters than this is no phone number: nothing of it is kept.
_MIN_PHONE_DIGITS = 5


# ------------------------------------------------------------------------------ one value


def mask_phone(phone: str) -> str:
    """+33 6 12 34 56 78 -> +•••••••••78: enough for the owner to recognise, not to call."""
    # Separators go; the bullets of a masked number stay, so masking twice changes nothing.
    digits = re.sub(r"[\s().+-]", "", phone)
    if len(digits) < _MIN_PHONE_DIGITS:
        return "+" + HIDDEN * len(digits)
    return "+" + HIDDEN * (len(digits) - 2) + digits[-2:]


def mask_email(address: str) -> str:
    """ann.lee@example.com -> a•••@e•••.com."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        return _ELLIPSIS
    name, dot, tld = domain.rpartition(".")
    masked_domain = f"{name[0]}{_ELLIPSIS}.{tld}" if dot and name else f"{domain[0]}{_ELLIPSIS}"
    return f"{local[0]}{_ELLIPSIS}@{masked_domain}"


def mask_id(value: int | str | None) -> str | None:
    """A user id as logs show it: the last 3 digits, enough to follow one person through a log
    without naming them (123456789 -> •••789)."""
    if value is None:
        return None
    text = str(value)
    return HIDDEN * 3 + text[-3:] if len(text) > 3 else HIDDEN * 3


# The contact fields masked wherever a record of values is kept (services/audit.py), by name.
CONTACT_FIELDS: Mapping[str, Callable[[str], str]] = {"phone": mask_phone, "email": mask_email}


def mask_contact_fields(values: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A copy of `values` with its phone and e-mail values masked; other fields as they were."""
    if values is None:
        return None
    return {
        name: CONTACT_FIELDS[name](value)
        if name in CONTACT_FIELDS and isinstance(value, str) else value
        for name, value in values.items()
    }


# ------------------------------------------------------------------------------ secrets


def url_password(url: str | None) -> str | None:
    """The password in a URL's user info (postgresql://user:PASSWORD@host/db), if any."""
    if not url:
        return None
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def mask_url(url: str | None) -> str | None:
    """A URL as logs may show it: the password of its user info replaced, everything else as it
    was (postgresql+asyncpg://bot:secret@db/bot -> postgresql+asyncpg://bot:[REDACTED]@db/bot),
    so an operator can still read which server and database it names."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL we can take apart: keep none of it that could be a secret
        return mask_text(url)
    if not password:
        return url
    user_info, _, host = parts.netloc.rpartition("@")
    user = user_info.partition(":")[0]
    return parts._replace(netloc=f"{user}:{REDACTED}@{host}").geturl()


def secret_variants(value: str) -> set[str]:
    """A secret as it may appear in text: itself, URL-encoded and JSON-escaped (a quote or a
    backslash in a secret must not let it slip through), and a bot token's secret half."""
    from json import dumps
    from urllib.parse import quote

    variants = {value, quote(value, safe=""), dumps(value)[1:-1]}
    bot_id, colon, secret_half = value.partition(":")
    if colon and bot_id.isdigit() and len(secret_half) >= 20:
        variants.add(secret_half)
    return {v for v in variants if v}


class _Secrets:
    """The configured secret values, as one pattern (longest first, so a secret containing
    another is replaced whole). A short secret (under 6 characters) is replaced only where it
    stands alone, not inside a longer word: exact matches of the configured value."""

    def __init__(self, values: Iterable[str | None] = ()) -> None:
        variants = {v for value in values if value for v in secret_variants(value)}
        self.values = tuple(sorted(variants, key=len, reverse=True))
        alternatives = [
            re.escape(v) if len(v) >= 6 else rf"(?<![\w-]){re.escape(v)}(?![\w-])"
            for v in self.values
        ]
        self.pattern = re.compile("|".join(alternatives)) if alternatives else None

    def sub(self, text: str) -> str:
        return self.pattern.sub(REDACTED, text) if self.pattern is not None else text


_secrets = _Secrets()


def configure_secrets(values: Iterable[str | None]) -> None:
    """Set the process's secret values (the settings marked secret), masked in every text from
    now on. Called once at start-up; calling it again replaces the set."""
    global _secrets
    _secrets = _Secrets(values)


# ------------------------------------------------------------------------------ free text

_DIGITS = frozenset("0123456789")
_SEPARATORS = frozenset(" .-")


def _phone_length(text: str) -> int:
    """How long the phone number at the start of `text` (after its "+") is: 8 to 15 digits,
    one space, dot or dash allowed between two of them; 0 when there is none."""
    digits = end = 0
    for i, char in enumerate(text):
        if char in _DIGITS:
            digits += 1
            end = i + 1
        elif not (char in _SEPARATORS and end == i and text[i + 1 : i + 2] in _DIGITS):
            break
    return end if 8 <= digits <= 15 and text[end : end + 1] not in _DIGITS else 0


def _phone(match: re.Match[str]) -> str:
    found = match.group(0)
    plus = 1 if found[0] == "+" else 3  # "+" or "%2B"
    length = _phone_length(found[plus:])
    if not length:
        return found
    return mask_phone(found[plus : plus + length]) + found[plus + length :]


def _email(match: re.Match[str]) -> str:
    found = match.group(0)
    local, _, domain = found.partition("@")
    stripped = domain.rstrip(".-")
    name, dot, tld = stripped.rpartition(".")
    if not (dot and name and 2 <= len(tld) <= 24 and tld.isascii() and tld.isalpha()):
        return found
    return mask_email(f"{local}@{stripped}") + domain[len(stripped) :]


def _field_number(match: re.Match[str]) -> str:
    return match.group(1) + mask_phone(match.group(2))


def _any_case(*words: str) -> str:
    """An alternation of `words` in any letter case, as character classes: several times
    faster than re.IGNORECASE, which folds the case of every character it compares."""
    return "(?:" + "|".join(
        "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)
        for word in words
    ) + ")"


# A key ending in one of these names a secret (access_token, app_secret, SMTP_PASSWORD, ...).
_SECRET_KEYS = _any_case("token", "secret", "password", "passwd", "api_key", "apikey")
_NUMBER_FIELDS = ("from", "to", "wa_id", "recipient_id", "phone", "phone_number")
_NUMBER_KEYS = _any_case(*_NUMBER_FIELDS)

_SIX_DIGITS = re.compile(r"\d{6}")


def _any(*needles: str) -> Callable[[str], bool]:
    return lambda lowered: any(needle in lowered for needle in needles)


def _digits_and(*needles: str) -> Callable[[str], bool]:
    return lambda lowered: any(n in lowered for n in needles) and bool(_SIX_DIGITS.search(lowered))


# (gate, pattern, replacement) in the order they run; a pattern runs only on text its gate lets
# through (a cheap look at the lower-cased text: most log lines hold nothing to mask). No
# pattern nests a repetition in another, and each starts at a fixed character or at the start
# of a word, so a failed match costs at most the (bounded) length it looked at: masking is
# linear in the length of the text. Patterns that need a closer look (phones, e-mails) match a
# bounded candidate and check it in Python.
_PATTERNS: tuple[
    tuple[Callable[[str], bool], re.Pattern[str], str | Callable[[re.Match[str]], str]], ...
] = (
    # The password of any URL: scheme://user:PASSWORD@host.
    (_any("://"), re.compile(r"(://[^\s:/@]{0,256}:)[^\s@/]{1,256}@"), rf"\1{REDACTED}@"),
    # Telegram bot tokens, configured or not: <bot id>:<35 characters> (also in .../bot<token>/).
    (_any(":"), re.compile(r"(?<!\d)\d{5,16}:[A-Za-z0-9_-]{30,64}"), REDACTED),
    # Authorization header values.
    (
        _any("bearer", "basic"),
        re.compile(r"(?i)\b((?:bearer|basic)[ \t]{1,8})[^\s\"',;]{1,2048}"),
        rf"\1{REDACTED}",
    ),
    # A value under a key that names a secret: access_token=..., "password": "...".
    (
        _any("token", "secret", "passw", "api_key", "apikey"),
        re.compile(
            rf"({_SECRET_KEYS}=|[\"'][\w.-]{{0,40}}{_SECRET_KEYS}[\"'][ \t]{{0,3}}:"
            rf"[ \t]{{0,3}}[\"']?)(?![\[•<])[^\s\"'&,;}}]{{1,2048}}"
        ),
        rf"\1{REDACTED}",
    ),
    # A bare number in a field known to hold a phone number (WhatsApp's from, wa_id, to,
    # recipient_id; Twilio's To and From; our own phone), in JSON, a repr or a form body.
    (
        _digits_and(*_NUMBER_FIELDS),
        re.compile(
            rf"((?<![\w-])[\"']?{_NUMBER_KEYS}[\"']?[ \t]{{0,3}}[:=][ \t]{{0,3}}[\"']?)"
            r"(\+?\d{6,15})(?!\d)"
        ),
        _field_number,
    ),
    # "+" (or %2B) and 8 to 15 digits, single spaces, dots or dashes allowed between them.
    (_any("+", "%2b"), re.compile(r"(?<![\w+])(?:\+|%2[Bb])\d[\d .-]{0,60}"), _phone),
    # E-mail addresses, starting at the beginning of a word.
    (
        _any("@"),
        re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}"),
        _email,
    ),
)


def _cut(text: str, limit: int) -> str:
    """`text` cut to about `limit` characters, at a space when there is one near the limit, so
    a value is not cut in two with its first half left unrecognised."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", max(0, limit - _CUT_WINDOW), limit)
    return text[: cut if cut > 0 else max(0, limit - _CUT_WINDOW)]


def mask_text(text: str, *, limit: int = TEXT_LIMIT) -> str:
    """Free text (a log line, an error message, a stack) with every secret, phone number and
    e-mail address masked (see the module docstring); cut to about `limit` characters first,
    the cut marked with `TRUNCATED`.

    The configured secrets are replaced before the cut: a plain replacement, linear, so a
    secret straddling the limit is not left half visible."""
    text = _secrets.sub(text)
    truncated = len(text) > limit
    text = _cut(text, limit)
    lowered = text.lower()
    for gate, pattern, replacement in _PATTERNS:
        if gate(lowered):
            text = pattern.sub(replacement, text)
    return text + TRUNCATED if truncated else text


def mask_value(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings) with every string in it masked."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {key: mask_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(item) for item in value]
    return value
