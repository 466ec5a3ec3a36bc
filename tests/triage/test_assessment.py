"""Assessment on the ICCAM scheme, as the service does it on the real database: the
second-opinion policies, disagreements and rulings, earlier verdicts, near-duplicate
suggestions, bulk confirmation, and what a confirmation changes (the own hash list,
the site, the hand-over to partners, the reporter's status)."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select
from sqlmodel import Session, col

from hotline import audit, queue
from hotline.auth import configured_staff_cipher, create_user, issue_token
from hotline.db import session_scope, utcnow
from hotline.errors import NotFound
from hotline.models import AuditEvent, Role, StaffUser
from reporting import service as intake
from reporting.models import ReportCategory, ReportSource, Target, TargetStatus
from reporting.schemas import PublicStatus, ReportCreate
from tests.fixtures import images
from tests.fixtures.pipeline import process
from triage import assessment, service
from triage.assessment import (
    ClaimLost,
    DetailsForIllegalOnly,
    DuplicateMedia,
    MediaNotCovered,
    MediaNotOnTarget,
    NoIllegalMedia,
    NotAwaitingSecondOpinion,
    NothingAssessed,
    SameAnalyst,
    TargetNotOpen,
    UnknownCountry,
)
from triage.hashing import hash_media
from triage.hashlists import KEY_COLUMNS, create_list
from triage.hosting import get_hosting_lookup
from triage.models import (
    AgeGroup,
    Assessment,
    AssessmentOrigin,
    Classification,
    ContentType,
    Decision,
    DecisionStage,
    HashList,
    HashType,
    KnownEntry,
    MatchKind,
    Media,
    MediaKind,
    MediaMatch,
    Outcome,
    Sighting,
    Site,
)
from triage.neardup import NearDuplicates
from triage.schemas import AssessmentCreate, ItemAssessment, RulingCreate

B, N, D = Classification.baseline, Classification.national, Classification.doubtful
NI, IG = Classification.not_illegal, Classification.ignore


# -- fixtures in code ------------------------------------------------------------------------


def staff(session: Session, email: str, role: Role = Role.analyst) -> StaffUser:
    user, _ = create_user(
        session,
        email,
        role,
        "correct horse battery",
        now=utcnow(),
        cipher=configured_staff_cipher(),
    )
    return user


class Case:
    """A reported target in the queue, with its receipt (as the reporter holds it)."""

    def __init__(self, session: Session, url: str) -> None:
        self.session = session
        self.receipt, report = intake.submit_report(
            session,
            ReportCreate(url=url, category=ReportCategory.csam),
            source=ReportSource.api,
            now=utcnow(),
            max_url_length=4096,
        )
        self.id = report.target_id
        head = audit.head(session)
        self.audit_from = head.id if head else 0
        self.target.status = TargetStatus.queued
        session.flush()

    @property
    def target(self) -> Target:
        found = self.session.get(Target, self.id, populate_existing=True)
        assert found is not None
        return found

    def reporter_sees(self) -> PublicStatus:
        return intake.report_status(self.session, self.receipt)

    def show(self, media: int) -> None:
        self.session.add(
            Sighting(target_id=self.id, media_id=media, media_url=f"http://cdn.example/{media}")
        )
        self.session.flush()

    def claim(self, user: StaffUser, *, minutes: int = 10) -> None:
        target = self.target
        target.claimed_by = user.id
        target.claim_expires_at = utcnow() + dt.timedelta(minutes=minutes)
        self.session.flush()


def media(session: Session, seed: str, *, on: Case | None = None) -> int:
    """A media row with made-up hashes (no content anywhere); seen on ``on``."""
    digest = hashlib.sha256(seed.encode()).digest()
    row = Media(
        sha256=digest.hex(),
        sha1=digest.hex()[:40],
        md5=digest.hex()[:32],
        phash=digest.hex()[:16],
        pdq=hashlib.sha256(digest).hexdigest(),
        pdq_quality=90,
        mime="image/jpeg",
        kind=MediaKind.image,
        size=1000,
        width=100,
        height=100,
    )
    session.add(row)
    session.flush()
    media_id = int(row.id or 0)
    if on is not None:
        on.show(media_id)
    return media_id


def items(*pairs: tuple[int, Classification]) -> AssessmentCreate:
    return AssessmentCreate(items=[ItemAssessment(media_id=m, classification=c) for m, c in pairs])


def assess(
    session: Session,
    case: Case,
    user: StaffUser,
    data: AssessmentCreate,
    policy: assessment.Policy = "national",
) -> Any:
    case.claim(user)
    return assessment.assess(session, case.id, data, user=user, now=utcnow(), policy=policy)


def own_hashes(session: Session) -> set[tuple[str, str, str | None]]:
    entries = session.execute(
        select(KnownEntry)
        .join(HashList, col(HashList.id) == col(KnownEntry.list_id))
        .where(col(HashList.own).is_(True))
    ).scalars()
    return {(t, getattr(e, t), e.category) for e in entries for t in KEY_COLUMNS if getattr(e, t)}


def decisions(session: Session, case: Case) -> list[tuple[str, str, int | None, bool | None]]:
    rows = session.execute(
        select(Decision).where(col(Decision.target_id) == case.id).order_by(col(Decision.id))
    ).scalars()
    return [(str(d.stage), str(d.outcome), d.staff_id, d.agrees) for d in rows]


def events(session: Session, case: Case) -> list[tuple[str, str, dict[str, Any]]]:
    """The audit events on the case's target since it was reported (the log outlives
    tests, and target ids start again after a committing test)."""
    rows = session.execute(
        select(AuditEvent)
        .where(col(AuditEvent.object_type) == "target", col(AuditEvent.object_id) == str(case.id))
        .where(col(AuditEvent.id) > case.audit_from)
        .order_by(col(AuditEvent.id))
    ).scalars()
    return [(e.action, e.actor, json.loads(e.details or "{}")) for e in rows]


def routed(session: Session) -> list[int]:
    return [
        m.kwargs["target_id"] for m in queue.buffered(session) if m.name == assessment.ROUTE_TASK
    ]


# -- the policies ----------------------------------------------------------------------------


def test_without_second_opinion_an_illegal_verdict_confirms_at_once(session: Session) -> None:
    ana = staff(session, "ana@assess.example")
    case = Case(session, "http://pics.example.com/a")
    abuse, icon = media(session, "abuse", on=case), media(session, "icon", on=case)
    assert case.reporter_sees() == PublicStatus.being_assessed

    result = assess(session, case, ana, items((abuse, B), (icon, IG)), policy="none")

    assert (result.status, result.outcome) == ("confirmed", Outcome.illegal)
    target = case.target
    assert (target.status, target.claimed_by, target.claim_expires_at) == (
        TargetStatus.confirmed,
        None,
        None,
    )
    assert case.reporter_sees() == PublicStatus.action_taken
    assert decisions(session, case) == [("first", "illegal", ana.id, None)]
    # Only the illegal item's hashes join the own list, every one of them.
    row = session.get(Media, abuse)
    assert row is not None
    assert own_hashes(session) == {
        (kind, getattr(row, kind), "baseline") for kind in ("sha256", "sha1", "md5", "phash", "pdq")
    }
    site = session.execute(
        select(Site).where(col(Site.registered_domain) == "example.com")
    ).scalar_one()
    assert site.confirmed_count == 1
    assert routed(session) == [case.id]
    [(action, actor, details)] = events(session, case)
    assert (action, actor) == ("assessed", "ana@assess.example")
    assert details == {
        "classifications": {"baseline": 1, "ignore": 1},
        "origin": "analyst",
        "outcome": "illegal",
        "status": "confirmed",
    }
    # Illegal items get ICCAM's "not determined" defaults and their media kind.
    stored = assessment.current_assessments(session, case.id)[abuse]
    assert (stored.age_group, stored.content_type) == (AgeGroup.not_determined, ContentType.image)


def test_a_confirmed_target_moves_its_sites_queued_targets_up_and_a_reversal_back(
    session: Session,
) -> None:
    ana = staff(session, "ana@site.example")
    sue = staff(session, "sue@site.example", Role.supervisor)
    first = Case(session, "http://a.siterank.org/1")
    other = Case(session, "http://b.siterank.org/2")  # the same registered domain
    elsewhere = Case(session, "http://siterank-other.org/3")
    abuse = media(session, "site-rank-abuse", on=first)
    media(session, "site-rank-b", on=other)
    media(session, "site-rank-c", on=elsewhere)

    assess(session, first, ana, items((abuse, B)), policy="none")

    assert (other.target.priority, json.loads(other.target.priority_reasons or "[]")) == (
        301,
        ["site has 1 confirmed target(s)"],
    )
    assert elsewhere.target.priority == 0  # another site: not touched
    assessment.reverse(session, first.id, note="a doctor's photo", user=sue, now=utcnow())
    assert (other.target.priority, json.loads(other.target.priority_reasons or "[]")) == (
        101,
        ["new content"],
    )


def test_a_report_made_after_the_verdict_is_not_told_it(session: Session) -> None:
    ana = staff(session, "ana@oracle.example")
    url = "http://oracle-check.org/a"
    case = Case(session, url)
    assess(session, case, ana, items((media(session, "oracle", on=case), B)), policy="none")
    assert case.reporter_sees() == PublicStatus.action_taken

    # Anyone could otherwise learn whether the hotline has a URL confirmed by reporting it.
    late, _ = intake.submit_report(
        session,
        ReportCreate(url=url, category=ReportCategory.csam),
        source=ReportSource.api,
        now=utcnow(),
        max_url_length=4096,
    )
    assert intake.report_status(session, late) == PublicStatus.being_assessed
    assert case.reporter_sees() == PublicStatus.action_taken


def test_national_policy_asks_a_second_opinion_for_national_law_verdicts_only(
    session: Session,
) -> None:
    ana = staff(session, "ana@assess.example")
    national_only = Case(session, "http://a.example.org/1")
    one = media(session, "n1", on=national_only)
    mixed = Case(session, "http://b.example.org/2")
    two, three = media(session, "n2", on=mixed), media(session, "b3", on=mixed)

    assert assess(session, national_only, ana, items((one, N))).status == "second_opinion"
    assert assess(session, mixed, ana, items((two, N), (three, B))).status == "confirmed"

    assert national_only.reporter_sees() == PublicStatus.being_assessed
    assert own_hashes(session) >= {("sha256", session.get(Media, three).sha256, "baseline")}  # type: ignore[union-attr]
    assert ("sha256", session.get(Media, two).sha256, "national") in own_hashes(session)  # type: ignore[union-attr]
    assert not any(v == session.get(Media, one).sha256 for _, v, _ in own_hashes(session))  # type: ignore[union-attr]
    assert routed(session) == [mixed.id]


def test_always_policy_needs_a_different_analyst_who_agrees(session: Session) -> None:
    ana = staff(session, "ana@assess.example")
    olek = staff(session, "olek@assess.example")
    case = Case(session, "http://a.example.net/1")
    item = media(session, "x", on=case)

    assert assess(session, case, ana, items((item, B)), policy="always").status == "second_opinion"
    assert routed(session) == []
    waiting_for = {
        user.email: [
            w.id
            for w in assessment.waiting(
                session, TargetStatus.second_opinion, exclude_first_by=user.id
            )
        ]
        for user in (ana, olek)
    }
    assert waiting_for == {"ana@assess.example": [], "olek@assess.example": [case.id]}

    with pytest.raises(SameAnalyst):
        assessment.give_second_opinion(
            session, case.id, agrees=True, note=None, user=ana, now=utcnow()
        )
    result = assessment.give_second_opinion(
        session, case.id, agrees=True, note="seen", user=olek, now=utcnow()
    )

    assert result.status == "confirmed"
    assert case.reporter_sees() == PublicStatus.action_taken
    assert decisions(session, case) == [
        ("first", "illegal", ana.id, None),
        ("second", "illegal", olek.id, True),
    ]
    assert routed(session) == [case.id]
    assert [(a, who) for a, who, _ in events(session, case)] == [
        ("assessed", "ana@assess.example"),
        ("second_opinion", "olek@assess.example"),
    ]
    with pytest.raises(NotAwaitingSecondOpinion):
        assessment.give_second_opinion(
            session, case.id, agrees=False, note=None, user=olek, now=utcnow()
        )


def test_a_disagreement_goes_to_a_supervisor_who_rules(session: Session) -> None:
    ana = staff(session, "ana@assess.example")
    olek = staff(session, "olek@assess.example")
    sue = staff(session, "sue@assess.example", Role.supervisor)
    case = Case(session, "http://a.example.net/1")
    item = media(session, "x", on=case)
    assess(session, case, ana, items((item, N)), policy="always")

    result = assessment.give_second_opinion(
        session, case.id, agrees=False, note="adult", user=olek, now=utcnow()
    )
    assert (result.status, case.target.status_reason) == ("disputed", "second_opinion_disagrees")
    assert [w.id for w in assessment.waiting(session, TargetStatus.disputed)] == [case.id]
    assert case.reporter_sees() == PublicStatus.being_assessed

    ruled = assessment.rule(
        session,
        case.id,
        RulingCreate(outcome=Outcome.not_illegal, note="adult"),
        user=sue,
        now=utcnow(),
    )

    assert (ruled.status, case.target.status_reason) == ("not_illegal", "not_illegal")
    assert case.reporter_sees() == PublicStatus.no_action_possible
    assert decisions(session, case) == [
        ("first", "illegal", ana.id, None),
        ("second", "not_illegal", olek.id, False),
        ("supervisor", "not_illegal", sue.id, None),
    ]
    # The ruling stands for the item too; the analyst's verdict stays as history.
    history = session.execute(
        select(col(Assessment.classification), col(Assessment.current), col(Assessment.analyst_id))
        .where(col(Assessment.target_id) == case.id)
        .order_by(col(Assessment.id))
    ).all()
    assert history == [(N, False, ana.id), (NI, True, sue.id)]
    assert own_hashes(session) == set()
    assert [a for a, _, _ in events(session, case)] == ["assessed", "second_opinion", "ruled"]


def test_a_supervisor_who_disagreed_does_not_settle_it_alone(session: Session) -> None:
    ana = staff(session, "ana@eyes.example")
    sue = staff(session, "sue@eyes.example", Role.supervisor)
    sam = staff(session, "sam@eyes.example", Role.supervisor)
    case = Case(session, "http://eyes.example.net/1")
    item = media(session, "eyes", on=case)
    assess(session, case, ana, items((item, N)), policy="always")
    assessment.give_second_opinion(
        session, case.id, agrees=False, note="adult", user=sue, now=utcnow()
    )
    ruling = RulingCreate(outcome=Outcome.not_illegal, note="adult")

    with pytest.raises(SameAnalyst):
        assessment.rule(session, case.id, ruling, user=sue, now=utcnow())
    assert case.target.status == TargetStatus.disputed
    assert assessment.rule(session, case.id, ruling, user=sam, now=utcnow()).status == (
        "not_illegal"
    )


def test_doubtful_items_wait_for_a_supervisor(session: Session) -> None:
    ana = staff(session, "ana@assess.example")
    sue = staff(session, "sue@assess.example", Role.supervisor)
    case = Case(session, "http://a.example.net/1")
    unsure, icon = media(session, "u", on=case), media(session, "i", on=case)

    result = assess(session, case, ana, items((unsure, D), (icon, IG)))

    assert (result.status, result.outcome) == ("disputed", None)
    assert case.target.status_reason == "doubtful"
    assert decisions(session, case) == []
    with pytest.raises(NoIllegalMedia):
        assessment.rule(
            session, case.id, RulingCreate(outcome=Outcome.illegal), user=sue, now=utcnow()
        )
    ruled = assessment.rule(
        session,
        case.id,
        RulingCreate(
            outcome=Outcome.illegal,
            items=[ItemAssessment(media_id=unsure, classification=N, age_group=AgeGroup.pubescent)],
        ),
        user=sue,
        now=utcnow(),
    )
    assert ruled.status == "confirmed"
    assert {(a.media_id, a.classification) for a in ruled.assessments} == {
        (unsure, N),
        (icon, IG),
    }
    assert ("md5", session.get(Media, unsure).md5, "national") in own_hashes(session)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("verdict", "status", "reason", "public"),
    [
        ("not_illegal", TargetStatus.not_illegal, "not_illegal", PublicStatus.no_action_possible),
        (
            "no_longer_available",
            TargetStatus.unreachable,
            "no_longer_available",
            PublicStatus.no_action_possible,
        ),
        (
            "not_assessable",
            TargetStatus.not_illegal,
            "not_assessable",
            PublicStatus.no_action_possible,
        ),
    ],
)
def test_outcomes_that_close_a_target(
    session: Session, verdict: str, status: TargetStatus, reason: str, public: PublicStatus
) -> None:
    ana = staff(session, "ana@assess.example")
    case = Case(session, "http://a.example.net/1")
    first, second = media(session, "1", on=case), media(session, "2", on=case)
    if verdict == "not_illegal":
        data = items((first, NI), (second, IG))
    else:
        data = AssessmentCreate(outcome=verdict)  # type: ignore[arg-type]

    assess(session, case, ana, data)

    assert (case.target.status, case.target.status_reason) == (status, reason)
    assert case.reporter_sees() == public
    assert decisions(session, case) == [("first", verdict, ana.id, None)]
    assert routed(session) == []
    assert own_hashes(session) == set()
    # A peer hotline that sent the target hears the outcome (partners.tell_sources).
    assert [m.kwargs for m in queue.buffered(session) if m.name == assessment.CLOSED_TASK] == [
        {"target_id": case.id}
    ]


# -- validation and claims -------------------------------------------------------------------


def test_assessments_are_checked_before_anything_is_written(session: Session) -> None:
    ana = staff(session, "ana@assess.example")
    case = Case(session, "http://a.example.net/1")
    other = Case(session, "http://b.example.net/1")
    mine, also = media(session, "m", on=case), media(session, "a", on=case)
    elsewhere = media(session, "e", on=other)

    for data, error in (
        (items((mine, B), (also, B), (elsewhere, B)), MediaNotOnTarget),
        (items((mine, B), (mine, NI), (also, B)), DuplicateMedia),
        (items((mine, B)), MediaNotCovered),
        (AssessmentCreate(), NothingAssessed),
        (
            AssessmentCreate(
                items=[
                    ItemAssessment(media_id=mine, classification=NI, age_group=AgeGroup.infant),
                    ItemAssessment(media_id=also, classification=NI),
                ]
            ),
            DetailsForIllegalOnly,
        ),
    ):
        with pytest.raises(error):
            assess(session, case, ana, data)
    assert assessment.current_assessments(session, case.id) == {}
    assert case.target.status == TargetStatus.queued


def test_an_assessment_needs_the_analysts_own_live_claim(session: Session) -> None:
    ana = staff(session, "ana@assess.example")
    olek = staff(session, "olek@assess.example")
    case = Case(session, "http://a.example.net/1")
    data = AssessmentCreate(outcome="not_assessable")

    with pytest.raises(ClaimLost):  # nobody claimed it
        assessment.assess(session, case.id, data, user=ana, now=utcnow())
    case.claim(olek)
    with pytest.raises(ClaimLost):  # someone else's
        assessment.assess(session, case.id, data, user=ana, now=utcnow())
    case.claim(ana, minutes=-1)
    with pytest.raises(ClaimLost):  # expired
        assessment.assess(session, case.id, data, user=ana, now=utcnow())
    assess(session, case, ana, data)
    with pytest.raises(TargetNotOpen):  # decided already
        assess(session, case, ana, data)
    with pytest.raises(NotFound):
        assessment.assess(session, 999_999, data, user=ana, now=utcnow())


# -- earlier verdicts and suggestions ---------------------------------------------------------


def test_earlier_verdicts_are_taken_over_and_an_analyst_can_overrule_them(
    session: Session,
) -> None:
    ana = staff(session, "ana@assess.example")
    olek = staff(session, "olek@assess.example")
    first = Case(session, "http://a.example.net/1")
    known, plain = media(session, "known", on=first), media(session, "plain", on=first)
    assess(session, first, ana, items((known, B), (plain, NI)))
    source = assessment.current_assessments(session, first.id)[known]

    # Partly known: the known item carries the verdict, the target waits for an analyst.
    later = Case(session, "http://b.example.net/2")
    later.show(known)
    new = media(session, "new", on=later)
    assert assessment.adopt_earlier_verdicts(session, later.id, now=utcnow()) is None
    carried = assessment.current_assessments(session, later.id)
    assert set(carried) == {known}
    assert (carried[known].origin, carried[known].source_id, carried[known].classification) == (
        AssessmentOrigin.earlier,
        source.id,
        B,
    )
    assert later.target.status == TargetStatus.queued

    # The analyst sees it otherwise: their verdict supersedes the automatic one.
    result = assess(session, later, olek, items((known, NI), (new, NI)))
    assert result.status == "not_illegal"
    rows = session.execute(
        select(col(Assessment.origin), col(Assessment.classification), col(Assessment.current))
        .where(col(Assessment.target_id) == later.id, col(Assessment.media_id) == known)
        .order_by(col(Assessment.id))
    ).all()
    assert rows == [(AssessmentOrigin.earlier, B, False), (AssessmentOrigin.analyst, NI, True)]

    # Two targets now hold contradicting verdicts on the file (confirmed baseline, and
    # not illegal): a third showing it is decided by neither, but by an analyst.
    third = Case(session, "http://c.example.net/3")
    third.show(known)
    assert assessment.adopt_earlier_verdicts(session, third.id, now=utcnow()) is None
    assert assessment.current_assessments(session, third.id) == {}
    assert third.target.status == TargetStatus.queued


@pytest.mark.parametrize(
    ("policy", "status", "public"),
    [
        ("national", TargetStatus.confirmed, PublicStatus.action_taken),
        ("always", TargetStatus.second_opinion, PublicStatus.being_assessed),
    ],
)
def test_a_target_whose_media_were_all_assessed_before_is_decided_automatically(
    session: Session, policy: assessment.Policy, status: TargetStatus, public: PublicStatus
) -> None:
    ana = staff(session, "ana@assess.example")
    olek = staff(session, "olek@assess.example")
    first = Case(session, "http://a.example.net/1")
    known = media(session, "known", on=first)
    assess(session, first, ana, items((known, B)), policy="none")
    again = Case(session, "http://b.example.net/again")
    again.show(known)

    assert (
        assessment.adopt_earlier_verdicts(session, again.id, now=utcnow(), policy=policy) == status
    )

    assert again.reporter_sees() == public
    [decision] = session.execute(
        select(Decision).where(col(Decision.target_id) == again.id)
    ).scalars()
    assert (decision.stage, decision.outcome, decision.staff_id) == (
        DecisionStage.first,
        Outcome.illegal,
        None,
    )
    assert "earlier verdicts" in (decision.note or "")
    [(action, actor, details)] = events(session, again)
    assert (action, actor, details["origin"]) == ("assessed", "system", "earlier")
    if status == TargetStatus.second_opinion:
        # Nobody decided first, so any analyst may give the second opinion.
        waiting = assessment.waiting(session, TargetStatus.second_opinion, exclude_first_by=ana.id)
        assert [w.id for w in waiting] == [again.id]
        result = assessment.give_second_opinion(
            session, again.id, agrees=True, note=None, user=olek, now=utcnow()
        )
        assert result.status == "confirmed"
    assert again.id in routed(session)


def test_queued_targets_showing_the_file_take_the_verdict_at_once(session: Session) -> None:
    ana = staff(session, "ana@carry.example")
    olek = staff(session, "olek@carry.example")
    first = Case(session, "http://carry.example.net/1")
    file = media(session, "carried", on=first)
    waiting = Case(session, "http://carry-two.example.net/2")
    waiting.show(file)
    held = Case(session, "http://carry-three.example.net/3")
    held.show(file)
    held.claim(olek)  # in an analyst's hands: left to them
    partly = Case(session, "http://carry-four.example.net/4")
    partly.show(file)
    media(session, "carried-new", on=partly)

    assess(session, first, ana, items((file, B)), policy="none")

    # Decided now, not when the next analyst opens it from the queue.
    assert waiting.target.status == TargetStatus.confirmed
    assert held.target.status == TargetStatus.queued
    assert set(assessment.current_assessments(session, held.id)) == set()
    assert partly.target.status == TargetStatus.queued
    assert set(assessment.current_assessments(session, partly.id)) == {file}


def test_near_duplicates_are_shown_as_suggestions_only(session: Session) -> None:
    ana = staff(session, "ana@assess.example")
    first = Case(session, "http://a.example.net/1")
    known = media(session, "known", on=first)
    assess(session, first, ana, items((known, B)), policy="none")
    later = Case(session, "http://b.example.net/2")
    similar = media(session, "similar", on=later)
    session.add(
        MediaMatch(
            media_id=similar,
            kind=MatchKind.near,
            hash_type=HashType.pdq,
            distance=12,
            matched_media_id=known,
            ref=f"m{known}",
        )
    )
    session.flush()

    assert assessment.adopt_earlier_verdicts(session, later.id, now=utcnow()) is None
    assert assessment.current_assessments(session, later.id) == {}
    view = assessment.extend_item(
        session, later.target, service.describe_target(session, later.target)
    )

    [shown] = view["media"]
    assert shown["assessment"] is None
    assert shown["earlier_verdicts"] == []
    assert shown["near_duplicates"] == [
        {
            "media_id": known,
            "hash_type": "pdq",
            "distance": 12,
            "frame": None,
            "verdict": "baseline",
            "verdict_target_id": first.id,
        }
    ]
    first_view = assessment.extend_item(
        session, first.target, service.describe_target(session, first.target)
    )
    [mine] = first_view["media"]
    assert mine["assessment"]["classification"] == "baseline"
    assert mine["assessment"]["origin"] == "analyst"
    assert [d["outcome"] for d in first_view["decisions"]] == ["illegal"]
    assert first_view["decisions"][0]["staff_email"] == "ana@assess.example"
    assert first_view["site"]["statuses"] == {"confirmed": 1, "queued": 1}
    assert [t["id"] for t in first_view["site"]["targets"]] == [later.id]
    assert first_view["site"]["confirmed_count"] == 1


# -- bulk confirmation -----------------------------------------------------------------------


def listed(
    session: Session, name: str, *entries: tuple[HashType, str, str | None], enabled: bool = True
) -> None:
    hash_list = create_list(session, name, enabled=enabled)
    for hash_type, value, category in entries:
        session.add(KnownEntry(list_id=hash_list.id, **{hash_type.value: value}, category=category))
    session.flush()


def test_bulk_confirm_takes_only_targets_whose_media_all_match_a_trusted_list(
    session: Session,
) -> None:
    sue = staff(session, "sue@assess.example", Role.supervisor)
    ana = staff(session, "ana@assess.example")

    def sha256(media_id: int) -> str:
        return session.get(Media, media_id).sha256  # type: ignore[union-attr]

    def md5(media_id: int) -> str:
        return session.get(Media, media_id).md5  # type: ignore[union-attr]

    whole = Case(session, "http://a.example.net/whole")
    w1, w2 = media(session, "w1", on=whole), media(session, "w2", on=whole)
    national = Case(session, "http://a.example.net/national")
    n1 = media(session, "n1", on=national)
    partly = Case(session, "http://a.example.net/partly")
    partly.show(w1)
    media(session, "unlisted", on=partly)
    disabled = Case(session, "http://a.example.net/disabled")
    d1 = media(session, "d1", on=disabled)
    adult = Case(session, "http://a.example.net/adult")
    a1 = media(session, "a1", on=adult)
    empty = Case(session, "http://a.example.net/empty")
    held = Case(session, "http://a.example.net/held")
    held.show(w2)
    held.claim(ana)
    listed(
        session,
        "icse",
        (HashType.sha256, sha256(w1), "Category 1"),
        (HashType.md5, md5(w2), None),
        (HashType.md5, md5(n1), "national"),
        (HashType.sha256, sha256(a1), "0"),
    )
    listed(session, "old", (HashType.sha256, sha256(d1), None), enabled=False)

    ids = [whole.id, national.id, partly.id, disabled.id, adult.id, empty.id, held.id, 999_999]
    result = assessment.bulk_confirm(session, user=sue, now=utcnow(), target_ids=ids)

    assert result.confirmed == [whole.id, national.id]
    assert {s.target_id: s.reason for s in result.skipped} == {
        partly.id: "not_all_media_listed",
        disabled.id: "not_all_media_listed",
        adult.id: "list_category_not_illegal",
        empty.id: "no_media",
        held.id: "claimed",
        999_999: "not_found",
    }
    assert whole.reporter_sees() == PublicStatus.action_taken
    assert {
        (a.media_id, a.classification, a.origin, a.analyst_id)
        for a in assessment.current_assessments(session, national.id).values()
    } == {(n1, N, AssessmentOrigin.bulk, sue.id)}
    assert decisions(session, whole) == [("supervisor", "illegal", sue.id, None)]
    assert [(a, who) for a, who, _ in events(session, whole)] == [
        ("bulk_confirmed", "sue@assess.example")
    ]
    assert sorted(routed(session)) == sorted([whole.id, national.id])
    assert ("sha256", sha256(w2), "baseline") in own_hashes(session)

    # Without ids: every queued target whose media all match, with the reasons for those
    # that still cannot be confirmed; the others are not looked at.
    again = Case(session, "http://b.example.net/again")
    again.show(w1)
    swept = assessment.bulk_confirm(session, user=sue, now=utcnow())
    assert swept.confirmed == [again.id]
    assert {s.target_id: s.reason for s in swept.skipped} == {
        adult.id: "list_category_not_illegal",
        held.id: "claimed",
    }
    assert partly.target.status == TargetStatus.queued


# -- a confirmed picture is recognised next time -----------------------------------------------


def arrives(
    session: Session,
    url: str,
    picture: bytes,
    *also: bytes,
    near: NearDuplicates | None = None,
) -> tuple[Case, service.Outcome]:
    """A report of ``url`` processed by a worker that found ``picture`` there (a page
    with ``also`` pictures after it)."""
    if near is None:  # (not ``near or``: an index holding nothing yet is falsy)
        near = NearDuplicates(phash_radius=8, pdq_radius=31, pdq_min_quality=50, refresh_seconds=0)
    case = Case(session, url)
    target = case.target
    target.status = TargetStatus.pending
    session.flush()
    claim = service.claim_target(session, case.id, now=utcnow(), lease=dt.timedelta(minutes=5))
    assert claim is not None
    gathered = service.Gathered(
        "http://cdn.example/p.jpg",
        "127.0.0.1",
        page=bool(also),
        media=[
            service.Found(f"http://cdn.example/{n}.jpg", "127.0.0.1", hash_media(shown))
            for n, shown in enumerate((picture, *also))
        ],
    )
    outcome = service.record_gathered(
        session, claim, gathered, now=utcnow(), near=near, hosting=get_hosting_lookup()
    )
    return case, outcome


def test_a_confirmed_picture_is_matched_on_the_own_list_when_it_turns_up_again(
    session: Session,
) -> None:
    ana = staff(session, "ana@assess.example")
    pictures = images.variants(7301)

    first, outcome = arrives(session, "http://a.example.net/first", pictures["original"])
    assert outcome.status == TargetStatus.queued
    [item] = assessment.target_media(session, first.id)
    assess(session, first, ana, items((item, B)), policy="none")

    again, outcome = arrives(session, "http://b.example.net/again", pictures["original"])
    exact = session.execute(
        select(col(MediaMatch.kind), col(MediaMatch.hash_type), col(HashList.name))
        .join(HashList, col(HashList.id) == col(MediaMatch.list_id))
        .where(col(MediaMatch.media_id) == item)
    ).all()
    assert {(MatchKind.exact, HashType.sha256, "hotline")} <= set(exact)
    # The same picture also carries its verdict: decided without an analyst.
    assert outcome.status == TargetStatus.confirmed
    assert again.target.status == TargetStatus.confirmed

    # A re-encoded copy is a near match on the own list: a suggestion, not a verdict.
    copy, outcome = arrives(session, "http://c.example.net/copy", pictures["reencoded"])
    assert outcome.status == TargetStatus.queued
    [other] = assessment.target_media(session, copy.id)
    found = session.execute(
        select(col(MediaMatch.kind), col(HashList.name))
        .join(HashList, col(HashList.id) == col(MediaMatch.list_id))
        .where(col(MediaMatch.media_id) == other)
    ).all()
    assert (MatchKind.near, "hotline") in found
    view = assessment.extend_item(
        session, copy.target, service.describe_target(session, copy.target)
    )
    assert any(
        m["list"] == "hotline" and m["kind"] == "near" for m in view["media"][0]["list_matches"]
    )
    assert view["media"][0]["assessment"] is None
    # The own list holds media of this hotline: its near match names the confirmed one.
    shown = service.describe_target(session, copy.target)["media"][0]["matches"]
    on_own = [m for m in shown if m["source"] == "hotline" and m["kind"] == "near"]
    assert on_own
    assert {m["media_sha256"] for m in on_own} == {hash_media(pictures["original"]).sha256}


def test_the_later_frames_of_a_confirmed_animation_join_the_own_list_and_leave_with_it(
    session: Session,
) -> None:
    """A GIF with a harmless first frame shows a picture as frame 1 and a flat grey frame
    last. Once confirmed, the picture shown alone is a near match to confirmed media (the
    own list holds the frame), not only media seen before; the flat frame, which near
    matching ignores, is not on the list. A reversal takes the frame off again, but only
    when no other confirmed target still shows the animation."""
    ana = staff(session, "ana@frames.example")
    sue = staff(session, "sue@frames.example", Role.supervisor)
    size = (200, 150)
    title, shown = images.frames(7401, size, 2)
    flat = Image.new("RGB", size, (128, 128, 128))
    animation = images.encode(title, "GIF", save_all=True, append_images=[shown, flat])
    frames = hash_media(animation).frame_hashes
    assert [f.frame for f in frames] == [1, 2]
    picture, grey = frames

    first, _ = arrives(session, "http://a.example.net/animation", animation)
    [gif] = assessment.target_media(session, first.id)
    assess(session, first, ana, items((gif, B)), policy="none")
    assert ("pdq", picture.pdq, "baseline") in own_hashes(session)
    assert ("phash", picture.phash, "baseline") in own_hashes(session)
    assert not {grey.pdq, grey.phash} & {value for _, value, _ in own_hashes(session)}

    alone, outcome = arrives(session, "http://b.example.net/still", images.encode(shown, "PNG"))
    assert outcome.status == TargetStatus.queued  # a near match suggests, never decides
    assert json.loads(alone.target.priority_reasons or "[]")[0] == (
        "near match to confirmed media: hotline"
    )
    matches = service.describe_target(session, alone.target)["media"][0]["matches"]
    assert {(m["source"], m["kind"]) for m in matches} >= {("hotline", "near"), ("seen", "near")}
    # The match through the list names no media (a frame has no file hash); the one
    # through the media seen here names the animation.
    assert {m["media_sha256"] for m in matches if m["source"] == "seen"} == {
        hash_media(animation).sha256
    }

    # The same file on another target carries its verdict: a second confirmed holder.
    again, outcome = arrives(session, "http://c.example.net/animation", animation)
    assert outcome.status == TargetStatus.confirmed
    assessment.reverse(session, first.id, note="a film still", user=sue, now=utcnow())
    assert ("pdq", picture.pdq, "baseline") in own_hashes(session)  # still shown there
    assessment.reverse(session, again.id, note="a film still", user=sue, now=utcnow())
    assert not {picture.pdq, picture.phash} & {value for _, value, _ in own_hashes(session)}
    # The near match found through the frame's entry went with it.
    matches = service.describe_target(session, alone.target)["media"][0]["matches"]
    assert all(m["source"] != "hotline" for m in matches)


def test_a_reversal_gives_near_copies_the_next_nearest_confirmed_media(
    session: Session, configure: Any
) -> None:
    """A copy records the nearest confirmed media only (here 2 of 3). When a supervisor
    reverses one of them, the copy gets the next nearest in its place (the task the
    reversal sends); when none is left, the targets elsewhere showing a copy or the same
    file are ranked again without the tiers they had from the own list."""
    configure(near_match_limit=2)
    ana = staff(session, "ana@again.example")
    sue = staff(session, "sue@again.example", Role.supervisor)
    near = NearDuplicates(
        phash_radius=8, pdq_radius=31, pdq_min_quality=50, refresh_seconds=0, near_limit=2
    )
    pictures = images.variants(7501)
    confirmed: dict[str, Case] = {}
    for name in ("original", "resized", "png"):
        case, _ = arrives(session, f"http://{name}.example.net/p", pictures[name], near=near)
        [item] = assessment.target_media(session, case.id)
        assess(session, case, ana, items((item, B)), policy="none")
        confirmed[hash_media(pictures[name]).sha256] = case
    copy, outcome = arrives(session, "http://copy.example.org/p", pictures["reencoded"], near=near)
    assert outcome.status == TargetStatus.queued
    # The same file as a confirmed one, beside a picture no one has assessed: queued.
    other = images.jpeg(7502, (320, 240))
    same, outcome = arrives(session, "http://same.example.com/p", pictures["png"], other, near=near)
    assert outcome.status == TargetStatus.queued

    def named() -> set[str]:
        """The confirmed media the copy's pHash matches through the own list."""
        matches = service.describe_target(session, copy.target)["media"][0]["matches"]
        return {
            m["media_sha256"]
            for m in matches
            if (m["source"], m["kind"], m["hash_type"]) == ("hotline", "near", "phash")
        }

    def reasons(case: Case) -> list[str]:
        return list(json.loads(case.target.priority_reasons or "[]"))

    def reverse(sha256: str) -> None:
        """A supervisor reverses the verdict; a worker runs the tasks it sent."""
        sent_before = len(queue.buffered(session))
        assessment.reverse(
            session, confirmed[sha256].id, note="a holiday photo", user=sue, now=utcnow()
        )
        for message in queue.buffered(session)[sent_before:]:
            if message.name == assessment.MATCH_AGAIN_TASK:
                assert message.countdown == assessment.MATCH_AGAIN_DELAY
                lost = [(int(m), str(t)) for m, t in message.kwargs["lost"]]
                service.match_own_list_again(
                    session, lost, near=near, now=utcnow(), removed=message.kwargs["removed"]
                )

    nearest = named()
    assert len(nearest) == 2
    [left_out] = set(confirmed) - nearest
    assert reasons(copy)[0] == "near match to confirmed media: hotline"
    assert reasons(same)[0] == "exact match to known list: hotline"

    gone = min(nearest)
    reverse(gone)
    assert named() == nearest - {gone} | {left_out}
    assert reasons(copy)[0] == "near match to confirmed media: hotline"

    for sha256 in sorted(set(confirmed) - {gone}):
        reverse(sha256)
    assert named() == set()
    for case in (copy, same):
        assert not [r for r in reasons(case) if "hotline" in r or "confirmed" in r]


