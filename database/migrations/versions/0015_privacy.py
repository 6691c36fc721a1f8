"""privacy: personal-data erasure

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 20:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import database.base

revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE, never a batch rebuild: on SQLite rebuilding users would cascade
    # (foreign keys are on) into everything that refers to them.
    op.add_column('users', sa.Column('erased_at', database.base.UTCDateTime(timezone=True),
                                     nullable=True))


def downgrade() -> None:
    op.drop_column('users', 'erased_at')
