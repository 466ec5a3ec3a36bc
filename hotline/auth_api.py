"""Staff sign-in for the JSON API: ``POST /api/v1/auth/token`` and ``GET /api/v1/auth/me``.

A refused sign-in still counts against the account: the route commits its own unit of
work before it answers with the error.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from hotline import audit, auth
from hotline.authz import authorize
from hotline.db import session_scope
from hotline.deps import NowDep, SettingsDep
from hotline.models import Role, StaffUser
from hotline.types import StorableText
from reporting.schemas import ErrorBody

router = APIRouter(prefix="/api/v1/auth", tags=["staff sign-in"])


class TokenRequest(BaseModel):
    email: StorableText = Field(max_length=254, description="The staff account's email address.")
    password: StorableText = Field(max_length=auth.MAX_PASSWORD_LENGTH)
    totp: StorableText = Field(
        max_length=16, description="The current code of the authenticator app."
    )


class TokenResponse(BaseModel):
    access_token: str = Field(description="Send as `Authorization: Bearer <token>`.")
    token_type: str = "bearer"  # noqa: S105 (the scheme, not a secret)
    expires_in: int = Field(description="Seconds until the token expires.")


class Me(BaseModel):
    email: str
    role: Role


@router.post(
    "/token",
    response_model=TokenResponse,
    responses={
        400: {"model": ErrorBody, "description": "Unreadable request body (`invalid_body`)."},
        401: {"model": ErrorBody, "description": "Wrong credentials (`invalid_credentials`)."},
        413: {"model": ErrorBody, "description": "Request body too large (`payload_too_large`)."},
        422: {"model": ErrorBody, "description": "Missing fields (`validation_error`)."},
        429: {
            "model": ErrorBody,
            "description": "Too many failed sign-ins (`account_locked`); see Retry-After.",
        },
    },
    summary="Exchange email, password and TOTP code for a short-lived bearer token",
)
def create_token(data: TokenRequest, now: NowDep, settings: SettingsDep) -> TokenResponse:
    with session_scope() as session:
        result = auth.check_login(
            session,
            email=data.email,
            password=data.password,
            totp=data.totp,
            now=now,
            cipher=auth.configured_staff_cipher(),
        )
        ttl = dt.timedelta(minutes=settings.staff_token_minutes)
        token = auth.issue_token(session, result.user, now=now, ttl=ttl) if result.user else None
        attempted = data.email.strip().lower()[:254]
        audit.record(
            session,
            action=audit.Action.login if token else audit.Action.login_failed,
            actor=attempted if "://" not in attempted else "invalid",
            actor_id=result.user.id if result.user else None,
            object_type="staff_user",
            now=now,
        )
    # Raised after the commit, so the failure counter and the lock are kept.
    if token is None:
        raise result.error or auth.InvalidCredentials()
    return TokenResponse(access_token=token, expires_in=int(ttl.total_seconds()))


me_responses: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No valid staff token (`not_authenticated`)."}
}


@router.get("/me", response_model=Me, responses=me_responses, summary="The signed-in staff user")
def me(user: Annotated[StaffUser, Depends(authorize("self.view"))]) -> Me:
    return Me(email=user.email, role=user.role)
