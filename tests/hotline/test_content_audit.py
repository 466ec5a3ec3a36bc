"""Canaries of the content audit (tests/fixtures/audit.py): a marker planted in each
place the audit searches is found there, so that a run without findings means something.

Each canary plants inside ``AUDIT.planted()``, which hands the findings to the canary
instead of the session, and removes what it planted; nothing planted prints a marker.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import click
import httpx
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from hotline.errors import HotlineError
from partners.notices import NothingToNotice
from tests.conftest import REPO
from tests.fixtures import images
from tests.fixtures.audit import (
    AUDIT,
    DATABASE,
    EXCEPTIONS,
    LOGS,
    REDIS,
    TEMP,
    drop_schema,
    has_marker,
    has_marker_deep,
)
from tests.fixtures.servers import SERVED, LocalHTTPServer
from triage import hashing, service
from triage.errors import FetchError
from triage.fetcher import Fetcher, FetchPolicy


@pytest.fixture
def marker() -> bytes:
    return images.new_marker()


def places(found: list[tuple[str, str]]) -> list[str]:
    return sorted(place for place, _ in found)


def kombu_message(args: list[object]) -> bytes:
    """A task message as kombu puts it in Redis: JSON whose body is base64 of JSON,
    with bytes arguments in base64 again."""
    body = json.dumps([args, {}, {"callbacks": None}]).encode()
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "properties": {"body_encoding": "base64", "delivery_tag": str(uuid.uuid4())},
        }
    ).encode()


def test_markers_are_recognised_plain_in_hex_and_in_base64(marker: bytes) -> None:
    around = b"some bytes before " + marker + b" and after"
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + around)
        assert has_marker(encoded), shift
        assert has_marker(base64.urlsafe_b64encode(bytes(shift) + around)), shift
    assert has_marker(around)
    assert has_marker(around.hex())
    assert has_marker(around.hex().upper())
    assert has_marker(b"\\x" + marker.hex().encode())  # bytea as PostgreSQL shows it
    assert has_marker_deep(kombu_message([{"__type__": "bytes", "__value__": "x"}]) + marker)
    nested = kombu_message([{"__type__": "bytes", "__value__": base64.b64encode(marker).decode()}])
    assert not has_marker(nested)
    assert has_marker_deep(nested)
    # The prefix alone (as in the fixtures' source) and other text are not markers.
    assert not has_marker(images.MARKER_PREFIX + b"'")
    assert not has_marker_deep(kombu_message(["target", 42]))


def test_a_marker_in_a_table_is_found(engine: Engine, marker: bytes) -> None:
    scratch = create_engine("sqlite://")  # in memory: nothing left on disk
    with scratch.begin() as connection:
        connection.execute(text("CREATE TABLE planted_text (id INTEGER, note TEXT)"))
        connection.execute(text("CREATE TABLE planted_blob (id INTEGER, data BLOB)"))
        connection.execute(text("CREATE TABLE clean (id INTEGER, note TEXT)"))
        connection.execute(text("INSERT INTO planted_text VALUES (1, :m)"), {"m": marker.decode()})
        connection.execute(text("INSERT INTO planted_blob VALUES (1, :m)"), {"m": b"\0" + marker})
        connection.execute(text("INSERT INTO clean VALUES (1, 'nothing')"))
    with AUDIT.planted() as found:
        hits = AUDIT.scan_database(scratch, label="canary")
    assert sorted(hits) == ["table planted_blob", "table planted_text"]
    assert places(found) == [DATABASE, DATABASE]
    scratch.dispose()

    if engine.dialect.name != "postgresql":
        return
    schema = f"audit_canary_{os.getpid()}"
    with engine.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {schema}"))
        connection.execute(text(f"CREATE TABLE {schema}.bytes (data bytea)"))
        connection.execute(text(f"CREATE TABLE {schema}.encoded (data text)"))
        connection.execute(text(f"CREATE TABLE {schema}.clean (data text)"))
        connection.execute(text(f"INSERT INTO {schema}.bytes VALUES (:m)"), {"m": marker})
        connection.execute(
            text(f"INSERT INTO {schema}.encoded VALUES (:m)"),
            {"m": base64.b64encode(b"12" + marker).decode()},
        )
        connection.execute(text(f"INSERT INTO {schema}.clean VALUES ('nothing')"))
    with AUDIT.planted() as found:
        drop_schema(engine, schema)
    assert sorted(location.split(" (in ")[0] for _, location in found) == [
        f"schema {schema}: table bytes",
        f"schema {schema}: table encoded",
    ]
    with engine.connect() as connection:
        gone = connection.execute(
            text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"), {"s": schema}
        )
        assert gone.scalar_one() == 0


@pytest.fixture
def planted_keys(redis_client: redis.Redis | None) -> Iterator[tuple[redis.Redis, str]]:
    if redis_client is None:
        pytest.skip("Redis is not configured (HOTLINE_TEST_REDIS_URL)")
    prefix = f"audit-canary:{uuid.uuid4().hex}"
    yield redis_client, prefix
    for key in redis_client.scan_iter(match=f"{prefix}:*"):
        redis_client.delete(key)


def test_a_marker_in_redis_is_found_in_every_type(
    planted_keys: tuple[redis.Redis, str], marker: bytes
) -> None:
    client, prefix = planted_keys
    # Compressible: DUMP would show it LZF-compressed, so values are read by type.
    client.set(f"{prefix}:string", b"x" * 20_000 + marker + b"y" * 20_000)
    message = {"__type__": "bytes", "__value__": base64.b64encode(marker).decode()}
    client.lpush(f"{prefix}:list", kombu_message([message]))
    client.hset(f"{prefix}:hash", "field", b"\0" + marker)
    client.sadd(f"{prefix}:set", marker.hex())
    client.zadd(f"{prefix}:zset", {base64.b64encode(b"1" + marker): 1.0})
    client.xadd(f"{prefix}:stream", {"data": marker})
    client.set(f"{prefix}:clean", b"x" * 20_000)
    with AUDIT.planted() as found:
        hits = AUDIT.scan_redis(client, label="canary")
    expected = sorted(f"{prefix}:{kind}" for kind in ("string", "list", "hash", "set", "zset"))
    assert sorted(hit for hit in hits if hit.startswith(prefix)) == sorted(
        [*expected, f"{prefix}:stream"]
    )
    assert set(places(found)) == {REDIS}


def test_a_marker_logged_after_create_app_reconfigured_logging_is_found(
    backend_env: dict[str, str], marker: bytes
) -> None:
    from hotline.web import create_app

    create_app()
    root = logging.getLogger()
    assert [type(handler).__name__ for handler in root.handlers] == ["StreamHandler"]
    assert AUDIT.log_capture_intact
    # A logger of its own with no output: the record is found as it is made.
    logger = logging.getLogger(f"tests.audit_canary.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(logging.NullHandler())
    with AUDIT.planted() as found:
        logger.warning("fetched: %s", marker.decode())
        logger.warning("nothing of it here")
        try:
            raise ValueError(marker)
        except ValueError:
            logger.exception("failed")
    assert [location.split(" (in ")[0] for _, location in found] == [
        f"log record of {logger.name}",
        f"log record of {logger.name}",
    ]
    assert set(places(found)) == {LOGS}


def test_a_marker_in_a_temp_file_is_found(tmp_path: Path, marker: bytes) -> None:
    plain = tmp_path / "planted.bin"
    plain.write_bytes(b"\x89PNG" + marker)
    encoded = tmp_path / "planted.msg"
    encoded.write_bytes(kombu_message([{"__value__": base64.b64encode(marker).decode()}]))
    (tmp_path / "clean.txt").write_bytes(b"nothing")
    try:
        with AUDIT.planted() as found:
            hits = AUDIT.scan_tree(tmp_path, since=AUDIT.started)
        assert sorted(hits) == sorted([str(plain), str(encoded)])
        assert places(found) == [TEMP, TEMP]
    finally:
        plain.unlink()
        encoded.unlink()


def test_the_projects_exceptions_are_read_as_they_are_made(marker: bytes) -> None:
    with AUDIT.planted() as found:
        HotlineError(f"quoting {marker.decode()}")
        FetchError(marker.decode())
        NothingToNotice(marker)
        HotlineError("nothing of it here")
    assert [location.split(" (in ")[0] for _, location in found] == [
        "hotline.errors.HotlineError made",
        "hotline.errors.HotlineError made",  # FetchError's super().__init__
        "triage.errors.FetchError made",
        "partners.notices.NothingToNotice made",
    ]
    assert set(places(found)) == {EXCEPTIONS}


def test_an_exception_escaping_the_fetcher_is_read_with_its_suppressed_context(
    monkeypatch: pytest.MonkeyPatch, marker: bytes
) -> None:
    def failing(self: Fetcher, url: str, keep_head: object = None) -> None:
        try:
            raise ValueError(b"illegal header line: " + marker)  # as h11 quotes bytes
        except ValueError:
            raise RuntimeError("the fetch failed") from None

    monkeypatch.setattr(Fetcher, "_fetch", failing)
    with AUDIT.planted() as found, pytest.raises(RuntimeError) as caught:
        Fetcher(FetchPolicy()).fetch("http://127.0.0.1:8080/")
    assert not has_marker(str(caught.value))  # only the suppressed context holds it
    assert [location.split(" (in ")[0] for _, location in found] == [
        "triage.fetcher.Fetcher.fetch raised"
    ]


def test_an_exception_escaping_hashing_in_the_pipeline_is_read(
    monkeypatch: pytest.MonkeyPatch, marker: bytes
) -> None:
    def failing(*args: object, **kwargs: object) -> None:
        raise OSError(f"cannot identify {marker.decode()}")

    monkeypatch.setattr(hashing, "_hash_image", failing)
    with AUDIT.planted() as found, pytest.raises(OSError, match="cannot identify"):
        service._hash(images.jpeg(1, (32, 24)), service.Limits())  # as gather calls it
    assert [location.split(" (in ")[0] for _, location in found] == [
        "triage.hashing.hash_media raised"
    ]


def test_wrapped_entry_points_behave_as_before() -> None:
    wrapped = (Fetcher.fetch, Fetcher.post, hashing.hash_media, hashing.sniff, service.gather)
    assert all(hasattr(function, "__wrapped__") for function in wrapped)
    # And where the pipeline holds them by name.
    assert all(hasattr(vars(service)[name], "__wrapped__") for name in ("hash_media", "sniff"))
    with AUDIT.planted() as found, pytest.raises(FetchError) as caught:
        Fetcher(FetchPolicy()).fetch("http://127.0.0.1:8080/")
    assert caught.value.reason == "blocked_address"
    assert str(caught.value) == "The address could not be fetched (blocked_address)."
    assert hashing.hash_media(images.jpeg(2, (32, 24))).phash is not None
    assert found == []


PLANTING_PROCESS = """
import os
from triage import hashing, service
from triage.errors import FetchError

