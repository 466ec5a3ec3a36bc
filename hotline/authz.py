"""Who may do what: the one role matrix of the staff routes, and the dependency that applies it.

Every staff route declares a permission of ``PERMISSIONS`` through ``authorize`` (or the
``Staff`` alias); ``docs/access.md`` shows the same matrix and a test walks it. Only a
staff bearer token from ``POST /api/v1/auth/token`` authenticates: partner credentials
(API keys, signatures, partner tokens) are never looked at here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hotline.auth import user_for_token
from hotline.db import session_scope, utcnow
from hotline.errors import HotlineError
from hotline.models import Role, StaffUser

A, S, ADM, AUD = Role.analyst, Role.supervisor, Role.admin, Role.auditor

PERMISSIONS: dict[str, frozenset[Role]] = {
    "queue.view": frozenset({A, S, ADM}),
    "queue.claim": frozenset({A, S}),
    "target.view": frozenset({A, S, ADM}),
    "target.assess": frozenset({A, S}),
    "target.confirm": frozenset({S}),
    "media.unblur": frozenset({A, S}),
    "hashlists.view": frozenset({A, S, ADM}),
    "hashlists.manage": frozenset({S, ADM}),
    "partners.view": frozenset({S, ADM}),
    "partners.manage": frozenset({ADM}),
    "export": frozenset({S, ADM}),
    "stats.view": frozenset({A, S, ADM, AUD}),
    "audit.view": frozenset({ADM, AUD}),
    "users.manage": frozenset({ADM}),
    "self.view": frozenset({A, S, ADM, AUD}),
}


class NotAuthenticated(HotlineError):
    code = "not_authenticated"
    status_code = 401
    detail = "Sign in: send a staff bearer token from POST /api/v1/auth/token."
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(HotlineError):
    code = "forbidden"
    status_code = 403
    detail = "Your role does not allow this."


def allowed(role: Role, permission: str) -> bool:
    return role in PERMISSIONS[permission]


_bearer = HTTPBearer(auto_error=False, description="A staff token from POST /api/v1/auth/token.")


def authorize(permission: str) -> Callable[..., StaffUser]:
    """A dependency answering the signed-in staff user allowed ``permission``, or 401/403."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}: add it to hotline.authz.PERMISSIONS")

    def dependency(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        now: Annotated[dt.datetime, Depends(utcnow)],
    ) -> StaffUser:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise NotAuthenticated()
        with session_scope() as session:
            user = user_for_token(session, credentials.credentials, now=now)
        if user is None:
            raise NotAuthenticated()
        if not allowed(user.role, permission):
            raise Forbidden()
        return user

    dependency.__name__ = f"authorize_{permission.replace('.', '_')}"
    return dependency


def staff(permission: str) -> Any:
    """``Annotated[StaffUser, Depends(authorize(permission))]``, for routes built at run
    time; routes checked by mypy spell the ``Annotated`` out (a call is no type for it)."""
    return Annotated[StaffUser, Depends(authorize(permission))]
