"""A supervisor's ruling on the item page, as a browser posts it (no script needed)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from selectolax.lexbor import LexborHTMLParser
from sqlalchemy import select
from sqlmodel import col

from hotline.db import session_scope, utcnow
from hotline.models import AuditEvent, Role, StaffUser
from hotline.web import create_app
from reporting import service as intake
from reporting.models import ReportCategory, ReportSource, Target, TargetStatus
from reporting.schemas import ReportCreate
from tests.conftest import broker_backlog
from tests.fixtures.staff import csrf, enrol, make_user
from triage import assessment
from triage.models import Classification, Media, MediaKind, Sighting
from triage.schemas import AssessmentCreate, ItemAssessment


@pytest.fixture
def supervisor(client: Any) -> Iterator[TestClient]:
    browser = TestClient(create_app(), client=("127.0.0.1", 50001))
    with browser:
        enrol(browser, "sue@ruling.example", Role.supervisor)
        yield browser


def disputed(seed: str, **details: Any) -> tuple[int, int]:
    """A target whose one file an analyst found doubtful (waiting for a supervisor)."""
    if not seed.startswith("details"):
        make_user(f"ana-{seed}@ruling.example", Role.analyst)
    with session_scope() as session:
        _, report = intake.submit_report(
            session,
            ReportCreate(url=f"http://ruling-{seed}.org/a", category=ReportCategory.csam),
            source=ReportSource.api,
            now=utcnow(),
            max_url_length=4096,
        )
        target = session.get(Target, report.target_id)
        assert target is not None
        target.status = TargetStatus.queued
        digest = hashlib.sha256(seed.encode()).hexdigest()
        media = Media(
            sha256=digest,
            sha1=digest[:40],
            md5=digest[:32],
            mime="image/jpeg",
            kind=MediaKind.image,
            size=1000,
        )
        session.add(media)
        session.flush()
        session.add(Sighting(target_id=target.id, media_id=media.id, media_url="http://x.org/1"))
        ana = session.execute(
            select(StaffUser).where(col(StaffUser.email) == f"ana-{seed}@ruling.example")
        ).scalar_one()
        target.claimed_by, target.claim_expires_at = ana.id, utcnow().replace(year=2100)
        item = ItemAssessment(media_id=int(media.id or 0), classification=Classification.doubtful)
        assessment.assess(
            session,
            int(target.id or 0),
            AssessmentCreate(items=[item.model_copy(update=details)]),
            user=ana,
            now=utcnow(),
            policy="none",
        )
        assert target.status == TargetStatus.disputed
        return int(target.id or 0), int(media.id or 0)


def test_a_doubtful_file_is_ruled_illegal_from_the_page(supervisor: TestClient) -> None:
    target_id, media_id = disputed("illegal")
    page = supervisor.get(f"/staff/targets/{target_id}").text
    tree = LexborHTMLParser(page)
    assert tree.css_first(f'#ruling-form input[name="c-{media_id}"]') is not None
    # No outcome is chosen for the supervisor.
    assert tree.css_first("#ruling-outcome option[selected]") is None

    unchosen = supervisor.post(
        f"/staff/targets/{target_id}/ruling",
        data={"csrf_token": csrf(page), f"c-{media_id}": "doubtful"},
        follow_redirects=False,
    )
    assert unchosen.status_code == 422

    done = supervisor.post(
        f"/staff/targets/{target_id}/ruling",
        data={
            "csrf_token": csrf(page),
            "outcome": "illegal",
            f"c-{media_id}": "baseline",
            f"age-{media_id}": "pubescent",
            "note": "clear",
        },
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    with session_scope() as session:
        target = session.get(Target, target_id)
        assert target is not None
        assert target.status == TargetStatus.confirmed
        verdict = assessment.current_assessments(session, target_id)[media_id]
        assert (verdict.classification, verdict.age_group) == ("baseline", "pubescent")


def test_a_ruling_keeps_the_verdicts_the_supervisor_left_alone(supervisor: TestClient) -> None:
    target_id, media_id = disputed("kept", note="blurry, adult?")
    page = supervisor.get(f"/staff/targets/{target_id}").text
    # The page offers the current verdict as it is; posting it back changes nothing.
    assert 'value="doubtful" data-class="doubtful" data-illegal="false" checked' in page
    with session_scope() as session:
        before = assessment.current_assessments(session, target_id)[media_id].id
    done = supervisor.post(
        f"/staff/targets/{target_id}/ruling",
        data={"csrf_token": csrf(page), "outcome": "not_illegal", f"c-{media_id}": "doubtful"},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    with session_scope() as session:
        rows = assessment.current_assessments(session, target_id)
        # The not-illegal ruling stands for the doubtful file (a supervisor's verdict).
        assert rows[media_id].classification == "not_illegal"
        assert rows[media_id].id != before


def test_the_form_shows_the_details_of_the_current_verdict(supervisor: TestClient) -> None:
    # Saved again unchanged, a form that showed defaults would wipe them.
    make_user("ana-details@ruling.example", Role.analyst)
    make_user("olek-details@ruling.example", Role.analyst)
    target_id, media_id = disputed_after_disagreement(
        "details", virtual=True, age_group="infant", payment_method="crypto"
    )
    page = supervisor.get(f"/staff/targets/{target_id}").text
    form = LexborHTMLParser(page).css_first("#ruling-form")
    assert form is not None
    assert "checked" in form.css_first(f'input[name="virtual-{media_id}"]').attributes
    assert "checked" not in form.css_first(f'input[name="ugc-{media_id}"]').attributes
    selected = form.css_first(f'select[name="age-{media_id}"] option[selected]')
    assert selected is not None
    assert selected.attributes["value"] == "infant"
    assert form.css_first(f'input[name="payment-{media_id}"]').attributes["value"] == "crypto"


def disputed_after_disagreement(seed: str, **details: Any) -> tuple[int, int]:
    """A target an analyst confirmed (with these details) and a second analyst disputed."""
    target_id, media_id = disputed(seed)
    with session_scope() as session:
        users = {
            u.email: u
            for u in session.execute(
                select(StaffUser).where(col(StaffUser.email).like(f"%-{seed}@ruling.example"))
            ).scalars()
        }
        ana, olek = users[f"ana-{seed}@ruling.example"], users[f"olek-{seed}@ruling.example"]
        target = session.get(Target, target_id)
        assert target is not None
        # Back to the queue for a fresh verdict, as a supervisor's return would do.
        target.status, target.claimed_by = TargetStatus.queued, ana.id
        target.claim_expires_at = utcnow().replace(year=2100)
        session.flush()
        item = ItemAssessment(media_id=media_id, classification=Classification.baseline, **details)
        assessment.assess(
            session,
            target_id,
            AssessmentCreate(items=[item]),
            user=ana,
            now=utcnow(),
            policy="always",
        )
        assessment.give_second_opinion(
            session, target_id, agrees=False, note="adult", user=olek, now=utcnow()
        )
        assert target.status == TargetStatus.disputed
    return target_id, media_id


def test_a_bad_query_on_a_staff_page_gets_a_page_not_json(supervisor: TestClient) -> None:
    answer = supervisor.get("/staff/queue?status=bogus")
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("text/html")
    assert 'data-code="validation_error"' in answer.text


def test_the_item_page_shows_a_flagged_site_and_its_note(supervisor: TestClient) -> None:
    from triage.sites import flag_site

    target_id, _ = disputed("flagged-site")
    page = LexborHTMLParser(supervisor.get(f"/staff/targets/{target_id}").text)
    assert page.css_first(".site-flag") is None
    with session_scope() as session:
        flag_site(
            session,
            "ruling-flagged-site.org",
            dedicated=True,
            note="<b>mirrors</b> of a known forum",
            now=utcnow(),
        )
    page = LexborHTMLParser(supervisor.get(f"/staff/targets/{target_id}").text)
    flag, note = page.css_first(".site-flag"), page.css_first(".site-note")
    assert flag is not None
    assert "Dedicated site" in flag.text()
    assert note is not None
    assert note.text().strip() == "Note on this site: <b>mirrors</b> of a known forum"  # as text


def test_priority_reasons_are_shown_in_the_page_language(supervisor: TestClient) -> None:
    import json

    target_id, _ = disputed("reasons")
    with session_scope() as session:
        target = session.get(Target, target_id)
        assert target is not None
        target.priority_reasons = json.dumps(
            [
                "exact match to known list: icse, projectvic",
                "site has 3 confirmed target(s)",
                "1 media item(s) seen before on another target",
                "some reason from a newer version",
            ]
        )
        target.report_count = 2

    def reasons(language: str) -> list[str]:
        page = LexborHTMLParser(supervisor.get(f"/staff/targets/{target_id}?lang={language}").text)
        return [tag.text() for tag in page.css("dd .tag")]

    assert reasons("en") == [
        "exact match to known list: icse, projectvic",
        "site has 3 confirmed targets",
        "1 media item seen before on another target",
        "some reason from a newer version",
        "reported 2 times",
    ]
    assert reasons("uk") == [
        "точний збіг зі списком відомих хешів: icse, projectvic",
        "на сайті 3 підтверджені адреси",
        "1 медіафайл уже бачили за іншою адресою",
        "some reason from a newer version",  # unknown: as stored
        "повідомлено 2 рази",
    ]


def test_an_analyst_tries_an_unreachable_item_again(
    client: Any, backend_env: dict[str, str]
) -> None:
    with session_scope() as session:
        _, report = intake.submit_report(
            session,
            ReportCreate(url="http://down-for-now.org/a.jpg", category=ReportCategory.csam),
            source=ReportSource.api,
            now=utcnow(),
            max_url_length=4096,
        )
        target = session.get(Target, report.target_id)
        assert target is not None
        target.status, target.status_reason, target.attempts = (
            TargetStatus.unreachable,
            "timeout",
            3,
        )
        target_id = int(report.target_id)
    analyst = TestClient(create_app(), client=("127.0.0.1", 50002))
    with analyst:
        enrol(analyst, "ana@retry.example", Role.analyst)
        page = analyst.get(f"/staff/targets/{target_id}").text
        tree = LexborHTMLParser(page)
        reason = tree.css_first("#unreachable-reason")
        assert reason is not None
        assert reason.text() == "timeout"
        assert "3 attempts" in page
        assert tree.css_first("#retry-form") is not None

        backlog = broker_backlog(backend_env)
        done = analyst.post(
            f"/staff/targets/{target_id}/retry",
            data={"csrf_token": csrf(page)},
            follow_redirects=False,
        )
        assert done.status_code == 303, done.text
        with session_scope() as session:
            target = session.get(Target, target_id)
            assert target is not None
            assert (target.status, target.attempts) == (TargetStatus.pending, 0)
            event = session.execute(
                select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(1)
            ).scalar_one()
        assert (event.action, event.actor, event.object_id) == (
            "retried",
            "ana@retry.example",
            str(target_id),
        )
        assert broker_backlog(backend_env) == backlog + 1  # handed to the workers

        # No longer unreachable: no form, and a second post is refused with a reason.
        page = analyst.get(f"/staff/targets/{target_id}").text
        assert LexborHTMLParser(page).css_first("#retry-form") is None
        again = analyst.post(
            f"/staff/targets/{target_id}/retry",
            data={"csrf_token": csrf(page)},
            follow_redirects=False,
        )
        assert again.status_code == 409
        assert "Only an unreachable item can be tried again." in again.text
        assert broker_backlog(backend_env) == backlog + 1

    # Admins see items but do not assess them: no form, and a post is refused.
    with session_scope() as session:
        target = session.get(Target, target_id)
        assert target is not None
        target.status = TargetStatus.unreachable
    admin = TestClient(create_app(), client=("127.0.0.1", 50003))
    with admin:
        enrol(admin, "adam@retry.example", Role.admin)
        page = admin.get(f"/staff/targets/{target_id}").text
        assert LexborHTMLParser(page).css_first("#unreachable-reason") is not None
        assert LexborHTMLParser(page).css_first("#retry-form") is None
        refused = admin.post(
            f"/staff/targets/{target_id}/retry",
            data={"csrf_token": csrf(admin.get("/staff/users").text)},
            follow_redirects=False,
        )
        assert refused.status_code == 403
