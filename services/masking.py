"""Masked contact values: what may be kept or shown of a phone number or an e-mail address where
the value itself is not needed (the audit trail, a screen), enough for its owner to recognise,
not enough to reach anyone.

One rule per kind of value, here, so every place that masks one masks it the same way:

- phone: '+33612345678' -> '+•••••••••78', only the last two digits kept;
- e-mail: 'ann.lee@example.com' -> 'a•••@e•••.com', the first letter of the mailbox and of the
  domain and the top-level domain kept; the lengths are not.

Masking a masked value gives it back unchanged, and None stays None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

HIDDEN = "•"
_ELLIPSIS = HIDDEN * 3
# Fewer digits than this is no phone number: nothing of it is kept.
_MIN_PHONE_DIGITS = 5


def mask_phone(phone: str) -> str:
    """+33612345678 -> +•••••••••78: enough for the owner to recognise, not to call."""
    digits = phone.strip().lstrip("+")
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
