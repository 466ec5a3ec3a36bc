"""The audit log: chaining, verification, tampering, the append-only trigger, the CLI.

The suite's own ``audit_event`` table cannot be emptied (its trigger refuses), so every
test that verifies or tampers works on a scratch database of its own: a SQLite file in
tmp_path, or on PostgreSQL a schema created, migrated and dropped by the test. The test
user of PostgreSQL is a superuser, which is what the tamper tests need.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from hotline.audit import (
    GENESIS_HASH,
    Action,
    compute_hash,
    head,
    record,
    verify,
)
from hotline.db import make_engine, session_scope
from hotline.migrate import upgrade
from tests.conftest import REPO, TEST_DATABASE_URL
from tests.fixtures.audit import drop_schema

NOW = dt.datetime(2026, 11, 23, 9, 30, 15, 123456, tzinfo=dt.UTC)
POSTGRES = TEST_DATABASE_URL.startswith("postgresql")
_scratch_numbers = itertools.count()


@dataclass
class Scratch:
    url: str
    engine: Engine

    @property
    def postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"


@pytest.fixture
def scratch(backend_env: dict[str, str], tmp_path: Path) -> Iterator[Scratch]:
    """A freshly migrated database of this test's own (its audit log starts empty)."""
    schema = f"audit_tamper_{os.getpid()}_{next(_scratch_numbers)}"
    admin = make_engine(TEST_DATABASE_URL) if POSTGRES else None
    if admin is not None:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        joiner = "&" if "?" in TEST_DATABASE_URL else "?"
        url = f"{TEST_DATABASE_URL}{joiner}options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        yield Scratch(url, engine)
    finally:
        engine.dispose()
        if admin is not None:
            drop_schema(admin, schema)  # searched by the content audit first
            admin.dispose()


def add_events(engine: Engine, count: int) -> list[int]:
    ids = []
    for n in range(count):
        with session_scope(engine) as session:
            event = record(
                session,
                action=Action.item_viewed,
                actor="analyst@hotline.example",
                actor_id=7,
                object_type="target",
                object_id=100 + n,
                details={"media": [n, n + 1], "blurred": True},
                now=NOW + dt.timedelta(seconds=n),
            )
            assert event.id is not None
            ids.append(event.id)
    return ids


def check(engine: Engine) -> tuple[bool, int | None, str | None]:
    with Session(engine) as session:
        result = verify(session, batch_size=2)  # small batches: the walk crosses pages
    return result.ok, result.first_broken_id, result.reason


@pytest.fixture
def superuser(scratch: Scratch) -> Iterator[Connection]:
    """A connection on which the append-only trigger does not fire; tests commit on it."""
    with scratch.engine.connect() as connection:
        if scratch.postgres:
            # Superusers only: ordinary triggers do not fire for a replica's apply process.
            connection.execute(text("SET session_replication_role = replica"))
        else:
            connection.execute(text("DROP TRIGGER audit_event_no_update"))
            connection.execute(text("DROP TRIGGER audit_event_no_delete"))
        connection.commit()
        yield connection
        connection.rollback()
        if scratch.postgres:
            connection.execute(text("RESET session_replication_role"))
            connection.commit()


def forged_row(connection: Connection, **values: object) -> None:
    connection.execute(
        text(
            "INSERT INTO audit_event (id, at, actor_id, actor, action, object_type, "
            "object_id, details, prev_hash, hash) VALUES (:id, :at, :actor_id, :actor, "
            ":action, :object_type, :object_id, :details, :prev_hash, :hash)"
        ),
        values,
    )


def forged(event_id: int, prev_hash: str) -> dict[str, object]:
    """A well-formed event as someone who knows the scheme would write it."""
    fields: dict[str, object] = {
        "id": event_id,
        "prev_hash": prev_hash,
        "at": NOW,
        "actor_id": 1,
        "actor": "admin@hotline.example",
        "action": "assessed",
        "object_type": "target",
        "object_id": "999",
        "details": None,
    }
    return {**fields, "hash": compute_hash(**fields)}