FetchError(os.environ["PLANTED"])


def failing(*args, **kwargs):
    raise OSError(os.environ["PLANTED"])


hashing._hash_image = failing
try:
    service._hash(bytes.fromhex(os.environ["PICTURE"]), service.Limits())
except OSError:
    pass
"""


def test_a_process_run_under_the_audit_hands_back_its_findings(
    tmp_path: Path, marker: bytes
) -> None:
    """As the worker processes of the tests run (`start_worker`)."""
    findings = tmp_path / "findings.tsv"
    env = {
        **os.environ,
        "HOTLINE_TEST_AUDIT_FINDINGS": str(findings),
        "HOTLINE_TEST_AUDIT_TEST": "the canary",
        "PLANTED": marker.decode(),
        "PICTURE": images.jpeg(5, (32, 24)).hex(),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.fixtures.audited", "-c", PLANTING_PROCESS],
        env=env,
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == done.stderr == b""
    with AUDIT.planted() as found:
        AUDIT.read_findings(findings, origin="in its process")
    findings.unlink()
    assert found == [
        (EXCEPTIONS, "hotline.errors.HotlineError made (in the canary), in its process"),
        (EXCEPTIONS, "triage.errors.FetchError made (in the canary), in its process"),
        (EXCEPTIONS, "triage.hashing.hash_media raised (in the canary), in its process"),
    ]


def test_a_marker_in_subprocess_cli_and_captured_output_is_found(
    tmp_path: Path, marker: bytes
) -> None:
    echo = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"
    with AUDIT.planted() as found:
        subprocess.run([sys.executable, "-c", echo], input=marker, capture_output=True, check=True)
        subprocess.run([sys.executable, "-c", echo], input=b"clean", capture_output=True)

        @click.command()
        def shout() -> None:
            click.echo(marker)

        from click.testing import CliRunner

        assert CliRunner().invoke(shout).exit_code == 0
        log = tmp_path / "serve.log"
        log.write_bytes(b"INFO started\n" + marker + b"\n")
        AUDIT.watch(log)
        AUDIT.scan_watched()
        log.unlink()
        report = SimpleNamespace(
            nodeid="canary", sections=[("Captured stderr call", marker.decode())], longreprtext=""
        )
        AUDIT.check_report(report)
    assert [location.split(" (in ")[0] for _, location in found] == [
        f"output of {Path(sys.executable).name} -c",
        "output of CliRunner shout",
        str(log),
        "pytest's Captured stderr call",
    ]
    assert set(places(found)) == {LOGS}


def test_served_bodies_carry_markers_and_are_counted(http_server: LocalHTTPServer) -> None:
    before = SERVED.marked
    picture = http_server.route("/p.jpg", body=images.jpeg(3, (32, 24)))
    page = http_server.route("/page.html", body=b"<html><body><img src='/p.jpg'></body></html>")
    assert has_marker(httpx.get(picture).content)
    shown = httpx.get(page).content
    assert has_marker(shown)
    assert shown.startswith(b"<html><body><img src='/p.jpg'></body></html>")
    assert SERVED.marked == before + 2
