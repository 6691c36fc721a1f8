"""inbound_messages: inbound WhatsApp messages stored before the 200; sender_states

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import database.base

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DUE = "status IN ('pending', 'processing')"


def upgrade() -> None:
    op.create_table('inbound_messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('wamid', sa.String(length=512), nullable=False),
    sa.Column('sender', sa.String(length=32), nullable=False),
    sa.Column('phone_number_id', sa.String(length=64), nullable=True),
    sa.Column('profile_name', sa.String(length=128), nullable=True),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('keyword', sa.String(length=8), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('sent_at', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('received_at', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('next_attempt_at', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('lease_until', database.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('processed_at', database.base.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                            name=op.f('fk_inbound_messages_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbound_messages')),
    sa.UniqueConstraint('wamid', name=op.f('uq_inbound_messages_wamid'))
    )
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.create_index('ix_inbound_messages_due', ['next_attempt_at'], unique=False,
                              postgresql_where=sa.text(_DUE), sqlite_where=sa.text(_DUE))
        batch_op.create_index('ix_inbound_messages_user_keyword', ['user_id', 'keyword'],
                              unique=False)
    op.create_table('sender_states',
    sa.Column('phone_number_id', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('failed_probes', sa.Integer(), nullable=False),
    sa.Column('next_probe_at', database.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('alerted', sa.Boolean(), nullable=False),
    sa.Column('updated_at', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('phone_number_id', name=op.f('pk_sender_states'))
    )


def downgrade() -> None:
    op.drop_table('sender_states')
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_inbound_messages_user_keyword')
        batch_op.drop_index('ix_inbound_messages_due')
    op.drop_table('inbound_messages')
