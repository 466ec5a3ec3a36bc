"""Errors of triage. Their messages never carry a reported URL, a host name or fetched bytes."""

from __future__ import annotations

from hotline.errors import HotlineError
from reporting.errors import RateLimited


class FetchError(HotlineError):
    """A guarded fetch did not return content; ``reason`` is the machine code.

    The reason codes are listed in docs/fetcher.md (``blocked_address``, ``timeout``,
    ``http_error_404``, ...). The message names the reason only.
    """

    code = "fetch_failed"
    status_code = 502
    detail = "The address could not be fetched."

    def __init__(self, reason: str, *, ip: str | None = None) -> None:
        self.reason = reason
        self.ip = ip  # the address that answered, when one did (an HTTP error)
        super().__init__(f"The address could not be fetched ({reason}).")


class ViewsRateLimited(RateLimited):
    """A staff account asked for more safe views than ``HOTLINE_SAFE_VIEW_RATE_LIMIT``."""

    detail = "Too many media views from this account. Please try again shortly."
    page_when_opened = True
