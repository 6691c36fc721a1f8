"""notification_destinations: notifications addressed to a destination that is not a user (alert webhook, chats)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # placeholder: filled in by the change that adds these tables


def downgrade() -> None:
    pass
