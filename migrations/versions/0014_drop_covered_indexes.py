"""Drop two indexes that a unique constraint starting with the same column covers:
sighting (target_id) and media_match (media_id). Each cost a write per sighting and per
match and served no lookup the constraint's index does not.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-24 23:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_sighting_target_id", table_name="sighting")
    op.drop_index("ix_media_match_media_id", table_name="media_match")


def downgrade() -> None:
    op.create_index("ix_media_match_media_id", "media_match", ["media_id"])
    op.create_index("ix_sighting_target_id", "sighting", ["target_id"])