def hash_of(connection: Connection, event_id: int) -> str:
    value = connection.execute(
        text("SELECT hash FROM audit_event WHERE id = :id"), {"id": event_id}
    ).scalar_one()
    return str(value)


# --- building the chain -------------------------------------------------------------


def test_events_chain_onto_the_head(session: Session) -> None:
    first = record(session, action="login", actor="a@hotline.example", actor_id=1, now=NOW)
    second = record(
        session,
        action="claimed",
        actor="a@hotline.example",
        actor_id=1,
        object_type="target",
        object_id=42,
        details={"lease_seconds": 900},
        now=NOW,
    )
    assert second.prev_hash == first.hash
    assert second.object_id == "42"
    assert second.details == '{"lease_seconds":900}'
    assert first.id is not None
    assert second.id is not None
    assert second.id > first.id
    assert second.hash == compute_hash(
        id=second.id,
        prev_hash=first.hash,
        at=NOW,
        actor_id=1,
        actor="a@hotline.example",
        action="claimed",
        object_type="target",
        object_id="42",
        details='{"lease_seconds":900}',
    )
    newest = head(session)
    assert newest is not None
    assert (newest.id, newest.hash) == (second.id, second.hash)


def test_a_fresh_log_verifies(scratch: Scratch) -> None:
    with Session(scratch.engine) as session:
        assert head(session) is None
        assert verify(session).ok
    ids = add_events(scratch.engine, 5)
    with Session(scratch.engine) as session:
        result = verify(session, batch_size=2)
        newest = head(session)
        first = session.execute(
            text("SELECT prev_hash FROM audit_event WHERE id = :id"), {"id": ids[0]}
        ).scalar_one()
    assert result.ok, result.reason
    assert result.checked == 5
    assert newest is not None
    assert newest.id == ids[-1]
    assert result.head_hash == newest.hash
    assert newest.at == NOW + dt.timedelta(seconds=4)
    assert first == GENESIS_HASH


def test_record_does_not_commit_and_a_rollback_leaves_the_chain_whole(scratch: Scratch) -> None:
    add_events(scratch.engine, 2)
    with Session(scratch.engine) as session:
        record(session, action="exported", actor="system", now=NOW)
        session.rollback()  # on PostgreSQL the id is spent: a gap in the ids
    add_events(scratch.engine, 2)
    assert check(scratch.engine) == (True, None, None)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("details", {"url": "https://example.com/a.jpg"}),
        ("details", {"nested": [{"x": "ftp://host/"}]}),
        ("details", {"http://example.com": 1}),
        ("object_id", "http://example.com/"),
        ("actor", "x://y"),
    ],
)
def test_urls_are_refused(session: Session, field: str, value: object) -> None:
    arguments: dict[str, object] = {"action": "item_viewed", "actor": "a@hotline.example"}
    arguments[field] = value
    with pytest.raises(ValueError, match="URL"):
        record(session, now=NOW, **arguments)  # type: ignore[arg-type]


def test_bad_events_are_refused(session: Session) -> None:
    with pytest.raises(ValueError, match="timezone"):
        record(session, action="login", actor="a", now=dt.datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="action"):
        record(session, action="Item Viewed", actor="a", now=NOW)
    with pytest.raises(ValueError, match="object_id"):
        record(session, action="login", actor="a", object_id="x" * 65, now=NOW)


def test_concurrent_writers_keep_one_chain(scratch: Scratch) -> None:
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for n in range(8):
                with session_scope(scratch.engine) as session:
                    record(session, action="login", actor=f"w{worker}", object_id=n, now=NOW)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    with Session(scratch.engine) as session:
        result = verify(session)
    assert result.ok, result.reason
    assert result.checked == 32


# --- tampering as a superuser ---------------------------------------------------------


def test_an_updated_event_is_named(scratch: Scratch, superuser: Connection) -> None:
    ids = add_events(scratch.engine, 5)
    superuser.execute(
        text("UPDATE audit_event SET action = 'login' WHERE id = :id"), {"id": ids[2]}
    )
    superuser.commit()
    ok, broken, reason = check(scratch.engine)
    assert (ok, broken) == (False, ids[2])
    assert reason is not None
    assert "changed" in reason


