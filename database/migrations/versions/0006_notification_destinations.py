"""notification_destinations: notifications addressed to a destination that is not a user (alert webhook, chats)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 17:00:00.000000

`notifications.destination` ("<kind>:<target>", e.g. "webhook:alerts") and `recipient_id`
made nullable, exactly one of the two set (ck_notifications_addressee).

SQLite cannot drop a NOT NULL in place, and the usual rebuild (copy the table, drop the old
one) would cascade-delete every delivery attempt, receipt and manual task of every notification:
foreign keys are on and cannot be turned off inside the migration's transaction. So the table's
stored definition is edited instead, the procedure SQLite documents for changes that leave the
stored rows as they are (removing a NOT NULL; adding a CHECK every existing row satisfies):
https://www.sqlite.org/lang_altertable.html#otheralter
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHECK = "(recipient_id IS NULL) <> (destination IS NULL)"
_NOT_NULL = "recipient_id INTEGER NOT NULL"
_NULLABLE = "recipient_id INTEGER"
_CONSTRAINT = f", \n\tCONSTRAINT ck_notifications_addressee CHECK ({_CHECK})"


def _edit_sqlite_definition(edit) -> None:  # type: ignore[no-untyped-def]
    """Replace the stored CREATE TABLE of notifications by `edit(sql)`, in this transaction."""
    bind = op.get_bind()
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'notifications'"
    ).scalar_one()
    new_sql = edit(sql)
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'notifications'",
        (new_sql,),
    )
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    problem = bind.exec_driver_sql("PRAGMA quick_check(notifications)").scalar_one()
    if problem != "ok":
        raise RuntimeError(f"notifications failed its check after the edit: {problem}")


def _nullable_with_check(sql: str) -> str:
    if _NOT_NULL not in sql or not sql.rstrip().endswith(")"):
        raise RuntimeError("notifications is not as revision 0005 left it; not editing it")
    sql = sql.replace(_NOT_NULL, _NULLABLE, 1).rstrip()
    return sql[:-1].rstrip() + _CONSTRAINT + "\n)"


def _not_null_without_check(sql: str) -> str:
    if _CONSTRAINT not in sql:
        raise RuntimeError("notifications is not as revision 0006 left it; not editing it")
    return sql.replace(_CONSTRAINT, "", 1).replace(f"\t{_NULLABLE}, ", f"\t{_NOT_NULL}, ", 1)


def upgrade() -> None:
    op.add_column('notifications', sa.Column('destination', sa.String(length=128), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        _edit_sqlite_definition(_nullable_with_check)
    else:
        op.alter_column('notifications', 'recipient_id', existing_type=sa.BigInteger(),
                        nullable=True)
        op.create_check_constraint('addressee', 'notifications', _CHECK)


def downgrade() -> None:
    # Notifications to a destination have no user to go back to.
    op.execute("DELETE FROM notifications WHERE recipient_id IS NULL")
    if op.get_bind().dialect.name == "sqlite":
        _edit_sqlite_definition(_not_null_without_check)
        op.execute("ALTER TABLE notifications DROP COLUMN destination")
    else:
        op.drop_constraint('addressee', 'notifications', type_='check')
        op.alter_column('notifications', 'recipient_id', existing_type=sa.BigInteger(),
                        nullable=False)
        op.drop_column('notifications', 'destination')