# -- hosting ---------------------------------------------------------------------------------


def test_an_analyst_corrects_the_hosting_country(session: Session) -> None:
    ana = staff(session, "ana@assess.example")
    case = Case(session, "http://a.example.net/1")
    case.target.hosting_country = "US"
    session.flush()

    assert assessment.correct_hosting(session, case.id, "nl", user=ana, now=utcnow()) == (
        "US",
        "NL",
    )
    assert case.target.hosting_country == "NL"
    assert events(session, case) == [
        ("hosting_corrected", "ana@assess.example", {"old": "US", "new": "NL"})
    ]
    for wrong in ("XX", "EU", "ZZ", "N1"):
        with pytest.raises(UnknownCountry):
            assessment.correct_hosting(session, case.id, wrong, user=ana, now=utcnow())
    assert case.target.hosting_country == "NL"


# -- through the API -------------------------------------------------------------------------


def bearer(role: Role, email: str) -> dict[str, str]:
    with session_scope() as session:
        user = staff(session, email, role)
        token = issue_token(session, user, now=utcnow())
    return {"authorization": f"Bearer {token}"}


def reported(url: str, *seeds: str) -> tuple[int, str, list[int]]:
    """A queued target with media, committed: (target id, receipt, media ids)."""
    with session_scope() as session:
        case = Case(session, url)
        return case.id, case.receipt, [media(session, seed, on=case) for seed in seeds]


