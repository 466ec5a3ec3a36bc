"""The analyst queue: order, filters, and race-free claims."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hotline.db import session_scope, utcnow
from reporting import service as intake
from reporting.models import ReportCategory, ReportSource, Target, TargetStatus
from reporting.schemas import ReportCreate
from triage import review

LEASE = dt.timedelta(minutes=15)


def queued(
    session: Session,
    url: str,
    *,
    priority: int,
    age_minutes: int = 0,
    country: str | None = None,
    category: ReportCategory = ReportCategory.csam,
) -> int:
    now = utcnow() - dt.timedelta(minutes=age_minutes)
    _, report = intake.submit_report(
        session,
        ReportCreate(url=url, category=category),
        source=ReportSource.api,
        now=now,
        max_url_length=4096,
    )
    target = session.get(Target, report.target_id)
    assert target is not None
    target.status, target.priority, target.hosting_country = TargetStatus.queued, priority, country
    session.flush()
    return report.target_id


def test_queue_is_ordered_by_priority_then_age(session: Session) -> None:
    low = queued(session, "http://a.example.com/1", priority=100, age_minutes=50)
    old = queued(session, "http://b.example.com/1", priority=1000, age_minutes=30)
    new = queued(session, "http://c.example.com/1", priority=1000, age_minutes=5)
    assert [t.id for t in review.list_queue(session, now=utcnow())] == [old, new, low]


def test_filters_narrow_the_queue(session: Session) -> None:
    nl = queued(session, "http://a.example.com/1", priority=100, country="NL")
    queued(
        session,
        "http://b.example.org/1",
        priority=100,
        country="US",
        category=ReportCategory.grooming,
    )
    now = utcnow()
    assert [
        t.id for t in review.list_queue(session, now=now, filters=review.QueueFilters(country="nl"))
    ] == [nl]
    assert [
        t.id
        for t in review.list_queue(
            session, now=now, filters=review.QueueFilters(registered_domain="example.com")
        )
    ] == [nl]
    grooming = review.list_queue(session, now=now, filters=review.QueueFilters(category="grooming"))
    assert [t.registered_domain for t in grooming] == ["example.org"]


def test_the_status_filter_lists_targets_past_the_queue(session: Session) -> None:
    open_item = queued(session, "http://a.example.com/1", priority=100)
    waiting = queued(session, "http://a.example.com/2", priority=900)
    target = session.get(Target, waiting)
    assert target is not None
    target.status = TargetStatus.second_opinion
    session.flush()
    now = utcnow()
    assert [t.id for t in review.list_queue(session, now=now)] == [open_item]
    second = review.QueueFilters(status=TargetStatus.second_opinion)
    assert [t.id for t in review.list_queue(session, now=now, filters=second)] == [waiting]
    # "Next" always takes an open item, whatever the list shows.
    taken = review.claim_next(session, user_id=1, now=now, lease=LEASE, filters=second)
    assert taken is not None
    assert taken.id == open_item


def test_a_claimed_item_is_offered_to_no_one_else_until_its_lease_ends(session: Session) -> None:
    first = queued(session, "http://a.example.com/1", priority=500)
    second = queued(session, "http://a.example.com/2", priority=100)
    now = utcnow()
    mine = review.claim_next(session, user_id=1, now=now, lease=LEASE)
    assert mine is not None
    assert mine.id == first
    assert [t.id for t in review.list_queue(session, now=now)] == [second]
    theirs = review.claim_next(session, user_id=2, now=now, lease=LEASE)
    assert theirs is not None
    assert theirs.id == second
    assert review.claim_next(session, user_id=3, now=now, lease=LEASE) is None
    assert review.queue_counts(session, now=now) == {"open": 0, "claimed": 2, "processing": 0}

    later = now + LEASE + dt.timedelta(seconds=1)
    assert review.renew_claim(session, first, user_id=1, now=later, lease=LEASE) is False
    again = review.claim_next(session, user_id=3, now=later, lease=LEASE)
    assert again is not None
    assert again.id == first  # the lapsed claim returned to the queue


def test_next_gives_back_what_the_analyst_held(session: Session) -> None:
    first = queued(session, "http://a.example.com/1", priority=500)
    queued(session, "http://a.example.com/2", priority=100)
    now = utcnow()
    review.claim_next(session, user_id=1, now=now, lease=LEASE)
    review.claim_next(session, user_id=1, now=now, lease=LEASE)
    assert [t.id for t in review.list_queue(session, now=now)] == [first]
    assert review.renew_claim(session, first, user_id=1, now=now, lease=LEASE) is False


def test_sites_group_the_open_items(session: Session) -> None:
    queued(session, "http://a.example.com/1", priority=500)
    queued(session, "http://b.example.com/2", priority=100)
    queued(session, "http://example.net/3", priority=300)
    assert review.queue_by_site(session, now=utcnow()) == [
        {"registered_domain": "example.com", "open": 2, "top_priority": 500},
        {"registered_domain": "example.net", "open": 1, "top_priority": 300},
    ]


@pytest.mark.postgres
def test_twenty_analysts_pressing_next_at_once_get_twenty_items(committed: Engine) -> None:
    if committed.dialect.name != "postgresql":
        pytest.skip("the race is meaningful on PostgreSQL (set HOTLINE_TEST_DATABASE_URL)")
    with session_scope() as session:
        for i in range(30):
            queued(
                session, f"http://site{i % 4}.example.com/{i}", priority=100 + i % 7, age_minutes=i
            )
    start = threading.Barrier(20)

    def press_next(analyst: int) -> int | None:
        start.wait()
        with session_scope() as session:
            item = review.claim_next(session, user_id=analyst, now=utcnow(), lease=LEASE)
            return item.id if item else None

    with ThreadPoolExecutor(20) as pool:
        got = list(pool.map(press_next, range(1, 21)))
    assert None not in got
    assert len(set(got)) == 20
    with session_scope() as session:
        assert review.queue_counts(session, now=utcnow())["claimed"] == 20
