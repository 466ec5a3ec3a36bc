"""Public HTML pages: the report form, the receipt, the status check, the privacy notice.

Server-rendered and complete without JavaScript; no third-party assets, no inline
script or style (the CSP forbids them) and no cookies. A report sent here goes
through the same service, rate limiter and unit of work as the JSON API. A
receipt only ever travels in a response body or a POST body, never in a URL, and
no page can be cached (``no-store``): the reporter may share the computer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError

from hotline import i18n
from hotline.deps import NowDep, PeerDep, SessionDep, SettingsDep
from hotline.errors import HotlineError
from hotline.settings import Settings
from reporting import service
from reporting.errors import RateLimited, ReceiptNotFound
from reporting.models import ReportSource
from reporting.ratelimit import get_limiter
from reporting.schemas import ReportCreate

router = APIRouter(include_in_schema=False)
HERE = Path(__file__).parent
STATIC = HERE / "static"
templates = i18n.Templates(HERE / "templates")

FIELDS = ("url", "category", "description", "contact")
# Which form field an error of the service belongs to; the rest go to the whole form.
ERROR_FIELDS = {
    "invalid_url": "url",
    "unsupported_scheme": "url",
    "url_not_public": "url",
    "url_too_long": "url",
    "description_too_long": "description",
}


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC)


async def request_language(request: Request, settings: SettingsDep) -> str:
    """``lang`` from the form or the query, else Accept-Language, else the default."""
    explicit = request.query_params.get("lang")
    if request.method == "POST":
        posted = (await request.form()).get("lang")
        explicit = posted if isinstance(posted, str) and posted else explicit
    return i18n.negotiate(
        explicit, request.headers.get("accept-language"), settings.default_language
    )


@dataclass
class Page:
    """What every page is rendered with: the request, its language, the settings."""

    request: Request
    language: str
    settings: Settings

    def render(
        self,
        template: str,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        settings = self.settings
        values: dict[str, Any] = {
            "lang": i18n.language(self.language),
            "languages": i18n.available_languages(),
            "show_switcher": True,
            "path": self.request.url.path,
            "site_name": settings.site_name,
            "quick_exit_url": settings.quick_exit_url,
            "retention_days": settings.contact_retention_days,
            # The rate-limit secret lives two rotations; counters keyed by it die with it.
            "key_days": math.ceil(2 * settings.rate_limit_rotation_seconds / 86400),
        }
        html = templates.render(template, self.language, **(values | context))
        return HTMLResponse(
            html,
            status_code,
            headers={
                "Cache-Control": "no-store",
                "Content-Language": self.language,
                "Vary": "Accept-Language",
                **(headers or {}),
            },
        )


def current_page(
    request: Request, language: Annotated[str, Depends(request_language)], settings: SettingsDep
) -> Page:
    return Page(request, language, settings)


PageDep = Annotated[Page, Depends(current_page)]


class ReportForm(BaseModel):
    """The report form as posted; every field may be missing, so errors render as a page."""

    url: str = ""
    category: str = ""
    description: str = ""
    contact: str = ""
    lang: str = ""


def parse_report_form(form: ReportForm, language: str) -> ReportCreate | dict[str, str]:
    """The report to submit, or the error code of each field that is wrong."""
    errors: dict[str, str] = {}
    if not form.url.strip():
        errors["url"] = "url_missing"
    if not form.category:
        errors["category"] = "category_missing"
    # Browsers send line breaks as CRLF but count them as one character for maxlength.
    description = form.description.replace("\r\n", "\n").strip()
    try:
        data = ReportCreate.model_validate(
            {
                "url": form.url,
                "category": form.category,
                "description": description or None,
                "language": language,
                "contact": form.contact.strip() or None,
            }
        )
    except ValidationError as exc:
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            if field in FIELDS:
                errors.setdefault(field, f"{field}_invalid")
            else:
                errors.setdefault("form", "validation_error")
        return errors
    return errors or data


@router.get("/", response_class=HTMLResponse)
def report_form(page: PageDep) -> HTMLResponse:
    return page.render("report.html", form=ReportForm(), errors={})


@router.post("/", response_class=HTMLResponse)
def submit_report(
    form: Annotated[ReportForm, Form()],
    page: PageDep,
    session: SessionDep,
    peer: PeerDep,
    now: NowDep,
) -> HTMLResponse:
    """Send a report through the intake service; show the receipt once, in the page only."""
    if page.request.headers.get("sec-fetch-site") == "cross-site":
        # Another site's page posting here: refused, so that no site can make its
        # visitors' browsers file reports from their addresses (around the rate limit).
        # What it sent is not shown back. Browsers since 2023 send this header; the API
        # (/api/v1/reports) is for programs and is not affected.
        return page.render("report.html", 403, form=ReportForm(), errors={"form": "cross_site"})
    data = parse_report_form(form, page.language)
    if isinstance(data, dict):
        return page.render("report.html", 422, form=form, errors=data)
    try:
        receipt = service.accept_public_report(
            session,
            data,
            source=ReportSource.public,
            settings=page.settings,
            peer=peer,
            now=now,
            limiter=get_limiter(),
        )
    except RateLimited as exc:
        headers = {"Retry-After": str(exc.retry_after)}
        return page.render("report.html", 429, headers, form=form, errors={"form": exc.code})
    except HotlineError as exc:
        errors = {ERROR_FIELDS.get(exc.code, "form"): exc.code}
        return page.render("report.html", exc.status_code, form=form, errors=errors)
    # No switcher here: following it would lose the receipt, which is never shown again.
    return page.render("receipt.html", receipt=receipt, show_switcher=False)


@router.get("/status", response_class=HTMLResponse)
def status_form(page: PageDep) -> HTMLResponse:
    return page.render("status.html", status=None, errors={})


@router.post("/status", response_class=HTMLResponse)
def status_check(
    page: PageDep, session: SessionDep, receipt: Annotated[str, Form()] = ""
) -> HTMLResponse:
    """The coarse status for a receipt; unknown and malformed receipts get the same page."""
    typed, receipt = receipt, "".join(receipt.split())
    if not receipt:
        return page.render("status.html", 422, status=None, errors={"receipt": "receipt_missing"})
    try:
        status = service.report_status(session, receipt)
    except ReceiptNotFound as exc:
        # Kept in the field, so that the person can check it against what they noted.
        errors = {"receipt": exc.code}
        typed = "".join(c for c in typed if c.isprintable())[:200]
        return page.render("status.html", 404, status=None, errors=errors, typed=typed)
    return page.render("status.html", status=status.value, errors={})


@router.get("/privacy", response_class=HTMLResponse)
def privacy(page: PageDep) -> HTMLResponse:
    return page.render("privacy.html")


def error_page(request: Request, settings: Settings, status_code: int) -> HTMLResponse:
    """A public page for errors outside the API: not found, too large, server error."""
    language = i18n.negotiate(
        request.query_params.get("lang"),
        request.headers.get("accept-language"),
        settings.default_language,
    )
    _ = i18n.translations()[language].gettext
    messages = {
        404: (_("Page not found"), _("There is no page at this address.")),
        405: (_("Page not found"), _("There is no page at this address.")),
        413: (
            _("Too much text"),
            _("What you sent is too long. Please shorten the description and try again."),
        ),
    }
    title, explanation = messages.get(
        status_code,
        (
            _("Something went wrong"),
            _("Your report may not have been sent. Please try again in a few minutes."),
        ),
    )
    page = Page(request, language, settings)
    return page.render("error.html", status_code, title=title, explanation=explanation)
