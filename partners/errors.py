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
