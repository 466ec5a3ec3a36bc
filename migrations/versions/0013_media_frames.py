"""media_frame: pHash and PDQ of later frames of animations; media_match frame: the
frame a near match was found through

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-24 09:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "media_frame",
        sa.Column("media_id", sa.BigInteger(), nullable=False),
        sa.Column("frame", sa.Integer(), nullable=False),
        sa.Column("phash", sa.String(16), nullable=False),
        sa.Column("pdq", sa.String(64), nullable=False),
        sa.Column("pdq_quality", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["media_id"], ["media.id"]),
        sa.PrimaryKeyConstraint("media_id", "frame"),
    )
    op.add_column("media_match", sa.Column("frame", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("media_match") as batch:
        batch.drop_column("frame")
    op.drop_table("media_frame")
