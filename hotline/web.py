"""The FastAPI application: routers, the error handler, body cap, access log, health.

Wiring only; imported by nothing but the ASGI server (``hotline.web:create_app``).
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import hotline
from hotline import auth_api, staff_pages, staff_ui
from hotline.authz import NotAuthenticated
from hotline.db import get_engine
from hotline.errors import HotlineError, NotFound, PayloadTooLarge
from hotline.logging import configure_logging
from hotline.memory import seal_content
from hotline.queue import producer
from hotline.settings import get_settings
from hotline.staff_ui import public_staff_page
from partners import api as partners_api
from partners import pages as partners_pages
from reporting import api as reporting_api
from reporting import pages as reporting_pages
from reporting.ratelimit import check_spec
from triage import api as triage_api
from triage import pages as triage_pages

access_log = logging.getLogger("hotline.access")


def error_response(code: str, detail: str, status_code: int, **extra: Any) -> JSONResponse:
    headers = extra.pop("headers", None)
    return JSONResponse({"code": code, "detail": detail, **extra}, status_code, headers=headers)


async def hotline_error_handler(request: Request, exc: Exception) -> Response:
    exc = cast(HotlineError, exc)
    if is_staff_page(request.url.path) or (exc.page_when_opened and opened_in_tab(request)):
        return staff_error_page(request, exc)
    return error_response(exc.code, exc.detail, exc.status_code, headers=_headers(exc) or None)


def _headers(exc: HotlineError) -> dict[str, str]:
    headers = dict(getattr(exc, "headers", None) or {})  # e.g. WWW-Authenticate
    retry_after = getattr(exc, "retry_after", None)  # rate limits, account lockout
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return headers


def opened_in_tab(request: Request) -> bool:
    """The browser navigates to this address (a link opened in a tab), rather than a
    script or an image asking for it."""
    return request.headers.get("sec-fetch-dest") == "document"


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    exc = cast(RequestValidationError, exc)
    if is_staff_page(request.url.path):  # a query or form a page sent: a page again
        return public_staff_page(request).render("staff/error.html", 422, error="validation_error")
    # Only the field names: pydantic's messages would echo the submitted values.
    fields = sorted(
        {
            "body"
            if err["type"] == "json_invalid"
            else ".".join(str(p) for p in err["loc"][1:]) or "body"
            for err in exc.errors()
        }
    )
    return error_response(
        "validation_error",
        "Some fields are missing or invalid: " + ", ".join(fields) + ".",
        422,
        fields=fields,
    )


HTTP_CODES = {
    400: ("invalid_body", "The request body could not be read."),
    404: ("not_found", "Nothing is here."),
    405: ("method_not_allowed", "This method is not allowed here."),
}


def is_api(path: str) -> bool:
    return path.startswith("/api/")


def is_staff_page(path: str) -> bool:
    return path == "/staff" or path.startswith("/staff/")


def staff_error_page(request: Request, exc: HotlineError) -> Response:
    """Staff pages: not signed in -> the sign-in page (and back); other errors as a page."""
    if isinstance(exc, NotAuthenticated):
        back = request.url.path if request.method == "GET" else ""
        return RedirectResponse("/staff/login" + (f"?next={quote(back)}" if back else ""), 303)
    page = public_staff_page(request)
    return page.render(
        "staff/error.html",
        exc.status_code,
        headers=_headers(exc),
        error=exc.code,
        reason=getattr(exc, "reason", None),  # a safe view's: why it cannot be shown
    )


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Framework errors (unreadable body, unknown path...): {code, detail} under /api/,
    a page a reporter can read elsewhere."""
    exc = cast(StarletteHTTPException, exc)
    if is_staff_page(request.url.path):
        code = "not_found" if exc.status_code in (404, 405) else "http_error"
        return public_staff_page(request).render("staff/error.html", exc.status_code, error=code)
    if not is_api(request.url.path):
        return reporting_pages.error_page(request, get_settings(), exc.status_code)
    code, detail = HTTP_CODES.get(
        exc.status_code, ("http_error", "The request could not be processed.")
    )
    return error_response(code, detail, exc.status_code, headers=getattr(exc, "headers", None))


async def out_of_range_handler(request: Request, exc: Exception) -> Response:
    """An id beyond 64 bits in a path or a body names no row: 404, as any id of nothing.
    SQLite cannot bind it (``OverflowError``), PostgreSQL refuses it as a bigint in a
    query. Anything else out of range is a server error (500, logged)."""
    if isinstance(exc, OverflowError):
        beyond = "SQLite INTEGER" in str(exc)
    else:
        from psycopg.errors import NumericValueOutOfRange

        statement = str(getattr(exc, "statement", "") or "")
        beyond = isinstance(getattr(exc, "orig", None), NumericValueOutOfRange) and (
            statement.lstrip().upper().startswith("SELECT")
        )
    if not beyond:
        raise exc
    return await hotline_error_handler(request, NotFound())


