"""Test backends and fixtures.

Backends come from ``HOTLINE_TEST_DATABASE_URL`` and ``HOTLINE_TEST_REDIS_URL``.
With ``CI=true`` both must be set and reachable: the run fails rather than
skips. Without them (a laptop) the suite uses a SQLite file and the filesystem
broker. The schema is built once per run by Alembic ``upgrade head``.

The content audit (tests/fixtures/audit.py) runs over the whole session: the hooks
and fixtures here feed it and the session fails if it found a marker anywhere.
"""

from __future__ import annotations

import contextlib
import os
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
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, SQLModel

from tests.fixtures.audit import AUDIT, EXCEPTIONS, ContentAudit, drop_schema
from tests.fixtures.servers import SERVED, counting_listener, http_server  # noqa: F401

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
    from reporting.ratelimit import get_limiter, memory_storage
    from triage.api import get_view_counter
    from triage.fetcher import get_fetcher
    from triage.hosting import get_hosting_lookup
    from triage.neardup import get_near_duplicates

    for cached in (
        get_settings,
        producer,
        get_limiter,
        get_view_counter,
        contact_cipher,
        get_fetcher,
        get_hosting_lookup,
        get_near_duplicates,
    ):
        cached.cache_clear()
    memory_storage().reset()  # no count of one test's limits carries into the next
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()


def pytest_configure(config: pytest.Config) -> None:
    _require(bool(TEST_DATABASE_URL), "HOTLINE_TEST_DATABASE_URL is not set")
    _require(bool(_REDIS_BASE), "HOTLINE_TEST_REDIS_URL is not set")
    # Before collection: test modules build apps (and log) when imported.
    AUDIT.install_log_capture()
    AUDIT.install_output_capture()


def pytest_unconfigure(config: pytest.Config) -> None:
    AUDIT.uninstall()


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    AUDIT.test = nodeid


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    AUDIT.check_report(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    AUDIT.check_report(report)


def pytest_warning_recorded(
    warning_message: Any, when: str, nodeid: str, location: tuple[str, int, str] | None
) -> None:
    # Exceptions in threads and unraisable ones reach pytest as warnings with their text.
    AUDIT.check(EXCEPTIONS, f"warning in {nodeid or when}", str(warning_message.message))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Findings after content_audit's teardown (e.g. the last test's own report) fail too.
    late = AUDIT.findings[_AUDITED[0] :] if _AUDITED else []
    if late and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if late:
        print(f"\n{AUDIT.failure_message()}", file=sys.stderr)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SERVED.bodies:
        terminalreporter.write_line(
            f"content audit: {SERVED.bodies} bodies served by test servers, "
            f"{SERVED.marked} carrying a marker; {len(AUDIT.findings)} findings"
        )


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
        "HOTLINE_SAFE_VIEW_RATE_LIMIT": "off",
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
    # The content audit searches every table of the run before the schema goes.
    if postgres:
        drop_schema(engine, PG_SCHEMA)
    else:
        AUDIT.scan_database(engine, label="the run's database at the end")
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


def tables_with_marker(engine: Engine) -> list[str]:
    """Tables (of the run's schema) holding any row with a content marker."""
    return AUDIT.scan_database(engine, label="tables_with_marker")


WORKER_LOGS: list[Path] = []
"""Log files of processes the tests start: the content audit reads them at the end."""
_AUDITED: list[int] = []  # how many findings content_audit's teardown reported