def reporter_sees(client: Any, receipt: str) -> str:
    return str(client.get(f"/api/v1/reports/{receipt}").json()["status"])


def test_an_analyst_assesses_and_a_second_analyst_confirms(client: Any, configure: Any) -> None:
    configure(second_opinion="always")
    with session_scope() as session:
        head = audit.head(session)
        since = head.id if head else 0
    ana = bearer(Role.analyst, "ana@assess.example")
    olek = bearer(Role.analyst, "olek@assess.example")
    target_id, receipt, [abuse, icon] = reported("http://pics.example.com/a", "abuse", "icon")
    body = {
        "items": [
            {"media_id": abuse, "classification": "baseline", "age_group": "prepubescent"},
            {"media_id": icon, "classification": "ignore"},
        ]
    }
    assessments = f"/api/v1/targets/{target_id}/assessments"

    unclaimed = client.post(assessments, json=body, headers=ana)
    assert (unclaimed.status_code, unclaimed.json()["code"]) == (409, "claim_lost")
    assert client.post("/api/v1/queue/claim", headers=ana).json()["id"] == target_id
    item = client.get(f"/api/v1/targets/{target_id}", headers=ana).json()
    assert [m["id"] for m in item["media"]] == [abuse, icon]
    assert all(m["assessment"] is None for m in item["media"])

    done = client.post(assessments, json=body, headers=ana)
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["outcome"]) == ("second_opinion", "illegal")
    assert reporter_sees(client, receipt) == "being_assessed"
    # The claim is given back with the assessment.
    assert client.get(f"/api/v1/targets/{target_id}", headers=ana).json()["claim"] == {
        "claimed_by": None,
        "expires_at": None,
    }

    assert client.get("/api/v1/second-opinions", headers=ana).json() == []
    [waiting] = client.get("/api/v1/second-opinions", headers=olek).json()
    assert (waiting["id"], waiting["first_outcome"]) == (target_id, "illegal")
    second = f"/api/v1/targets/{target_id}/second-opinion"
    same = client.post(second, json={"agrees": True}, headers=ana)
    assert (same.status_code, same.json()["code"]) == (409, "same_analyst")
    agreed = client.post(second, json={"agrees": True, "note": "clear"}, headers=olek)
    assert (agreed.status_code, agreed.json()["status"]) == (200, "confirmed")
    assert reporter_sees(client, receipt) == "action_taken"

    item = client.get(f"/api/v1/targets/{target_id}", headers=olek).json()
    assert [(d["stage"], d["agrees"], d["staff_email"]) for d in item["decisions"]] == [
        ("first", None, "ana@assess.example"),
        ("second", True, "olek@assess.example"),
    ]
    assert item["media"][0]["assessment"]["age_group"] == "prepubescent"
    with session_scope() as session:
        logged = session.execute(
            select(col(AuditEvent.action), col(AuditEvent.actor))
            .where(col(AuditEvent.object_id) == str(target_id), col(AuditEvent.id) > since)
            .where(col(AuditEvent.action).in_(["assessed", "second_opinion"]))
            .order_by(col(AuditEvent.id))
        ).all()
        texts = " ".join(str(e.details) for e in session.execute(select(AuditEvent)).scalars())
    assert logged == [
        ("assessed", "ana@assess.example"),
        ("second_opinion", "olek@assess.example"),
    ]
    assert "pics.example.com" not in texts


