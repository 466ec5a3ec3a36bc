"""What staff see after a confirmation: on an item's forwardings page (and its JSON) the
removal, the re-checks and the notices that named it; on the statistics page (and its
JSON) reports, confirmation rate, hosting countries and removal within three days."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from typing import Any

from selectolax.lexbor import LexborHTMLParser
from sqlmodel import Session

from hotline.auth import configured_staff_cipher, create_user, issue_token
from hotline.db import session_scope, utcnow
from hotline.models import Role
from partners import notices, rechecks, registry, routing
from partners.models import RecheckResult
from reporting.models import Report, ReportCategory, ReportSource, Target, TargetStatus
from tests.partners.conftest import confirmed_target
from tests.partners.test_pages import browsers  # noqa: F401
from triage.models import Decision, DecisionStage, Outcome

HOME = routing.RoutingPolicy(home_country="UA")
POLICY = rechecks.RecheckPolicy()
HOUR = dt.timedelta(hours=1)
_receipts = itertools.count(1)


def add_partner(session: Session, **spec: Any) -> None:
    registry.add_partner(
        session, registry.parse_spec(spec), now=utcnow(), cipher=registry.partner_cipher()
    )


def confirmed(
    session: Session, country: str | None, at: dt.datetime, *, asn: int | None = None
) -> Target:
    """A target confirmed at ``at`` by an analyst's illegal verdict."""
    target = confirmed_target(session, country=country, asn=asn)
    target.status_changed_at = at
    target.first_reported_at = at
    session.add(
        Decision(
            target_id=int(target.id or 0),
            stage=DecisionStage.first,
            outcome=Outcome.illegal,
            created_at=at,
        )
    )
    session.flush()
    return target


def report(session: Session, target: Target, source: ReportSource, at: dt.datetime) -> None:
    receipt = hashlib.sha256(f"receipt-{next(_receipts)}".encode()).hexdigest()
    session.add(
        Report(
            receipt_hash=receipt,
            target_id=int(target.id or 0),
            category=ReportCategory.csam,
            source=source,
            created_at=at,
        )
    )
    session.flush()


def check(session: Session, at: dt.datetime, observation: rechecks.Observation) -> None:
    """Beat's sweep at ``at`` and a worker recording what it found."""
    rechecks.seed(session, now=at, policy=POLICY)
    for recheck_id in rechecks.claim_due(session, now=at, policy=POLICY):
        rechecks.record(session, recheck_id, observation, now=at, policy=POLICY)


def api_headers(email: str, role: Role) -> dict[str, str]:
    with session_scope() as session:
        user, _ = create_user(
            session,
            email,
            role,
            "correct horse battery",
            now=utcnow(),
            cipher=configured_staff_cipher(),
        )
        token = issue_token(session, user, now=utcnow())
    return {"Authorization": f"Bearer {token}"}


def test_the_forwardings_page_shows_removal_rechecks_and_notices(
    browsers: Any,  # noqa: F811
    client: Any,
) -> None:
    start = utcnow() - dt.timedelta(days=2)
    with session_scope() as session:
        add_partner(
            session,
            name="police",
            kind="law_enforcement",
            countries=["UA"],
            webhook_url="https://police.example/hook",
        )
        add_partner(
            session,
            name="Example Hosting abuse desk",
            kind="hosting_provider",
            asns=[64500],
            email="abuse@hosting.example",
        )
        target = confirmed(session, "UA", start, asn=64500)
        target_id = int(target.id or 0)
        routing.route_target(session, target_id, now=start, policy=HOME)
        # The notice goes out once its window closed (the hosting unchanged).
        notices.sweep(
            session,
            now=start + dt.timedelta(minutes=20),
            policy=notices.NoticePolicy(window=dt.timedelta(minutes=15)),
            lookup=lambda host: None,
            routing_policy=HOME,
        )
        check(session, start + HOUR, rechecks.Observation(RecheckResult.online, 200, 1))
        check(
            session,
            start + 6 * HOUR,
            rechecks.Observation(RecheckResult.removed, 404, 0, "http_error_404"),
        )

    analyst = browsers(Role.analyst)
    page = analyst.get(f"/staff/targets/{target_id}/forwardings")
    assert page.status_code == 200
    tree = LexborHTMLParser(page.text)
    removal = tree.css_first("#removal")
    assert removal is not None
    assert removal.attributes["data-removed"] == "yes"
    assert (start + 6 * HOUR).strftime("%Y-%m-%d %H:%M") in removal.text()
    time_to_removal = tree.css_first("#time-to-removal")
    assert time_to_removal is not None
    assert time_to_removal.text().strip() == "6 h 0 min"
    checks = [row.attributes["data-result"] for row in tree.css("#rechecks tbody tr")]
    assert checks == ["due", "removed", "online"]  # newest first: the next one is due
    removed_row = tree.css("#rechecks tbody tr")[1].text()
    assert "404" in removed_row
    assert "http_error_404" in removed_row
    (notice,) = tree.css("#notices tbody tr")
    assert "Example Hosting abuse desk" in notice.text()
    assert "e-mail" in notice.text()
    # The same in JSON, for the staff API.
    headers = api_headers("ana@watch.example", Role.analyst)
    watch = client.get(f"/api/v1/targets/{target_id}/removal", headers=headers).json()
    assert watch["status"] == "removed"
    assert watch["removal"]["time_to_removal_seconds"] == 6 * 3600
    assert watch["removal"]["checks"] == 2
    assert [(c["result"], c["status_code"]) for c in watch["rechecks"]] == [
        (None, None),
        ("removed", 404),
        ("online", 200),
    ]
    assert [(n["partner"], n["channel"]) for n in watch["notices"]] == [
        ("Example Hosting abuse desk", "email")
    ]
    missing = client.get("/api/v1/targets/999999/removal", headers=headers)
    assert missing.status_code == 404


