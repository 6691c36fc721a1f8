"""error_records: error_groups and error_occurrences (issue: loud, useful errors)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import database.base

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('error_groups',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('fingerprint', sa.String(length=40), nullable=False),
    sa.Column('exception_type', sa.String(length=128), nullable=False),
    sa.Column('place', sa.String(length=200), nullable=False),
    sa.Column('category', sa.String(length=16), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('first_seen', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('stack', sa.Text(), nullable=False),
    sa.Column('resolved', sa.Boolean(), nullable=False),
    sa.Column('resolved_by', sa.Integer(), nullable=True),
    sa.Column('resolved_at', database.base.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_error_groups')),
    sa.UniqueConstraint('fingerprint', name=op.f('uq_error_groups_fingerprint'))
    )
    op.create_table('error_occurrences',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('code', sa.String(length=16), nullable=False),
    sa.Column('group_id', BIG_ID, nullable=False),
    sa.Column('context', sa.JSON(), nullable=False),
    sa.Column('at', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['error_groups.id'],
                            name=op.f('fk_error_occurrences_group_id_error_groups'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_error_occurrences')),
    sa.UniqueConstraint('code', name=op.f('uq_error_occurrences_code'))
    )
    with op.batch_alter_table('error_occurrences', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_error_occurrences_group_id'), ['group_id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_error_occurrences_at'), ['at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('error_occurrences', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_error_occurrences_at'))
        batch_op.drop_index(batch_op.f('ix_error_occurrences_group_id'))
    op.drop_table('error_occurrences')
    op.drop_table('error_groups')
