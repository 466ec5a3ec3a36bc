"""known entries without a foreign key to their list

On PostgreSQL a list's entries are a partition of their own (``known_entry_<list id>``),
made with the list and dropped with it, so the partition bound already ties every entry
to its list. The foreign key added nothing but a scan of every new list's million rows
when its partition is attached (to validate it). ``triage.hashlists.remove_list``
deletes entries itself on both databases, so no cascade is relied on.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 17:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite's foreign key has no name; batch mode finds it by this convention.
_SQLITE_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}
_SQLITE_FK = "fk_known_entry_list_id_hash_list"
KEY = "coalesce(sha256, sha1, md5, pdq, phash, photodna)"


def _sqlite_key_index() -> None:
    # Batch mode copies the table without its expression index (SQLAlchemy cannot
    # reflect one): made again as in 0007.
    op.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS uq_known_entry_key ON known_entry (({KEY}), list_id)")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE known_entry DROP CONSTRAINT known_entry_list_id_fkey")
        return
    with op.batch_alter_table("known_entry", naming_convention=_SQLITE_NAMES) as batch_op:
        batch_op.drop_constraint(_SQLITE_FK, type_="foreignkey")
    _sqlite_key_index()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Entries of lists that are gone (none, unless written outside the hotline) would
        # make this fail rather than vanish.
        op.execute(
            "ALTER TABLE known_entry ADD CONSTRAINT known_entry_list_id_fkey"
            " FOREIGN KEY (list_id) REFERENCES hash_list (id) ON DELETE CASCADE"
        )
        return
    with op.batch_alter_table("known_entry") as batch_op:
        batch_op.create_foreign_key(_SQLITE_FK, "hash_list", ["list_id"], ["id"], ondelete="CASCADE")
    _sqlite_key_index()
