"""Who may do what: the one role matrix of the staff routes, and the dependency that applies it.

Every staff route declares a permission of ``PERMISSIONS`` through ``authorize``;
``docs/access.md`` shows the same matrix and a test walks it. A staff bearer token from
``POST /api/v1/auth/token`` or a staff session cookie (``hotline.sessions``; unsafe
methods need its CSRF token) authenticates: partner credentials (API keys, signatures,
partner tokens) are never looked at here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from hotline import sessions
from hotline.auth import user_for_token
from hotline.db import session_scope, utcnow
from hotline.errors import HotlineError
from hotline.models import Role, StaffUser
from hotline.settings import Settings, get_settings

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
    # A browser opening an address of the API in a tab (the item page's links to a
    # frame) is sent to the sign-in page; scripts get the JSON.
    page_when_opened = True


class Forbidden(HotlineError):
    code = "forbidden"
    status_code = 403
    detail = "Your role does not allow this."


def allowed(role: Role, permission: str) -> bool:
    return role in PERMISSIONS[permission]


bearer_scheme = HTTPBearer(
    auto_error=False, description="A staff token from POST /api/v1/auth/token."
)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class CsrfFailed(HotlineError):
    code = "csrf_failed"
    status_code = 403
    detail = "This form has expired or did not come from this site. Reload the page and try again."


def session_lifetimes(settings: Settings) -> sessions.Lifetimes:
    return sessions.Lifetimes(
        idle=dt.timedelta(minutes=settings.staff_session_idle_minutes),
        absolute=dt.timedelta(hours=settings.staff_session_max_hours),
    )


def _token_user(token: str, now: dt.datetime) -> StaffUser | None:
    with session_scope() as session:
        return user_for_token(session, token, now=now)


def _cookie_user(cookie: str, now: dt.datetime) -> sessions.SignedIn | None:
    with session_scope() as session:
        return sessions.resolve(
            session, cookie, now=now, lifetimes=session_lifetimes(get_settings())
        )


async def _csrf_presented(request: Request) -> str | None:
    presented = request.headers.get(sessions.CSRF_HEADER)
    if presented is None and request.headers.get("content-type", "").startswith(FORM_TYPES):
        value = (await request.form()).get(sessions.CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    return presented


async def signed_in_user(
    request: Request, credentials: HTTPAuthorizationCredentials | None, now: dt.datetime
) -> StaffUser:
    """The staff user of a bearer token or, failing that, of the session cookie (whose
    unsafe requests must carry the session's CSRF token)."""
    if credentials is not None:
        user = await run_in_threadpool(_token_user, credentials.credentials, now)
        if user is None:
            raise NotAuthenticated()
        return user
    cookie = request.cookies.get(sessions.COOKIE)
    if not cookie:
        raise NotAuthenticated()
    signed_in = await run_in_threadpool(_cookie_user, cookie, now)
    if signed_in is None or signed_in.pending_totp:
        raise NotAuthenticated()
    if request.method not in SAFE_METHODS and not sessions.csrf_ok(
        cookie, await _csrf_presented(request)
    ):
        raise CsrfFailed()
    return signed_in.user


def authorize(permission: str) -> Callable[..., Awaitable[StaffUser]]:
    """A dependency answering the signed-in staff user allowed ``permission``, or 401/403."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}: add it to hotline.authz.PERMISSIONS")

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
        now: Annotated[dt.datetime, Depends(utcnow)],
    ) -> StaffUser:
        user = await signed_in_user(request, credentials, now)
        if not allowed(user.role, permission):
            raise Forbidden()
        return user

    dependency.__name__ = f"authorize_{permission.replace('.', '_')}"
    return dependency


def staff(permission: str) -> Any:
    """``Annotated[StaffUser, Depends(authorize(permission))]``, for routes built at run
    time; routes checked by mypy spell the ``Annotated`` out (a call is no type for it)."""
    return Annotated[StaffUser, Depends(authorize(permission))]