def test_the_api_names_what_is_wrong_with_an_assessment(client: Any) -> None:
    ana = bearer(Role.analyst, "ana@assess.example")
    target_id, _, [one, _] = reported("http://a.example.net/1", "one", "two")
    _, _, [foreign] = reported("http://b.example.net/2", "foreign")
    client.post("/api/v1/queue/claim", headers=ana)
    path = f"/api/v1/targets/{target_id}/assessments"

    def refused(body: dict[str, Any]) -> tuple[int, str]:
        answer = client.post(path, json=body, headers=ana)
        return answer.status_code, answer.json()["code"]

    assert refused({"items": [{"media_id": foreign, "classification": "baseline"}]}) == (
        422,
        "media_not_on_target",
    )
    assert refused({"items": [{"media_id": one, "classification": "national"}]}) == (
        422,
        "media_not_covered",
    )
    assert refused({"items": []}) == (422, "nothing_assessed")
    assert refused({"items": [{"media_id": one, "classification": "terrible"}]}) == (
        422,
        "validation_error",
    )
    assert refused({"outcome": "illegal"}) == (422, "validation_error")
    closed = client.post(path, json={"outcome": "no_longer_available"}, headers=ana)
    assert (closed.status_code, closed.json()["status"]) == (200, "unreachable")
    assert refused({"outcome": "not_assessable"}) == (409, "target_not_open")
    assert (
        client.post(
            "/api/v1/targets/999999/assessments", json={"outcome": "not_assessable"}, headers=ana
        ).status_code
        == 404
    )


