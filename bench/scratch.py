"""What the benches share: a schema of their own on the PostgreSQL server they are
given (dropped afterwards), and settings of their own in the environment."""

from __future__ import annotations

import os

from sqlalchemy import text
from sqlalchemy.engine import Engine


def fresh_schema(admin: Engine, url: str, schema: str) -> str:
    """Drop and create ``schema`` on ``admin``'s server; returns ``url`` with the
    schema as its search path."""
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options=-csearch_path%3D{schema}"


def drop_schema(admin: Engine, schema: str) -> None:
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


def without_settings(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` without any ``HOTLINE_`` setting of the shell the bench runs in."""
    return {k: v for k, v in environ.items() if not k.startswith("HOTLINE_")}


def use_settings(settings: dict[str, str]) -> None:
    """This process's ``HOTLINE_`` settings are these, and only these."""
    for name in [n for n in os.environ if n.startswith("HOTLINE_")]:
        del os.environ[name]
    os.environ.update(settings)
