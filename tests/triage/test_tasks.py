"""Real worker processes: hand-over after intake, a broker that was down, a worker killed
in the middle of a batch. Pictures are served from 127.0.0.1 only."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from hotline.db import session_scope, utcnow
from reporting.models import Report, Target, TargetStatus
from reporting.receipts import receipt_digest
from reporting.service import sweep_pending
from tests.conftest import REPO, wait_for
from tests.fixtures import images
from tests.fixtures.servers import LocalHTTPServer, Route
from triage.models import Media, Sighting

pytestmark = pytest.mark.worker
JPEG = {"content-type": "image/jpeg"}


def target_of(engine: Engine, receipt: str) -> int:
    with Session(engine) as session:
        return int(
            session.execute(
                select(col(Report.target_id)).where(
                    col(Report.receipt_hash) == receipt_digest(receipt)
                )
            ).scalar_one()
        )


def status_of(engine: Engine, target_id: int) -> TargetStatus | None:
    with Session(engine) as session:
        target = session.get(Target, target_id)
        return target.status if target else None


def submit(client: Any, url: str) -> str:
    response = client.post("/api/v1/reports", json={"url": url, "category": "csam"})
    assert response.status_code == 202, response.text
    return str(response.json()["receipt"])


def test_worker_process_hashes_a_new_report(
    client: Any, committed: Engine, http_server: LocalHTTPServer, worker: subprocess.Popen[bytes]
) -> None:
    url = http_server.route("/w.jpg", body=images.jpeg(5, marker=images.new_marker()), headers=JPEG)
    receipt = submit(client, url)
    target_id = target_of(committed, receipt)
    wait_for(lambda: status_of(committed, target_id) == TargetStatus.queued, timeout=30)
    assert client.get(f"/api/v1/reports/{receipt}").json() == {"status": "being_assessed"}
    with Session(committed) as session:
        assert session.execute(select(func.count()).select_from(Media)).scalar_one() == 1


def test_broker_down_at_intake_loses_nothing(
    client: Any,
    configure: Any,
    committed: Engine,
    backend_env: dict[str, str],
    http_server: LocalHTTPServer,
    worker: subprocess.Popen[bytes],
) -> None:
    url = http_server.route(
        "/down.jpg", body=images.jpeg(6, marker=images.new_marker()), headers=JPEG
    )
    configure(broker_url="redis://127.0.0.1:9/0", broker_publish_timeout_seconds="1")
    started = time.monotonic()
    target_id = target_of(committed, submit(client, url))
    assert time.monotonic() - started < 10
    time.sleep(2)
    assert status_of(committed, target_id) == TargetStatus.pending

    configure(broker_url=backend_env["HOTLINE_BROKER_URL"])
    with session_scope() as session:
        swept = sweep_pending(
            session, now=utcnow() + dt.timedelta(minutes=10), older_than=dt.timedelta(minutes=5)
        )
    assert swept == [target_id]
    wait_for(lambda: status_of(committed, target_id) == TargetStatus.queued, timeout=30)


def test_a_worker_killed_mid_batch_loses_nothing_and_repeats_nothing(
    client: Any,
    committed: Engine,
    http_server: LocalHTTPServer,
    start_worker: Callable[..., subprocess.Popen[bytes]],
    start_beat: Callable[..., subprocess.Popen[bytes]],
) -> None:
    # 200 reports: 170 pictures (30 of them the same bytes under a second URL) and 30 dead
    # links. One picture is held back until the kill, so that the kill finds a worker in
    # the middle of a target.
    released = threading.Event()
    urls = []
    for i in range(140):
        body = images.jpeg(1000 + i, (320, 240), marker=images.new_marker())
        route = _held(body, released) if i == 60 else Route(headers=JPEG, body=body)
        urls.append(http_server.add(f"/p/{i}.jpg", route))
    for i in range(30):
        http_server.add(f"/again/{i}.jpg", http_server.routes[f"/p/{i}.jpg"])
        urls.append(http_server.url(f"/again/{i}.jpg"))
    for i in range(30):
        urls.append(http_server.route(f"/dead/{i}.jpg", status=404, body=b"no"))
    first = start_worker(concurrency=2)
    targets = {target_of(committed, submit(client, url)): url for url in urls}

    def count(*statuses: TargetStatus) -> int:
        with Session(committed) as session:
            return int(
                session.execute(
                    select(func.count()).select_from(Target).where(col(Target.status).in_(statuses))
                ).scalar_one()
            )

    held = {url: target_id for target_id, url in targets.items()}[urls[60]]
    ended = (TargetStatus.queued, TargetStatus.unreachable)
    wait_for(
        lambda: count(*ended) >= 40 and status_of(committed, held) == TargetStatus.fetching,
        timeout=60,
    )
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    released.set()
    # The dead worker had claimed it and never finished it.
    assert status_of(committed, held) == TargetStatus.fetching
    assert count(*ended) < len(urls) - 1

    # Another worker, and beat as in production: its sweep hands over again what is
    # pending and what the dead worker had claimed (the lease shortened for the test).
    shorter = {"process_lease_seconds": "3", "pending_requeue_after_seconds": "3"}
    start_worker(concurrency=2, **shorter)
    start_beat(**shorter)
    wait_for(lambda: count(*ended) == len(urls), timeout=90, interval=0.5)
    with Session(committed) as session:
        statuses = Counter(
            session.execute(select(col(Target.status)).where(col(Target.id).in_(targets))).scalars()
        )
        media = session.execute(select(col(Media.sha256))).scalars().all()
        sightings = session.execute(select(col(Sighting.target_id), col(Sighting.media_id))).all()
    assert statuses == {TargetStatus.queued: 170, TargetStatus.unreachable: 30}
    assert len(media) == len(set(media)) == 140
    assert len(sightings) == len(set(sightings)) == 170


def _held(body: bytes, released: threading.Event) -> Route:
    """A picture served once ``released`` is set (at most a minute later)."""

    def chunks() -> Iterator[bytes]:
        released.wait(60)
        yield body

    return Route(headers=JPEG, body=chunks)


def test_an_unreachable_target_retried_by_an_operator_is_processed_again(
    client: Any,
    committed: Engine,
    backend_env: dict[str, str],
    http_server: LocalHTTPServer,
    worker: subprocess.Popen[bytes],
) -> None:
    # The site was down when reported; it is back, and the operator retries it.
    url = http_server.route("/back-later.jpg", status=404)
    target_id = target_of(committed, submit(client, url))
    wait_for(lambda: status_of(committed, target_id) == TargetStatus.unreachable, timeout=30)
    picture = images.jpeg(8, marker=images.new_marker())
    http_server.route("/back-later.jpg", body=picture, headers=JPEG)

    done = subprocess.run(
        [sys.executable, "-m", "hotline.cli", "targets", "retry", "--reason", "http_error_404"],
        env={**os.environ, **backend_env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"ids: {target_id}" in done.stdout
    wait_for(lambda: status_of(committed, target_id) == TargetStatus.queued, timeout=30)
    with Session(committed) as session:
        assert session.execute(select(func.count()).select_from(Sighting)).scalar_one() == 1
