"""Assessment of targets on the ICCAM scheme, the second-opinion policy, supervisors'
rulings and bulk confirmation, earlier verdicts, and the effects of a decision.

Invariants:

- Assessment rows are never deleted nor changed, except ``current``: a new verdict on
  a target x media supersedes the one before it, which stays as history.
- Every path that decides a target ends in ``apply_outcome``: one conditional status
  change (so two people deciding at once cannot both win) and, for a confirmation,
  the same effects: the illegal media's hashes join the hotline's own list, the
  site's confirmed count, and the hand-over to ``partners.route_target``.
- Every decision is in the audit log, with ids and codes only, never a URL.
- Functions here never commit; the caller's unit of work does.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Literal, cast

from babel import Locale
from sqlalchemy import exists, func, literal, or_, select, update
from sqlmodel import Session, col

from hotline import audit, queue
from hotline.errors import HotlineError, NotFound
from hotline.models import StaffUser
from hotline.settings import get_settings
from reporting.models import Target, TargetStatus
from triage.hashlists import (
    KEY_COLUMNS,
    Removed,
    add_entries,
    create_list,
    entry_key,
    remove_entries,
)
from triage.models import (
    ILLEGAL,
    AgeGroup,
    Assessment,
    AssessmentOrigin,
    Classification,
    Commerciality,
    ContentType,
    Decision,
    DecisionStage,
    Gender,
    HashList,
    HashType,
    KnownEntry,
    MatchKind,
    Media,
    MediaFrame,
    MediaKind,
    MediaMatch,
    Outcome,
    Sighting,
    Site,
)
from triage.neardup import informative_phashes
from triage.rerank import on_site, rerank, showing_media
from triage.schemas import (
    AssessmentCreate,
    AssessmentRead,
    BulkResult,
    BulkSkipped,
    DecisionRead,
    DecisionResult,
    ItemAssessment,
    ReversalResult,
    RulingCreate,
    WaitingItem,
)

Policy = Literal["none", "national", "always"]
ROUTE_TASK = "partners.route_target"
REROUTE_TASK = "partners.reroute_target"
# A target closed otherwise: a peer hotline that sent it hears the outcome.
CLOSED_TASK = "partners.tell_sources"
RETRACT_TASK = "partners.retract_target"
# Copies that lost near matches to the own list get the next nearest entries: in a
# worker, whose near-duplicate index holds the list (reading a large own list here, in
# the supervisor's request, took seconds).
MATCH_AGAIN_TASK = "triage.match_own_list_again"
# Seconds after the reversal: a worker that read a removed entry before the commit has
# recorded its match through it by then, and the task drops it.
MATCH_AGAIN_DELAY = 10.0
# Targets whose verdict stands confirmed (their media on the own list); a reversal
# takes a target out of them.
CONFIRMED = frozenset({TargetStatus.confirmed, TargetStatus.forwarded, TargetStatus.removed})
DECIDED = frozenset({TargetStatus.confirmed, TargetStatus.not_illegal})  # by a verdict
SYSTEM = "system"
EARLIER_NOTE = "Decided from earlier verdicts on the same media."

# Where each outcome leaves a target, and the reason stored with it.
STATUS: dict[Outcome, tuple[TargetStatus, str | None]] = {
    Outcome.illegal: (TargetStatus.confirmed, None),
    Outcome.not_illegal: (TargetStatus.not_illegal, "not_illegal"),
    Outcome.not_assessable: (TargetStatus.not_illegal, "not_assessable"),
    Outcome.no_longer_available: (TargetStatus.unreachable, "no_longer_available"),
}

# Fields that describe illegal material (ICCAM), copied with a verdict.
DETAIL_FIELDS = (
    "age_group",
    "gender",
    "virtual",
    "child_modelling",
    "user_generated",
    "commerciality",
    "payment_method",
    "content_type",
    "site_type",
)

# Categories of trusted-list entries for bulk confirmation (compared lower-case). Project
# VIC: 0 non-pertinent, 1 child abuse material, 2 child exploitive (not abuse material),
# 3 computer-generated or animated, 4 comparison.
NOT_ILLEGAL_CATEGORIES = frozenset(
    {"0", "2", "4", "category 0", "category 2", "category 4", "not_illegal", "ignore"}
)
NATIONAL_CATEGORIES = frozenset({"national", "3", "category 3"})

# Two-letter territories that are no hosting country: groupings, reserved, unknown.
_NOT_COUNTRIES = {"AC", "CP", "CQ", "DG", "EA", "EU", "EZ", "IC", "QO", "TA", "UN", "XA", "XB"}
COUNTRIES = frozenset(
    code
    for code in map(str, Locale("en").territories)
    if len(code) == 2 and code.isalpha() and code not in _NOT_COUNTRIES | {"ZZ"}
)


# -- errors ----------------------------------------------------------------------------------


class ClaimLost(HotlineError):
    code = "claim_lost"
    status_code = 409
    detail = "This item is no longer yours: your claim expired or was given back."


class TargetNotOpen(HotlineError):
    code = "target_not_open"
    status_code = 409
    detail = "This item is not waiting for an assessment (it was decided or is not queued)."


class MediaNotOnTarget(HotlineError):
    code = "media_not_on_target"
    status_code = 422
    detail = "A media item named in the assessment was not found on this target."


class MediaNotCovered(HotlineError):
    code = "media_not_covered"
    status_code = 422
    detail = "Every media item of the target needs a verdict (or give a target-level outcome)."


class DuplicateMedia(HotlineError):
    code = "duplicate_media"
    status_code = 422
    detail = "A media item is named twice in the assessment."


class NothingAssessed(HotlineError):
    code = "nothing_assessed"
    status_code = 422
    detail = "Give a verdict per media item, or a target-level outcome."


class DetailsForIllegalOnly(HotlineError):
    code = "details_for_illegal_only"
    status_code = 422
    detail = (
        "Age group, gender and the other details describe illegal material: "
        "give them for baseline and national items only."
    )


class NotAwaitingSecondOpinion(HotlineError):
    code = "not_awaiting_second_opinion"
    status_code = 409
    detail = "This target is not waiting for a second opinion."


class SameAnalyst(HotlineError):
    code = "same_analyst"
    status_code = 409
    detail = "The analyst who made the first decision cannot give the second opinion or ruling."


class NotDisputed(HotlineError):
    code = "not_disputed"
    status_code = 409
    detail = "This target is not waiting for a supervisor's ruling."


class NoIllegalMedia(HotlineError):
    code = "no_illegal_media"
    status_code = 422
    detail = (
        "An illegal ruling needs at least one media item classified baseline or national: "
        "classify the items in the ruling."
    )


class StatusChanged(HotlineError):
    code = "status_changed"
    status_code = 409
    detail = "Someone else decided this target meanwhile."


class NotReversible(HotlineError):
    code = "not_reversible"
    status_code = 409
    detail = "Only a confirmed (forwarded or removed) target's verdict can be reversed."


class UnknownCountry(HotlineError):
    code = "unknown_country"
    status_code = 422
    detail = "Not an ISO 3166-1 alpha-2 country code."


# -- rules -----------------------------------------------------------------------------------


def outcome_of(classifications: Iterable[Classification]) -> Outcome | None:
    """The target's outcome from its items' verdicts: illegal if any item is; not illegal
    if every item is not illegal or furniture; None (a supervisor decides) when the
    doubtful items are all that stand between the two."""
    found = set(classifications)
    if found & ILLEGAL:
        return Outcome.illegal
    if Classification.doubtful in found:
        return None
    return Outcome.not_illegal


def needs_second_opinion(policy: Policy, classifications: Iterable[Classification]) -> bool:
    """Whether an illegal verdict waits for a second analyst under the policy."""
    found = set(classifications)
    if not found & ILLEGAL or policy == "none":
        return False
    if policy == "always":
        return True
    return Classification.baseline not in found  # national law only


def _policy(policy: Policy | None) -> Policy:
    return policy if policy is not None else get_settings().second_opinion


# -- reading ---------------------------------------------------------------------------------


def _target(session: Session, target_id: int) -> Target:
    target = session.get(Target, target_id, populate_existing=True)
    if target is None:
        raise NotFound("No target has this id.")
    return target


def target_media(session: Session, target_id: int) -> dict[int, Media]:
    """The media items the target shows (as last processed), by id: those it no longer
    shows keep their verdicts but need none."""
    rows = session.execute(
        select(Media)
        .join(Sighting, col(Sighting.media_id) == col(Media.id))
        .where(col(Sighting.target_id) == target_id, col(Sighting.online).is_(True))
        .order_by(col(Media.id))
    ).scalars()
    return {int(m.id or 0): m for m in rows}


def current_assessments(session: Session, target_id: int) -> dict[int, Assessment]:
    rows = session.execute(
        select(Assessment).where(
            col(Assessment.target_id) == target_id, col(Assessment.current).is_(True)
        )
    ).scalars()
    return {a.media_id: a for a in rows}


def _latest_decision(session: Session, target_id: int, stage: DecisionStage) -> Decision | None:
    return session.execute(
        select(Decision)
        .where(col(Decision.target_id) == target_id, col(Decision.stage) == stage)
        .order_by(col(Decision.id).desc())
        .limit(1)
    ).scalar_one_or_none()


# -- writing verdicts ------------------------------------------------------------------------


def _check_items(items: Sequence[ItemAssessment], media: Collection[int]) -> None:
    seen: set[int] = set()
    for item in items:
        if item.media_id in seen:
            raise DuplicateMedia(f"Media item {item.media_id} is named twice.")
        seen.add(item.media_id)
        if item.media_id not in media:
            raise MediaNotOnTarget(f"Media item {item.media_id} was not found on this target.")
        if item.classification not in ILLEGAL and any(
            getattr(item, name) is not None for name in DETAIL_FIELDS
        ):
            raise DetailsForIllegalOnly(
                f"Media item {item.media_id} is {item.classification.value}: "
                "the details are for baseline and national items only."
            )


def _supersede(session: Session, target_id: int, media_ids: Collection[int]) -> None:
    if not media_ids:
        return
    session.execute(
        update(Assessment)
        .where(
            col(Assessment.target_id) == target_id,
            col(Assessment.media_id).in_(list(media_ids)),
            col(Assessment.current).is_(True),
        )
        .values(current=False)
        .execution_options(synchronize_session="fetch")
    )


_CONTENT_TYPE = {
    MediaKind.image: ContentType.image,
    MediaKind.vector: ContentType.image,
    MediaKind.video: ContentType.video,
}


def _record_items(
    session: Session,
    target_id: int,
    items: Sequence[ItemAssessment],
    media: dict[int, Media],
    *,
    analyst_id: int | None,
    origin: AssessmentOrigin,
    now: dt.datetime,
) -> list[Assessment]:
    """New current verdicts, superseding the ones before them; illegal items get ICCAM's
    'not determined' defaults where the analyst left a detail open."""
    _supersede(session, target_id, [item.media_id for item in items])
    rows = []
    for item in items:
        values = item.model_dump(exclude={"media_id"})
        if item.classification in ILLEGAL:
            values["age_group"] = item.age_group or AgeGroup.not_determined
            values["gender"] = item.gender or Gender.undetermined
            values["commerciality"] = item.commerciality or Commerciality.not_determined
            values["content_type"] = item.content_type or _CONTENT_TYPE.get(
                media[item.media_id].kind
            )
        row = Assessment(
            target_id=target_id,
            media_id=item.media_id,
            analyst_id=analyst_id,
            origin=origin,
            current=True,
            created_at=now,
            **values,
        )
        session.add(row)
        rows.append(row)
    session.flush()
    return rows


def _decide(
    session: Session,
    target_id: int,
    stage: DecisionStage,
    outcome: Outcome,
    *,
    staff_id: int | None,
    now: dt.datetime,
    note: str | None = None,
    agrees: bool | None = None,
) -> Decision:
    decision = Decision(
        target_id=target_id,
        staff_id=staff_id,
        stage=stage,
        outcome=outcome,
        agrees=agrees,
        note=note,
        created_at=now,
    )
    session.add(decision)
    session.flush()
    return decision


# -- effects ---------------------------------------------------------------------------------


def own_list(session: Session, *, now: dt.datetime) -> HashList:
    """The hotline's own hash list (migration 0002 creates it; made again if removed)."""
    found = session.execute(
        select(HashList).where(col(HashList.own).is_(True)).order_by(col(HashList.id)).limit(1)
    ).scalar_one_or_none()
    if found is None:
        found = create_list(
            session,
            "hotline",
            description="Media confirmed by this hotline's analysts.",
            own=True,
            now=now,
        )
    return found