def test_a_supervisor_settles_a_disagreement(client: Any, configure: Any) -> None:
    configure(second_opinion="national")
    ana = bearer(Role.analyst, "ana@assess.example")
    olek = bearer(Role.analyst, "olek@assess.example")
    sue = bearer(Role.supervisor, "sue@assess.example")
    target_id, receipt, [item] = reported("http://a.example.net/1", "drawn")
    client.post("/api/v1/queue/claim", headers=ana)
    first = client.post(
        f"/api/v1/targets/{target_id}/assessments",
        json={"items": [{"media_id": item, "classification": "national", "virtual": True}]},
        headers=ana,
    )
    assert first.json()["status"] == "second_opinion"  # national law only
    disagreed = client.post(
        f"/api/v1/targets/{target_id}/second-opinion", json={"agrees": False}, headers=olek
    )
    assert (disagreed.json()["status"], disagreed.json()["status_reason"]) == (
        "disputed",
        "second_opinion_disagrees",
    )
    ruling = f"/api/v1/targets/{target_id}/ruling"
    assert client.post(ruling, json={"outcome": "illegal"}, headers=olek).status_code == 403
    assert [d["id"] for d in client.get("/api/v1/disputes", headers=sue).json()] == [target_id]

    ruled = client.post(ruling, json={"outcome": "illegal", "note": "national law"}, headers=sue)

    assert (ruled.status_code, ruled.json()["status"]) == (200, "confirmed")
    assert reporter_sees(client, receipt) == "action_taken"
    again = client.post(ruling, json={"outcome": "not_illegal"}, headers=sue)
    assert (again.status_code, again.json()["code"]) == (409, "not_disputed")


