"""dashboard_access: dashboard_login_tokens, dashboard_sessions

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 20:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import database.base

revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('dashboard_login_tokens',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', database.base.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                            name=op.f('fk_dashboard_login_tokens_user_id_users'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dashboard_login_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_dashboard_login_tokens_token_hash'))
    )
    with op.batch_alter_table('dashboard_login_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dashboard_login_tokens_expires_at'), ['expires_at'],
                              unique=False)
    op.create_table('dashboard_sessions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('session_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('created_at', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ended_at', database.base.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                            name=op.f('fk_dashboard_sessions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dashboard_sessions')),
    sa.UniqueConstraint('session_hash', name=op.f('uq_dashboard_sessions_session_hash'))
    )
    with op.batch_alter_table('dashboard_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dashboard_sessions_expires_at'), ['expires_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('dashboard_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dashboard_sessions_expires_at'))
    op.drop_table('dashboard_sessions')
    with op.batch_alter_table('dashboard_login_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dashboard_login_tokens_expires_at'))
    op.drop_table('dashboard_login_tokens')
