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

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlmodel import Session, col
from starlette.datastructures import FormData

from hotline import audit
from hotline.authz import allowed
from hotline.deps import NowDep, SessionDep
from hotline.errors import HotlineError, NotFound
from hotline.staff_ui import StaffPage, staff_page, staff_templates
from reporting.models import Report, ReportCategory, Target, TargetStatus
from reporting.service import retry_unreachable
from triage import assessment, review
from triage.models import (
    ILLEGAL,
    AgeGroup,
    Classification,
    Commerciality,
    ContentType,
    Gender,
    Outcome,
    SiteType,
)
from triage.schemas import AssessmentCreate, RulingCreate
from triage.service import describe_target

router = APIRouter(include_in_schema=False)
templates = staff_templates(Path(__file__).parent / "templates")

QueuePage = Annotated[StaffPage, Depends(staff_page("queue.view"))]
ClaimPage = Annotated[StaffPage, Depends(staff_page("queue.claim"))]
TargetPage = Annotated[StaffPage, Depends(staff_page("target.view"))]
AssessPage = Annotated[StaffPage, Depends(staff_page("target.assess"))]
ConfirmPage = Annotated[StaffPage, Depends(staff_page("target.confirm"))]


async def form_data(request: Request) -> FormData:
    return await request.form()


FormDep = Annotated[FormData, Depends(form_data)]

