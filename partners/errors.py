"""Errors of partners. Their messages name partners and ids, never a reported URL."""

from __future__ import annotations

from hotline.errors import HotlineError


class PartnerNotFound(HotlineError):
    code = "partner_not_found"
    status_code = 404
    detail = "No such partner."


class InvalidPartner(HotlineError):
    """A partner's configuration is unusable (an endpoint, a country, a kind)."""

    code = "invalid_partner"
    status_code = 422
    detail = "The partner's configuration is invalid."


class PartnerExists(HotlineError):
    code = "partner_exists"
    status_code = 409
    detail = "A partner of that name exists."


class DeliveryNotFound(HotlineError):
    code = "delivery_not_found"
    status_code = 404
    detail = "No such delivery."


class NotRedeliverable(HotlineError):
    code = "not_redeliverable"
    status_code = 409
    detail = "Only failed or dead deliveries can be redelivered."


class PartnerUnauthorized(HotlineError):
    """Missing or wrong API key, or a signature that does not verify (wrong secret, a
    changed byte, a stale timestamp, missing headers): one answer for all of them."""

    code = "unauthorized"
    status_code = 401
    detail = "The API key or the request signature is missing or invalid."

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail)
        self.headers = {"WWW-Authenticate": 'Bearer realm="partner"'}


class NotAllowed(HotlineError):
    code = "forbidden"
    status_code = 403
    detail = "This partner may not do that."


class ForwardingNotFound(HotlineError):
    code = "forwarding_not_found"
    status_code = 404
    detail = "No such forwarding for this partner."


class InvalidNoticeTemplate(HotlineError):
    """A notice template that does not parse or render (an unknown variable, say)."""

    code = "invalid_notice_template"
    status_code = 422
    detail = "The notice template is invalid."


class TargetNotWatched(HotlineError):
    """A re-check asked for a target that is not confirmed (or its watch is over)."""

    code = "not_watched"
    status_code = 409
    detail = "The target is not watched: not confirmed, or its watch is over."
