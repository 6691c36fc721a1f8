"""Loud, useful errors: what kind of failure an error is (categories and the rules table), which
occurrences are the same error (fingerprint), and the records behind every support code.

Services raise `DomainError` subclasses for business-rule refusals; everything else is
classified by `rules.RULES`.
"""

from services.errors.categories import DomainError, ErrorCategory
from services.errors.context import ErrorContext
from services.errors.records import (
    CODE_ALPHABET,
    ErrorRecorder,
    ErrorStatistics,
    GroupView,
    OccurrenceView,
    Recorded,
    new_support_code,
    normalize_code,
    statistics,
)
from services.errors.rules import SUPPORT_CODE, USER_MESSAGES, Classification, classify

__all__ = [
    "CODE_ALPHABET",
    "SUPPORT_CODE",
    "USER_MESSAGES",
    "Classification",
    "DomainError",
    "ErrorCategory",
    "ErrorContext",
    "ErrorRecorder",
    "ErrorStatistics",
    "GroupView",
    "OccurrenceView",
    "Recorded",
    "classify",
    "new_support_code",
    "normalize_code",
    "statistics",
]
