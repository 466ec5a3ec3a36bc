"""Hand-over to real worker processes, including when the broker was down at intake."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hotline.db import session_scope, utcnow
from reporting.models import Report, Target, TargetStatus
from reporting.service import sweep_pending
from tests.conftest import wait_for

pytestmark = pytest.mark.worker


def target_status(engine: Engine, receipt_target: int) -> TargetStatus | None:
    with Session(engine) as session:
        target = session.get(Target, receipt_target)
        return target.status if target else None


def report_target(engine: Engine, receipt_digest: str) -> int:
    from sqlalchemy import select

    with Session(engine) as session:
        return int(
            session.execute(
                select(Report.target_id).where(Report.receipt_hash == receipt_digest)  # type: ignore[arg-type]
            ).scalar_one()
        )


def test_worker_process_picks_up_a_new_report(
    client: Any, committed: Engine, worker: subprocess.Popen[bytes]
) -> None:
    from reporting.receipts import receipt_digest

    response = client.post(
        "/api/v1/reports", json={"url": "http://example.org/w", "category": "csam"}
    )
    assert response.status_code == 202
    receipt = response.json()["receipt"]
    target_id = report_target(committed, receipt_digest(receipt))
    wait_for(lambda: target_status(committed, target_id) == TargetStatus.queued, timeout=30)
    assert client.get(f"/api/v1/reports/{receipt}").json() == {"status": "being_assessed"}


def test_broker_down_at_intake_loses_nothing(
    client: Any,
    configure: Any,
    committed: Engine,
    backend_env: dict[str, str],
    worker: subprocess.Popen[bytes],
) -> None:
    from reporting.receipts import receipt_digest

    configure(broker_url="redis://127.0.0.1:9/0", broker_publish_timeout_seconds="1")
    started = time.monotonic()
    response = client.post(
        "/api/v1/reports", json={"url": "http://example.org/down", "category": "csam"}
    )
    assert response.status_code == 202
    assert time.monotonic() - started < 10
    target_id = report_target(committed, receipt_digest(response.json()["receipt"]))
    time.sleep(2)
    assert target_status(committed, target_id) == TargetStatus.pending

    configure(broker_url=backend_env["HOTLINE_BROKER_URL"])
    with session_scope() as session:
        swept = sweep_pending(
            session, now=utcnow() + dt.timedelta(minutes=10), older_than=dt.timedelta(minutes=5)
        )
    assert swept == [target_id]
    wait_for(lambda: target_status(committed, target_id) == TargetStatus.queued, timeout=30)
