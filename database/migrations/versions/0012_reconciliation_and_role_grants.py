"""reconciliation_and_role_grants: inventory_reconciliation_log and where each role grant came from

Also users.username (admins find people by it) and inventory_items.active (retired items).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 17:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import database.base

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('role_grants',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('granted_by', sa.Integer(), nullable=True),
    sa.Column('granted_at', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                            name=op.f('fk_role_grants_user_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['granted_by'], ['users.id'],
                            name=op.f('fk_role_grants_granted_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_role_grants'))
    )
    with op.batch_alter_table('role_grants', schema=None) as batch_op:
        batch_op.create_index('uq_role_grants_user_role_source', ['user_id', 'role', 'source'],
                              unique=True)

    op.create_table('inventory_reconciliation_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=True),
    sa.Column('request_id', sa.BigInteger(), nullable=True),
    sa.Column('transaction_id', sa.BigInteger(), nullable=True),
    sa.Column('delta', sa.Integer(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('at', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inventory_reconciliation_log'))
    )
    with op.batch_alter_table('inventory_reconciliation_log', schema=None) as batch_op:
        batch_op.create_index('ix_inventory_reconciliation_log_key', ['key', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_inventory_reconciliation_log_at'), ['at'],
                              unique=False)

    # Plain ALTER TABLE, never a batch rebuild: on SQLite rebuilding users or inventory_items
    # would cascade (foreign keys are on) into notifications and the stock ledger.
    op.add_column('users', sa.Column('username', sa.String(length=32), nullable=True))
    op.create_index(op.f('ix_users_username'), 'users', ['username'], unique=False)
    op.add_column('inventory_items', sa.Column('active', sa.Boolean(), nullable=False,
                                               server_default=sa.text('true')))


def downgrade() -> None:
    # SQLite 3.35+ drops a column in place (ALTER TABLE ... DROP COLUMN), no rebuild.
    op.drop_column('inventory_items', 'active')
    op.drop_index(op.f('ix_users_username'), table_name='users')
    op.drop_column('users', 'username')
    with op.batch_alter_table('inventory_reconciliation_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_inventory_reconciliation_log_at'))
        batch_op.drop_index('ix_inventory_reconciliation_log_key')
    op.drop_table('inventory_reconciliation_log')
    with op.batch_alter_table('role_grants', schema=None) as batch_op:
        batch_op.drop_index('uq_role_grants_user_role_source')
    op.drop_table('role_grants')
