"""Staff JSON API of triage: the analyst queue, claims, and what is known of a target.

Every route is authorised by one permission of the matrix in ``hotline.authz``.
Responses carry reported URLs: staff only, never logged (the access log names the
route template), and every view of an item is audited.
"""

from __future__ import annotations

import datetime as dt
import time
from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Response, status
from sqlalchemy import select
from sqlmodel import col

from hotline import audit
from hotline.authz import Forbidden, allowed, authorize
from hotline.deps import NowDep, SessionDep, SettingsDep
from hotline.errors import HotlineError, NotFound
from hotline.models import StaffUser
from hotline.settings import get_settings
from reporting.models import Report, Target, TargetStatus
from reporting.ratelimit import Counter, build_counter
from reporting.schemas import ErrorBody
from triage import assessment, review, safeview
from triage.errors import ViewsRateLimited
from triage.fetcher import Fetcher, get_fetcher
from triage.schemas import (
    AssessmentCreate,
    BulkConfirm,
    BulkResult,
    DecisionResult,
    HostingRead,
    HostingUpdate,
    ReversalCreate,
    ReversalResult,
    RulingCreate,
    SecondOpinionCreate,
    WaitingItem,
)
from triage.service import describe_target

router = APIRouter(prefix="/api/v1", tags=["staff"], include_in_schema=False)


class QueueEmpty(HotlineError):
    code = "queue_empty"
    status_code = 404
    detail = "Nothing is waiting in the queue."


class ClaimLost(HotlineError):
    code = "claim_lost"
    status_code = 409
    detail = "This item is no longer yours: your claim expired or was given back."


def _id(user: StaffUser) -> int:
    return int(user.id or 0)  # loaded users always have one


def _audit(
    session: Any, user: StaffUser, action: audit.Action, target_id: int | None, now: dt.datetime
) -> None:
    audit.record(
        session,
        action=action,
        actor=user.email,
        actor_id=user.id,
        object_type="target",
        object_id=target_id,
        now=now,
    )


def _lease(settings: Any) -> dt.timedelta:
    return dt.timedelta(seconds=settings.claim_lease_seconds)