def test_bulk_confirm_and_hosting_correction_through_the_api(client: Any) -> None:
    ana = bearer(Role.analyst, "ana@assess.example")
    sue = bearer(Role.supervisor, "sue@assess.example")
    listed_id, receipt, [known] = reported("http://a.example.net/listed", "listed")
    unknown_id, _, _ = reported("http://a.example.net/unknown", "unknown")
    with session_scope() as session:
        row = session.get(Media, known)
        assert row is not None
        listed(session, "icse", (HashType.sha1, row.sha1, "baseline"))

    assert client.post("/api/v1/queue/bulk-confirm", json={}, headers=ana).status_code == 403
    answer = client.post(
        "/api/v1/queue/bulk-confirm", json={"target_ids": [listed_id, unknown_id]}, headers=sue
    )
    assert answer.json() == {
        "confirmed": [listed_id],
        "skipped": [{"target_id": unknown_id, "reason": "not_all_media_listed"}],
    }
    assert reporter_sees(client, receipt) == "action_taken"

    path = f"/api/v1/targets/{unknown_id}/hosting"
    moved = client.patch(path, json={"country": "de"}, headers=ana)
    assert moved.json() == {"target_id": unknown_id, "country": "DE", "previous": None}
    wrong = client.patch(path, json={"country": "QQ"}, headers=ana)
    assert (wrong.status_code, wrong.json()["code"]) == (422, "unknown_country")
    shown = client.get(f"/api/v1/targets/{unknown_id}", headers=ana).json()
    assert shown["hosting"]["country"] == "DE"
    assert shown["site"]["statuses"] == {"confirmed": 1, "queued": 1}