def _frame_entries(
    session: Session, categories: dict[int, str], *, now: dt.datetime
) -> list[dict[str, Any]]:
    """Own-list entries for the hashed later frames of these media (id -> category): the
    pHash and PDQ of each frame that near matching would use (a frame whose PDQ is below
    the minimum quality and whose pHash says nothing of it is left out). Such an entry
    has no file hash, so its key is its PDQ."""
    if not categories:
        return []
    min_quality = get_settings().pdq_min_quality
    frames = session.execute(
        select(MediaFrame)
        .where(col(MediaFrame.media_id).in_(sorted(categories)))
        .order_by(col(MediaFrame.media_id), col(MediaFrame.frame))
    ).scalars()
    return [
        {"pdq": f.pdq, "phash": f.phash, "category": categories[f.media_id], "added_at": now}
        for f in frames
        if f.pdq_quality >= min_quality or informative_phashes(f.phash)
    ]


def _join_own_list(session: Session, target_id: int, *, now: dt.datetime) -> int:
    """The target's illegal media join the own list (every hash they have, and the
    pHash and PDQ of an animation's later frames, an entry each); idempotent. Returns
    how many media items were added or already there. The near-duplicate index reads
    new known-hash rows on its next refresh; exact matching reads the table."""
    rows = session.execute(
        select(Media, col(Assessment.classification))
        .join(Assessment, col(Assessment.media_id) == col(Media.id))
        .where(
            col(Assessment.target_id) == target_id,
            col(Assessment.current).is_(True),
            col(Assessment.classification).in_(list(ILLEGAL)),
        )
    ).all()
    if not rows:
        return 0
    list_id = cast(int, own_list(session, now=now).id)
    add_entries(
        session,
        list_id,
        [
            {
                **{c: getattr(media, c, None) for c in KEY_COLUMNS},
                "category": Classification(classification).value,
                "added_at": now,
            }
            for media, classification in rows
        ]
        # A picture shown as a later frame of a confirmed animation is a near match to
        # confirmed media when it turns up again, alone or in another animation.
        + _frame_entries(
            session,
            {int(media.id or 0): Classification(c).value for media, c in rows},
            now=now,
        ),
    )
    return len(rows)


