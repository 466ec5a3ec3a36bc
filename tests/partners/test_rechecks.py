"""Re-checks of confirmed targets: a page with a synthetic picture on 127.0.0.1 is
reported, processed by the real pipeline and confirmed by an analyst; then re-checked
on its schedule (time injected, never slept) while the server serves the picture, stops
serving it, serves a re-encoded copy, or stalls."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import Session, col

from hotline import queue
from hotline.auth import configured_staff_cipher, create_user
from hotline.db import session_scope, utcnow
from hotline.models import AuditEvent, Role
from partners import rechecks
from partners.models import (
    Delivery,
    Forwarding,
    ForwardingKind,
    Partner,
    PartnerKind,
    Recheck,
    RecheckResult,
)
from partners.rechecks import RecheckPolicy
from partners.routing import RoutingPolicy, route_target
from reporting import service as intake
from reporting.models import ReportCategory, ReportSource, Target, TargetStatus
from reporting.schemas import ReportCreate
from tests.conftest import wait_for
from tests.fixtures import images
from tests.fixtures.pipeline import process
from tests.fixtures.servers import LocalHTTPServer, drip
from triage import assessment, service
from triage.fetcher import Fetcher, FetchPolicy
from triage.models import Classification, Decision, DecisionStage, Outcome
from triage.schemas import AssessmentCreate, ItemAssessment

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
FETCHER = Fetcher(
    FetchPolicy(
        allow_networks=LOOPBACK,
        ports=frozenset(range(1024, 65536)),
        connect_timeout=1,
        read_timeout=0.5,
        total_timeout=1.5,
    )
)
POLICY = RecheckPolicy(max_age=dt.timedelta(days=10), after_removal=dt.timedelta(days=3))
HOUR = dt.timedelta(hours=1)


def units(session: Session) -> Callable[[], AbstractContextManager[Session]]:
    """The test's own session as every unit of work (rolled back after the test)."""
    return lambda: nullcontext(session)


def publish(server: LocalHTTPServer, picture: bytes, name: str = "gallery") -> str:
    """A page on the server showing one picture at /<name>/p.jpg; returns the page URL."""
    server.route(f"/{name}/p.jpg", body=picture, headers={"Content-Type": "image/jpeg"})
    html = f'<!doctype html><html><body><img src="/{name}/p.jpg"></body></html>'.encode()
    return server.route(f"/{name}.html", body=html, headers={"Content-Type": "text/html"})


def confirm(session: Session, url: str) -> Target:
    """Report the URL, run the triage pipeline on it, and have an analyst confirm it."""
    _, report = intake.submit_report(
        session,
        ReportCreate(url=url, category=ReportCategory.csam),
        source=ReportSource.api,
        now=utcnow(),
        max_url_length=4096,
        allow_networks=LOOPBACK,
    )
    outcome = process(report.target_id, units=units(session), fetcher=FETCHER)
    assert outcome.status == TargetStatus.queued
    analyst, _ = create_user(
        session,
        f"analyst-{report.target_id}@recheck.example",
        Role.analyst,
        "correct horse battery",
        now=utcnow(),
        cipher=configured_staff_cipher(),
    )
    target = session.get(Target, report.target_id)
    assert target is not None
    target.claimed_by = analyst.id
    target.claim_expires_at = utcnow() + dt.timedelta(minutes=10)
    session.flush()
    media = assessment.target_media(session, report.target_id)
    assert len(media) == 1
    assessment.assess(
        session,
        report.target_id,
        AssessmentCreate(
            items=[
                ItemAssessment(media_id=m, classification=Classification.baseline) for m in media
            ]
        ),
        user=analyst,
        now=utcnow(),
        policy="none",
    )
    session.refresh(target)
    assert target.status == TargetStatus.confirmed
    return target


def confirmation_time(session: Session, target: Target) -> dt.datetime:
    decision: Decision = session.execute(
        select(Decision).where(
            col(Decision.target_id) == target.id, col(Decision.outcome) == Outcome.illegal
        )
    ).scalar_one()
    return decision.created_at


def check_at(session: Session, target: Target, at: dt.datetime) -> rechecks.Recorded:
    """Beat's sweep at ``at`` hands over the target's due re-check; a worker runs it."""
    claimed = rechecks.sweep(session, now=at, policy=POLICY)
    mine = [
        r
        for r in claimed
        if (row := session.get(Recheck, r)) is not None and row.target_id == target.id
    ]
    assert len(mine) == 1, f"no re-check of the target due at {at}"
    return rechecks.run_recheck(
        mine[0],
        units=units(session),
        fetcher=FETCHER,
        limits=service.Limits(),
        policy=POLICY,
        now=lambda: at,
    )


