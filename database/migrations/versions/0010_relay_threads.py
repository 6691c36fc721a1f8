"""relay_threads, relay_messages: customers' conversations in the operators' chat

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import database.base

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('relay_threads',
    sa.Column('id', _BIG_ID, nullable=False),
    sa.Column('chat_id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('topic_id', sa.BigInteger(), nullable=True),
    sa.Column('root_message_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                            name=op.f('fk_relay_threads_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_relay_threads'))
    )
    with op.batch_alter_table('relay_threads', schema=None) as batch_op:
        batch_op.create_index('uq_relay_threads_chat_user', ['chat_id', 'user_id'], unique=True)
        batch_op.create_index('ix_relay_threads_chat_topic', ['chat_id', 'topic_id'],
                              unique=False)
    op.create_table('relay_messages',
    sa.Column('id', _BIG_ID, nullable=False),
    sa.Column('thread_id', _BIG_ID, nullable=False),
    sa.Column('notification_id', _BIG_ID, nullable=True),
    sa.Column('inbound_message_id', _BIG_ID, nullable=True),
    sa.Column('telegram_message_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', database.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['thread_id'], ['relay_threads.id'],
                            name=op.f('fk_relay_messages_thread_id_relay_threads'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_relay_messages')),
    sa.UniqueConstraint('inbound_message_id', name=op.f('uq_relay_messages_inbound_message_id'))
    )
    with op.batch_alter_table('relay_messages', schema=None) as batch_op:
        batch_op.create_index('ix_relay_messages_thread', ['thread_id', 'id'], unique=False)
        batch_op.create_index('ix_relay_messages_notification', ['notification_id'],
                              unique=False)
        batch_op.create_index('ix_relay_messages_telegram', ['telegram_message_id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('relay_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_relay_messages_telegram')
        batch_op.drop_index('ix_relay_messages_notification')
        batch_op.drop_index('ix_relay_messages_thread')
    op.drop_table('relay_messages')
    with op.batch_alter_table('relay_threads', schema=None) as batch_op:
        batch_op.drop_index('ix_relay_threads_chat_topic')
        batch_op.drop_index('uq_relay_threads_chat_user')
    op.drop_table('relay_threads')
