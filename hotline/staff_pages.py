"""Staff pages of the foundation: sign-in, second-factor enrolment, sign-out, language,
staff accounts (admins) and the audit log (auditors, admins).

Wiring: imported by ``hotline.web`` only. A refused sign-in still counts against the
account, so these routes commit their own unit of work before they answer. Every
sign-in, failed sign-in, sign-out and admin change is audited.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from urllib.parse import quote, unquote, urlsplit

import pyotp
import segno
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from hotline import audit, auth, i18n, sessions
from hotline.authz import session_lifetimes
from hotline.db import session_scope
from hotline.deps import NowDep
from hotline.errors import HotlineError
from hotline.models import Role, StaffUser
from hotline.settings import get_settings
from hotline.staff_ui import (
    LANGUAGE_COOKIE,
    StaffPage,
    clear_session_cookie,
    public_staff_page,
    set_session_cookie,
    staff_page,
)

router = APIRouter(include_in_schema=False)
PublicPage = Annotated[StaffPage, Depends(public_staff_page)]
HOME = "/staff/queue"
ROLE_HOME = {Role.auditor: "/staff/audit", Role.admin: "/staff/users"}


def _home(user: StaffUser) -> str:
    return ROLE_HOME.get(user.role, HOME)


def _staff_path(target: str | None) -> str | None:
    """``target`` if a browser sent there stays on the staff pages, else None: a path
    (no scheme or host: never an open redirect) under /staff with no backslash, control
    character or dot segment, percent-encoded or not (``/staff/../api/...?unblur=true``
    would land on a safe view, unblurred and audited, that nobody asked for)."""
    if not target or "\\" in target or any(ord(c) < 0x21 or c == "\x7f" for c in target):
        return None
    parts = urlsplit(target)
    if (
        parts.scheme
        or parts.netloc
        or not (parts.path == "/staff" or parts.path.startswith("/staff/"))
    ):
        return None
    if any(segment in (".", "..") for segment in unquote(parts.path).split("/")):
        return None
    return target


def _safe_next(target: str | None, user: StaffUser) -> str:
    return _staff_path(target) or _home(user)


def _record(
    session: object,
    action: str,
    actor: str,
    actor_id: int | None,
    now: dt.datetime,
    **details: object,
) -> None:
    audit.record(
        session,  # type: ignore[arg-type]
        action=action,
        actor=actor if "://" not in actor else "invalid",
        actor_id=actor_id,
        object_type="staff_user",
        object_id=details.pop("object_id", None),  # type: ignore[arg-type]
        details=details or None,
        now=now,
    )


@router.get("/staff", response_class=HTMLResponse)
def staff_home() -> Response:
    return RedirectResponse(HOME, 303)


@router.get("/staff/login", response_class=HTMLResponse)
def login_form(page: PublicPage, next: str = "") -> HTMLResponse:
    return page.render("staff/login.html", error=None, email="", next=next)


@router.post("/staff/login", response_class=HTMLResponse)
def login(
    page: PublicPage,
    now: NowDep,
    email: Annotated[str, Form(max_length=254)] = "",
    password: Annotated[str, Form(max_length=auth.MAX_PASSWORD_LENGTH)] = "",
    totp: Annotated[str, Form(max_length=16)] = "",
    next: Annotated[str, Form(max_length=512)] = "",
) -> Response:
    settings = page.settings
    lifetimes = session_lifetimes(settings)
    with session_scope() as session:
        result = auth.check_login(
            session,
            email=email,
            password=password,
            totp=totp,
            now=now,
            cipher=auth.configured_staff_cipher(),
            allow_enrolment=True,
        )
        token = None
        if result.user is not None:
            token = sessions.start(
                session, result.user, now=now, lifetimes=lifetimes, pending_totp=result.enrolling
            )
        attempted = email.strip().lower()[:254]
        if result.user is None:
            action: str = audit.Action.login_failed
        else:
            action = "enrolment_started" if result.enrolling else audit.Action.login
        _record(
            session,
            action,
            attempted,
            result.user.id if result.user else None,
            now,
            channel="browser",
        )
        user = result.user
    if user is None or token is None:
        error = result.error or auth.InvalidCredentials()
        headers = (
            {"Retry-After": str(error.retry_after)}
            if isinstance(error, auth.AccountLocked)
            else None
        )
        return page.render(
            "staff/login.html",
            error.status_code,
            headers=headers,
            error=error.code,
            email=email[:254],
            next=next,
        )
    response = RedirectResponse("/staff/enrol" if result.enrolling else _safe_next(next, user), 303)
    set_session_cookie(response, token, settings)
    return response


def _enrolling(
    request: Request, now: dt.datetime, page: StaffPage
) -> tuple[sessions.SignedIn, str] | None:
    cookie = request.cookies.get(sessions.COOKIE)
    with session_scope() as session:
        signed_in = sessions.resolve(
            session, cookie, now=now, lifetimes=session_lifetimes(page.settings)
        )
        if signed_in is None or not signed_in.pending_totp:
            return None
        user = session.get(StaffUser, signed_in.user.id)
        uri = (
            auth.totp_uri(user, auth.configured_staff_cipher(), page.settings.site_name)
            if user
            else None
        )
    return (signed_in, uri) if uri else None


def _qr_svg(uri: str) -> str:
    # Rendered here, as an inline data URI: the secret never leaves the hotline.
    return segno.make(uri, error="m").svg_data_uri(scale=5, border=2)


def _secret_of(uri: str) -> str:
    return str(pyotp.parse_uri(uri).secret)


@router.get("/staff/enrol", response_class=HTMLResponse)
def enrol_form(request: Request, page: PublicPage, now: NowDep) -> Response:
    found = _enrolling(request, now, page)
    if found is None:
        return RedirectResponse("/staff/login", 303)
    _, uri = found
    return page.render("staff/enrol.html", qr=_qr_svg(uri), secret=_secret_of(uri), error=None)


@router.post("/staff/enrol", response_class=HTMLResponse)
def enrol(
    request: Request,
    page: PublicPage,
    now: NowDep,
    totp: Annotated[str, Form(max_length=16)] = "",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    cookie = request.cookies.get(sessions.COOKIE, "")
    found = _enrolling(request, now, page)
    if found is None or not sessions.csrf_ok(cookie, csrf_token):
        return RedirectResponse("/staff/login", 303)
    signed_in, uri = found
    with session_scope() as session:
        user = session.get(StaffUser, signed_in.user.id, with_for_update=True)
        ok = user is not None and auth.enrol(
            session, user, totp, now=now, cipher=auth.configured_staff_cipher()
        )
        token = None
        if ok and user is not None:
            # A new session for the signed-in account: the half-way one is never promoted.
            sessions.end(session, cookie)
            token = sessions.start(
                session, user, now=now, lifetimes=session_lifetimes(page.settings)
            )
        _record(
            session,
            "enrolled" if ok else audit.Action.login_failed,
            signed_in.user.email,
            signed_in.user.id,
            now,
            channel="browser",
        )
    if not ok:
        return page.render(
            "staff/enrol.html", 401, qr=_qr_svg(uri), secret=_secret_of(uri), error="invalid_code"
        )
    response = RedirectResponse(_home(signed_in.user), 303)
    if token is not None:
        set_session_cookie(response, token, page.settings)
    return response


@router.post("/staff/logout")
def logout(request: Request, page: PublicPage, now: NowDep) -> Response:
    # Signing out needs no CSRF token: the worst a forged sign-out does is sign out.
    cookie = request.cookies.get(sessions.COOKIE)
    with session_scope() as session:
        signed_in = sessions.resolve(
            session, cookie, now=now, lifetimes=session_lifetimes(page.settings)
        )
        sessions.end(session, cookie)
        if signed_in is not None:
            _record(session, audit.Action.logout, signed_in.user.email, signed_in.user.id, now)
    response = RedirectResponse("/staff/login", 303)
    clear_session_cookie(response, page.settings)
    return response


@router.get("/staff/language")
def choose_language(request: Request, lang: str = "", next: str = "") -> Response:
    chosen = i18n.negotiate(lang, None, i18n.SOURCE_LANGUAGE)
    response = RedirectResponse(_staff_path(next) or "/staff/login", 303)
    response.set_cookie(
        LANGUAGE_COOKIE,
        chosen,
        max_age=365 * 86400,
        path="/staff",
        httponly=True,
        samesite="strict",
        secure=get_settings().secure_cookies,
    )
    return response


# Staff accounts (admins) ----------------------------------------------------------------


UsersPage = Annotated[StaffPage, Depends(staff_page("users.manage"))]


def _users_page(page: StaffPage, status_code: int = 200, **context: Any) -> HTMLResponse:
    with session_scope() as session:
        users = list(auth.list_users(session))
        for user in users:
            session.expunge(user)
    values: dict[str, Any] = {
        "users": users,
        "roles": list(Role),
        "created": None,
        "error": None,
        "done": None,
    }
    return page.render("staff/users.html", status_code, **(values | context))


@router.get("/staff/users", response_class=HTMLResponse)
def users(page: UsersPage) -> HTMLResponse:
    return _users_page(page)


@router.post("/staff/users", response_class=HTMLResponse)
def create_user(
    page: UsersPage,
    now: NowDep,
    email: Annotated[str, Form(max_length=254)] = "",
    role: Annotated[str, Form(max_length=20)] = "",
    password: Annotated[str, Form(max_length=auth.MAX_PASSWORD_LENGTH)] = "",
) -> HTMLResponse:
    admin = page.staff
    try:
        with session_scope() as session:
            user, _ = auth.create_user(
                session, email, role, password, now=now, cipher=auth.configured_staff_cipher()
            )
            _record(
                session,
                audit.Action.admin_change,
                admin.email,
                admin.id,
                now,
                object_id=user.id,
                change="user_created",
                role=user.role.value,
            )
            created = user.email
    except HotlineError as exc:
        return _users_page(page, exc.status_code, error=exc.code, form_email=email[:254])
    return _users_page(page, 201, created=created)


def _change(page: StaffPage, now: dt.datetime, user_id: int, change: str) -> HTMLResponse:
    admin = page.staff
    try:
        with session_scope() as session:
            user = session.get(StaffUser, user_id)
            if user is None:
                raise auth.StaffNotFound()
            if change == "disabled":
                auth.disable_user(session, user.email)
            else:
                auth.reset_2fa(session, user.email, cipher=auth.configured_staff_cipher())
            _record(
                session,
                audit.Action.admin_change,
                admin.email,
                admin.id,
                now,
                object_id=user_id,
                change=change,
            )
            email = user.email
    except HotlineError as exc:
        return _users_page(page, exc.status_code, error=exc.code)
    return _users_page(page, done=(change, email))


@router.post("/staff/users/{user_id}/disable", response_class=HTMLResponse)
def disable_user(user_id: int, page: UsersPage, now: NowDep) -> HTMLResponse:
    return _change(page, now, user_id, "disabled")


@router.post("/staff/users/{user_id}/reset-2fa", response_class=HTMLResponse)
def reset_2fa(user_id: int, page: UsersPage, now: NowDep) -> HTMLResponse:
    return _change(page, now, user_id, "second_factor_reset")


# Audit log (auditors, admins) ----------------------------------------------------------


AuditPage = Annotated[StaffPage, Depends(staff_page("audit.view"))]


@router.get("/staff/audit", response_class=HTMLResponse)
def audit_log(page: AuditPage, action: str = "", verify: bool = False) -> HTMLResponse:
    with session_scope() as session:
        events = list(audit.events(session, limit=200, action=action or None))
        for event in events:
            session.expunge(event)
        head = audit.head(session)
        checked = audit.verify(session) if verify else None
    return page.render(
        "staff/audit.html",
        events=events,
        head=head,
        verified=checked,
        action=action,
        actions=[a.value for a in audit.Action],
        quote=quote,
    )
