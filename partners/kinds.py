"""The kinds of partner and of partner secret: a module of their own, free of the
database, so that the command line can offer them without loading SQLAlchemy."""

from __future__ import annotations

import enum


class PartnerKind(enum.StrEnum):
    law_enforcement = "law_enforcement"
    hotline = "hotline"  # the partner hotline of a country (an INHOPE member, say)
    hosting_provider = "hosting_provider"  # an abuse contact, matched by ASN or domain
    fallback = "fallback"  # where reports go when no one serves the country (INTERPOL)


class SecretPurpose(enum.StrEnum):
    outbound_signing = "outbound_signing"  # we sign deliveries to the partner
    inbound_signing = "inbound_signing"  # the partner signs its API calls to us
    inbound_api_key = "inbound_api_key"  # the partner's key to our API (digest only)
    outbound_api_key = "outbound_api_key"  # our key to the partner's API (a hotline peer)
