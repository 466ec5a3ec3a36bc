"""known entries: one row per list line (a file's hashes), partitioned by list on PostgreSQL

Replaces ``known_hash`` (one row per hash). Each old row becomes an entry with its one
hash and keeps its id, so ``media_match`` keeps pointing at the same thing.

On PostgreSQL ``known_entry`` is partitioned by ``list_id``, one partition per list
(``known_entry_<list id>``) with a unique index on the entry key and a BRIN index on the
id; ``triage.hashlists`` builds a new list's partition as a table of its own and attaches
it when it is filled and indexed. On SQLite it is one table with one unique index.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import hotline.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HASHES = ("sha256", "sha1", "md5", "pdq", "phash", "photodna")
KEY = f"coalesce({', '.join(HASHES)})"
COLUMNS = (
    "id bigint NOT NULL DEFAULT nextval('known_entry_id_seq'),"
    " list_id bigint NOT NULL,"
    ' sha256 varchar(64) COLLATE "C", sha1 varchar(40) COLLATE "C",'
    ' md5 varchar(32) COLLATE "C", pdq varchar(64) COLLATE "C", phash varchar(16) COLLATE "C",'
    ' photodna varchar(512) COLLATE "C", category varchar(64),'
    " added_at timestamp with time zone NOT NULL"
)


def _partition(list_id: int) -> None:
    """The same DDL as triage.hashlists.create_partition, frozen here."""
    name = f"known_entry_{list_id}"
    op.execute(f"CREATE TABLE {name} PARTITION OF known_entry FOR VALUES IN ({list_id})")
    op.execute(f"CREATE UNIQUE INDEX {name}_key ON {name} (({KEY}))")
    op.execute(f"CREATE INDEX {name}_id ON {name} USING brin (id) WITH (autosummarize = on)")


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    if postgres:
        op.execute("CREATE SEQUENCE known_entry_id_seq")
        op.execute(
            f"CREATE TABLE known_entry ({COLUMNS},"
            " CONSTRAINT known_entry_list_id_fkey FOREIGN KEY (list_id)"
            " REFERENCES hash_list (id) ON DELETE CASCADE"
            ") PARTITION BY LIST (list_id)"
        )
        op.execute("ALTER SEQUENCE known_entry_id_seq OWNED BY known_entry.id")
        for (list_id,) in bind.execute(sa.text("SELECT id FROM hash_list ORDER BY id")):
            _partition(int(list_id))
        op.execute(
            "SELECT setval('known_entry_id_seq', coalesce(max(id), 0) + 1, false) FROM known_hash"
        )
    else:
        op.create_table(
            "known_entry",
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
            sa.Column("list_id", sa.BigInteger(), nullable=False),
            sa.Column("sha256", sa.String(length=64), nullable=True),
            sa.Column("sha1", sa.String(length=40), nullable=True),
            sa.Column("md5", sa.String(length=32), nullable=True),
            sa.Column("pdq", sa.String(length=64), nullable=True),
            sa.Column("phash", sa.String(length=16), nullable=True),
            sa.Column("photodna", sa.String(length=512), nullable=True),
            sa.Column("category", sa.String(length=64), nullable=True),
            sa.Column("added_at", hotline.db.UTCDateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(["list_id"], ["hash_list.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
        )
        op.execute(f"CREATE UNIQUE INDEX uq_known_entry_key ON known_entry (({KEY}), list_id)")
    cases = ", ".join(f"CASE WHEN hash_type = '{h}' THEN value END" for h in HASHES)
    op.execute(
        f"INSERT INTO known_entry (id, list_id, {', '.join(HASHES)}, category, added_at)"
        f" SELECT id, list_id, {cases}, category, added_at FROM known_hash"
    )
    with op.batch_alter_table("media_match") as batch_op:
        batch_op.add_column(sa.Column("known_entry_id", sa.BigInteger(), nullable=True))
    op.execute("UPDATE media_match SET known_entry_id = known_hash_id")
    with op.batch_alter_table("media_match") as batch_op:
        if postgres:
            batch_op.drop_constraint("media_match_known_hash_id_fkey", type_="foreignkey")
        batch_op.drop_column("known_hash_id")
    op.drop_table("known_hash")


def downgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "known_hash",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("list_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "hash_type",
            sa.Enum(
                *HASHES[:3], "phash", "pdq", "photodna",
                name="hashtype", native_enum=False, length=20,
            ),
            nullable=False,
        ),
        sa.Column("value", sa.String(length=512), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=True),
        sa.Column("added_at", hotline.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["list_id"], ["hash_list.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("hash_type", "value", "list_id", name="uq_known_hash_type_value_list"),
    )
    # An entry's key hash keeps the entry's id (so matches keep their reference); its
    # other hashes become rows of their own.
    for position, hash_type in enumerate(HASHES):
        stronger = " AND ".join(f"{h} IS NULL" for h in HASHES[:position]) or "true"
        op.execute(
            "INSERT INTO known_hash (id, list_id, hash_type, value, category, added_at)"
            f" SELECT id, list_id, '{hash_type}', {hash_type}, category, added_at"
            f" FROM known_entry WHERE {hash_type} IS NOT NULL AND {stronger}"
        )
    for position, hash_type in enumerate(HASHES):
        stronger = " OR ".join(f"{h} IS NOT NULL" for h in HASHES[:position]) or "false"
        op.execute(
            "INSERT INTO known_hash (list_id, hash_type, value, category, added_at)"
            f" SELECT list_id, '{hash_type}', {hash_type}, category, added_at"
            f" FROM known_entry WHERE {hash_type} IS NOT NULL AND ({stronger})"
        )
    with op.batch_alter_table("media_match") as batch_op:
        batch_op.add_column(sa.Column("known_hash_id", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE media_match SET known_hash_id = known_entry_id"
        " WHERE known_entry_id IN (SELECT id FROM known_hash)"
    )
    with op.batch_alter_table("media_match") as batch_op:
        batch_op.drop_column("known_entry_id")
        batch_op.create_foreign_key(
            "media_match_known_hash_id_fkey",
            "known_hash",
            ["known_hash_id"],
            ["id"],
            ondelete="CASCADE",
        )
    if bind.dialect.name == "postgresql":
        op.execute("DROP TABLE known_entry CASCADE")  # the partitions and the sequence
    else:
        op.drop_table("known_entry")
