"""The one error base of the hotline: a machine-readable code, an HTTP status, a human detail.

Details never carry a reported URL, a description or fetched bytes.
"""

from __future__ import annotations


class HotlineError(Exception):
    code = "error"
    status_code = 400
    detail = "The request could not be processed."
    # Shown as a staff page (signed out: the sign-in page), not as JSON, to a browser
    # that opened the address in a tab of its own (the safe view's links to a frame).
    page_when_opened = False

    def __init__(self, detail: str | None = None) -> None:
        if detail is not None:
            self.detail = detail
        super().__init__(self.detail)


class NotFound(HotlineError):
    code = "not_found"
    status_code = 404
    detail = "Nothing is here."


class PayloadTooLarge(HotlineError):
    code = "payload_too_large"
    status_code = 413
    detail = "The request body is too large."