def test_a_deleted_event_names_the_one_after_it(scratch: Scratch, superuser: Connection) -> None:
    ids = add_events(scratch.engine, 5)
    superuser.execute(text("DELETE FROM audit_event WHERE id = :id"), {"id": ids[2]})
    superuser.commit()
    ok, broken, reason = check(scratch.engine)
    assert (ok, broken) == (False, ids[3])
    assert reason is not None
    assert "deleted" in reason


def test_a_deleted_tail_is_caught_by_the_exported_head(
    scratch: Scratch, superuser: Connection
) -> None:
    ids = add_events(scratch.engine, 4)
    with Session(scratch.engine) as session:
        exported = head(session)
    assert exported is not None
    superuser.execute(text("DELETE FROM audit_event WHERE id = :id"), {"id": ids[-1]})
    superuser.commit()
    assert check(scratch.engine)[0]  # the rest of the chain is whole
    with Session(scratch.engine) as session:
        result = verify(session, anchor=(exported.id, exported.hash))
    assert (result.ok, result.first_broken_id) == (False, ids[-1])


def gap_after(connection: Connection, ids: list[int]) -> int:
    """Append a genuine event two ids on, as after a rolled-back record; return the gap."""
    gap = ids[-1] + 1
    forged_row(connection, **forged(gap + 1, hash_of(connection, ids[-1])))
    return gap


def test_an_event_inserted_into_a_gap_with_a_forged_link_is_named(
    scratch: Scratch, superuser: Connection
) -> None:
    ids = add_events(scratch.engine, 3)
    gap = gap_after(superuser, ids)
    superuser.commit()
    assert check(scratch.engine)[0]
    forged_row(superuser, **forged(gap, "f" * 64))
    superuser.commit()
    ok, broken, _reason = check(scratch.engine)
    assert (ok, broken) == (False, gap)


def test_an_event_inserted_into_a_gap_with_a_valid_link_breaks_the_next(
    scratch: Scratch, superuser: Connection
) -> None:
    ids = add_events(scratch.engine, 3)
    gap = gap_after(superuser, ids)
    forged_row(superuser, **forged(gap, hash_of(superuser, ids[-1])))
    superuser.commit()
    ok, broken, reason = check(scratch.engine)
    assert (ok, broken) == (False, gap + 1)
    assert reason == (
        f"follows event {ids[-1]}, not event {gap}: the events between them were "
        "inserted out of order, or this event was"
    )


def test_an_appended_event_linked_to_an_old_one_is_named(
    scratch: Scratch, superuser: Connection
) -> None:
    ids = add_events(scratch.engine, 5)
    forged_row(superuser, **forged(ids[-1] + 10, hash_of(superuser, ids[1])))
    superuser.commit()
    ok, broken, reason = check(scratch.engine)
    assert (ok, broken) == (False, ids[-1] + 10)
    assert reason is not None
    assert f"follows event {ids[1]}" in reason


def test_an_event_before_the_first_is_named(scratch: Scratch, superuser: Connection) -> None:
    ids = add_events(scratch.engine, 2)
    forged_row(superuser, **forged(ids[0] - 1, GENESIS_HASH))
    superuser.commit()
    ok, broken, reason = check(scratch.engine)
    assert (ok, broken) == (False, ids[0])
    assert reason is not None
    assert "start" in reason


# --- the append-only trigger ----------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_event SET action = 'login'",
        "UPDATE audit_event SET id = id + 1000",
        "DELETE FROM audit_event WHERE id > 0",
        "DELETE FROM audit_event",
        "TRUNCATE audit_event",
    ],
)
def test_the_application_cannot_change_or_delete_events(scratch: Scratch, statement: str) -> None:
    if statement.startswith("TRUNCATE") and not scratch.postgres:
        pytest.skip("SQLite has no TRUNCATE (its DELETE is refused above)")
    add_events(scratch.engine, 2)
    with (
        pytest.raises(DBAPIError, match="audit events cannot be changed or deleted"),
        scratch.engine.begin() as connection,
    ):
        connection.execute(text(statement))
    assert check(scratch.engine) == (True, None, None)