def _count_confirmed(session: Session, domain: str, *, now: dt.datetime) -> None:
    counted = session.execute(
        update(Site)
        .where(col(Site.registered_domain) == domain)
        .values(confirmed_count=col(Site.confirmed_count) + 1)
        .execution_options(synchronize_session=False)
    )
    if not counted.rowcount:  # type: ignore[attr-defined]
        session.add(
            Site(registered_domain=domain, target_count=1, confirmed_count=1, first_seen_at=now)
        )
        session.flush()


def apply_outcome(
    session: Session,
    target: Target,
    outcome: Outcome | None,
    *,
    now: dt.datetime,
    expect: Collection[TargetStatus],
    claimed_by: int | None = None,
    second_opinion: bool = False,
    reason: str | None = None,
) -> TargetStatus:
    """Move the target to where the outcome leaves it, with the effects of a decision.

    ``outcome`` None, or ``second_opinion``, leave it waiting (``disputed`` for a
    supervisor; ``second_opinion`` for a second analyst). The status changes only if
    it is still one of ``expect`` (and, with ``claimed_by``, the claim is still that
    analyst's): otherwise ``ClaimLost`` / ``StatusChanged``, and the caller's unit of
    work rolls back. Any claim on the target is released.
    """
    if outcome is None:
        status, why = TargetStatus.disputed, reason
    elif outcome == Outcome.illegal and second_opinion:
        status, why = TargetStatus.second_opinion, reason
    else:
        status, why = STATUS[outcome]
    conditions = [col(Target.id) == target.id, col(Target.status).in_(list(expect))]
    if claimed_by is not None:
        conditions += [
            col(Target.claimed_by) == claimed_by,
            col(Target.claim_expires_at) >= now,
        ]
    decided = {"decided_at": now} if status in DECIDED else {}
    changed = session.execute(
        update(Target)
        .where(*conditions)
        .values(
            status=status,
            status_reason=why,
            status_changed_at=now,
            claimed_by=None,
            claim_expires_at=None,
            **decided,
        )
        .execution_options(synchronize_session=False)
    )
    if not changed.rowcount:  # type: ignore[attr-defined]
        raise ClaimLost() if claimed_by is not None else StatusChanged()
    session.refresh(target)
    if status == TargetStatus.confirmed:
        _join_own_list(session, int(target.id or 0), now=now)
        _count_confirmed(session, target.registered_domain, now=now)
        # The site's other queued targets rank higher now.
        rerank(session, on_site(session, target.registered_domain))
        # Routing to law enforcement, the hosting provider and partner hotlines.
        queue.enqueue(session, ROUTE_TASK, target_id=target.id)
    elif status in (TargetStatus.not_illegal, TargetStatus.unreachable):
        queue.enqueue(session, CLOSED_TASK, target_id=target.id)
    return status


def _audit(
    session: Session,
    action: str,
    target_id: int,
    *,
    user: StaffUser | None,
    now: dt.datetime,
    details: dict[str, Any],
) -> None:
    audit.record(
        session,
        action=action,
        actor=user.email if user is not None else SYSTEM,
        actor_id=user.id if user is not None else None,
        object_type="target",
        object_id=target_id,
        details=details,
        now=now,
    )


def _result(session: Session, target: Target, outcome: Outcome | None) -> DecisionResult:
    current = current_assessments(session, int(target.id or 0))
    return DecisionResult(
        target_id=int(target.id or 0),
        status=str(target.status),
        status_reason=target.status_reason,
        outcome=outcome,
        assessments=[AssessmentRead.model_validate(a) for _, a in sorted(current.items())],
    )


def _counts(classifications: Iterable[Classification]) -> dict[str, int]:
    return dict(sorted(Counter(c.value for c in classifications).items()))


# -- the paths that decide -------------------------------------------------------------------


