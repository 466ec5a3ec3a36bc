"""Alembic, driven from code: ``hotline db upgrade`` and the test suite share this."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import String

from hotline.settings import get_settings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


# The per-list partitions of known_entry (PostgreSQL) are made by triage.hashlists at run
# time, not by migrations: autogenerate and the schema check leave them out.
_PARTITION = re.compile(r"known_entry_\d+")


def include_name(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
    """Alembic ``include_name``: every schema object but the list partitions."""
    return not (type_ == "table" and name is not None and _PARTITION.fullmatch(name))


def include_object_for(dialect: str) -> Callable[..., bool]:
    """Alembic ``include_object`` for a database of ``dialect``: on PostgreSQL the
    foreign key of ``known_entry.list_id`` is on each list's partition (migration 0008),
    not on the partitioned table the model describes, so it is not compared there."""

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        return not (
            dialect == "postgresql"
            and type_ == "foreign_key_constraint"
            and obj.table.name == "known_entry"
        )

    return include_object


def compare_type_for(dialect: str) -> Callable[..., bool | None]:
    """Alembic ``compare_type`` for a database of ``dialect``. SQLite does not enforce the
    length of a varchar and cannot change it in place: a table copy (batch mode) would
    lose the expression index of ``known_entry`` that reflection skips. So on SQLite a
    varchar of another length is the same type (migration 0012 widens
    ``known_entry.photodna`` on PostgreSQL only)."""

    def compare_type(
        context: Any, inspected: Any, described: Any, inspected_type: Any, described_type: Any
    ) -> bool | None:
        both_strings = isinstance(inspected_type, String) and isinstance(described_type, String)
        if dialect == "sqlite" and both_strings:
            return False
        return None  # Alembic's own comparison

    return compare_type


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option(
        "sqlalchemy.url", (url or get_settings().sqlalchemy_url).replace("%", "%%")
    )
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    if url is None and not get_settings().database_url:
        get_settings().resolved_data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


def current_revision(url: str | None = None) -> str | None:
    """The revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(url or get_settings().sqlalchemy_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
