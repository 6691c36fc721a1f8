"""recovery_log: workflow_recovery_log (admins' recovery actions)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 17:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import database.base

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('workflow_recovery_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('admin_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('request_id', sa.BigInteger(), nullable=False),
    sa.Column('from_state', sa.String(length=16), nullable=False),
    sa.Column('to_state', sa.String(length=16), nullable=False),
    sa.Column('provider_id', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('at', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workflow_recovery_log'))
    )
    with op.batch_alter_table('workflow_recovery_log', schema=None) as batch_op:
        batch_op.create_index('ix_workflow_recovery_log_request', ['request_id', 'id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_workflow_recovery_log_at'), ['at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('workflow_recovery_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_workflow_recovery_log_at'))
        batch_op.drop_index('ix_workflow_recovery_log_request')
    op.drop_table('workflow_recovery_log')