def assess(
    session: Session,
    target_id: int,
    data: AssessmentCreate,
    *,
    user: StaffUser,
    now: dt.datetime,
    policy: Policy | None = None,
) -> DecisionResult:
    """An analyst's assessment of the target they hold a claim on: verdicts per media
    item (superseding earlier ones, automatic ones included), a first decision, and the
    target moved on by the second-opinion policy. Releases the claim; audited."""
    user_id = int(user.id or 0)
    target = _target(session, target_id)
    if target.status != TargetStatus.queued:
        raise TargetNotOpen()
    expires = target.claim_expires_at
    if target.claimed_by != user_id or expires is None or expires < now:
        raise ClaimLost("Claim the item before assessing it: your claim is missing or expired.")
    media = target_media(session, target_id)
    _check_items(data.items, media)
    if data.outcome is None:
        if not data.items:
            raise NothingAssessed()
        missing = sorted(set(media) - {item.media_id for item in data.items})
        if missing:
            raise MediaNotCovered(
                "Every media item of the target needs a verdict; missing: "
                + ", ".join(map(str, missing))
                + "."
            )
    rows = _record_items(
        session,
        target_id,
        data.items,
        media,
        analyst_id=user_id,
        origin=AssessmentOrigin.analyst,
        now=now,
    )
    classifications = [row.classification for row in rows]
    second = False
    if data.outcome is not None:
        outcome: Outcome | None = Outcome(data.outcome)
    else:
        outcome = outcome_of(classifications)
        second = needs_second_opinion(_policy(policy), classifications)
    if outcome is not None:
        _decide(
            session,
            target_id,
            DecisionStage.first,
            outcome,
            staff_id=user_id,
            now=now,
            note=data.note,
        )
    status = apply_outcome(
        session,
        target,
        outcome,
        now=now,
        expect=[TargetStatus.queued],
        claimed_by=user_id,
        second_opinion=second,
        reason="doubtful" if outcome is None else None,
    )
    _audit(
        session,
        audit.Action.assessed,
        target_id,
        user=user,
        now=now,
        details={
            "origin": AssessmentOrigin.analyst.value,
            "outcome": outcome.value if outcome else "doubtful",
            "status": status.value,
            "classifications": _counts(classifications),
        },
    )
    media_ids = [item.media_id for item in data.items]
    _carry_to_queued(session, target_id, media_ids, now=now, policy=policy)
    return _result(session, target, outcome)


CARRIED_AT_ONCE = 100  # queued targets given new verdicts in the assessing transaction


def _carry_to_queued(
    session: Session,
    target_id: int,
    media_ids: list[int],
    *,
    now: dt.datetime,
    policy: Policy | None,
) -> None:
    """Queued targets showing media just assessed here take the verdicts now, rather
    than when an analyst opens them (which would hand out items that decide themselves
    on opening). Not those in an analyst's hands; beyond ``CARRIED_AT_ONCE``, the rest
    take them when opened, as before."""
    others = session.execute(
        select(col(Target.id))
        .where(
            col(Target.id).in_(
                select(col(Sighting.target_id)).where(col(Sighting.media_id).in_(media_ids))
            ),
            col(Target.id) != target_id,
            col(Target.status) == TargetStatus.queued,
            or_(col(Target.claimed_by).is_(None), col(Target.claim_expires_at) < now),
        )
        .order_by(col(Target.id))
        .limit(CARRIED_AT_ONCE)
    ).scalars()
    for other in list(others):
        adopt_earlier_verdicts(session, other, now=now, policy=policy)


def give_second_opinion(
    session: Session,
    target_id: int,
    *,
    agrees: bool,
    note: str | None,
    user: StaffUser,
    now: dt.datetime,
) -> DecisionResult:
    """A second analyst (or a supervisor), not the first one, agrees (the target is
    confirmed) or disagrees (it goes to a supervisor as ``disputed``). Audited."""
    target = _target(session, target_id)
    if target.status != TargetStatus.second_opinion:
        raise NotAwaitingSecondOpinion()
    first = _latest_decision(session, target_id, DecisionStage.first)
    if first is not None and first.staff_id == user.id:
        raise SameAnalyst()
    first_outcome = first.outcome if first is not None else Outcome.illegal
    outcome = first_outcome if agrees else Outcome.not_illegal
    _decide(
        session,
        target_id,
        DecisionStage.second,
        outcome,
        staff_id=user.id,
        now=now,
        note=note,
        agrees=agrees,
    )
    status = apply_outcome(
        session,
        target,
        first_outcome if agrees else None,
        now=now,
        expect=[TargetStatus.second_opinion],
        reason=None if agrees else "second_opinion_disagrees",
    )
    _audit(
        session,
        audit.Action.second_opinion,
        target_id,
        user=user,
        now=now,
        details={"agrees": agrees, "status": status.value},
    )
    return _result(session, target, first_outcome if agrees else None)


def _overrule(
    session: Session,
    target_id: int,
    current: dict[int, Assessment],
    media: dict[int, Media],
    *,
    user_id: int,
    now: dt.datetime,
    note: str,
) -> None:
    """A supervisor's not-illegal verdict on every item still classified illegal or
    doubtful, so none of them is carried to other targets as an earlier verdict."""
    items = [
        ItemAssessment(media_id=m, classification=Classification.not_illegal, note=note)
        for m, a in sorted(current.items())
        if a.classification in ILLEGAL | {Classification.doubtful}
    ]
    _record_items(
        session,
        target_id,
        items,
        media,
        analyst_id=user_id,
        origin=AssessmentOrigin.analyst,
        now=now,
    )


def rule(
    session: Session, target_id: int, data: RulingCreate, *, user: StaffUser, now: dt.datetime
) -> DecisionResult:
    """A supervisor settles a disputed target, optionally correcting item verdicts first.

    An illegal ruling needs an item classified baseline or national. A not-illegal
    ruling also stands for the items: those still classified baseline, national or
    doubtful get a supervisor's ``not_illegal`` verdict, so no illegal verdict of a
    target ruled not illegal is carried to other targets. Audited.
    """
    user_id = int(user.id or 0)
    target = _target(session, target_id)
    if target.status != TargetStatus.disputed:
        raise NotDisputed()
    # Four eyes: neither the first analyst nor the one who disagreed settles it.
    for stage in (DecisionStage.first, DecisionStage.second):
        earlier = _latest_decision(session, target_id, stage)
        if earlier is not None and earlier.staff_id == user_id:
            raise SameAnalyst()
    media = target_media(session, target_id)
    _check_items(data.items, media)
    _record_items(
        session,
        target_id,
        data.items,
        media,
        analyst_id=user_id,
        origin=AssessmentOrigin.analyst,
        now=now,
    )
    current = current_assessments(session, target_id)
    if data.outcome == Outcome.illegal and not any(
        a.classification in ILLEGAL for a in current.values()
    ):
        raise NoIllegalMedia()
    if data.outcome == Outcome.not_illegal:
        _overrule(session, target_id, current, media, user_id=user_id, now=now, note="ruling")
    _decide(
        session,
        target_id,
        DecisionStage.supervisor,
        data.outcome,
        staff_id=user_id,
        now=now,
        note=data.note,
    )
    status = apply_outcome(session, target, data.outcome, now=now, expect=[TargetStatus.disputed])
    _audit(
        session,
        audit.Action.ruled,
        target_id,
        user=user,
        now=now,
        details={"outcome": data.outcome.value, "status": status.value, "items": len(data.items)},
    )
    return _result(session, target, data.outcome)


