"""health_snapshots: system_health_snapshots, stuck_reports

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 17:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import database.base

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('system_health_snapshots',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reasons', sa.JSON(), nullable=False),
    sa.Column('components', sa.JSON(), nullable=False),
    sa.Column('at', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_system_health_snapshots'))
    )
    with op.batch_alter_table('system_health_snapshots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_system_health_snapshots_at'), ['at'], unique=False)
    op.create_table('stuck_reports',
    sa.Column('request_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('reported_at', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('request_id', name=op.f('pk_stuck_reports'))
    )


def downgrade() -> None:
    op.drop_table('stuck_reports')
    with op.batch_alter_table('system_health_snapshots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_system_health_snapshots_at'))
    op.drop_table('system_health_snapshots')
