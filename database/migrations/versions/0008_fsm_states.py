"""fsm_states: FSM state and data kept in the database when REDIS_URL is unset

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # placeholder: filled in by the change that adds these tables


def downgrade() -> None:
    pass
