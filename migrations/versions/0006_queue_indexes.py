"""queue indexes: the queued rows by site, and claims by analyst

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    queued = sa.text("status = 'queued'")
    claimed = sa.text("claimed_by IS NOT NULL")
    op.create_index(
        "ix_target_open_sites",
        "target",
        ["registered_domain", "priority", "claimed_by", "claim_expires_at"],
        unique=False,
        postgresql_where=queued,
        sqlite_where=queued,
    )
    op.create_index(
        "ix_target_claimed_by",
        "target",
        ["claimed_by"],
        unique=False,
        postgresql_where=claimed,
        sqlite_where=claimed,
    )


def downgrade() -> None:
    op.drop_index("ix_target_claimed_by", table_name="target")
    op.drop_index("ix_target_open_sites", table_name="target")
