"""Alembic environment: the URL comes from the config the caller built (hotline.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

import hotline.models  # noqa: F401
import partners.models  # noqa: F401
import reporting.models  # noqa: F401  (registers the tables)
import triage.models  # noqa: F401
from hotline.db import make_engine
from hotline.migrate import compare_type_for, include_name, include_object_for

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        include_name=include_name,
        include_object=include_object_for(
            make_url(config.get_main_option("sqlalchemy.url") or "").get_backend_name()
        ),
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_name=include_name,
            include_object=include_object_for(connection.dialect.name),
            compare_type=compare_type_for(connection.dialect.name),
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
