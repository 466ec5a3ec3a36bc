"""media hash_note: why a media item is not hashed in full (image_too_large,
decode_error, frames_capped); target broken_links: why the media links of a page
could not be fetched, by reason code; known_entry photodna up to 1024 characters (the
comma-separated decimal form of a 144-byte PhotoDNA runs to 575 and more)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-24 04:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("media", sa.Column("hash_note", sa.String(32), nullable=True))
    op.add_column("target", sa.Column("broken_links", sa.Text(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        # Longer varchar: no rewrite of the partitions (SQLite does not enforce lengths).
        op.execute('ALTER TABLE known_entry ALTER photodna TYPE varchar(1024) COLLATE "C"')


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE known_entry ALTER photodna TYPE varchar(512) COLLATE "C"')
    with op.batch_alter_table("target") as batch:
        batch.drop_column("broken_links")
    with op.batch_alter_table("media") as batch:
        batch.drop_column("hash_note")
