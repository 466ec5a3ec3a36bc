"""known entries: the foreign key to their list on each partition (PostgreSQL)

On PostgreSQL ``known_entry`` is partitioned by list. With the foreign key on the
partitioned table, attaching a new list's partition (filled and indexed as a table of
its own) made PostgreSQL scan all its rows to validate the key: 0.15 s of a
million-line import. The key now sits on each partition, added ``NOT VALID`` when the
partition is made (``triage.hashlists._tie_to_list``): the partition's bound already
holds its rows to one list id. Deleting a list's row still deletes its entries, and a
row for a list that does not exist is still refused. SQLite keeps its one table and
its key.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _partitions() -> list[str]:
    rows = op.get_bind().execute(
        sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'known_entry'::regclass ORDER BY c.relname"
        )
    )
    return [str(name) for (name,) in rows]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # Also drops the copies of the key PostgreSQL made on each partition.
    op.execute("ALTER TABLE known_entry DROP CONSTRAINT known_entry_list_id_fkey")
    for name in _partitions():  # the same DDL as triage.hashlists._tie_to_list, frozen here
        op.execute(
            f"ALTER TABLE {name} ADD CONSTRAINT {name}_list_id_fkey FOREIGN KEY (list_id)"
            " REFERENCES hash_list (id) ON DELETE CASCADE NOT VALID"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in _partitions():
        op.execute(f"ALTER TABLE {name} DROP CONSTRAINT IF EXISTS {name}_list_id_fkey")
    op.execute(
        "ALTER TABLE known_entry ADD CONSTRAINT known_entry_list_id_fkey"
        " FOREIGN KEY (list_id) REFERENCES hash_list (id) ON DELETE CASCADE"
    )