def _confirmed_elsewhere(target_id: int) -> Any:
    """The media other confirmed targets hold with an illegal verdict (a subquery)."""
    return (
        select(col(Assessment.media_id))
        .join(Target, col(Target.id) == col(Assessment.target_id))
        .where(
            col(Assessment.current).is_(True),
            col(Assessment.classification).in_(list(ILLEGAL)),
            col(Assessment.target_id) != target_id,
            col(Target.status).in_(list(CONFIRMED)),
        )
    )


def _frame_values(
    session: Session, media_ids: Any, among: Collection[str] | None = None
) -> set[str]:
    """The pHash and PDQ values of the later frames of ``media_ids`` (ids or a
    subquery); only those in ``among`` if given."""
    pairs = select(col(MediaFrame.pdq), col(MediaFrame.phash)).where(
        col(MediaFrame.media_id).in_(media_ids)
    )
    if among is not None:
        if not among:
            return set()
        wanted = sorted(among)
        pairs = pairs.where(or_(col(MediaFrame.pdq).in_(wanted), col(MediaFrame.phash).in_(wanted)))
    found = {str(v) for row in session.execute(pairs) for v in row}
    return found if among is None else found & set(among)


def _held_elsewhere(
    session: Session, target_id: int, media: Collection[Media]
) -> tuple[set[int], dict[HashType, set[str]]]:
    """Of these media, the ones another confirmed target holds with an illegal verdict,
    and every hash value such held media have (two media may share a pHash or PDQ)."""
    held_media = _confirmed_elsewhere(target_id)
    ids = [int(m.id or 0) for m in media]
    held = {
        int(i)
        for i in session.execute(
            select(col(Media.id)).where(col(Media.id).in_(ids), col(Media.id).in_(held_media))
        ).scalars()
    }
    values: dict[HashType, set[str]] = {}
    for hash_type in HashType:
        column = getattr(Media, hash_type.value, None)
        wanted = {getattr(m, hash_type.value) for m in media if getattr(m, hash_type.value, None)}
        if column is None or not wanted:
            continue
        values[hash_type] = {
            str(v)
            for v in session.execute(
                select(column).where(column.in_(wanted), col(Media.id).in_(held_media))
            ).scalars()
        }
    return held, values


def _leave_own_list(
    session: Session, target_id: int, media: Collection[Media], *, now: dt.datetime
) -> tuple[Removed, list[int]]:
    """Take the hashes of ``media`` off the own list, except those another confirmed target
    still holds; the matches found through the removed entries go with them (exact
    matching and the near-duplicate index read the table, so neither finds them again).
    Returns what went (the media that lost a near match recorded only the nearest
    entries, ``HOTLINE_NEAR_MATCH_LIMIT``, and get the next nearest instead:
    ``MATCH_AGAIN_TASK``), and the media kept on the list."""
    if not media:
        return Removed(0, [], [], []), []
    held, held_values = _held_elsewhere(session, target_id, media)
    list_id = cast(int, own_list(session, now=now).id)
    going = [m for m in media if int(m.id or 0) not in held]
    leaving = {
        str(getattr(m, hash_type.value))
        for m in going
        for hash_type in HashType
        if getattr(m, hash_type.value, None)
    }
    leaving |= _frame_values(session, [int(m.id or 0) for m in going])
    staying = set().union(*held_values.values())
    # A frame's entry is keyed by its PDQ: it stays while a held item shows that frame.
    staying |= _frame_values(session, _confirmed_elsewhere(target_id), among=leaving)
    # An entry's key is one of its media's hashes (SHA-256 for entries made here, the
    # PDQ of a later frame's).
    removed = remove_entries(session, list_id, leaving - staying)
    session.flush()
    return removed, sorted(held)