async def server_error_handler(request: Request, exc: Exception) -> Response:
    # The traceback is logged by the server; the client learns nothing about it.
    if not is_api(request.url.path):
        return reporting_pages.error_page(request, get_settings(), 500)
    return error_response("internal_error", "Something went wrong on our side.", 500)


class BodyLimitMiddleware:
    """Refuse request bodies above the cap with 413, declared or streamed. Paths under a
    prefix of ``larger`` have that prefix's cap instead (the partner API's bulk reports)."""

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = larger or {}

    def _cap(self, path: str) -> int:
        for prefix, cap in self.larger.items():
            if path.startswith(prefix):
                return cap
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self._cap(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > cap):
            await self._refuse(scope, receive, send)
            return
        seen = 0
        refused = False

        async def counting_receive() -> Message:
            # FastAPI turns errors raised while reading the body into 400s, so the
            # middleware answers 413 itself and tells the app the client went away.
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > cap:
                refused = True
                await self._refuse(scope, receive, send)
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counting_receive, guarded_send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        exc = PayloadTooLarge()
        response: Response = error_response(exc.code, exc.detail, exc.status_code)
        if not is_api(scope["path"]):
            response = reporting_pages.error_page(Request(scope), get_settings(), 413)
        await response(scope, receive, send)


class AccessLogMiddleware:
    """One line per request: method, route template, status, time. No address, no raw path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            access_log.info(
                "%s %s %d %.1fms",
                scope["method"],
                template,
                status,
                (time.perf_counter() - start) * 1000,
            )


_STATIC = ("/static/", "/staff/static/")


def _csp(images: bytes) -> bytes:
    return (
        b"default-src 'self'; img-src " + images + b"; style-src 'self'; script-src 'self'; "
        b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    )


class SecurityHeadersMiddleware:
    HEADERS = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", _csp(b"'self' data:")),
        (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), interest-cohort=()"),
    ]
    # The staff pages' script shows the safe views it fetched from this site as blob:
    # addresses; no other page needs them.
    STAFF_HEADERS = [
        (name, _csp(b"'self' data: blob:") if name == b"content-security-policy" else value)
        for name, value in HEADERS
    ]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        host = dict(scope.get("headers", [])).get(b"host", b"")
        # Nothing but the stylesheets, scripts and images of the pages is kept by a
        # browser or a proxy: not the staff API's reported URLs, descriptions and hashes,
        # nor a reporter's pages. (A route that sets its own Cache-Control keeps it.)
        path = str(scope.get("path", ""))
        page = self.STAFF_HEADERS if path.startswith("/staff/") else self.HEADERS
        static = path.startswith(_STATIC)
        defaults = page if static else [*page, (b"cache-control", b"no-store")]

        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, _relative(value, host) if name.lower() == b"location" else value)
                    for name, value in message.get("headers", [])
                ]
                names = {name.lower() for name, _ in headers}
                message["headers"] = headers + [(k, v) for k, v in defaults if k not in names]
            await send(message)

        await self.app(scope, receive, add_headers)


def _relative(location: bytes, host: bytes) -> bytes:
    """A redirect to this same host as a path: behind a TLS proxy the app sees plain
    http, and an absolute ``http://`` Location (the router's slash redirect) would send
    the browser, and a report's body with it, off HTTPS."""
    parts = urlsplit(location.decode("latin-1"))
    if not parts.netloc or parts.netloc.encode("latin-1").lower() != host.lower():
        return location
    path = parts.path or "/"
    return (path + (f"?{parts.query}" if parts.query else "")).encode("latin-1")


def healthz() -> dict[str, str]:
    return {"status": "ok"}


def readyz() -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable ({type(exc).__name__})"
    try:
        with producer().connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unavailable ({type(exc).__name__})"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503
    )


def create_app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level)
    check_spec("HOTLINE_RATE_LIMIT", settings.rate_limit)
    check_spec("HOTLINE_SAFE_VIEW_RATE_LIMIT", settings.safe_view_rate_limit)
    seal_content()  # the safe view fetches and decodes reported media in this process
    app = FastAPI(
        title=f"{settings.site_name} API",
        version=hotline.__version__,
        description="Anonymous reporting of child sexual abuse material found online.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.add_exception_handler(HotlineError, hotline_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(OverflowError, out_of_range_handler)
    app.add_exception_handler(DataError, out_of_range_handler)
    app.add_exception_handler(Exception, server_error_handler)
    app.include_router(reporting_api.router)
    app.include_router(auth_api.router)
    app.include_router(triage_api.router)
    app.include_router(partners_api.router)
    app.include_router(partners_api.staff_router)
    app.include_router(reporting_pages.router)
    app.include_router(staff_pages.router)
    app.include_router(triage_pages.router)
    app.include_router(partners_pages.router)
    app.mount("/static", reporting_pages.static_files(), name="static")
    app.mount("/staff/static", staff_ui.static_files(), name="staff-static")
    app.add_api_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/readyz", readyz, methods=["GET"], include_in_schema=False)
    # The last added runs first: the headers go on the body limit's 413 pages too.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        larger={"/api/v1/partner/": settings.partner_max_body_bytes},
    )
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(AccessLogMiddleware)
    return app
