"""Test backends and fixtures.

Backends come from ``HOTLINE_TEST_DATABASE_URL`` and ``HOTLINE_TEST_REDIS_URL``.
With ``CI=true`` both must be set and reachable: the run fails rather than
skips. Without them (a laptop) the suite uses a SQLite file and the filesystem
broker. The schema is built once per run by Alembic ``upgrade head``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
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

    for cached in (get_settings, producer, get_limiter, contact_cipher):
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


def truncate_all(engine: Engine) -> None:
    tables = list(reversed(SQLModel.metadata.sorted_tables))
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
    truncate_all(engine)
    purge_broker()


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
def worker(committed: Engine, backend_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker process on the test broker and database."""
    env = {**os.environ, **backend_env}
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
            "2",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--hostname",
            f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
        ],
        env=env,
        cwd=REPO,
    )
    yield process
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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
