"""What every staff page shares: templates with the staff layout, the language, the
signed-in user, the CSRF token, and the headers that keep staff pages out of caches.

Staff pages are server-rendered, load nothing from outside the hotline (the CSP allows
'self' only) and never link to a reported URL: URLs are shown as text. The language
of a staff member is a cookie of its own (staff are not anonymous; reporters' pages
set no cookie at all).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles

from hotline import i18n, sessions
from hotline.authz import (
    PERMISSIONS,
    Forbidden,
    NotAuthenticated,
    allowed,
    bearer_scheme,
    signed_in_user,
)
from hotline.db import utcnow
from hotline.models import StaffUser
from hotline.settings import Settings, get_settings

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
LANGUAGE_COOKIE = "hotline_staff_lang"


def N_(message: str) -> str:  # noqa: N802 (gettext's name for "translate later")
    """Marks a string for extraction; the layout translates it when it renders."""
    return message


# The navigation, in order: (path, label, permission).
NAVIGATION = (
    ("/staff/queue", N_("Queue"), "queue.view"),
    ("/staff/second-opinions", N_("Second opinions"), "target.assess"),
    ("/staff/disputes", N_("Partner disputes"), "target.confirm"),
    ("/staff/partners", N_("Partners"), "partners.view"),
    ("/staff/statistics", N_("Statistics"), "stats.view"),
    ("/staff/users", N_("Staff accounts"), "users.manage"),
    ("/staff/audit", N_("Audit log"), "audit.view"),
)


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC)


def staff_templates(*directories: Path) -> i18n.Templates:
    """Templates of a package's staff pages, which extend the layout in hotline/templates."""
    return i18n.Templates([*directories, TEMPLATES])


templates = staff_templates()


def staff_language(request: Request, settings: Settings) -> str:
    return i18n.negotiate(
        request.query_params.get("lang") or request.cookies.get(LANGUAGE_COOKIE),
        request.headers.get("accept-language"),
        settings.default_language,
    )


@dataclass
class StaffPage:
    """A staff page being answered: request, language, settings and (once signed in) user."""

    request: Request
    language: str
    settings: Settings
    user: StaffUser | None = None

    @property
    def staff(self) -> StaffUser:
        """The signed-in user (pages behind ``staff_page`` always have one)."""
        if self.user is None:
            raise NotAuthenticated()
        return self.user

    @property
    def staff_id(self) -> int:
        return int(self.staff.id or 0)

    @property
    def csrf(self) -> str:
        cookie = self.request.cookies.get(sessions.COOKIE, "")
        return sessions.csrf_token(cookie) if cookie else ""

    def gettext(self, message: str) -> str:
        return i18n.translations()[self.language].gettext(message)

    def render(
        self,
        template: str,
        status_code: int = 200,
        *,
        engine: i18n.Templates = templates,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        role = self.user.role if self.user else None
        values: dict[str, Any] = {
            "lang": i18n.language(self.language),
            "languages": i18n.available_languages(),
            "path": self.request.url.path,
            "site_name": self.settings.site_name,
            "user": self.user,
            "csrf_token": self.csrf,
            "navigation": [
                (path, label)
                for path, label, permission in NAVIGATION
                if role is not None and allowed(role, permission)
            ],
            "can": (lambda permission: role is not None and allowed(role, permission)),
        }
        html = engine.render(template, self.language, **(values | context))
        return HTMLResponse(
            html,
            status_code,
            headers={
                "Cache-Control": "no-store",
                "Content-Language": self.language,
                **(headers or {}),
            },
        )


def staff_page(permission: str) -> Callable[..., Awaitable[StaffPage]]:
    """A dependency answering a ``StaffPage`` of a signed-in user allowed ``permission``;
    401 (which the app turns into the sign-in page) or 403 otherwise. Use as
    ``Annotated[StaffPage, Depends(staff_page("queue.view"))]``."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
        now: Annotated[dt.datetime, Depends(utcnow)],
    ) -> StaffPage:
        settings = get_settings()
        user = await signed_in_user(request, credentials, now)
        if not allowed(user.role, permission):
            raise Forbidden()
        return StaffPage(request, staff_language(request, settings), settings, user)

    dependency.__name__ = f"authorize_{permission.replace('.', '_')}"
    return dependency


def public_staff_page(request: Request) -> StaffPage:
    """A staff page shown before sign-in (the sign-in and enrolment pages)."""
    settings = get_settings()
    return StaffPage(request, staff_language(request, settings), settings)


def set_session_cookie(response: HTMLResponse | Any, token: str, settings: Settings) -> None:
    response.set_cookie(
        sessions.COOKIE,
        token,
        max_age=settings.staff_session_max_hours * 3600,
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: HTMLResponse | Any, settings: Settings) -> None:
    response.delete_cookie(
        sessions.COOKIE, path="/", secure=settings.secure_cookies, httponly=True, samesite="strict"
    )
