"""Test backends and fixtures.

Backends come from ``HOTLINE_TEST_DATABASE_URL`` and ``HOTLINE_TEST_REDIS_URL``.
With ``CI=true`` both must be set and reachable: the run fails rather than
skips. Without them (a laptop) the suite uses a SQLite file and the filesystem
broker. The schema is built once per run by Alembic ``upgrade head``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import uvicorn
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from tests.fixtures.servers import counting_listener, http_server  # noqa: F401

ON_CI = os.environ.get("CI", "").lower() == "true"
REPO = Path(__file__).resolve().parents[1]
TEST_DATABASE_URL = os.environ.get("HOTLINE_TEST_DATABASE_URL", "")
_REDIS_BASE = os.environ.get("HOTLINE_TEST_REDIS_URL", "")
# Likewise a Redis database number of its own (1-15), since tests flush it.
TEST_REDIS_URL = (
    f"{_REDIS_BASE.rsplit('/', 1)[0] if _REDIS_BASE.count('/') > 2 else _REDIS_BASE}"
    f"/{1 + os.getpid() % 15}"
    if _REDIS_BASE
    else ""
)


def _require(condition: bool, message: str) -> None:
    if not condition and ON_CI:
        pytest.exit(f"CI=true but {message}", returncode=3)


def _clear_caches() -> None:
    from hotline.db import get_engine
    from hotline.queue import producer
    from hotline.settings import get_settings
    from reporting.contacts import contact_cipher
    from reporting.ratelimit import get_limiter
    from triage.fetcher import get_fetcher
    from triage.hosting import get_hosting_lookup
    from triage.neardup import get_near_duplicates

    for cached in (
        get_settings,
        producer,
        get_limiter,
        contact_cipher,
        get_fetcher,
        get_hosting_lookup,
        get_near_duplicates,
    ):
        cached.cache_clear()
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()


def pytest_configure(config: pytest.Config) -> None:
    _require(bool(TEST_DATABASE_URL), "HOTLINE_TEST_DATABASE_URL is not set")
    _require(bool(_REDIS_BASE), "HOTLINE_TEST_REDIS_URL is not set")


# Each run works in a schema of its own, so runs sharing one PostgreSQL do not collide.
PG_SCHEMA = f"hotline_test_{os.getpid()}"


def run_database_url(data_dir: Path) -> str:
    if not TEST_DATABASE_URL:
        return f"sqlite:///{data_dir / 'test.sqlite3'}"
    if not TEST_DATABASE_URL.startswith("postgresql"):
        return TEST_DATABASE_URL
    joiner = "&" if "?" in TEST_DATABASE_URL else "?"
    return f"{TEST_DATABASE_URL}{joiner}options=-csearch_path%3D{PG_SCHEMA}"


@pytest.fixture(scope="session")
def backend_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment shared by the test process and every process a test starts."""
    data_dir = tmp_path_factory.mktemp("hotline-data")
    env = {
        "HOTLINE_DATA_DIR": str(data_dir),
        "HOTLINE_DATABASE_URL": run_database_url(data_dir),
        "HOTLINE_BROKER_URL": TEST_REDIS_URL,
        "HOTLINE_REDIS_URL": TEST_REDIS_URL,
        "HOTLINE_RATE_LIMIT": "off",
        "HOTLINE_LOG_LEVEL": "INFO",
        "HOTLINE_SECURE_COOKIES": "false",
        "HOTLINE_SWEEP_INTERVAL_SECONDS": "1",
        # Workers in tests fetch only from servers the tests run on 127.0.0.1.
        "HOTLINE_FETCH_ALLOW_NETWORKS": "127.0.0.0/8",
        "HOTLINE_FETCH_PORTS": "1024-65535",
        "HOTLINE_FETCH_TOTAL_TIMEOUT_SECONDS": "10",
        "HOTLINE_PROCESS_RETRY_DELAY_SECONDS": "0.5",
        "HOTLINE_PROCESS_MAX_ATTEMPTS": "2",
        "HOTLINE_NEARDUP_REFRESH_SECONDS": "0.5",
    }
    for name in list(os.environ):
        if name.startswith("HOTLINE_") and not name.startswith("HOTLINE_TEST_"):
            del os.environ[name]
    os.environ.update(env)
    return env


@pytest.fixture(scope="session")
def engine(backend_env: dict[str, str]) -> Iterator[Engine]:
    from hotline.db import get_engine
    from hotline.migrate import upgrade

    _clear_caches()
    engine = get_engine()
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        _require(False, f"the test database is unreachable ({type(exc).__name__})")
        raise
    postgres = engine.dialect.name == "postgresql"
    if postgres:
        with engine.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
            connection.execute(text(f"CREATE SCHEMA {PG_SCHEMA}"))
    upgrade(backend_env["HOTLINE_DATABASE_URL"])
    yield engine
    if postgres:
        with engine.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
    engine.dispose()


@pytest.fixture(scope="session")
def redis_client(backend_env: dict[str, str]) -> redis.Redis | None:
    if not TEST_REDIS_URL:
        return None
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        _require(False, f"the test Redis is unreachable ({type(exc).__name__})")
        raise
    return client


MARKER = b"HOTLINE-MARKER-"  # the prefix of every marker in tests/fixtures/images.py
# A whole marker: a copy of this source (a checkout under /tmp) holds the prefix only.
WHOLE_MARKER = re.compile(re.escape(MARKER) + rb"[0-9a-f]{32}")


