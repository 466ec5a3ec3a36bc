"""The partner API under /api/v1/partner: reports in bulk, acknowledgements, status.

Every call carries the partner's API key (``Authorization: Bearer hpk_...``) and a
Standard Webhooks signature of its body; see docs/partners.md. The body is read raw,
so the signature is checked over the exact bytes before anything is parsed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from hotline.authz import authorize
from hotline.deps import NowDep, SessionDep, SettingsDep
from hotline.errors import HotlineError
from hotline.models import StaffUser
from partners import disputes, exports, holds, inbound, registry, service, statistics
from partners.errors import PartnerUnauthorized
from partners.schemas import (
    DisputeCreate,
    DisputeRead,
    ForwardingRead,
    ForwardingView,
    HoldChange,
    HoldRead,
    InboundReports,
    PeerDocument,
    PeerResult,
    ReportResults,
    Statistics,
    StatusReport,
    TargetWatch,
)
from reporting.schemas import ErrorBody

router = APIRouter(prefix="/api/v1/partner", tags=["partner API"])
Model = TypeVar("Model", bound=BaseModel)

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "API key or signature missing or invalid."},
    403: {"model": ErrorBody, "description": "Not allowed for this partner (`forbidden`)."},
    422: {"model": ErrorBody, "description": "Invalid body (`validation_error`)."},
}


class InvalidBody(HotlineError):
    code = "validation_error"
    status_code = 422
    detail = "The request body is not valid for this call."


async def raw_body(request: Request) -> bytes:
    return await request.body()


RawBody = Annotated[bytes, Depends(raw_body)]
Authorization = Annotated[str | None, Header(include_in_schema=False)]


def _api_key(authorization: str | None) -> str | None:
    scheme, _, key = (authorization or "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else None


def _parse(model: type[Model], body: bytes) -> Model:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()})
        raise InvalidBody(
            "Some fields are missing or invalid: " + ", ".join(fields) + "."
        ) from None


def _signed_call(
    session: Session,
    request: Request,
    body: bytes,
    authorization: str | None,
    now: Any,
    endpoint: str,
    handle: Callable[[Any], BaseModel],
) -> JSONResponse:
    """Authenticate; answer a replay with the stored result; else run ``handle`` and store
    its answer with the change, in one unit of work."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    partner, webhook_id = inbound.authenticate(
        session,
        api_key=_api_key(authorization),
        body=body,
        headers=headers,
        now=now,
        cipher=registry.partner_cipher(),
    )
    earlier = inbound.replayed(session, partner, webhook_id)
    if earlier is not None:
        return JSONResponse(
            json.loads(earlier.result), earlier.status_code, headers={"Webhook-Replayed": "true"}
        )
    result = handle(partner).model_dump(mode="json")
    try:
        inbound.remember(
            session, partner, webhook_id, endpoint=endpoint, status_code=200, result=result, now=now
        )
    except IntegrityError:
        # The same call ran concurrently and committed first: undo ours, answer with its.
        session.rollback()
        earlier = inbound.replayed(session, partner, webhook_id)
        if earlier is None:  # pragma: no cover - the conflict was that very row
            raise
        return JSONResponse(
            json.loads(earlier.result), earlier.status_code, headers={"Webhook-Replayed": "true"}
        )
    return JSONResponse(result, 200)


@router.post(
    "/reports",
    response_model=ReportResults,
    responses=ERRORS,
    summary="Report up to 500 URLs, each taken like a public report",
)
def submit_reports(
    request: Request,
    body: RawBody,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    authorization: Authorization = None,
) -> JSONResponse:
    def handle(partner: Any) -> BaseModel:
        data = _parse(InboundReports, body)
        results = inbound.submit_reports(session, partner, data.reports, settings=settings, now=now)
        return ReportResults(results=results)

    return _signed_call(session, request, body, authorization, now, "reports", handle)