def decided(session: Session, target: Target) -> dt.datetime:
    """The illegal decision that confirmed a hand-made target (as the service records it)."""
    session.add(
        Decision(
            target_id=int(target.id or 0),
            stage=DecisionStage.first,
            outcome=Outcome.illegal,
            created_at=target.status_changed_at,
        )
    )
    session.flush()
    return target.status_changed_at


def status(target: Target) -> TargetStatus:
    """The target's status (a function, so checks after a change are not narrowed away)."""
    return target.status


def buffered_tasks(session: Session, name: str) -> list[dict[str, object]]:
    return [m.kwargs for m in queue.buffered(session) if m.name == name]


# -- the acceptance: online, removed, back online -------------------------------------------


def test_a_picture_taken_down_sets_removed_at_and_its_return_reopens_the_target(
    session: Session, http_server: LocalHTTPServer
) -> None:
    pictures = images.variants(8101)
    url = publish(http_server, pictures["original"])
    target = confirm(session, url)
    fallback = Partner(
        name="INTERPOL (test)", kind=PartnerKind.fallback, webhook_url="http://127.0.0.1:9/hook"
    )
    session.add(fallback)
    session.flush()
    assert route_target(session, int(target.id or 0), now=utcnow(), policy=RoutingPolicy())
    session.flush()
    session.refresh(target)
    assert target.status == TargetStatus.forwarded
    confirmed = confirmation_time(session, target)

    # Nothing is due before the first hour.
    assert (
        rechecks.sweep(session, now=confirmed + 30 * dt.timedelta(minutes=1), policy=POLICY) == []
    )

    first = check_at(session, target, confirmed + HOUR)
    assert first.result is RecheckResult.online
    assert first.next_due == confirmed + 6 * HOUR
    session.refresh(target)
    assert target.removed_at is None

    # The picture is gone (404), the page is still there.
    del http_server.routes["/gallery/p.jpg"]
    gone_at = confirmed + 6 * HOUR + dt.timedelta(minutes=3)
    second = check_at(session, target, gone_at)
    assert second.result is RecheckResult.removed
    assert second.removed
    session.refresh(target)
    assert status(target) == TargetStatus.removed
    assert target.removed_at == gone_at
    assert rechecks.time_to_removal(session, target) == gone_at - confirmed
    view = rechecks.removal(session, target).as_json()
    assert view["time_to_removal_seconds"] == int((gone_at - confirmed).total_seconds())
    assert view["last_result"] == "removed"
    assert view["checks"] == 2
    # Still watched after removal, so that a return is noticed.
    assert second.next_due == confirmed + 24 * HOUR

    stats = rechecks.removal_statistics(session, confirmed_from=confirmed - HOUR)
    assert (stats.confirmed, stats.removed, stats.removed_within) == (1, 1, 1)
    assert stats.share_removed_within == 1.0

    # A later check that finds it gone again changes nothing: the first removal counts.
    third = check_at(session, target, confirmed + 24 * HOUR)
    assert third.result is RecheckResult.removed
    assert not third.removed
    session.refresh(target)
    assert target.removed_at == gone_at

    # It comes back, re-encoded at another quality: the same picture, online again.
    http_server.route(
        "/gallery/p.jpg", body=pictures["reencoded"], headers={"Content-Type": "image/jpeg"}
    )
    back_at = confirmed + 72 * HOUR
    fourth = check_at(session, target, back_at)
    assert fourth.result is RecheckResult.online
    assert fourth.reopened
    session.refresh(target)
    assert target.status == TargetStatus.forwarded
    assert target.removed_at is None
    assert target.reopened_at == back_at
    assert buffered_tasks(session, rechecks.REOPENED_TASK) == [{"target_id": target.id}]

    # The partner that received it hears of the return (a signed delivery in the outbox).
    told = rechecks.notify_reopened(session, int(target.id or 0), now=back_at)
    reopened = session.execute(
        select(Forwarding).where(
            col(Forwarding.target_id) == target.id, col(Forwarding.kind) == ForwardingKind.reopened
        )
    ).scalar_one()
    assert told == [reopened.id]
    assert reopened.partner_id == fallback.id
    delivery = session.execute(
        select(Delivery).where(col(Delivery.forwarding_id) == reopened.id)
    ).scalar_one()
    assert delivery.event == "forwarding.reopened"

    actions = session.execute(
        select(col(AuditEvent.action)).where(
            col(AuditEvent.object_type) == "target", col(AuditEvent.object_id) == str(target.id)
        )
    ).scalars()
    assert {"target_removed", "target_reopened"} <= set(actions)
    results = session.execute(
        select(col(Recheck.result), col(Recheck.status_code), col(Recheck.media_found))
        .where(col(Recheck.target_id) == target.id, col(Recheck.done_at).is_not(None))
        .order_by(col(Recheck.done_at))
    ).all()
    assert results == [
        (RecheckResult.online, 200, 1),
        (RecheckResult.removed, 200, 0),
        (RecheckResult.removed, 200, 0),
        (RecheckResult.online, 200, 1),
    ]


