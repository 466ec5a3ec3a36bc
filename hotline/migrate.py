"""Alembic, driven from code: ``hotline db upgrade`` and the test suite share this."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from hotline.settings import get_settings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


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
