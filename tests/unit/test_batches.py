"""The PostgreSQL record statement sends one typed array per row field."""

from __future__ import annotations

import re

from services.notifications import batches


def test_every_field_has_an_array_type_and_a_parameter() -> None:
    assert len(batches._OUTCOME_TYPES) == len(batches.OutcomeRow._fields)
    assert len(batches._ATTEMPT_TYPES) == len(batches.AttemptRow._fields)
    numbers = sorted(int(n) for n in re.findall(r"\$(\d+)", batches.PG_RECORD))
    # $1 now, $2 owner, then one array per field, each used once, none skipped.
    fields = len(batches.OutcomeRow._fields) + len(batches.AttemptRow._fields)
    assert numbers == list(range(1, 3 + fields))


def test_rows_become_one_list_per_field_even_when_there_are_none() -> None:
    rows = [batches.AttemptRow(1, "telegram", "bot", "42", "sent", None, None, None, 5, None),
            batches.AttemptRow(2, "sms", None, "+33", "failed", "transient", "500", "x", 9, None)]
    columns = batches._columns(rows, batches.AttemptRow)
    assert columns[0] == [1, 2] and columns[1] == ["telegram", "sms"]
    assert batches._columns([], batches.AttemptRow) == [[]] * len(batches.AttemptRow._fields)
