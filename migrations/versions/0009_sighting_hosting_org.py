"""sighting hosting organisation: each sighting keeps the operator of the address its
media was fetched from, as the target does

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 20:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sighting", sa.Column("hosting_org", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sighting") as batch:
        batch.drop_column("hosting_org")