@pytest.mark.postgres
def test_a_role_that_does_not_own_the_table_cannot_get_past_the_trigger(
    scratch: Scratch,
) -> None:
    if not scratch.postgres:
        pytest.skip("PostgreSQL roles")
    add_events(scratch.engine, 2)
    role = f"audit_app_{os.getpid()}"
    schema = scratch.url.rsplit("%3D", 1)[1]
    with scratch.engine.begin() as connection:
        connection.execute(text(f"DROP ROLE IF EXISTS {role}"))
        connection.execute(text(f"CREATE ROLE {role} NOLOGIN"))
        connection.execute(text(f"GRANT USAGE ON SCHEMA {schema} TO {role}"))
        # Even every privilege on the table does not help: the trigger refuses.
        connection.execute(text(f"GRANT ALL ON audit_event TO {role}"))
    attempts = {
        "UPDATE audit_event SET action = 'login'": "audit events cannot be changed",
        "DELETE FROM audit_event": "audit events cannot be changed",
        "TRUNCATE audit_event": "audit events cannot be changed",
        "SET session_replication_role = replica": "permission denied",
        "ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only": "must be owner",
        "DROP TRIGGER audit_event_append_only ON audit_event": "must be owner",
    }

    def as_role(statement: str) -> None:
        with scratch.engine.begin() as connection:
            connection.execute(text(f"SET LOCAL ROLE {role}"))
            connection.execute(text(statement))

    try:
        for statement, refusal in attempts.items():
            with pytest.raises(DBAPIError, match=refusal):
                as_role(statement)
    finally:
        with scratch.engine.begin() as connection:
            connection.execute(text(f"DROP OWNED BY {role}"))
            connection.execute(text(f"DROP ROLE {role}"))
    assert check(scratch.engine) == (True, None, None)


# --- the command line -------------------------------------------------------------------


def run_cli(
    scratch: Scratch, backend_env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hotline.cli_audit", *args],
        env={**os.environ, **backend_env, "HOTLINE_DATABASE_URL": scratch.url},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_verify_head_and_list(
    scratch: Scratch, backend_env: dict[str, str], tmp_path: Path
) -> None:
    empty = run_cli(scratch, backend_env, "verify")
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.strip() == "audit log intact: 0 events, head none"

    ids = add_events(scratch.engine, 3)
    with Session(scratch.engine) as session:
        newest = head(session)
    assert newest is not None

    intact = run_cli(scratch, backend_env, "verify")
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout.strip() == f"audit log intact: 3 events, head {newest.hash}"

    exported = run_cli(scratch, backend_env, "head")
    assert exported.returncode == 0, exported.stderr
    document = json.loads(exported.stdout)
    assert document == {
        "id": ids[-1],
        "hash": newest.hash,
        "at": "2026-11-23T09:30:17.123456+00:00",
    }
    head_file = tmp_path / "head.json"
    head_file.write_text(exported.stdout)
    anchored = run_cli(scratch, backend_env, "verify", "--head-file", str(head_file))
    assert anchored.returncode == 0, anchored.stderr

    listed = run_cli(scratch, backend_env, "list", "--json", "--limit", "2")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [row["id"] for row in rows] == [ids[2], ids[1]]
    assert rows[0]["details"] == {"blurred": True, "media": [2, 3]}
    assert rows[0]["object_id"] == "102"
    plain = run_cli(scratch, backend_env, "list", "--action", "login")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == ""


def test_cli_verify_names_the_broken_event(
    scratch: Scratch, superuser: Connection, backend_env: dict[str, str]
) -> None:
    ids = add_events(scratch.engine, 4)
    superuser.execute(
        text("UPDATE audit_event SET actor = 'someone.else@hotline.example' WHERE id = :id"),
        {"id": ids[1]},
    )
    superuser.commit()
    broken = run_cli(scratch, backend_env, "verify")
    assert broken.returncode == 1
    assert broken.stdout.startswith(f"audit log broken at event {ids[1]}: ")