def reverse(
    session: Session, target_id: int, *, note: str, user: StaffUser, now: dt.datetime
) -> ReversalResult:
    """A supervisor reverses a confirmed (forwarded, removed) target's verdict.

    The illegal and doubtful verdicts on its media are superseded by the supervisor's
    ``not_illegal`` ones (as a not-illegal ruling does), a supervisor's decision records
    the reversal, the target is closed as ``not_illegal`` (reason ``reversed``), its
    media's hashes leave the own list unless another confirmed target holds them, the
    site's confirmed count goes down, and ``partners.retract_target`` is sent after the
    commit to retract what partners received. Nothing is deleted but the list entries
    (and the matches made through them); the verdicts stay as history. Audited.
    """
    user_id = int(user.id or 0)
    target = _target(session, target_id)
    previous = target.status
    if previous not in CONFIRMED:
        raise NotReversible()
    media = target_media(session, target_id)
    current = current_assessments(session, target_id)
    illegal = sorted(m for m, a in current.items() if a.classification in ILLEGAL)
    _overrule(session, target_id, current, media, user_id=user_id, now=now, note="reversal")
    _decide(
        session,
        target_id,
        DecisionStage.supervisor,
        Outcome.not_illegal,
        staff_id=user_id,
        now=now,
        note=note,
    )
    changed = session.execute(
        update(Target)
        .where(col(Target.id) == target_id, col(Target.status) == previous)
        .values(
            status=TargetStatus.not_illegal,
            status_reason="reversed",
            status_changed_at=now,
            decided_at=now,
            claimed_by=None,
            claim_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if not changed.rowcount:  # type: ignore[attr-defined]
        raise StatusChanged()
    session.refresh(target)
    left, kept = _leave_own_list(session, target_id, [media[m] for m in illegal], now=now)
    session.execute(
        update(Site)
        .where(
            col(Site.registered_domain) == target.registered_domain, col(Site.confirmed_count) > 0
        )
        .values(confirmed_count=col(Site.confirmed_count) - 1)
        .execution_options(synchronize_session=False)
    )
    # The site's targets, and those elsewhere showing media that matched the entries.
    rerank(
        session,
        sorted(
            set(on_site(session, target.registered_domain))
            | set(showing_media(session, left.media))
        ),
    )
    for start in range(0, max(len(left.near), len(left.ids)), 1000):
        queue.enqueue(
            session,
            MATCH_AGAIN_TASK,
            countdown=MATCH_AGAIN_DELAY,
            lost=left.near[start : start + 1000],
            removed=left.ids[start : start + 1000],
        )
    queue.enqueue(session, RETRACT_TASK, target_id=target_id)
    _audit(
        session,
        "reversed",
        target_id,
        user=user,
        now=now,
        details={
            "previous_status": previous.value,
            "media": illegal,
            "entries_removed": left.entries,
            "media_kept_on_list": kept,
        },
    )
    return ReversalResult(
        target_id=target_id,
        status=str(target.status),
        status_reason=target.status_reason,
        previous_status=previous.value,
        media_reversed=illegal,
        entries_removed=left.entries,
        media_kept_on_list=kept,
    )


def adopt_earlier_verdicts(
    session: Session, target_id: int, *, now: dt.datetime, policy: Policy | None = None
) -> TargetStatus | None:
    """Media of a queued target that an analyst already assessed on another target take
    that verdict (``origin=earlier``, ``source_id`` the analyst's row). When every media
    item of the target has one, the target is decided from them (a first decision by
    nobody, audited as ``system``) and the policy applies: under ``always`` an illegal
    outcome still waits for a second opinion. Doubtful-only targets stay queued.

    Returns the new status when the target was decided, else None. An analyst's
    assessment supersedes the automatic rows.
    """
    if not _assessed_elsewhere(session, target_id):
        return None  # the usual case for new content: one query, no savepoint
    try:
        with session.begin_nested():  # a race lost leaves nothing of this attempt behind
            return _adopt(session, target_id, now=now, policy=policy)
    except StatusChanged:
        return None


def _assessed_elsewhere(session: Session, target_id: int) -> bool:
    """Whether any media item of the target has a current analyst's verdict elsewhere."""
    seen_here = select(col(Sighting.media_id)).where(
        col(Sighting.target_id) == target_id, col(Sighting.online).is_(True)
    )
    return bool(
        session.execute(
            select(
                exists().where(
                    col(Assessment.media_id).in_(seen_here),
                    col(Assessment.target_id) != target_id,
                    col(Assessment.current).is_(True),
                    col(Assessment.origin) == AssessmentOrigin.analyst,
                )
            )
        ).scalar()
    )


def _adopt(
    session: Session, target_id: int, *, now: dt.datetime, policy: Policy | None
) -> TargetStatus | None:
    target = session.get(Target, target_id, populate_existing=True)
    if target is None or target.status != TargetStatus.queued:
        return None
    media = target_media(session, target_id)
    if not media:
        return None
    current = current_assessments(session, target_id)
    missing = [m for m in media if m not in current]
    if missing:
        sources = session.execute(
            select(Assessment)
            .where(
                col(Assessment.media_id).in_(missing),
                col(Assessment.target_id) != target_id,
                col(Assessment.current).is_(True),
                col(Assessment.origin) == AssessmentOrigin.analyst,
            )
            .order_by(col(Assessment.id).desc())
        ).scalars()
        newest: dict[int, Assessment] = {}
        disputed: set[int] = set()
        for source in sources:
            first = newest.setdefault(source.media_id, source)
            if source.classification != first.classification:
                disputed.add(source.media_id)
        # Verdicts elsewhere that disagree (one target's confirmed file, another's "not
        # illegal") are no verdict to take over: an analyst looks at it.
        for media_id in disputed:
            del newest[media_id]
        for media_id, source in sorted(newest.items()):
            row = Assessment(
                target_id=target_id,
                media_id=media_id,
                analyst_id=None,
                origin=AssessmentOrigin.earlier,
                source_id=source.id,
                classification=source.classification,
                current=True,
                created_at=now,
                **{name: getattr(source, name) for name in DETAIL_FIELDS},
            )
            session.add(row)
            current[media_id] = row
        session.flush()
    if set(current) != set(media) or any(
        a.origin != AssessmentOrigin.earlier for a in current.values()
    ):
        return None
    classifications = [a.classification for a in current.values()]
    outcome = outcome_of(classifications)
    if outcome is None:
        return None  # doubtful verdicts: an analyst looks at it
    _decide(
        session, target_id, DecisionStage.first, outcome, staff_id=None, now=now, note=EARLIER_NOTE
    )
    status = apply_outcome(
        session,
        target,
        outcome,
        now=now,
        expect=[TargetStatus.queued],
        second_opinion=needs_second_opinion(_policy(policy), classifications),
    )
    _audit(
        session,
        audit.Action.assessed,
        target_id,
        user=None,
        now=now,
        details={
            "origin": AssessmentOrigin.earlier.value,
            "outcome": outcome.value,
            "status": status.value,
            "classifications": _counts(classifications),
        },
    )
    return status


# -- bulk confirmation -----------------------------------------------------------------------


def _exactly_known() -> Any:
    """A list entry is known exactly for a media item: its key is one of the media's
    file hashes (the partitions' key index answers it)."""
    return entry_key().in_([col(Media.sha256), col(Media.sha1), col(Media.md5)])


def _list_hits(session: Session, target_ids: Sequence[int]) -> dict[int, dict[int, set[str]]]:
    """target id -> media id -> categories of enabled list entries matching it exactly
    (SHA-256, SHA-1 or MD5); media without a hit are absent."""
    if not target_ids:
        return {}
    rows = (
        select(
            col(Sighting.target_id),
            col(Media.id),
            func.coalesce(col(KnownEntry.category), literal("")),
        )
        .join(Media, col(Media.id) == col(Sighting.media_id))
        .join(KnownEntry, _exactly_known())
        .join(HashList, col(HashList.id) == col(KnownEntry.list_id))
        .where(col(HashList.enabled).is_(True), col(Sighting.target_id).in_(target_ids))
    )
    hits: dict[int, dict[int, set[str]]] = {}
    for target_id, media_id, category in session.execute(rows):
        hits.setdefault(int(target_id), {}).setdefault(int(media_id), set()).add(
            str(category).strip().lower()
        )
    return hits


def bulk_classification(categories: Iterable[str]) -> Classification | None:
    """The verdict a trusted list's categories give a media item: ``national`` for
    national-law categories (and Project VIC 3), None when every category says not
    illegal (Project VIC 0, 2, 4), else ``baseline`` (no category included)."""
    found = set(categories)
    illegal = found - NOT_ILLEGAL_CATEGORIES
    if not illegal:
        return None
    return Classification.national if illegal <= NATIONAL_CATEGORIES else Classification.baseline


def _eligible_queued(session: Session, limit: int) -> list[int]:
    """Queued targets with media, every one of which an enabled list matches exactly."""
    matched = (
        select(literal(1))
        .select_from(KnownEntry)
        .join(HashList, col(HashList.id) == col(KnownEntry.list_id))
        .where(col(HashList.enabled).is_(True), _exactly_known())
        .exists()
    )
    unmatched = (
        select(literal(1))
        .select_from(Sighting)
        .join(Media, col(Media.id) == col(Sighting.media_id))
        .where(col(Sighting.target_id) == col(Target.id), col(Sighting.online).is_(True))
        .where(~matched)
        .exists()
    )
    has_media = (
        select(literal(1))
        .where(col(Sighting.target_id) == col(Target.id), col(Sighting.online).is_(True))
        .exists()
    )
    rows = session.execute(
        select(col(Target.id))
        .where(col(Target.status) == TargetStatus.queued, has_media, ~unmatched)
        .order_by(col(Target.id))
        .limit(limit)
    ).scalars()
    return [int(i) for i in rows]


def bulk_confirm(
    session: Session,
    *,
    user: StaffUser,
    now: dt.datetime,
    target_ids: Sequence[int] | None = None,
    limit: int = 1000,
) -> BulkResult:
    """A supervisor confirms queued targets whose media all match an enabled (trusted)
    list exactly: a ``bulk`` verdict per media item (the list's category decides
    baseline or national), a supervisor's decision, the effects, and one audit event
    per target. Targets held by another analyst's live claim are left to them."""
    user_id = int(user.id or 0)
    wanted = list(dict.fromkeys(target_ids)) if target_ids is not None else None
    candidates = wanted if wanted is not None else _eligible_queued(session, limit)
    hits = _list_hits(session, candidates)
    confirmed: list[int] = []
    skipped: list[BulkSkipped] = []
    for target_id in candidates:
        target = session.get(Target, target_id, populate_existing=True)
        reason = None
        media: dict[int, Media] = {}
        verdicts: dict[int, Classification | None] = {}
        if target is None:
            reason = "not_found"
        elif target.status != TargetStatus.queued:
            reason = "not_queued"
        elif (
            target.claimed_by not in (None, user_id)
            and target.claim_expires_at is not None
            and target.claim_expires_at >= now
        ):
            reason = "claimed"
        else:
            media = target_media(session, target_id)
            found = hits.get(target_id, {})
            verdicts = {m: bulk_classification(found[m]) for m in media if m in found}
            if not media:
                reason = "no_media"
            elif len(verdicts) < len(media):
                reason = "not_all_media_listed"
            elif any(v is None for v in verdicts.values()):
                reason = "list_category_not_illegal"
        if reason is not None or target is None:
            skipped.append(BulkSkipped(target_id=target_id, reason=reason or "not_found"))
            continue
        items = [
            ItemAssessment(media_id=m, classification=c)
            for m, c in sorted(verdicts.items())
            if c is not None
        ]
        try:
            with session.begin_nested():
                _record_items(
                    session,
                    target_id,
                    items,
                    media,
                    analyst_id=user_id,
                    origin=AssessmentOrigin.bulk,
                    now=now,
                )
                _decide(
                    session,
                    target_id,
                    DecisionStage.supervisor,
                    Outcome.illegal,
                    staff_id=user_id,
                    now=now,
                    note="Bulk confirmation: every media item matches a trusted list exactly.",
                )
                apply_outcome(
                    session, target, Outcome.illegal, now=now, expect=[TargetStatus.queued]
                )
                _audit(
                    session,
                    audit.Action.bulk_confirmed,
                    target_id,
                    user=user,
                    now=now,
                    details={
                        "media": len(items),
                        "classifications": _counts(i.classification for i in items),
                    },
                )
        except StatusChanged:
            skipped.append(BulkSkipped(target_id=target_id, reason="changed_meanwhile"))
            continue
        confirmed.append(target_id)
    return BulkResult(confirmed=confirmed, skipped=skipped)


# -- waiting lists ---------------------------------------------------------------------------


def waiting(
    session: Session,
    status: TargetStatus,
    *,
    exclude_first_by: int | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[WaitingItem]:
    """Targets in ``status`` (second_opinion or disputed), longest waiting first, with
    their latest first decision; ``exclude_first_by`` leaves out the ones that analyst
    decided first (they cannot give the second opinion)."""
    latest = (
        select(func.max(col(Decision.id)))
        .where(
            col(Decision.target_id) == col(Target.id), col(Decision.stage) == DecisionStage.first
        )
        .correlate(Target)
        .scalar_subquery()
    )
    query = (
        select(Target, col(Decision.outcome), col(Decision.staff_id))
        .outerjoin(Decision, col(Decision.id) == latest)
        .where(col(Target.status) == status)
    )
    if exclude_first_by is not None:
        query = query.where(
            col(Decision.staff_id).is_(None) | (col(Decision.staff_id) != exclude_first_by)
        )
    rows = session.execute(
        query.order_by(col(Target.status_changed_at), col(Target.id)).limit(limit).offset(offset)
    ).all()
    return [
        WaitingItem(
            id=int(t.id or 0),
            canonical_url=t.canonical_url,
            registered_domain=t.registered_domain,
            priority=t.priority,
            hosting_country=t.hosting_country,
            status=str(t.status),
            status_reason=t.status_reason,
            status_changed_at=t.status_changed_at,
            first_outcome=outcome,
            first_staff_id=staff_id,
        )
        for t, outcome, staff_id in rows
    ]


# -- the item view ---------------------------------------------------------------------------


def _assessment_view(a: Assessment) -> dict[str, Any]:
    return AssessmentRead.model_validate(a).model_dump(mode="json")


def _verdicts(session: Session, media_ids: Collection[int]) -> dict[int, Assessment]:
    """The newest current verdict on each media item, on any target."""
    if not media_ids:
        return {}
    rows = session.execute(
        select(Assessment)
        .where(col(Assessment.media_id).in_(list(media_ids)), col(Assessment.current).is_(True))
        .order_by(col(Assessment.id).desc())
    ).scalars()
    newest: dict[int, Assessment] = {}
    for row in rows:
        newest.setdefault(row.media_id, row)
    return newest


def site_history(session: Session, target: Target, *, limit: int = 50) -> dict[str, Any]:
    """The target's registered domain: its counts, and the other targets on it."""
    site = session.execute(
        select(Site).where(col(Site.registered_domain) == target.registered_domain)
    ).scalar_one_or_none()
    statuses = session.execute(
        select(col(Target.status), func.count())
        .where(col(Target.registered_domain) == target.registered_domain)
        .group_by(col(Target.status))
    ).all()
    others = session.execute(
        select(Target)
        .where(
            col(Target.registered_domain) == target.registered_domain, col(Target.id) != target.id
        )
        .order_by(col(Target.last_reported_at).desc(), col(Target.id).desc())
        .limit(limit)
    ).scalars()
    return {
        "registered_domain": target.registered_domain,
        "target_count": site.target_count if site else None,
        "confirmed_count": site.confirmed_count if site else None,
        "dedicated": site.dedicated if site else False,
        "note": site.note if site else None,
        "first_seen_at": site.first_seen_at.isoformat() if site else None,
        "statuses": {str(status): int(count) for status, count in sorted(statuses)},
        "targets": [
            {
                "id": t.id,
                "canonical_url": t.canonical_url,
                "status": str(t.status),
                "status_reason": t.status_reason,
                "report_count": t.report_count,
                "last_reported_at": t.last_reported_at.isoformat(),
            }
            for t in others
        ],
    }


def extend_item(session: Session, target: Target, shown: dict[str, Any]) -> dict[str, Any]:
    """Add to the item view what an analyst needs to decide: per media item its current
    verdict, the verdicts on the same media elsewhere, near duplicates as suggestions
    (never applied) and list matches; the target's decisions; its site's history."""
    target_id = int(target.id or 0)
    media_ids = [int(m["id"]) for m in shown["media"]]
    current = current_assessments(session, target_id)
    elsewhere: dict[int, list[dict[str, Any]]] = {}
    if media_ids:
        rows = session.execute(
            select(Assessment)
            .where(
                col(Assessment.media_id).in_(media_ids),
                col(Assessment.target_id) != target_id,
                col(Assessment.current).is_(True),
            )
            .order_by(col(Assessment.id).desc())
        ).scalars()
        for row in rows:
            elsewhere.setdefault(row.media_id, []).append(_assessment_view(row))
    matches = (
        session.execute(
            select(MediaMatch, col(HashList.name))
            .outerjoin(HashList, col(HashList.id) == col(MediaMatch.list_id))
            .where(col(MediaMatch.media_id).in_(media_ids))
            .order_by(col(MediaMatch.distance), col(MediaMatch.id))
        ).all()
        if media_ids
        else []
    )
    near_ids = {
        int(m.matched_media_id)
        for m, _ in matches
        if m.kind == MatchKind.near and m.matched_media_id is not None
    }
    near_verdicts = _verdicts(session, near_ids)
    suggestions: dict[int, list[dict[str, Any]]] = {}
    listed: dict[int, list[dict[str, Any]]] = {}
    for match, list_name in matches:
        if match.list_id is not None and list_name is not None:
            listed.setdefault(match.media_id, []).append(
                {
                    "list": list_name,
                    "kind": str(match.kind),
                    "hash_type": str(match.hash_type),
                    "distance": match.distance,
                    "frame": match.frame,
                }
            )
        elif match.kind == MatchKind.near and match.matched_media_id is not None:
            verdict = near_verdicts.get(int(match.matched_media_id))
            suggestions.setdefault(match.media_id, []).append(
                {
                    "media_id": match.matched_media_id,
                    "hash_type": str(match.hash_type),
                    "distance": match.distance,
                    "frame": match.frame,
                    "verdict": verdict.classification.value if verdict else None,
                    "verdict_target_id": verdict.target_id if verdict else None,
                }
            )
    for item in shown["media"]:
        media_id = int(item["id"])
        mine = current.get(media_id)
        item["assessment"] = _assessment_view(mine) if mine else None
        item["earlier_verdicts"] = elsewhere.get(media_id, [])
        item["near_duplicates"] = suggestions.get(media_id, [])
        item["list_matches"] = listed.get(media_id, [])
    for item in shown.get("earlier_media", []):  # the verdict it had while on the page
        mine = current.get(int(item["id"]))
        item["assessment"] = _assessment_view(mine) if mine else None
    decisions = session.execute(
        select(Decision, col(StaffUser.email))
        .outerjoin(StaffUser, col(StaffUser.id) == col(Decision.staff_id))
        .where(col(Decision.target_id) == target_id)
        .order_by(col(Decision.id))
    ).all()
    shown["decisions"] = [
        DecisionRead.model_validate(d).model_dump(mode="json") | {"staff_email": email}
        for d, email in decisions
    ]
    shown["site"] = site_history(session, target)
    return shown


def correct_hosting(
    session: Session, target_id: int, country: str, *, user: StaffUser, now: dt.datetime
) -> tuple[str | None, str]:
    """An analyst's correction of the hosting country; audited with the old and new
    value. Routing follows it: a target not confirmed yet is routed by the corrected
    country when it is; one confirmed already is routed again (``partners.reroute_target``:
    forwardings not yet received by a partner the country no longer calls for are
    taken back). Returns (old, new)."""
    code = country.strip().upper()
    if code not in COUNTRIES:
        raise UnknownCountry()
    target = _target(session, target_id)
    previous = target.hosting_country
    target.hosting_country = code
    if previous != code:
        target.unrouted_at = None  # routing finds partners afresh for the new country
    session.add(target)
    session.flush()
    if previous != code and target.status in (TargetStatus.confirmed, TargetStatus.forwarded):
        queue.enqueue(session, REROUTE_TASK, target_id=target_id)
    _audit(
        session,
        audit.Action.hosting_corrected,
        target_id,
        user=user,
        now=now,
        details={"old": previous, "new": code},
    )
    return previous, code