def test_a_page_answering_404_or_410_is_removed(
    session: Session, http_server: LocalHTTPServer
) -> None:
    for status, name in ((404, "a"), (410, "b")):
        url = publish(http_server, images.variants(8110 + status)["original"], name)
        target = confirm(session, url)
        confirmed = confirmation_time(session, target)
        http_server.route(f"/{name}.html", status=status, body=b"gone")
        recorded = check_at(session, target, confirmed + HOUR)
        assert recorded.result is RecheckResult.removed
        row = session.execute(
            select(Recheck).where(
                col(Recheck.target_id) == target.id, col(Recheck.done_at).is_not(None)
            )
        ).scalar_one()
        assert row.status_code == status
        session.refresh(target)
        assert target.removed_at == confirmed + HOUR


def test_a_page_that_shows_other_pictures_only_is_removed(
    session: Session, http_server: LocalHTTPServer
) -> None:
    url = publish(http_server, images.variants(8120)["original"], "swap")
    target = confirm(session, url)
    confirmed = confirmation_time(session, target)
    http_server.route(
        "/swap/p.jpg",
        body=images.variants(8121)["original"],
        headers={"Content-Type": "image/jpeg"},
    )
    assert check_at(session, target, confirmed + HOUR).result is RecheckResult.removed


def test_a_confirmed_animation_is_still_there_while_one_of_its_frames_is_shown(
    session: Session, http_server: LocalHTTPServer
) -> None:
    """The site swaps the confirmed GIF's harmless first frame for another, or shows one
    of its other pictures alone: still there. A GIF of other pictures only: removed."""
    size = (200, 150)
    title, known, more, fresh, other = images.frames(8130, size, 5)
    confirmed_gif = images.encode(title, "GIF", save_all=True, append_images=[known, more])
    url = publish(http_server, confirmed_gif, "anim")
    target = confirm(session, url)
    confirmed = confirmation_time(session, target)

    def serve(body: bytes) -> None:
        http_server.route("/anim/p.jpg", body=body, headers={"Content-Type": "image/gif"})

    serve(images.encode(fresh, "GIF", save_all=True, append_images=[other, known]))
    assert check_at(session, target, confirmed + HOUR).result is RecheckResult.online
    serve(images.encode(more, "PNG"))
    assert check_at(session, target, confirmed + 6 * HOUR).result is RecheckResult.online
    serve(images.encode(fresh, "GIF", save_all=True, append_images=[other]))
    assert check_at(session, target, confirmed + 24 * HOUR).result is RecheckResult.removed


def test_a_flat_placeholder_is_not_taken_for_a_flat_picture_confirmed_before(
    session: Session, http_server: LocalHTTPServer
) -> None:
    # Flat pictures' pHashes lie within the radius of each other (all flat ones share
    # one): a grey square confirmed with the page does not make a red banner put in the
    # place of the picture "the same media".
    flat = images.featureless()
    url = publish(http_server, flat["grey"], "flat")
    target = confirm(session, url)
    confirmed = confirmation_time(session, target)
    http_server.route("/flat/p.jpg", body=flat["banner"], headers={"Content-Type": "image/png"})
    assert check_at(session, target, confirmed + HOUR).result is RecheckResult.removed