@router.get("/queue")
def get_queue(
    session: SessionDep,
    now: NowDep,
    user: Annotated[StaffUser, Depends(authorize("queue.view"))],
    category: str | None = None,
    domain: str | None = None,
    country: str | None = None,
    list_name: Annotated[str | None, Query(alias="list")] = None,
    status: Annotated[
        TargetStatus | None,
        Query(description="Targets in this status instead of the open items."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Open items, most urgent first, with counts and the sites they belong to."""
    filters = review.QueueFilters(category, domain, country, list_name, status)
    items = review.list_queue(session, now=now, filters=filters, limit=limit, offset=offset)
    return {
        "counts": review.queue_counts(session, now=now),
        "items": [review.queue_item(t) for t in items],
        "sites": review.queue_by_site(session, now=now),
    }


@router.post("/queue/claim")
def claim(
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    user: Annotated[StaffUser, Depends(authorize("queue.claim"))],
) -> dict[str, Any]:
    """Claim the most urgent open item for a lease."""
    released: list[int] = []
    target = review.claim_next(
        session, user_id=_id(user), now=now, lease=_lease(settings), released=released
    )
    if target is None:
        raise QueueEmpty()
    for given_back in released:
        _audit(session, user, audit.Action.released, given_back, now)
    _audit(session, user, audit.Action.claimed, target.id, now)
    return review.queue_item(target)


@router.post("/queue/{target_id}/renew", status_code=status.HTTP_204_NO_CONTENT)
def renew(
    target_id: int,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    user: Annotated[StaffUser, Depends(authorize("queue.claim"))],
) -> Response:
    if not review.renew_claim(
        session, target_id, user_id=_id(user), now=now, lease=_lease(settings)
    ):
        raise ClaimLost()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/queue/{target_id}/release", status_code=status.HTTP_204_NO_CONTENT)
def release(
    target_id: int,
    session: SessionDep,
    now: NowDep,
    user: Annotated[StaffUser, Depends(authorize("queue.claim"))],
) -> Response:
    if review.release_claims(session, user_id=_id(user), target_id=target_id):
        _audit(session, user, audit.Action.released, target_id, now)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/targets/{target_id}")
def get_target(
    target_id: int,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    user: Annotated[StaffUser, Depends(authorize("target.view"))],
) -> dict[str, Any]:
    """Everything the workers learned about a target, its reports, verdicts and site; media
    assessed before take their earlier verdict first. The view is audited."""
    target = session.get(Target, target_id)
    if target is None:
        raise NotFound("No target has this id.")
    assessment.adopt_earlier_verdicts(session, target_id, now=now, policy=settings.second_opinion)
    shown = assessment.extend_item(session, target, describe_target(session, target))
    reports = session.execute(
        select(Report).where(col(Report.target_id) == target_id).order_by(col(Report.id))
    ).scalars()
    shown["reports"] = [
        {
            "category": str(r.category),
            "description": r.description,
            "language": r.language,
            "source": str(r.source),
            "created_at": r.created_at.isoformat(),
        }
        for r in reports
    ]
    shown["claim"] = {
        "claimed_by": target.claimed_by,
        "expires_at": target.claim_expires_at.isoformat() if target.claim_expires_at else None,
    }
    _audit(session, user, audit.Action.item_viewed, target_id, now)
    return shown


@router.post("/targets/{target_id}/assessments")
def assess_target(
    target_id: int,
    data: AssessmentCreate,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    user: Annotated[StaffUser, Depends(authorize("target.assess"))],
) -> DecisionResult:
    """Verdicts on the media of the item the analyst holds; see docs/assessment.md."""
    return assessment.assess(
        session, target_id, data, user=user, now=now, policy=settings.second_opinion
    )


@router.get("/second-opinions")
def second_opinions(
    session: SessionDep,
    user: Annotated[StaffUser, Depends(authorize("target.assess"))],
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[WaitingItem]:
    """Targets waiting for a second opinion, but not those the caller decided first."""
    return assessment.waiting(
        session,
        TargetStatus.second_opinion,
        exclude_first_by=_id(user),
        limit=limit,
        offset=offset,
    )


@router.post("/targets/{target_id}/second-opinion")
def second_opinion(
    target_id: int,
    data: SecondOpinionCreate,
    session: SessionDep,
    now: NowDep,
    user: Annotated[StaffUser, Depends(authorize("target.assess"))],
) -> DecisionResult:
    return assessment.give_second_opinion(
        session, target_id, agrees=data.agrees, note=data.note, user=user, now=now
    )


@router.get("/disputes")
def disputes(
    session: SessionDep,
    user: Annotated[StaffUser, Depends(authorize("target.confirm"))],
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[WaitingItem]:
    """Targets waiting for a supervisor's ruling (disagreements and doubtful verdicts)."""
    return assessment.waiting(session, TargetStatus.disputed, limit=limit, offset=offset)


@router.post("/targets/{target_id}/ruling")
def ruling(
    target_id: int,
    data: RulingCreate,
    session: SessionDep,
    now: NowDep,
    user: Annotated[StaffUser, Depends(authorize("target.confirm"))],
) -> DecisionResult:
    return assessment.rule(session, target_id, data, user=user, now=now)


@router.post("/targets/{target_id}/reversal")
def reversal(
    target_id: int,
    data: ReversalCreate,
    session: SessionDep,
    now: NowDep,
    user: Annotated[StaffUser, Depends(authorize("target.confirm"))],
) -> ReversalResult:
    """Reverse a confirmed target's verdict: closed as not illegal, its hashes off the own
    list, partners sent a retraction (docs/partners.md)."""
    return assessment.reverse(session, target_id, note=data.note, user=user, now=now)


@router.patch("/targets/{target_id}/hosting")
def correct_hosting(
    target_id: int,
    data: HostingUpdate,
    session: SessionDep,
    now: NowDep,
    user: Annotated[StaffUser, Depends(authorize("target.assess"))],
) -> HostingRead:
    previous, country = assessment.correct_hosting(
        session, target_id, data.country, user=user, now=now
    )
    return HostingRead(target_id=target_id, country=country, previous=previous)


@router.post("/queue/bulk-confirm")
def bulk_confirm(
    session: SessionDep,
    now: NowDep,
    user: Annotated[StaffUser, Depends(authorize("target.confirm"))],
    data: Annotated[BulkConfirm | None, Body()] = None,
) -> BulkResult:
    """Confirm queued targets whose media all match a trusted list exactly."""
    ids = data.target_ids if data is not None else None
    return assessment.bulk_confirm(session, user=user, now=now, target_ids=ids)


# The safe view's answer is for this one look only: not cached, not sniffed, not saved
# under a name, not able to run anything if opened on its own.
SAFE_VIEW_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Content-Disposition": "inline",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


@lru_cache
def get_view_counter() -> Counter:
    """Safe views per staff account (``HOTLINE_SAFE_VIEW_RATE_LIMIT``)."""
    settings = get_settings()
    return build_counter(settings, settings.safe_view_rate_limit, "safe-view")


@router.get(
    "/targets/{target_id}/media/{media_id}/view",
    responses={
        429: {
            "model": ErrorBody,
            "description": "Too many views from this account (`rate_limited`); see Retry-After.",
        }
    },
)
def view_media(
    target_id: int,
    media_id: int,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    fetcher: Annotated[Fetcher, Depends(get_fetcher)],
    user: Annotated[StaffUser, Depends(authorize("target.view"))],
    unblur: bool = False,
    size: Annotated[int, Query(ge=safeview.MIN_SIZE, le=safeview.MAX_SIZE)] = safeview.DEFAULT_SIZE,
    frame: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> Response:
    """A media item fetched afresh and rendered in memory: blurred greyscale unless
    ``unblur`` (permission ``media.unblur``, audited). ``frame``: a later frame of an
    animation (a near match's ``frame``). Never stored (docs/safeview.md)."""
    if unblur and not allowed(user.role, "media.unblur"):
        raise Forbidden()
    # Counted per account before anything is looked up or fetched; a view refused
    # here costs nothing.
    wait = get_view_counter().wait(str(user.id), time.time())
    if wait is not None:
        raise ViewsRateLimited(wait)
    source = safeview.locate(session, target_id, media_id)
    session.close()  # no connection is held while the site takes its time
    options = safeview.Options.from_settings(settings, size=size, unblur=unblur, frame=frame)
    shown = safeview.render(source, fetcher=fetcher, options=options)
    if unblur:
        audit.record(
            session,
            action=audit.Action.unblurred,
            actor=user.email,
            actor_id=user.id,
            object_type="media",
            object_id=media_id,
            details={"target_id": target_id} | ({"frame": frame} if frame else {}),
            now=now,
        )
    headers = SAFE_VIEW_HEADERS | {"X-Hotline-Content": shown.content, "X-Hotline-View": shown.view}
    return Response(shown.body, media_type=shown.media_type, headers=headers)
