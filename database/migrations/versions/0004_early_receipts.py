"""early_receipts: provider receipts that arrive before their send is recorded

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 15:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import database.base

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('early_receipts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('notification_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
              nullable=False),
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('reference', sa.String(length=200), nullable=False),
    sa.Column('provider_message_id', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error_class', sa.String(length=16), nullable=True),
    sa.Column('error_code', sa.String(length=32), nullable=True),
    sa.Column('error_text', sa.Text(), nullable=True),
    sa.Column('opt_out', sa.Boolean(), nullable=False),
    sa.Column('at', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('received_at', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['notification_id'], ['notifications.id'],
                            name=op.f('fk_early_receipts_notification_id_notifications'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_early_receipts'))
    )
    with op.batch_alter_table('early_receipts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_early_receipts_notification_id'),
                              ['notification_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_early_receipts_received_at'), ['received_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('early_receipts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_early_receipts_received_at'))
        batch_op.drop_index(batch_op.f('ix_early_receipts_notification_id'))
    op.drop_table('early_receipts')