def test_a_timeout_is_unreachable_not_removed(
    session: Session, http_server: LocalHTTPServer
) -> None:
    url = publish(http_server, images.variants(8130)["original"], "slow")
    target = confirm(session, url)
    confirmed = confirmation_time(session, target)
    http_server.add("/slow.html", drip(2))
    recorded = check_at(session, target, confirmed + HOUR)
    assert recorded.result is RecheckResult.unreachable
    assert recorded.next_due == confirmed + 6 * HOUR
    session.refresh(target)
    assert target.removed_at is None
    assert target.status == TargetStatus.confirmed
    row = session.execute(
        select(Recheck).where(
            col(Recheck.target_id) == target.id, col(Recheck.done_at).is_not(None)
        )
    ).scalar_one()
    assert row.error == "timeout"

    # The picture itself stalls while the page answers: still not a removal.
    http_server.route(
        "/slow.html",
        body=b'<html><body><img src="/slow/p.jpg"></body></html>',
        headers={"Content-Type": "text/html"},
    )
    http_server.add("/slow/p.jpg", drip(2))
    assert check_at(session, target, confirmed + 6 * HOUR).result is RecheckResult.unreachable
    session.refresh(target)
    assert target.removed_at is None


# -- the schedule ---------------------------------------------------------------------------


def test_the_schedule_is_1h_6h_24h_72h_then_daily_until_the_maximum_age() -> None:
    start = dt.datetime(2025, 3, 1, 12, tzinfo=dt.UTC)
    points = list(rechecks.schedule_points(start, dt.timedelta(days=7)))
    assert [p - start for p in points] == [
        dt.timedelta(hours=h) for h in (1, 6, 24, 72, 96, 120, 144, 168)
    ]
    walk = []
    after = start
    while (due := rechecks.next_due(start, after, max_age=dt.timedelta(days=7))) is not None:
        walk.append(due)
        after = due
    assert walk == points
    # A check made late skips what it missed rather than making it up.
    late = start + dt.timedelta(hours=30)
    assert rechecks.next_due(start, late, max_age=dt.timedelta(days=7)) == start + 72 * HOUR

    # After a removal (at +6 h) the watch goes on for ``after_removal`` (3 days: until
    # +78 h), then ends.
    def after_removal(after: dt.datetime) -> dt.datetime | None:
        return rechecks.next_due(
            start,
            after,
            max_age=dt.timedelta(days=7),
            removed_at=start + 6 * HOUR,
            after_removal=dt.timedelta(days=3),
        )

    assert after_removal(start + 6 * HOUR) == start + 24 * HOUR
    assert after_removal(start + 24 * HOUR) == start + 72 * HOUR
    assert after_removal(start + 72 * HOUR) is None
    assert rechecks.next_due(start, start + 7 * 24 * HOUR, max_age=dt.timedelta(days=7)) is None


def test_scheduling_is_lazy_and_idempotent_and_ends_at_the_maximum_age(
    session: Session,
) -> None:
    from tests.partners.conftest import confirmed_target

    target = confirmed_target(session, country="UA")
    start = target.status_changed_at
    policy = RecheckPolicy(max_age=dt.timedelta(days=5), batch_size=10)
    assert rechecks.seed(session, now=start, policy=policy) == 1
    assert rechecks.seed(session, now=start, policy=policy) == 0
    again = rechecks.schedule(session, target, now=start, policy=policy)
    rows = session.execute(select(Recheck).where(col(Recheck.target_id) == target.id)).all()
    assert len(rows) == 1
    assert again is not None
    assert again.due_at == start + HOUR

    # Walk the whole watch: every check online, one open re-check at a time.
    online = rechecks.Observation(RecheckResult.online, 200, 1)
    dues = []
    at = start
    for _ in range(20):
        open_rows = session.execute(
            select(Recheck).where(
                col(Recheck.target_id) == target.id, col(Recheck.done_at).is_(None)
            )
        ).all()
        if not open_rows:
            break
        assert len(open_rows) == 1
        [(row,)] = open_rows
        dues.append(row.due_at - start)
        at = row.due_at
        assert rechecks.claim_due(session, now=at - dt.timedelta(seconds=1), policy=policy) == []
        assert rechecks.claim_due(session, now=at, policy=policy) == [row.id]
        # Taken: a second sweep during the lease does not take it again.
        assert rechecks.claim_due(session, now=at + dt.timedelta(minutes=1), policy=policy) == []
        rechecks.record(session, int(row.id or 0), online, now=at, policy=policy)
    assert dues == [dt.timedelta(hours=h) for h in (1, 6, 24, 72, 96, 120)]
    # A duplicate message for a recorded check changes nothing.
    last = (
        session.execute(
            select(Recheck)
            .where(col(Recheck.target_id) == target.id)
            .order_by(col(Recheck.id).desc())
        )
        .scalars()
        .first()
    )
    assert last is not None
    assert rechecks.record(session, int(last.id or 0), online, now=at, policy=policy).result is None