# The choices of the assessment form, in the order the keyboard numbers them.
CHOICES = {
    "classifications": [c.value for c in Classification],
    "age_groups": [a.value for a in AgeGroup],
    "genders": [g.value for g in Gender],
    "commercialities": [c.value for c in Commerciality],
    "content_types": [c.value for c in ContentType],
    "site_types": [t.value for t in SiteType],
    "illegal": sorted(c.value for c in ILLEGAL),
    "rulings": [o.value for o in Outcome],
}


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
    status: Annotated[TargetStatus | None, Query()] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    done: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    """Open items, most urgent first, with the reasons, counts and sites."""
    decided = session.get(Target, done) if done else None
    filters = review.QueueFilters(
        category or None,
        domain or None,
        (country or "")[:2] or None,
        list_name or None,
        None if status is TargetStatus.queued else status,
    )
    items = review.list_queue(session, now=now, filters=filters, limit=50, offset=offset)
    return page.render(
        "staff/queue.html",
        engine=templates,
        items=[review.queue_item(t) for t in items],
        counts=review.queue_counts(session, now=now),
        sites=review.queue_by_site(session, now=now, limit=20),
        filters={
            "category": category,
            "domain": domain,
            "country": country,
            "list": list_name,
            "status": status.value if status else "",
        },
        statuses=[s.value for s in TargetStatus],
        categories=[c.value for c in ReportCategory],
        offset=offset,
        page_size=50,
        mine=[review.queue_item(t) for t in review.claimed_by(session, _user_id(page), now=now)],
        decided=decided,
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
    released: list[int] = []
    target = review.claim_next(
        session,
        user_id=_user_id(page),
        now=now,
        lease=_lease(page),
        filters=filters,
        released=released,
    )
    if target is None:
        return page.render("staff/queue_empty.html", engine=templates, status_code=200)
    for given_back in released:
        _audit(session, page, audit.Action.released, given_back, now)
    _audit(session, page, audit.Action.claimed, target.id, now)
    return RedirectResponse(f"/staff/targets/{target.id}", 303)


@router.post("/staff/targets/{target_id}/release")
def release(target_id: int, page: ClaimPage, session: SessionDep, now: NowDep) -> Response:
    if review.release_claims(session, user_id=_user_id(page), target_id=target_id):
        _audit(session, page, audit.Action.released, target_id, now)
    return RedirectResponse("/staff/queue", 303)


def _render_target(
    page: StaffPage,
    session: Session,
    target: Target,
    now: dt.datetime,
    status_code: int = 200,
    error: str | None = None,
) -> HTMLResponse:
    shown = assessment.extend_item(session, target, describe_target(session, target))
    reports = session.execute(
        select(Report).where(col(Report.target_id) == target.id).order_by(col(Report.id))
    ).scalars()
    mine = target.claimed_by == _user_id(page) and (
        target.claim_expires_at is not None and target.claim_expires_at > now
    )
    first = next((d for d in reversed(shown["decisions"]) if d["stage"] == "first"), None)
    return page.render(
        "staff/target.html",
        status_code,
        engine=templates,
        target=shown,
        reports=list(reports),
        mine=mine,
        can_assess=mine and target.status == TargetStatus.queued,
        can_second=target.status == TargetStatus.second_opinion
        and (first is None or first["staff_id"] != page.staff_id),
        can_rule=target.status == TargetStatus.disputed
        and (first is None or first["staff_id"] != page.staff_id),
        can_reverse=target.status in assessment.CONFIRMED,
        lease_seconds=page.settings.claim_lease_seconds,
        choices=CHOICES,
        error=error,
    )


def _target_or_404(session: Session, target_id: int) -> Target:
    target = session.get(Target, target_id)
    if target is None:
        raise NotFound("No target has this id.")
    return target


@router.get("/staff/targets/{target_id}", response_class=HTMLResponse)
def target_page(target_id: int, page: TargetPage, session: SessionDep, now: NowDep) -> HTMLResponse:
    """Everything known about a target, its media through the safe view; audited. Media
    assessed before take their earlier verdict first."""
    target = _target_or_404(session, target_id)
    assessment.adopt_earlier_verdicts(
        session, target_id, now=now, policy=page.settings.second_opinion
    )
    _audit(session, page, audit.Action.item_viewed, target_id, now)
    return _render_target(page, session, target, now)


def _flag(form: FormData, name: str) -> bool | None:
    return True if form.get(name) == "on" else None


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value.strip() or None if isinstance(value, str) else None


def _items(form: FormData, media_ids: list[int]) -> list[dict[str, Any]]:
    """The per-item fields of the assessment form (``<field>-<media id>``); the site type
    is asked once for the page and applies to its illegal items."""
    items = []
    site_type = _text(form, "site_type")
    for media_id in media_ids:
        classification = _text(form, f"c-{media_id}")
        if classification is None:
            continue
        item: dict[str, Any] = {"media_id": media_id, "classification": classification}
        if classification in CHOICES["illegal"]:
            item |= {
                "age_group": _text(form, f"age-{media_id}"),
                "gender": _text(form, f"gender-{media_id}"),
                "virtual": _flag(form, f"virtual-{media_id}"),
                "child_modelling": _flag(form, f"modelling-{media_id}"),
                "user_generated": _flag(form, f"ugc-{media_id}"),
                "commerciality": _text(form, f"commerce-{media_id}"),
                "payment_method": _text(form, f"payment-{media_id}"),
                "content_type": _text(form, f"ctype-{media_id}"),
                "site_type": site_type,
            }
        item["note"] = _text(form, f"note-{media_id}")
        items.append({k: v for k, v in item.items() if v is not None})
    return items


def _decided(target_id: int) -> RedirectResponse:
    return RedirectResponse(f"/staff/queue?done={target_id}", 303)


def _refused(
    page: StaffPage, session: Session, target_id: int, now: dt.datetime, code: str, status: int
) -> HTMLResponse:
    # Nothing of the refused request is kept; the page is shown again with the reason.
    session.rollback()
    return _render_target(page, session, _target_or_404(session, target_id), now, status, code)


@router.post("/staff/targets/{target_id}/assess", response_class=HTMLResponse)
def assess(
    target_id: int, page: AssessPage, session: SessionDep, now: NowDep, form: FormDep
) -> Response:
    """The assessment form: a verdict per media item, or an outcome for the whole page."""
    _target_or_404(session, target_id)
    media_ids = sorted(assessment.target_media(session, target_id))
    outcome = _text(form, "outcome")
    try:
        data = AssessmentCreate.model_validate(
            {
                "items": [] if outcome else _items(form, media_ids),
                "outcome": outcome,
                "note": _text(form, "note"),
            }
        )
        assessment.assess(
            session, target_id, data, user=page.staff, now=now, policy=page.settings.second_opinion
        )
    except ValidationError:
        return _refused(page, session, target_id, now, "validation_error", 422)
    except HotlineError as exc:
        return _refused(page, session, target_id, now, exc.code, exc.status_code)
    return _decided(target_id)


@router.post("/staff/targets/{target_id}/second-opinion", response_class=HTMLResponse)
def second_opinion(
    target_id: int,
    page: AssessPage,
    session: SessionDep,
    now: NowDep,
    agrees: Annotated[str, Form(max_length=5)] = "",
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    try:
        assessment.give_second_opinion(
            session,
            target_id,
            agrees=agrees == "yes",
            note=note.strip() or None,
            user=page.staff,
            now=now,
        )
    except HotlineError as exc:
        return _refused(page, session, target_id, now, exc.code, exc.status_code)
    return _decided(target_id)


@router.post("/staff/targets/{target_id}/ruling", response_class=HTMLResponse)
def ruling(
    target_id: int, page: ConfirmPage, session: SessionDep, now: NowDep, form: FormDep
) -> Response:
    """The supervisor's ruling, with the item verdicts the supervisor changed."""
    _target_or_404(session, target_id)
    media_ids = sorted(assessment.target_media(session, target_id))
    current = assessment.current_assessments(session, target_id)
    changed = [
        item
        for item in _items(form, media_ids)
        if item["media_id"] not in current
        or current[item["media_id"]].classification != item["classification"]
    ]
    try:
        data = RulingCreate.model_validate(
            {"outcome": _text(form, "outcome"), "note": _text(form, "note"), "items": changed}
        )
        assessment.rule(session, target_id, data, user=page.staff, now=now)
    except ValidationError:
        return _refused(page, session, target_id, now, "validation_error", 422)
    except HotlineError as exc:
        return _refused(page, session, target_id, now, exc.code, exc.status_code)
    return _decided(target_id)


@router.post("/staff/targets/{target_id}/reversal", response_class=HTMLResponse)
def reversal(
    target_id: int,
    page: ConfirmPage,
    session: SessionDep,
    now: NowDep,
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """A supervisor reverses the confirmed verdict (docs/partners.md, reversals)."""
    if not note.strip():
        return _refused(page, session, target_id, now, "validation_error", 422)
    try:
        assessment.reverse(session, target_id, note=note.strip(), user=page.staff, now=now)
    except HotlineError as exc:
        return _refused(page, session, target_id, now, exc.code, exc.status_code)
    return RedirectResponse(f"/staff/targets/{target_id}", 303)


@router.post("/staff/targets/{target_id}/hosting", response_class=HTMLResponse)
def correct_hosting(
    target_id: int,
    page: AssessPage,
    session: SessionDep,
    now: NowDep,
    country: Annotated[str, Form(max_length=2)] = "",
) -> Response:
    try:
        assessment.correct_hosting(session, target_id, country, user=page.staff, now=now)
    except HotlineError as exc:
        return _refused(page, session, target_id, now, exc.code, exc.status_code)
    return RedirectResponse(f"/staff/targets/{target_id}", 303)


@router.post("/staff/targets/{target_id}/retry", response_class=HTMLResponse)
def retry(target_id: int, page: AssessPage, session: SessionDep, now: NowDep) -> Response:
    """An unreachable target to the workers again (the site may be back); audited."""
    if _target_or_404(session, target_id).status != TargetStatus.unreachable:
        return _refused(page, session, target_id, now, "not_unreachable", 409)
    if retry_unreachable(session, now=now, ids=[target_id]):
        _audit(session, page, "retried", target_id, now)
    return RedirectResponse(f"/staff/targets/{target_id}", 303)


@router.get("/staff/second-opinions", response_class=HTMLResponse)
def second_opinions(page: AssessPage, session: SessionDep) -> HTMLResponse:
    """Targets waiting for a second opinion (not those the user decided first) and, for
    supervisors, disputes waiting for a ruling."""
    waiting = assessment.waiting(
        session, TargetStatus.second_opinion, exclude_first_by=page.staff_id
    )
    disputed = (
        assessment.waiting(session, TargetStatus.disputed)
        if allowed(page.staff.role, "target.confirm")
        else []
    )
    return page.render(
        "staff/second_opinions.html", engine=templates, waiting=waiting, disputed=disputed
    )


@router.post("/staff/queue/bulk-confirm", response_class=HTMLResponse)
def bulk_confirm(page: ConfirmPage, session: SessionDep, now: NowDep) -> HTMLResponse:
    """Confirm every queued target whose media all match a trusted list exactly."""
    result = assessment.bulk_confirm(session, user=page.staff, now=now)
    return page.render(
        "staff/bulk_done.html", engine=templates, confirmed=result.confirmed, skipped=result.skipped
    )