def tables_with_marker(engine: Engine) -> list[str]:
    """Tables holding any row whose text contains a content marker."""
    found = []
    with engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            if engine.dialect.name == "postgresql":
                query = f'SELECT count(*) FROM "{table.name}" t WHERE t::text LIKE :m'
                hits = connection.execute(text(query), {"m": f"%{MARKER.decode()}%"}).scalar_one()
            else:
                rows = connection.execute(table.select()).all()
                hits = sum(MARKER.decode() in repr(tuple(row)) for row in rows)
            if hits:
                found.append(table.name)
    return found


class CapturedLogs(logging.Handler):
    """Every log line of the test process, formatted, kept in memory for the audit."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        # A record that cannot be formatted must not break a test.
        with contextlib.suppress(Exception):
            self.lines.append(self.format(record))


WORKER_LOGS: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def content_audit(
    backend_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CapturedLogs]:
    """After the whole suite: no content marker in logs, Redis, or any temp file."""
    started = time.time()
    handler = CapturedLogs()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)
    places: dict[str, bool] = {
        "test process logs": any(MARKER.decode() in line for line in handler.lines),
        "worker logs": any(MARKER in path.read_bytes() for path in WORKER_LOGS if path.exists()),
    }
    if TEST_REDIS_URL:
        client = redis.Redis.from_url(TEST_REDIS_URL)
        dumped = b"".join(key + (client.dump(key) or b"") for key in client.scan_iter(count=1000))
        places["redis"] = MARKER in dumped
    tmp_hits = []
    for root in {Path(tempfile.gettempdir()), tmp_path_factory.getbasetemp()}:
        for path in root.rglob("*"):
            try:
                info = path.stat()
                fresh = path.is_file() and info.st_mtime >= started - 1
                if fresh and info.st_size < 50_000_000 and WHOLE_MARKER.search(path.read_bytes()):
                    tmp_hits.append(str(path))
            except OSError:
                continue
    places["temp files"] = bool(tmp_hits)
    leaked = [where for where, hit in places.items() if hit]
    assert not leaked, f"content marker found in: {leaked} {tmp_hits[:5]}"


def truncate_all(engine: Engine) -> None:
    # The audit log is append-only (a trigger refuses deletes): its chain simply goes
    # on from test to test.
    tables = [t for t in reversed(SQLModel.metadata.sorted_tables) if t.name != "audit_event"]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in tables)
            connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                connection.execute(table.delete())


@pytest.fixture
def configure(
    backend_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., None]]:
    """Override settings for one test: ``configure(rate_limit="2/minute")``."""

    def apply(**overrides: Any) -> None:
        for name, value in overrides.items():
            monkeypatch.setenv(f"HOTLINE_{name.upper()}", str(value))
        _clear_caches()

    yield apply
    monkeypatch.undo()
    _clear_caches()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test."""
    connection = engine.connect()
    transaction = connection.begin()
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        yield session
    transaction.rollback()
    connection.close()


@pytest.fixture
def committed(
    engine: Engine, redis_client: redis.Redis | None, backend_env: dict[str, str]
) -> Iterator[Engine]:
    """For tests whose code commits: empties every table and the broker afterwards.

    Ids restart after truncation, so a message left over from one test would name
    another test's target; both backends are purged before and after.
    """

    def purge_broker() -> None:
        if redis_client is not None:
            redis_client.flushdb()
        for message in (Path(backend_env["HOTLINE_DATA_DIR"]) / "broker").glob("*/*.msg"):
            message.unlink(missing_ok=True)

    purge_broker()
    yield engine
    leaked = tables_with_marker(engine)
    truncate_all(engine)
    purge_broker()
    assert not leaked, f"content marker stored in tables {leaked}"


@pytest.fixture
def client(committed: Engine, configure: Callable[..., None]) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from hotline.web import create_app

    _clear_caches()
    with TestClient(create_app(), client=("127.0.0.1", 50000)) as test_client:
        yield test_client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live_server(committed: Engine, configure: Callable[..., None]) -> Iterator[str]:
    """The web app served by uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    from hotline.web import create_app

    _clear_caches()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            proxy_headers=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def start_worker(
    committed: Engine, backend_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start real Celery worker processes on the test broker and database; all are
    stopped after the test. Their output goes to files that the content audit reads."""
    started: list[subprocess.Popen[bytes]] = []

    def start(concurrency: int = 2, **settings: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            **backend_env,
            **{f"HOTLINE_{k.upper()}": v for k, v in settings.items()},
        }
        log_path = tmp_path / f"worker-{len(started)}.log"
        WORKER_LOGS.append(log_path)
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "hotline.worker",
                    "worker",
                    "--loglevel",
                    "INFO",
                    "--concurrency",
                    str(concurrency),
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--hostname",
                    f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
                ],
                env=env,
                cwd=REPO,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: a test can kill it with its pool
            )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
    for process in started:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # pool processes of a killed worker


@pytest.fixture
def worker(start_worker: Callable[..., subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """One real Celery worker process on the test broker and database."""
    return start_worker()


def broker_backlog(backend_env: dict[str, str]) -> int:
    """How many task messages wait in the test broker (Redis list or filesystem queue)."""
    if TEST_REDIS_URL:
        return int(redis.Redis.from_url(TEST_REDIS_URL).llen("celery"))
    queue = Path(backend_env["HOTLINE_DATA_DIR"]) / "broker" / "queue"
    return len(list(queue.glob("*.msg"))) if queue.exists() else 0


def wait_for(predicate: Callable[[], Any], timeout: float = 20, interval: float = 0.1) -> Any:
    """Poll until predicate returns something truthy; fail with the last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    assert value, f"condition not met within {timeout}s"
    return value