def test_a_lost_check_is_taken_again_after_its_lease(session: Session) -> None:
    from tests.partners.conftest import confirmed_target

    target = confirmed_target(session, country="UA")
    start = target.status_changed_at
    policy = RecheckPolicy(lease=dt.timedelta(minutes=10))
    rechecks.seed(session, now=start, policy=policy)
    first = rechecks.sweep(session, now=start + HOUR, policy=policy)
    assert len(first) == 1
    assert buffered_tasks(session, rechecks.RECHECK_TASK) == [{"recheck_id": first[0]}]
    assert rechecks.sweep(session, now=start + HOUR + dt.timedelta(minutes=9), policy=policy) == []
    assert (
        rechecks.sweep(session, now=start + HOUR + dt.timedelta(minutes=11), policy=policy) == first
    )


def test_a_partner_reporting_removal_sets_removed_at(session: Session) -> None:
    from tests.partners.conftest import confirmed_target

    target = confirmed_target(session, country="PL")
    reported = decided(session, target) + dt.timedelta(hours=30)
    assert rechecks.mark_removed(session, int(target.id or 0), reported, "partner:7")
    session.refresh(target)
    assert target.status == TargetStatus.removed
    assert target.removed_at == reported
    assert rechecks.time_to_removal(session, target) == dt.timedelta(hours=30)
    # A later report keeps the first removal; an earlier one moves it back.
    assert not rechecks.mark_removed(session, int(target.id or 0), reported + HOUR, "partner:7")
    assert rechecks.mark_removed(session, int(target.id or 0), reported - HOUR, "partner:8")
    session.refresh(target)
    assert target.removed_at == reported - HOUR
    # Still watched: a removed target is seeded and re-checked for its return.
    assert rechecks.seed(session, now=reported, policy=POLICY) == 1


def test_a_target_no_longer_confirmed_is_no_longer_checked(session: Session) -> None:
    from tests.partners.conftest import confirmed_target

    target = confirmed_target(session, country="UA")
    start = target.status_changed_at
    rechecks.seed(session, now=start, policy=POLICY)
    [recheck_id] = rechecks.claim_due(session, now=start + HOUR, policy=POLICY)
    target.status = TargetStatus.not_illegal
    session.flush()
    online = rechecks.Observation(RecheckResult.online, 200, 1)
    recorded = rechecks.record(session, recheck_id, online, now=start + HOUR, policy=POLICY)
    assert recorded.result is None
    assert recorded.next_due is None
    row = session.get(Recheck, recheck_id)
    assert row is not None
    assert row.error == "not_watched"


@pytest.mark.parametrize(
    ("reason", "result"),
    [
        ("http_error_404", RecheckResult.removed),
        ("http_error_410", RecheckResult.removed),
        ("http_error_451", RecheckResult.removed),
        ("http_error_503", RecheckResult.unreachable),
        ("dns_error", RecheckResult.unreachable),
        ("connect_error", RecheckResult.unreachable),
        ("timeout", RecheckResult.unreachable),
    ],
)
def test_what_a_failed_fetch_means(reason: str, result: RecheckResult) -> None:
    watched = rechecks.Watched(1, 1, "http://example.test/", "example.test", ())
    assert rechecks.observe(watched, service.Failure(reason), POLICY).result is result


# -- a real worker -------------------------------------------------------------------------


@pytest.mark.worker
def test_a_worker_runs_the_rechecks_beat_hands_over(
    worker: Any, http_server: LocalHTTPServer
) -> None:
    url = publish(http_server, images.variants(8140)["original"], "live")
    with session_scope() as session:
        target = confirm(session, url)
        target_id = int(target.id or 0)
    # Beat's sweep, an hour and a minute later: the first re-check is due.
    with session_scope() as session:
        claimed = rechecks.sweep(
            session, now=utcnow() + HOUR + dt.timedelta(minutes=1), policy=POLICY
        )
    assert len(claimed) == 1

    def recorded() -> Recheck | None:
        with session_scope() as session:
            return session.execute(
                select(Recheck).where(
                    col(Recheck.target_id) == target_id, col(Recheck.done_at).is_not(None)
                )
            ).scalar_one_or_none()

    done = wait_for(recorded, timeout=30)
    assert done.result is RecheckResult.online
    assert done.media_found == 1
    with session_scope() as session:
        pending = session.execute(
            select(Recheck).where(
                col(Recheck.target_id) == target_id, col(Recheck.done_at).is_(None)
            )
        ).scalar_one()
        assert pending.due_at > done.done_at
