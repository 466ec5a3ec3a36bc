"""Staff HTML pages of triage: the queue, "next", and the item page.

Routes of a few lines over the same services as the JSON API (``triage.review``,
``triage.service``), authorised by the same matrix. Reported URLs appear as text only,
never as a link or a source: no staff page makes the browser contact a reported site.
Media are shown through the safe view (``/api/v1/targets/{id}/media/{id}/view``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlmodel import col

from hotline import audit
from hotline.deps import NowDep, SessionDep
from hotline.errors import NotFound
from hotline.staff_ui import StaffPage, staff_page, staff_templates
from reporting.models import Report, ReportCategory, Target
from triage import review
from triage.service import describe_target

router = APIRouter(include_in_schema=False)
templates = staff_templates(Path(__file__).parent / "templates")

QueuePage = Annotated[StaffPage, Depends(staff_page("queue.view"))]
ClaimPage = Annotated[StaffPage, Depends(staff_page("queue.claim"))]
TargetPage = Annotated[StaffPage, Depends(staff_page("target.view"))]


def _lease(page: StaffPage) -> dt.timedelta:
    return dt.timedelta(seconds=page.settings.claim_lease_seconds)


def _user_id(page: StaffPage) -> int:
    return page.staff_id


def _audit(
    session: Any, page: StaffPage, action: str, target_id: int | None, now: dt.datetime
) -> None:
    audit.record(
        session,
        action=action,
        actor=page.staff.email,
        actor_id=page.staff.id,
        object_type="target",
        object_id=target_id,
        now=now,
    )


@router.get("/staff/queue", response_class=HTMLResponse)
def queue(
    page: QueuePage,
    session: SessionDep,
    now: NowDep,
    category: str = "",
    domain: str = "",
    country: str = "",
    list_name: Annotated[str, Query(alias="list", max_length=100)] = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> HTMLResponse:
    """Open items, most urgent first, with the reasons, counts and sites."""
    filters = review.QueueFilters(
        category or None, domain or None, (country or "")[:2] or None, list_name or None
    )
    items = review.list_queue(session, now=now, filters=filters, limit=50, offset=offset)
    return page.render(
        "staff/queue.html",
        engine=templates,
        items=[review.queue_item(t) for t in items],
        counts=review.queue_counts(session, now=now),
        sites=review.queue_by_site(session, now=now, limit=20),
        filters={"category": category, "domain": domain, "country": country, "list": list_name},
        categories=[c.value for c in ReportCategory],
        offset=offset,
        page_size=50,
        mine=[review.queue_item(t) for t in review.claimed_by(session, _user_id(page), now=now)],
    )


@router.post("/staff/queue/next")
def next_item(
    page: ClaimPage,
    session: SessionDep,
    now: NowDep,
    domain: Annotated[str, Form(max_length=255)] = "",
) -> Response:
    """Claim the most urgent open item (of one site, if asked) and open it."""
    filters = review.QueueFilters(registered_domain=domain or None)
    target = review.claim_next(
        session, user_id=_user_id(page), now=now, lease=_lease(page), filters=filters
    )
    if target is None:
        return page.render("staff/queue_empty.html", engine=templates, status_code=200)
    _audit(session, page, audit.Action.claimed, target.id, now)
    return RedirectResponse(f"/staff/targets/{target.id}", 303)


@router.post("/staff/targets/{target_id}/release")
def release(target_id: int, page: ClaimPage, session: SessionDep, now: NowDep) -> Response:
    if review.release_claims(session, user_id=_user_id(page), target_id=target_id):
        _audit(session, page, audit.Action.released, target_id, now)
    return RedirectResponse("/staff/queue", 303)


@router.get("/staff/targets/{target_id}", response_class=HTMLResponse)
def target_page(target_id: int, page: TargetPage, session: SessionDep, now: NowDep) -> HTMLResponse:
    """Everything known about a target, its media through the safe view; audited."""
    target = session.get(Target, target_id)
    if target is None:
        raise NotFound("No target has this id.")
    shown = describe_target(session, target)
    reports = session.execute(
        select(Report).where(col(Report.target_id) == target_id).order_by(col(Report.id))
    ).scalars()
    _audit(session, page, audit.Action.item_viewed, target_id, now)
    mine = target.claimed_by == _user_id(page) and (
        target.claim_expires_at is not None and target.claim_expires_at > now
    )
    return page.render(
        "staff/target.html",
        engine=templates,
        target=shown,
        reports=list(reports),
        mine=mine,
        claim_expires_at=target.claim_expires_at,
        lease_seconds=page.settings.claim_lease_seconds,
    )
