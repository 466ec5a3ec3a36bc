"""target unrouted_at: when routing last found no partner for a confirmed target, so
that the sweep takes targets whose wake-up was lost before those no partner serves

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-24 02:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import hotline.db

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "target", sa.Column("unrouted_at", hotline.db.UTCDateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("target") as batch:
        batch.drop_column("unrouted_at")
