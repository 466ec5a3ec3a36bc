"""Staff HTML pages of partners: the registry (list, add, disable, enable, rotate a
secret), the dead-letter list with redelivery, partners' disputes, a target's
forwardings with what the re-checks learned and the notices that named it (linked from
the item page), and the hotline's statistics.

Routes of a few lines over the same services as the command line and the JSON API,
authorised by the matrix in ``hotline.authz``. Secrets are shown once, in the answer to
the form that made them, and never again. Reported URLs are never shown here at all:
a target is named by its id and linked to its item page.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session
from starlette.datastructures import FormData

from hotline.deps import NowDep, SessionDep
from hotline.errors import HotlineError, NotFound
from hotline.staff_ui import StaffPage, staff_page, staff_templates
from partners import delivery, disputes, registry, service, statistics
from partners.models import DeliveryState, PartnerKind, SecretPurpose
from reporting.models import Target

router = APIRouter(include_in_schema=False)
templates = staff_templates(Path(__file__).parent / "templates")

ViewPage = Annotated[StaffPage, Depends(staff_page("partners.view"))]
ManagePage = Annotated[StaffPage, Depends(staff_page("partners.manage"))]
TargetPage = Annotated[StaffPage, Depends(staff_page("target.view"))]
ConfirmPage = Annotated[StaffPage, Depends(staff_page("target.confirm"))]
StatsPage = Annotated[StaffPage, Depends(staff_page("stats.view"))]

DEAD_LETTERS = (DeliveryState.failed, DeliveryState.dead)
ROTATABLE = (
    SecretPurpose.outbound_signing,
    SecretPurpose.inbound_signing,
    SecretPurpose.inbound_api_key,
)


async def form_data(request: Request) -> FormData:
    return await request.form()


FormDep = Annotated[FormData, Depends(form_data)]


def _actor(page: StaffPage) -> dict[str, Any]:
    return {"actor": page.staff.email, "actor_id": page.staff.id}


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def _field(form: FormData, name: str, limit: int = 2000) -> str:
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def _spec(form: FormData) -> dict[str, Any]:
    """A partner as the add form describes it, for `registry.parse_spec`."""
    asns: list[Any] = []
    for value in _list(_field(form, "asns")):
        number = value.upper().removeprefix("AS")
        asns.append(int(number) if number.isdigit() else value)
    return {
        "name": _field(form, "name", 200),
        "kind": _field(form, "kind", 32),
        "countries": _list(_field(form, "countries")),
        "asns": asns,
        "domains": _list(_field(form, "domains")),
        "webhook_url": _field(form, "webhook_url") or None,
        "email": _field(form, "email", 254) or None,
        "languages": _list(_field(form, "languages")),
        "may_export": form.get("may_export") == "on",
        "may_submit": form.get("may_submit") == "on",
        "note": _field(form, "note") or None,
    }


def _partners_page(
    page: StaffPage, session: Session, status_code: int = 200, **context: Any
) -> HTMLResponse:
    values: dict[str, Any] = {
        "partners": registry.list_partners(session),
        "kinds": [k.value for k in PartnerKind],
        "purposes": [p.value for p in ROTATABLE],
        "issued": None,
        "done": None,
        "error": None,
        "error_detail": None,
        "form": {},
    }
    return page.render("staff/partners.html", status_code, engine=templates, **(values | context))


def _refused(page: StaffPage, session: Session, exc: HotlineError, **context: Any) -> HTMLResponse:
    # Nothing of the refused form is kept; the page says why.
    session.rollback()
    return _partners_page(
        page,
        session,
        exc.status_code,
        error=exc.code,
        error_detail=exc.detail,
        **context,
    )


@router.get("/staff/partners", response_class=HTMLResponse)
def partners(page: ViewPage, session: SessionDep) -> HTMLResponse:
    """The registry: every partner, what it serves, where it is reached, whether active."""
    return _partners_page(page, session)


@router.post("/staff/partners", response_class=HTMLResponse)
def add_partner(page: ManagePage, session: SessionDep, now: NowDep, form: FormDep) -> Response:
    """Register a partner; its secrets are shown once, in this answer."""
    data = _spec(form)
    try:
        added = registry.add_partner(
            session,
            registry.parse_spec(data),
            now=now,
            cipher=registry.partner_cipher(),
            production=page.settings.env == "production",
            **_actor(page),
        )
    except HotlineError as exc:
        shown = {k: ", ".join(map(str, v)) if isinstance(v, list) else v for k, v in data.items()}
        return _refused(page, session, exc, form=shown)
    issued = {purpose.value: value for purpose, value in added.secrets.items()}
    return _partners_page(
        page,
        session,
        201,
        issued={"name": added.partner.name, "secrets": issued},
    )


def _change(
    page: StaffPage, session: Session, partner_id: int, change: str, now: dt.datetime, **kw: Any
) -> HTMLResponse:
    try:
        partner = registry.find_partner(session, partner_id)
        if change == "disabled":
            registry.disable_partner(session, partner, now=now, **kw, **_actor(page))
        else:
            registry.enable_partner(session, partner, now=now, **_actor(page))
    except HotlineError as exc:
        return _refused(page, session, exc)
    return _partners_page(page, session, done={"change": change, "name": partner.name})


@router.post("/staff/partners/{partner_id}/disable", response_class=HTMLResponse)
def disable_partner(
    partner_id: int,
    page: ManagePage,
    session: SessionDep,
    now: NowDep,
    reason: Annotated[str, Form(max_length=200)] = "",
) -> HTMLResponse:
    """Nothing more is sent to the partner; its API keys are refused."""
    return _change(
        page, session, partner_id, "disabled", now, reason=reason.strip() or "disabled by admin"
    )


@router.post("/staff/partners/{partner_id}/enable", response_class=HTMLResponse)
def enable_partner(
    partner_id: int, page: ManagePage, session: SessionDep, now: NowDep
) -> HTMLResponse:
    return _change(page, session, partner_id, "enabled", now)


@router.post("/staff/partners/{partner_id}/rotate-secret", response_class=HTMLResponse)
def rotate_secret(
    partner_id: int,
    page: ManagePage,
    session: SessionDep,
    now: NowDep,
    purpose: Annotated[str, Form(max_length=32)] = SecretPurpose.outbound_signing.value,
) -> HTMLResponse:
    """A new secret of ``purpose``, shown once; the previous one stays valid for
    ``HOTLINE_PARTNER_SECRET_OVERLAP_HOURS``."""
    if purpose not in {p.value for p in ROTATABLE}:
        return _partners_page(page, session, 422, error="validation_error")
    try:
        partner = registry.find_partner(session, partner_id)
        secret = registry.rotate_secret(
            session,
            partner,
            purpose=SecretPurpose(purpose),
            now=now,
            overlap=dt.timedelta(hours=page.settings.partner_secret_overlap_hours),
            cipher=registry.partner_cipher(),
            **_actor(page),
        )
    except HotlineError as exc:
        return _refused(page, session, exc)
    return _partners_page(
        page, session, issued={"name": partner.name, "secrets": {purpose: secret}}
    )


# The dead-letter list ---------------------------------------------------------------------


def _deliveries_page(
    page: StaffPage, session: Session, status_code: int = 200, **context: Any
) -> HTMLResponse:
    rows = delivery.list_deliveries(session, states=DEAD_LETTERS, limit=500)
    values: dict[str, Any] = {
        "deliveries": [dataclasses.asdict(r) for r in rows],
        "done": None,
        "error": None,
    }
    return page.render(
        "staff/partner_deliveries.html", status_code, engine=templates, **(values | context)
    )


@router.get("/staff/partners/deliveries", response_class=HTMLResponse)
def deliveries(page: ViewPage, session: SessionDep) -> HTMLResponse:
    """Deliveries that failed for good or ran out of attempts, oldest first."""
    return _deliveries_page(page, session)


@router.post("/staff/partners/deliveries/{delivery_id}/redeliver", response_class=HTMLResponse)
def redeliver(delivery_id: int, page: ManagePage, session: SessionDep, now: NowDep) -> HTMLResponse:
    """Send it again from its first attempt, with the same webhook-id; audited."""
    try:
        delivery.redeliver(session, delivery_id, now=now, **_actor(page))
    except HotlineError as exc:
        session.rollback()
        return _deliveries_page(page, session, exc.status_code, error=exc.code)
    return _deliveries_page(page, session, done=delivery_id)


# Disputes and a target's forwardings -------------------------------------------------------


def _disputes_page(
    page: StaffPage, session: Session, status_code: int = 200, **context: Any
) -> HTMLResponse:
    values: dict[str, Any] = {"disputes": disputes.list_disputes(session), "done": None}
    return page.render(
        "staff/partner_disputes.html", status_code, engine=templates, **(values | context)
    )


@router.get("/staff/disputes", response_class=HTMLResponse)
def dispute_list(page: ConfirmPage, session: SessionDep) -> HTMLResponse:
    """Forwardings partners dispute, oldest first: reverse on the item page, or keep."""
    return _disputes_page(page, session)


@router.post("/staff/disputes/{forwarding_id}/dismiss", response_class=HTMLResponse)
def dismiss(forwarding_id: int, page: ConfirmPage, session: SessionDep, now: NowDep) -> Response:
    """Keep the verdict: the dispute leaves the list and stays recorded."""
    disputes.dismiss(session, forwarding_id, user=page.staff, now=now)
    return RedirectResponse("/staff/disputes", 303)


@router.get("/staff/targets/{target_id}/forwardings", response_class=HTMLResponse)
def target_forwardings(target_id: int, page: TargetPage, session: SessionDep) -> HTMLResponse:
    """Who received the target, by which rule, and what they answered."""
    target = session.get(Target, target_id)
    if target is None:
        raise NotFound("No target has this id.")
    return page.render(
        "staff/target_forwardings.html",
        engine=templates,
        target_id=target_id,
        target_status=str(target.status),
        forwardings=service.target_forwardings(session, target_id),
        watch=service.target_watch(session, target_id),
    )


# Statistics --------------------------------------------------------------------------------

PERIODS = (30, 365)
"""The periods offered besides all time, in days."""


@router.get("/staff/statistics", response_class=HTMLResponse)
def statistics_page(
    page: StatsPage,
    session: SessionDep,
    now: NowDep,
    days: Annotated[int | None, Query(ge=1, le=36500)] = None,
) -> HTMLResponse:
    """Reports, confirmation rate, hosting countries, removal within three days."""
    since = now - dt.timedelta(days=days) if days is not None else None
    return page.render(
        "staff/statistics.html",
        engine=templates,
        days=days,
        periods=PERIODS,
        figures=statistics.statistics(session, since=since),
    )
