"""target decided_at: when a verdict last decided the target, so that a report made
after it is not told the outcome

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 21:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import hotline.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("target", sa.Column("decided_at", hotline.db.UTCDateTime(timezone=True), nullable=True))
    # Targets decided before: the time of their last status change is the nearest known.
    op.execute(
        "UPDATE target SET decided_at = status_changed_at"
        " WHERE status IN ('confirmed', 'forwarded', 'removed', 'not_illegal')"
    )


def downgrade() -> None:
    with op.batch_alter_table("target") as batch:
        batch.drop_column("decided_at")
