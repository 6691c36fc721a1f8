"""error_records: error_groups and error_occurrences (issue: loud, useful errors)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # placeholder: filled in by the change that adds these tables


def downgrade() -> None:
    pass