@pytest.fixture(scope="session", autouse=True)
def content_audit(
    backend_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ContentAudit]:
    """After the whole suite: no content marker in the database, Redis, log output, the
    temporary directory or exception texts (tests/fixtures/audit.py). The run's tables
    are searched by `engine` before it drops them (it is torn down first)."""
    AUDIT.install_exception_capture()
    yield AUDIT
    AUDIT.read_findings(process_findings(tmp_path_factory), origin="in a worker process")
    if TEST_REDIS_URL:
        AUDIT.scan_redis(redis.Redis.from_url(TEST_REDIS_URL), label="end of session")
    for path in WORKER_LOGS:
        AUDIT.watch(path)
    AUDIT.scan_watched()
    base = tmp_path_factory.getbasetemp().resolve()
    temp = Path(tempfile.gettempdir()).resolve()
    for root in [temp] if base.is_relative_to(temp) else [temp, base]:
        AUDIT.scan_tree(root, since=AUDIT.started)
    if not AUDIT.log_capture_intact:
        AUDIT.found("log output", "the log record factory was replaced: later records unread")
    AUDIT.uninstall()
    findings = AUDIT.findings
    _AUDITED.append(len(findings))
    assert not findings, AUDIT.failure_message()
    if SERVED.bodies:
        # Markers were served, so the search above had something to miss.
        assert SERVED.marked > 0, f"none of {SERVED.bodies} bodies served carried a marker"


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
        # What the test wrote, before it is rolled back (unless the test left its
        # transaction failed, when nothing can be read).
        with contextlib.suppress(SQLAlchemyError):
            AUDIT.scan_connection(connection, label="session, before rollback")
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

    def purge_broker() -> list[str]:
        """Empty the broker, searched first by the content audit; returns the leaks."""
        leaked = []
        if redis_client is not None:
            leaked += AUDIT.scan_redis(redis_client, label="before a flush")
            redis_client.flushdb()
        messages = list((Path(backend_env["HOTLINE_DATA_DIR"]) / "broker").glob("*/*.msg"))
        leaked += AUDIT.scan_files(messages, place="broker messages", deep=True)
        for message in messages:
            message.unlink(missing_ok=True)
        return leaked

    purge_broker()
    yield engine
    leaked = AUDIT.scan_database(engine, label="committed, before truncation")
    truncate_all(engine)
    leaked += purge_broker()
    assert not leaked, f"content marker stored in {leaked}"


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


def process_findings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where processes run under tests/fixtures/audited.py write the audit's findings."""
    return tmp_path_factory.getbasetemp() / "content-audit-findings.tsv"


def stop_all(started: list[subprocess.Popen[bytes]]) -> None:
    """Stop the Celery processes a test started (each in a process group of its own):
    all are asked at once, then waited for, then their groups killed (the pool
    processes of a worker killed mid-test)."""
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
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def start_worker(
    committed: Engine,
    backend_env: dict[str, str],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start real Celery worker processes on the test broker and database; all are
    stopped after the test. They run under the content audit's hooks
    (tests/fixtures/audited.py) and their output goes to files that the audit reads."""
    started: list[subprocess.Popen[bytes]] = []

    def start(concurrency: int = 2, **settings: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            **backend_env,
            **{f"HOTLINE_{k.upper()}": v for k, v in settings.items()},
            "HOTLINE_TEST_AUDIT_FINDINGS": str(process_findings(tmp_path_factory)),
            "HOTLINE_TEST_AUDIT_TEST": AUDIT.test,
        }
        log_path = tmp_path / f"worker-{len(started)}.log"
        WORKER_LOGS.append(log_path)  # read by the content audit
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.fixtures.audited",
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
    stop_all(started)


@pytest.fixture
def start_beat(
    committed: Engine, backend_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``celery beat`` on the test broker (the schedule of hotline.worker)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**settings: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            **backend_env,
            **{f"HOTLINE_{k.upper()}": v for k, v in settings.items()},
        }
        log_path = tmp_path / f"beat-{len(started)}.log"
        WORKER_LOGS.append(log_path)
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "hotline.worker",
                    "beat",
                    "--loglevel",
                    "INFO",
                    "--schedule",
                    str(tmp_path / f"celerybeat-schedule-{len(started)}"),
                ],
                env=env,
                cwd=REPO,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(process)
        return process

    yield start
    stop_all(started)


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
