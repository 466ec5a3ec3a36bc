"""Public intake JSON API under /api/v1."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Response, status

from hotline.deps import NowDep, PeerDep, SessionDep, SettingsDep
from reporting import service
from reporting.models import ReportSource
from reporting.ratelimit import get_limiter
from reporting.schemas import ErrorBody, ReportAccepted, ReportCreate, ReportStatusPublic

router = APIRouter(prefix="/api/v1", tags=["public reports"])

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Unreadable request body (`invalid_body`)."},
    413: {"model": ErrorBody, "description": "Request body too large (`payload_too_large`)."},
    422: {
        "model": ErrorBody,
        "description": "Invalid input: `invalid_url`, `unsupported_scheme`, `url_not_public`, "
        "`url_too_long`, `description_too_long`, `validation_error`.",
    },
}


@router.post(
    "/reports",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ReportAccepted,
    responses={
        **ERRORS,
        429: {"model": ErrorBody, "description": "Too many reports (`rate_limited`)."},
    },
    summary="Report a web address anonymously",
)
def create_report(
    data: ReportCreate, session: SessionDep, settings: SettingsDep, peer: PeerDep, now: NowDep
) -> ReportAccepted:
    """Accepted reports are stored before this answers; keep the receipt to check the status."""
    receipt = service.accept_public_report(
        session,
        data,
        source=ReportSource.api,
        settings=settings,
        peer=peer,
        now=now,
        limiter=get_limiter(),
    )
    return ReportAccepted(receipt=receipt, status_url=f"/api/v1/reports/{receipt}")


@router.get(
    "/reports/{receipt}",
    response_model=ReportStatusPublic,
    responses={
        404: {
            "model": ErrorBody,
            "description": "No report has this receipt (`receipt_not_found`).",
        }
    },
    summary="Coarse status of a report",
)
def get_report_status(
    session: SessionDep,
    response: Response,
    receipt: str = Path(description="The receipt given when the report was made."),
) -> ReportStatusPublic:
    # Like the status page: no cache between the reporter and us keeps the answer.
    response.headers["Cache-Control"] = "no-store"
    return ReportStatusPublic(status=service.report_status(session, receipt))
