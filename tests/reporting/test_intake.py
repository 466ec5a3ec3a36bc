"""Intake as reporters and operators see it: dedup under concurrency, the outbox, the sweep."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hotline.db import session_scope, utcnow
from hotline.queue import buffered
from reporting import service
from reporting.models import Report, ReportCategory, ReportSource, Target, TargetStatus
from reporting.schemas import ReportCreate
from tests.conftest import broker_backlog
from tests.fixtures.spellings import SAME_URL_CANONICAL, SAME_URL_SPELLINGS


def submit(session: Session, url: str, *, now: dt.datetime | None = None) -> tuple[str, Report]:
    return service.submit_report(
        session,
        ReportCreate(url=url, category=ReportCategory.csam),
        source=ReportSource.api,
        now=now or utcnow(),
        max_url_length=4096,
    )


def test_new_target_is_handed_over_once_and_only_after_commit(session: Session) -> None:
    _, first = submit(session, "http://example.net/p")
    _, second = submit(session, "http://EXAMPLE.net/p#again")
    assert first.target_id == second.target_id
    messages = buffered(session)
    assert [(m.name, m.kwargs) for m in messages] == [
        ("triage.process_target", {"target_id": first.target_id})
    ]


def test_rolled_back_report_sends_nothing(committed: Engine, backend_env: dict[str, str]) -> None:
    before = broker_backlog(backend_env)

    def crash_before_commit() -> None:
        with session_scope() as session:
            submit(session, "http://example.net/rolled-back")
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        crash_before_commit()
    with Session(committed) as check:
        assert check.execute(select(func.count()).select_from(Target)).scalar_one() == 0
    assert broker_backlog(backend_env) == before
    with session_scope() as session:
        submit(session, "http://example.net/committed")
    assert broker_backlog(backend_env) == before + 1


@pytest.mark.postgres
def test_ten_spellings_at_once_make_one_target_with_ten_reports(
    live_server: str, committed: Engine
) -> None:
    if committed.dialect.name != "postgresql":
        pytest.skip("the race is meaningful on PostgreSQL (set HOTLINE_TEST_DATABASE_URL)")
    assert len(SAME_URL_SPELLINGS) == 10
    start = threading.Barrier(len(SAME_URL_SPELLINGS))

    def report(url: str) -> int:
        with httpx.Client(base_url=live_server, timeout=30) as http:
            start.wait()
            return http.post("/api/v1/reports", json={"url": url, "category": "csam"}).status_code

    with ThreadPoolExecutor(len(SAME_URL_SPELLINGS)) as pool:
        codes = list(pool.map(report, SAME_URL_SPELLINGS))
    assert codes == [202] * 10
    with Session(committed) as session:
        targets = session.execute(select(Target)).scalars().all()
        reports = session.execute(select(func.count()).select_from(Report)).scalar_one()
    assert [(t.canonical_url, t.report_count) for t in targets] == [(SAME_URL_CANONICAL, 10)]
    assert reports == 10


def test_sweep_hands_over_only_targets_pending_too_long(session: Session) -> None:
    now = utcnow()
    _, old = submit(session, "http://example.net/old", now=now - dt.timedelta(minutes=10))
    _, fresh = submit(session, "http://example.net/fresh", now=now - dt.timedelta(seconds=30))
    _, done = submit(session, "http://example.net/done", now=now - dt.timedelta(hours=1))
    finished = session.get(Target, done.target_id)
    assert finished is not None
    finished.status = TargetStatus.queued
    session.flush()
    session.info.clear()

    swept = service.sweep_pending(session, now=now, older_than=dt.timedelta(minutes=5))

    assert swept == [old.target_id]
    assert [m.kwargs for m in buffered(session)] == [{"target_id": old.target_id}]
    # Handed over again just now: the next sweep leaves it alone for another period.
    assert service.sweep_pending(session, now=now, older_than=dt.timedelta(minutes=5)) == []
    later = now + dt.timedelta(minutes=6)
    assert set(service.sweep_pending(session, now=later, older_than=dt.timedelta(minutes=5))) == {
        old.target_id,
        fresh.target_id,
    }


def test_contacts_are_erased_after_retention(session: Session) -> None:
    now = utcnow()
    old = service.submit_report(
        session,
        ReportCreate(
            url="http://example.net/a", category=ReportCategory.other, contact="a@b.example"
        ),
        source=ReportSource.api,
        now=now - dt.timedelta(days=91),
        max_url_length=4096,
    )[1]
    new = service.submit_report(
        session,
        ReportCreate(
            url="http://example.net/b", category=ReportCategory.other, contact="c@d.example"
        ),
        source=ReportSource.api,
        now=now,
        max_url_length=4096,
    )[1]
    assert service.purge_expired_contacts(session, now=now, retention=dt.timedelta(days=90)) == 1
    session.expire_all()
    assert session.get(Report, old.id).contact_encrypted is None  # type: ignore[union-attr]
    assert session.get(Report, new.id).contact_encrypted is not None  # type: ignore[union-attr]


def test_sweep_releases_a_dead_workers_claim(session: Session) -> None:
    now = utcnow()
    _, claimed = submit(session, "http://example.net/claimed", now=now - dt.timedelta(hours=1))
    target = session.get(Target, claimed.target_id)
    assert target is not None
    target.status = TargetStatus.fetching
    target.handed_over_at = now - dt.timedelta(minutes=11)
    session.flush()
    session.info.clear()

    lease = dt.timedelta(minutes=10)
    kept = service.sweep_pending(session, now=now, older_than=dt.timedelta(minutes=5))
    assert kept == []  # without a lease, claims are left alone
    swept = service.sweep_pending(
        session, now=now, older_than=dt.timedelta(minutes=5), stale_after=lease
    )
    assert swept == [claimed.target_id]
    session.refresh(target)
    assert (target.status, target.handed_over_at) == (TargetStatus.pending, now)


def test_an_unreachable_target_reported_again_is_tried_afresh(session: Session) -> None:
    _, first = submit(session, "http://example.net/was-down")
    target = session.get(Target, first.target_id)
    assert target is not None
    target.status, target.attempts = TargetStatus.unreachable, 3
    session.flush()
    session.info.clear()

    submit(session, "http://example.net/was-down")

    session.refresh(target)
    assert (target.status, target.attempts, target.report_count) == (TargetStatus.pending, 0, 2)
    assert [m.kwargs for m in buffered(session)] == [{"target_id": first.target_id}]


def test_sweep_hands_a_dead_workers_target_over_as_pending(session: Session) -> None:
    """A worker died holding the target: it is pending again, marked ``internal_error``
    (which a worker keeps when it finds the attempts used up), and sent to the workers.
    A target waiting for its retry keeps the reason of its last attempt."""
    now = utcnow()
    _, dead = submit(session, "http://example.net/kills-workers", now=now - dt.timedelta(hours=1))
    _, flaky = submit(session, "http://example.net/flaky", now=now - dt.timedelta(hours=1))
    states = {
        dead.target_id: (TargetStatus.fetching, None, dt.timedelta(minutes=11)),
        flaky.target_id: (TargetStatus.pending, "http_error_503", dt.timedelta(minutes=6)),
    }
    for target_id, (status, reason, ago) in states.items():
        target = session.get(Target, target_id)
        assert target is not None
        target.status, target.status_reason, target.attempts = status, reason, 3
        target.handed_over_at = now - ago
    session.flush()
    session.info.clear()

    swept = service.sweep_pending(
        session,
        now=now,
        older_than=dt.timedelta(minutes=5),
        stale_after=dt.timedelta(minutes=10),
    )

    assert sorted(swept) == sorted(states)
    assert sorted(m.kwargs["target_id"] for m in buffered(session)) == sorted(states)
    session.expire_all()
    shown = {
        target_id: (target.status, target.status_reason, target.handed_over_at)
        for target_id in states
        if (target := session.get(Target, target_id)) is not None
    }
    assert shown == {
        dead.target_id: (TargetStatus.pending, "internal_error", now),
        flaky.target_id: (TargetStatus.pending, "http_error_503", now),
    }