def test_the_pipeline_gives_a_known_picture_on_a_new_page_its_earlier_verdict(
    committed: Any, http_server: Any, configure: Any
) -> None:
    """The worker, not only the item view, takes over earlier verdicts: the same file
    reported at a second address is decided without an analyst (policy none)."""
    from tests.triage.test_safeview import seen
    from triage import review

    configure(second_opinion="none")
    picture = images.jpeg(7, (320, 240))
    first, [media_id] = seen(http_server.route("/first.jpg", body=picture))
    with session_scope() as session:
        ana = staff(session, "ana@earlier.example")
        claimed = review.claim_next(
            session, user_id=int(ana.id or 0), now=utcnow(), lease=dt.timedelta(minutes=5)
        )
        assert claimed is not None
        assert claimed.id == first
        assessment.assess(
            session,
            first,
            AssessmentCreate(items=[ItemAssessment(media_id=media_id, classification=B)]),
            user=ana,
            now=utcnow(),
            policy="none",
        )
    with session_scope() as session:
        _, report = intake.submit_report(
            session,
            ReportCreate(
                url=http_server.route("/again.jpg", body=picture), category=ReportCategory.csam
            ),
            source=ReportSource.api,
            now=utcnow(),
            max_url_length=4096,
            allow_networks=(ipaddress.ip_network("127.0.0.0/8"),),
        )
        second = report.target_id
    outcome = process(second)
    assert outcome.status == TargetStatus.confirmed
    with session_scope() as session:
        taken = session.execute(
            select(Assessment).where(col(Assessment.target_id) == second)
        ).scalar_one()
        assert (taken.origin, taken.classification) == (AssessmentOrigin.earlier, B)
