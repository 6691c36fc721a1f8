"""delivery_indexes: notifications.sent_at; delivery_attempts (notification_id, id)

For the dashboard's Delivery page (services/delivery_stats.py): the wait percentiles read a
window of sends by sent_at, and the retried count asks whether an attempt had an earlier one.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30 21:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0016'
down_revision: str | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index('ix_notifications_sent_at', ['sent_at'], unique=False)
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_delivery_attempts_notification_id_id',
                              ['notification_id', 'id'], unique=False)
        batch_op.drop_index('ix_delivery_attempts_notification_id')


def downgrade() -> None:
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_delivery_attempts_notification_id', ['notification_id'],
                              unique=False)
        batch_op.drop_index('ix_delivery_attempts_notification_id_id')
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index('ix_notifications_sent_at')
