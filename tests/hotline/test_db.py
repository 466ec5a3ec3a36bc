"""The unit of work and the engine: autocommitted single statements, and pooled
connections that the server cut while they sat in the pool."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col

from hotline.db import make_engine, session_scope, utcnow
from triage.models import Site


def sites(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(session.execute(select(col(Site.registered_domain))).scalars())


def add_site_then_fail(domain: str, *, autocommit: bool) -> None:
    with session_scope(autocommit=autocommit) as session:
        session.add(Site(registered_domain=domain, first_seen_at=utcnow()))
        session.flush()
        raise RuntimeError


def test_a_unit_of_work_keeps_nothing_when_it_fails(committed: Engine) -> None:
    with pytest.raises(RuntimeError):
        add_site_then_fail("kept-not.example", autocommit=False)
    assert sites(committed) == []


def test_an_autocommitted_unit_keeps_each_statement_at_once(committed: Engine) -> None:
    with pytest.raises(RuntimeError):
        add_site_then_fail("kept.example", autocommit=True)
    assert sites(committed) == ["kept.example"]


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.pg_backend_pid())).scalar_one())


def cut(admin: Engine, pid: int) -> None:
    with admin.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


@pytest.fixture
def postgres_url(committed: Engine) -> str:
    if committed.dialect.name != "postgresql":
        pytest.skip("connections are cut by the server on PostgreSQL")
    return committed.url.render_as_string(hide_password=False)


def test_a_connection_cut_while_idle_in_the_pool_is_replaced_unseen(
    committed: Engine, postgres_url: str
) -> None:
    engine = make_engine(postgres_url, ping_after_idle=0)
    first = backend_pid(engine)
    cut(committed, first)
    # Pinged before it is handed out, found dead, replaced: the caller sees nothing.
    assert backend_pid(engine) != first
    engine.dispose()


def test_a_connection_cut_moments_after_use_fails_once_then_is_replaced(
    committed: Engine, postgres_url: str
) -> None:
    engine = make_engine(postgres_url, ping_after_idle=3600)
    first = backend_pid(engine)
    cut(committed, first)
    with pytest.raises(DBAPIError) as failed:
        backend_pid(engine)
    assert failed.value.connection_invalidated
    assert backend_pid(engine) != first
    engine.dispose()