@router.post(
    "/webhook",
    response_model=PeerResult,
    responses={
        **ERRORS,
        403: {"model": ErrorBody, "description": "This partner may not submit reports."},
        404: {"model": ErrorBody, "description": "A status naming a forwarding not yours."},
    },
    summary="A peer hotline's delivery: a forwarding taken as a report, or a status",
)
def peer_webhook(
    request: Request,
    body: RawBody,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    authorization: Authorization = None,
) -> JSONResponse:
    """Another hotline running this software delivers here (its partner entry for us has
    this URL as webhook): the forwarding documents of docs/forwarding.md, signed and with
    the API key we issued it, like every partner call."""

    def handle(partner: Any) -> BaseModel:
        document = _parse(PeerDocument, body)
        return inbound.receive(session, partner, document, settings=settings, now=now)

    return _signed_call(session, request, body, authorization, now, "webhook", handle)


@router.post(
    "/forwardings/{forwarding_id}/acknowledge",
    response_model=ForwardingRead,
    responses={**ERRORS, 404: {"model": ErrorBody, "description": "Not your forwarding."}},
    summary="Confirm receipt of a forwarding",
)
def acknowledge(
    forwarding_id: int,
    request: Request,
    body: RawBody,
    session: SessionDep,
    now: NowDep,
    authorization: Authorization = None,
) -> JSONResponse:
    def handle(partner: Any) -> BaseModel:
        return _read(inbound.acknowledge(session, partner, forwarding_id, now=now))

    return _signed_call(session, request, body, authorization, now, "acknowledge", handle)


@router.post(
    "/forwardings/{forwarding_id}/status",
    response_model=ForwardingRead,
    responses={**ERRORS, 404: {"model": ErrorBody, "description": "Not your forwarding."}},
    summary="Report what was done: received, LEA, ISP, content removed, ...",
)
def report_status(
    forwarding_id: int,
    request: Request,
    body: RawBody,
    session: SessionDep,
    now: NowDep,
    authorization: Authorization = None,
) -> JSONResponse:
    def handle(partner: Any) -> BaseModel:
        data = _parse(StatusReport, body)
        return _read(inbound.report_status(session, partner, forwarding_id, data, now=now))

    return _signed_call(session, request, body, authorization, now, "status", handle)


@router.post(
    "/forwardings/{forwarding_id}/hold",
    response_model=HoldRead,
    responses={
        **ERRORS,
        404: {"model": ErrorBody, "description": "Not your forwarding."},
        409: {"model": ErrorBody, "description": "No notice of the target is held."},
    },
    summary="Law enforcement: release or extend the hold on the target's notices",
)
def change_hold(
    forwarding_id: int,
    request: Request,
    body: RawBody,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    authorization: Authorization = None,
) -> JSONResponse:
    def handle(partner: Any) -> BaseModel:
        data = _parse(HoldChange, body)
        limit = dt.timedelta(days=settings.law_enforcement_hold_max_days)
        return holds.change_hold(session, partner, forwarding_id, data, now=now, max_hold=limit)

    return _signed_call(session, request, body, authorization, now, "hold", handle)


@router.post(
    "/forwardings/{forwarding_id}/dispute",
    response_model=ForwardingRead,
    responses={
        **ERRORS,
        404: {"model": ErrorBody, "description": "Not your forwarding."},
        409: {"model": ErrorBody, "description": "A retraction, or retracted already."},
    },
    summary="Contest a forwarding: the hotline's supervisors look at it again",
)
def dispute(
    forwarding_id: int,
    request: Request,
    body: RawBody,
    session: SessionDep,
    now: NowDep,
    authorization: Authorization = None,
) -> JSONResponse:
    def handle(partner: Any) -> BaseModel:
        data = _parse(DisputeCreate, body)
        return _read(disputes.dispute(session, partner, forwarding_id, data, now=now))

    return _signed_call(session, request, body, authorization, now, "dispute", handle)


# Staff: what partners did with a target, and their disputes (docs/partners.md). ----------

staff_router = APIRouter(prefix="/api/v1", tags=["staff"], include_in_schema=False)


@staff_router.get("/targets/{target_id}/forwardings")
def target_forwardings(
    target_id: int,
    session: SessionDep,
    user: Annotated[StaffUser, Depends(authorize("target.view"))],
) -> list[ForwardingView]:
    """The target's forwardings: partner, kind, rule, state, delivery, the partner's answer."""
    return service.target_forwardings(session, target_id)


