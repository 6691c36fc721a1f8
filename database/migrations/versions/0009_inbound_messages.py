"""inbound_messages: inbound WhatsApp messages stored before the 200

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # placeholder: filled in by the change that adds these tables


def downgrade() -> None:
    pass
