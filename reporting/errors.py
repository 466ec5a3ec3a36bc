"""Errors of public intake. Their details never repeat the submitted URL."""

from __future__ import annotations

from hotline.errors import HotlineError


class InvalidReportURL(HotlineError):
    code = "invalid_url"
    status_code = 422
    detail = "This is not a web address we can read. Copy it from the browser's address bar."


class UnsupportedScheme(HotlineError):
    code = "unsupported_scheme"
    status_code = 422
    detail = "Only http:// and https:// addresses can be reported."


class URLNotPublic(HotlineError):
    code = "url_not_public"
    status_code = 422
    detail = "This address points to a private or local network, not to the public internet."


class URLTooLong(HotlineError):
    code = "url_too_long"
    status_code = 422
    detail = "The address is too long."


class DescriptionTooLong(HotlineError):
    code = "description_too_long"
    status_code = 422
    detail = "The description may have at most 2,000 characters."


class ReceiptNotFound(HotlineError):
    code = "receipt_not_found"
    status_code = 404
    detail = "No report has this receipt."


class RateLimited(HotlineError):
    code = "rate_limited"
    status_code = 429
    detail = "Too many reports from this connection. Please try again later."

    def __init__(self, retry_after: int) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__()