@staff_router.get("/targets/{target_id}/removal")
def target_removal(
    target_id: int,
    session: SessionDep,
    user: Annotated[StaffUser, Depends(authorize("target.view"))],
) -> TargetWatch:
    """What the re-checks learned: removal and time to removal, every re-check, and the
    notices to hosting providers that named the target."""
    return service.target_watch(session, target_id)


@staff_router.get("/statistics")
def hotline_statistics(
    session: SessionDep,
    now: NowDep,
    user: Annotated[StaffUser, Depends(authorize("stats.view"))],
    days: Annotated[int | None, Query(ge=1, le=36500)] = None,
) -> Statistics:
    """Reports received, confirmation rate, hosting countries of confirmed targets, and
    removal (share removed within 3 days, median time to removal); over the last ``days``
    days, or all time."""
    since = now - dt.timedelta(days=days) if days is not None else None
    return statistics.statistics(session, since=since)


@staff_router.get("/partner-disputes")
def partner_disputes(
    session: SessionDep,
    user: Annotated[StaffUser, Depends(authorize("target.confirm"))],
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[DisputeRead]:
    """Open disputes of partners, oldest first."""
    return disputes.list_disputes(session, limit=limit, offset=offset)


@staff_router.post("/partner-disputes/{forwarding_id}/dismiss")
def dismiss_dispute(
    forwarding_id: int,
    session: SessionDep,
    now: NowDep,
    user: Annotated[StaffUser, Depends(authorize("target.confirm"))],
) -> ForwardingView:
    """Keep the verdict: the forwarding leaves the dispute list (the dispute stays recorded)."""
    forwarding = disputes.dismiss(session, forwarding_id, user=user, now=now)
    views = service.target_forwardings(session, forwarding.target_id)
    return next(v for v in views if v.id == forwarding.id)


def _read(forwarding: Any) -> ForwardingRead:
    return ForwardingRead(
        id=forwarding.id,
        state=forwarding.state.value,
        acknowledged_at=forwarding.acknowledged_at,
        partner_status=forwarding.partner_status.value if forwarding.partner_status else None,
        partner_status_at=forwarding.partner_status_at,
    )


# Exports (partners.exports): read-only, so the API key suffices; the answer is signed. ---

ExportFormat = Annotated[
    exports.Format, Query(alias="format", description="csv, jsonl or vics (hashes only).")
]
Since = Annotated[
    str | None,
    Query(description="Only rows added or changed after this ISO 8601 time (incremental)."),
]


def _export(
    kind: exports.Kind,
    fmt: exports.Format,
    since: str | None,
    session: Session,
    now: Any,
    authorization: str | None,
) -> Response:
    key = _api_key(authorization)
    partner = registry.partner_for_api_key(session, key, now=now) if key else None
    if partner is None:
        raise PartnerUnauthorized()
    made, signature = exports.for_partner(
        session,
        partner,
        kind,
        fmt,
        since=exports.parse_since(since),
        now=now,
        cipher=registry.partner_cipher(),
    )
    headers = {
        **signature,
        "X-Export-As-Of": made.as_of.isoformat(),
        "X-Export-Rows": str(made.rows),
        "Cache-Control": "no-store",
    }
    return Response(made.body, media_type=made.media_type, headers=headers)


@router.get(
    "/exports/urls",
    responses={**ERRORS, 200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
    summary="The URL list: confirmed targets still online (csv or jsonl), signed",
)
def export_urls(
    session: SessionDep,
    now: NowDep,
    fmt: ExportFormat = "csv",
    since: Since = None,
    authorization: Authorization = None,
) -> Response:
    return _export("urls", fmt, since, session, now, authorization)


@router.get(
    "/exports/hashes",
    responses={**ERRORS, 200: {"content": {"text/csv": {}, "application/json": {}}}},
    summary="The hash list: SHA-256, SHA-1, MD5, PDQ, pHash with category, signed",
)
def export_hashes(
    session: SessionDep,
    now: NowDep,
    fmt: ExportFormat = "csv",
    since: Since = None,
    authorization: Authorization = None,
) -> Response:
    return _export("hashes", fmt, since, session, now, authorization)
