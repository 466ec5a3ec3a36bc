"""The migrations build exactly the schema the models describe, and downgrade cleanly."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

import hotline.models  # noqa: F401
import partners.models  # noqa: F401
import reporting.models  # noqa: F401
import triage.models  # noqa: F401
from hotline.migrate import compare_type_for, include_name, include_object_for


# SQLite: the entry key's unique index is on an expression, which reflection skips.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_models_and_migrations_agree(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": compare_type_for(connection.dialect.name),
                "include_name": include_name,
                "include_object": include_object_for(connection.dialect.name),
            },
        )
        assert compare_metadata(context, SQLModel.metadata) == []