def test_an_item_never_checked_says_so(browsers: Any) -> None:  # noqa: F811
    with session_scope() as session:
        target_id = int(confirmed(session, "PL", utcnow()).id or 0)
    page = browsers(Role.analyst).get(f"/staff/targets/{target_id}/forwardings")
    tree = LexborHTMLParser(page.text)
    removal = tree.css_first("#removal")
    assert removal is not None
    assert removal.attributes["data-removed"] == "no"
    assert tree.css_first("#no-rechecks") is not None
    assert tree.css_first("#no-notices") is not None


def test_the_statistics_page_counts_reports_confirmations_countries_and_removal(
    browsers: Any,  # noqa: F811
    client: Any,
) -> None:
    now = utcnow()
    with session_scope() as session:
        fast = confirmed(session, "UA", now - dt.timedelta(days=10))
        rechecks.mark_removed(
            session, int(fast.id or 0), now - dt.timedelta(days=10) + 6 * HOUR, "partner:1"
        )
        slow = confirmed(session, "PL", now - dt.timedelta(days=9))
        rechecks.mark_removed(session, int(slow.id or 0), now - dt.timedelta(days=5), "recheck")
        online = confirmed(session, "PL", now - dt.timedelta(days=8))
        rejected = confirmed_target(session, country="DE", status=TargetStatus.not_illegal)
        waiting = confirmed_target(session, country="DE", status=TargetStatus.queued)
        old = confirmed_target(session, country="NL", status=TargetStatus.not_illegal)
        old.first_reported_at = now - dt.timedelta(days=400)
        session.add(old)
        for target, source in (
            (fast, ReportSource.public),
            (fast, ReportSource.public),
            (slow, ReportSource.partner),
            (online, ReportSource.api),
            (rejected, ReportSource.public),
            (waiting, ReportSource.public),
        ):
            report(session, target, source, now - dt.timedelta(days=7))
        report(session, old, ReportSource.public, now - dt.timedelta(days=400))

    supervisor = browsers(Role.supervisor)
    start = supervisor.get("/staff/queue")
    assert 'href="/staff/statistics"' in start.text
    page = supervisor.get("/staff/statistics")
    assert page.status_code == 200
    tree = LexborHTMLParser(page.text)

    def shown(selector: str) -> str:
        node = tree.css_first(selector)
        assert node is not None, selector
        return node.text().strip()

    assert shown("#reports-received") == "7"
    assert (shown("#reports-public"), shown("#reports-api"), shown("#reports-partner")) == (
        "5",
        "1",
        "1",
    )
    assert shown("#decided") == "5"
    assert shown("#confirmed") == "3"
    assert shown("#confirmation-rate") == "60 %"
    assert shown("#removal-confirmed") == "3"
    assert shown("#removal-removed") == "2"
    assert shown("#removed-within") == "1 (33 %)"
    countries = [
        (row.css("td")[0].text(), row.css("td")[1].text())
        for row in tree.css("#hosting-countries tbody tr")
    ]
    assert countries == [("PL", "2"), ("UA", "1")]

    # The last 365 days leave out the report and the item of 400 days ago.
    recent = LexborHTMLParser(supervisor.get("/staff/statistics?days=365").text)
    rate = recent.css_first("#confirmation-rate")
    assert rate is not None
    assert rate.text().strip() == "75 %"

    headers = api_headers("sue@watch.example", Role.supervisor)
    figures = client.get("/api/v1/statistics", headers=headers).json()
    assert figures["reports"] == 7
    assert figures["confirmation_rate"] == 0.6
    assert figures["removal"]["share_removed_within"] == 1 / 3
    durations = sorted([6 * 3600, 4 * 86400])
    assert figures["removal"]["median_time_to_removal_seconds"] in durations
    assert shown("#median-time-to-removal") in ("6 h 0 min", "4 d 0 h")
    assert client.get("/api/v1/statistics?days=365", headers=headers).json()["decided"] == 4
