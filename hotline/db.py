"""Database engine and the unit of work.

``session_scope()`` is the only place that commits. Task messages buffered with
``hotline.queue.enqueue`` during the unit of work are sent after the commit and
dropped on rollback, so a worker never sees a row that is not there yet.
"""

from __future__ import annotations

import datetime as dt
import enum
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache, lru_cache
from typing import Any, TypeVar

from sqlalchemy import BigInteger, DateTime, Enum, Integer, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, create_engine

from hotline.settings import get_settings

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


def str_enum(enum_class: type[enum.StrEnum], length: int = 20) -> Enum:
    """A StrEnum stored as its value in a VARCHAR, loaded back as the enum member."""
    return Enum(
        enum_class,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda members: [m.value for m in members],
    )


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes on every backend (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(dt.UTC)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def dialect_insert(session: Session) -> Any:
    """The INSERT construct of the session's backend, with ON CONFLICT support."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert
    return sqlite.insert


Built = TypeVar("Built")


def built(session: Session, build: Callable[[Any], Built]) -> Built:
    """``build(insert)`` for the session's backend (``insert`` as in `dialect_insert`),
    built once per process and backend.

    For the statements run on every report and every target: building a SQLAlchemy
    statement costs about three times the CPU of running it, so the statement is built
    once with bind parameters and the values are given at execution.
    """
    statement: Built = _built(build, session.get_bind().dialect.name)
    return statement


@cache
def _built(build: Callable[[Any], Built], dialect: str) -> Built:
    return build(postgresql.insert if dialect == "postgresql" else sqlite.insert)


_relaxed_commits = False


def relax_commits() -> None:
    """Engines made after this commit without waiting for PostgreSQL's WAL flush.

    For worker processes only: what they commit is derived (hashes, matches, status)
    and a commit lost in a database crash leaves its target pending or claimed, so the
    sweep hands it over again. Intake (the API) keeps synchronous commits, since a 202
    promises the report is stored.
    """
    global _relaxed_commits
    _relaxed_commits = True


def make_engine(url: str, *, ping_after_idle: float = 2.0) -> Engine:
    """The engine of ``url``. On PostgreSQL, a pooled connection that sat unused for
    ``ping_after_idle`` seconds is pinged before it is handed out, and replaced if the
    server has gone (a restart, a firewall's idle timeout): one used moments ago is
    not, which spares a worker two round trips per target. A connection lost in those
    moments fails its statement, the pool drops its other connections, and the caller's
    retry (the sweep, a task retry) gets fresh ones."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # hide_parameters: error texts must not carry reported URLs or descriptions.
    engine = create_engine(url, pool_size=10, max_overflow=20, hide_parameters=True)
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_from"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_from = record.info.pop("idle_from", None)
        if idle_from is None or time.monotonic() - idle_from < ping_after_idle:
            return  # just connected, or in use moments ago
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            # The pool discards this connection and hands out another.
            raise DisconnectionError() from exc

    if _relaxed_commits and engine.dialect.name == "postgresql":

        @event.listens_for(engine, "connect")
        def _asynchronous_commit(dbapi_connection: Any, _record: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET synchronous_commit TO off")
            dbapi_connection.commit()

    return engine


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    if not settings.database_url:
        settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    return make_engine(settings.sqlalchemy_url)


@contextmanager
def session_scope(engine: Engine | None = None, *, autocommit: bool = False) -> Iterator[Session]:
    """Commit on success, roll back on error; then send the buffered task messages.

    ``autocommit``: every statement commits on its own, which spares the BEGIN and
    COMMIT round trips; only for a unit of work that is a single statement.
    """
    from hotline.queue import OUTBOX_KEY, send_messages

    with Session(engine or get_engine(), expire_on_commit=False) as session:
        if autocommit:
            session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        messages = session.info.pop(OUTBOX_KEY, [])
    send_messages(messages)
