"""The benchmarks under bench/ still run, as the README gives their commands: small sizes,
the real backends, and the checks each bench makes of its own results. Their numbers are
not judged here (speed is measured by running them, not by timed tests)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import redis

from tests.conftest import _REDIS_BASE, REPO, TEST_DATABASE_URL
from tests.fixtures.audit import AUDIT

pytestmark = pytest.mark.postgres


def _bench(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _needs_postgres() -> None:
    if not TEST_DATABASE_URL.startswith("postgresql"):
        pytest.skip("the benches run on PostgreSQL (set HOTLINE_TEST_DATABASE_URL)")


def test_the_hash_import_bench_runs_with_media_seen_before() -> None:
    _needs_postgres()
    out = _bench(
        "bench/hashimport.py",
        *("--lines", "3000", "--hashes-per-line", "2", "--media", "400", "--repeat", "1"),
        *("--bad-every", "1000"),
        env={"HOTLINE_DATABASE_URL": TEST_DATABASE_URL},
    )
    # The bench checked the rejected lines, the entries and hashes stored, and that the
    # 4 media on the list were matched.
    assert "3 lines rejected" in out
    assert "4 media items seen here before are on the list" in out
    assert re.search(r"ratio \d+\.\d\dx \(target <= 3x\)", out), out


def test_the_popular_picture_bench_runs() -> None:
    _needs_postgres()
    out = _bench(
        "bench/popular.py",
        *("--copies", "5,40", "--limit", "10", "--repeat", "1"),
        *("--database", TEST_DATABASE_URL),
    )
    # The bench checked the rows each records: the limit's, and one per copy without.
    assert re.search(r"^ +5 +\d+\.\d +5 +\d+\.\d +5 ", out, re.M), out
    assert re.search(r"^ +40 +\d+\.\d +10 +\d+\.\d +40 +\d+\.\dx$", out, re.M), out


def test_the_end_to_end_bench_runs_on_postgresql_and_redis() -> None:
    _needs_postgres()
    if not _REDIS_BASE:
        pytest.skip("the end-to-end bench needs Redis (set HOTLINE_TEST_REDIS_URL)")
    # A Redis database of its own (the bench empties it), not the suite's.
    base = _REDIS_BASE.rsplit("/", 1)[0] if _REDIS_BASE.count("/") > 2 else _REDIS_BASE
    redis_url = f"{base}/{1 + (os.getpid() + 7) % 15}"
    out = _bench(
        "bench/pipeline.py",
        *("--reports", "12", "--width", "320", "--height", "240", "--repeat", "2"),
        *("--database", TEST_DATABASE_URL, "--redis", redis_url),
    )
    # The bench empties its Redis database when done: the content audit searches what is
    # left (its output, workers' included, was searched as the subprocess's output).
    AUDIT.scan_redis(redis.Redis.from_url(redis_url), label="the end-to-end bench's")
    # Two runs in turn, each from a fresh schema: every target queued both times.
    assert out.count("12 queued of 12") == 2, out
    assert out.count("CPU per image in the window") == 2, out
    assert re.search(r"median ratio of 2 runs: \d+% \(runs: \d+%, \d+%", out), out
