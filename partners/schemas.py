"""What a partner is made of when it is added or loaded from a file, and how it is shown.

A ``PartnerSpec`` is checked here for form (ISO country codes, language tags, ASNs,
registered domains, an http(s) webhook without credentials, an e-mail address);
``partners.registry`` adds the checks that need settings (https in production).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Annotated, Literal

import ada_url
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from hotline.types import StorableText
from partners.models import PartnerKind
from reporting.models import ReportCategory
from reporting.urls import registered_domain

# Territories Babel (CLDR) knows that are not ISO 3166-1 alpha-2 country codes.
_NOT_ISO = frozenset(
    {"AC", "CP", "CQ", "DG", "EA", "EU", "EZ", "IC", "QO", "TA", "UN", "XA", "XB", "ZZ"}
)
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")


@functools.cache
def country_codes() -> frozenset[str]:
    """ISO 3166-1 alpha-2 codes (with XK, Kosovo, which geolocation databases use)."""
    from babel import Locale

    codes = (str(code) for code in Locale("en").territories)
    return frozenset(c for c in codes if len(c) == 2 and c.isalpha() and c not in _NOT_ISO)


def country_code(value: str) -> str:
    code = value.strip().upper()
    if code not in country_codes():
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code")
    return code


def webhook_url(value: str) -> str:
    """An absolute http(s) URL without credentials or fragment, in its WHATWG form."""
    try:
        parsed = ada_url.URL(value.strip())
    except ValueError:
        raise ValueError("the webhook URL is not a valid URL") from None
    if parsed.protocol not in ("http:", "https:"):
        raise ValueError("the webhook URL must be http or https")
    if parsed.username or parsed.password:
        raise ValueError("the webhook URL must not carry credentials")
    if parsed.hash:
        raise ValueError("the webhook URL must not have a fragment")
    if not parsed.hostname:
        raise ValueError("the webhook URL has no host")
    return str(parsed.href)


class PartnerSpec(BaseModel):
    """A partner as an admin describes it (``hotline partners add`` or a loaded file)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[StorableText, Field(min_length=1, max_length=200)]
    kind: PartnerKind
    countries: list[str] = Field(default_factory=list)
    asns: list[Annotated[int, Field(ge=1, le=4_294_967_295)]] = Field(default_factory=list)
    domains: list[str] = Field(default_factory=list)
    webhook_url: str | None = None
    email: Annotated[str, Field(max_length=254)] | None = None
    languages: list[str] = Field(default_factory=list)
    active: bool = True
    may_export: bool = False
    may_submit: bool = False
    note: StorableText | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("a partner needs a name")
        return value

    @field_validator("countries")
    @classmethod
    def _countries(cls, values: list[str]) -> list[str]:
        return list(dict.fromkeys(country_code(v) for v in values))

    @field_validator("domains")
    @classmethod
    def _domains(cls, values: list[str]) -> list[str]:
        domains = []
        for value in values:
            domain = registered_domain(value)
            if not domain or "." not in domain or domain != value.strip().rstrip(".").lower():
                raise ValueError(f"{value!r} is not a registered domain (e.g. example.com)")
            domains.append(domain)
        return list(dict.fromkeys(domains))

    @field_validator("languages")
    @classmethod
    def _languages(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _LANGUAGE.match(value):
                raise ValueError(f"{value!r} is not a language tag (e.g. uk, en, pt-BR)")
        return list(dict.fromkeys(values))

    @field_validator("asns")
    @classmethod
    def _asns(cls, values: list[int]) -> list[int]:
        return list(dict.fromkeys(values))

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        return None if value is None or not value.strip() else webhook_url(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not _EMAIL.match(value.strip()):
            raise ValueError("not an e-mail address")
        return value.strip()

    @model_validator(mode="after")
    def _fits_its_kind(self) -> PartnerSpec:
        if self.webhook_url is None and self.email is None:
            raise ValueError("a partner needs a webhook URL or an e-mail address")
        if self.kind in (PartnerKind.law_enforcement, PartnerKind.hotline) and not self.countries:
            raise ValueError(f"a {self.kind.value} partner serves at least one country")
        if self.kind is PartnerKind.hosting_provider and not (self.asns or self.domains):
            raise ValueError("a hosting provider is matched by at least one ASN or domain")
        return self


class PartnerRead(BaseModel):
    """A partner as staff see it; secrets are never part of it."""

    id: int
    name: str
    kind: PartnerKind
    countries: list[str]
    asns: list[int]
    domains: list[str]
    webhook_url: str | None
    email: str | None
    languages: list[str]
    active: bool
    disabled_reason: str | None
    may_export: bool
    may_submit: bool
    note: str | None
    created_at: dt.datetime


# The partner API -------------------------------------------------------------------------

MAX_BULK_REPORTS = 500


class InboundReport(BaseModel):
    """One URL a partner reports: taken like a public report, with the partner as source."""

    model_config = ConfigDict(extra="forbid")

    url: StorableText = Field(description="The reported URL.")
    category: ReportCategory = ReportCategory.csam
    reference: Annotated[StorableText, Field(max_length=200)] | None = Field(
        None,
        description="The partner's own id for it (a peer hotline: the `forwarding.id` of "
        "the forwarding it received), quoted back in the result.",
    )


class InboundReports(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reports: list[InboundReport] = Field(min_length=1, max_length=MAX_BULK_REPORTS)


class ReportResult(BaseModel):
    reference: str | None = None
    accepted: bool
    code: str | None = Field(None, description="Why it was refused, e.g. `invalid_url`.")
    report_id: int | None = None
    target_id: int | None = None


class ReportResults(BaseModel):
    results: list[ReportResult]


class StatusReport(BaseModel):
    """What the partner did or found: `received`, or one of ICCAM's action types."""

    model_config = ConfigDict(extra="forbid")

    status: Literal[
        "received",
        "LEA",
        "ISP",
        "content_removed",
        "content_unavailable",
        "moved",
        "not_illegal",
    ]
    at: AwareDatetime | None = Field(None, description="When it happened; default: now.")
    note: Annotated[StorableText, Field(max_length=2000)] | None = Field(
        None, description="E.g. the reason for a refusal."
    )


class ForwardingRead(BaseModel):
    id: int
    state: str
    acknowledged_at: dt.datetime | None
    partner_status: str | None
    partner_status_at: dt.datetime | None


# Holds, disputes and what staff see of forwardings -----------------------------------------


class HoldChange(BaseModel):
    """Law enforcement releases the hold on the notices of a target it received, or
    extends it to ``until`` (at most ``HOTLINE_LAW_ENFORCEMENT_HOLD_MAX_DAYS`` after the
    notice was decided)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["release", "extend"]
    until: AwareDatetime | None = Field(None, description="For `extend`: the new end.")

    @model_validator(mode="after")
    def _until_for_extend(self) -> HoldChange:
        if self.action == "extend" and self.until is None:
            raise ValueError("extending the hold needs `until`")
        return self


class HeldNotice(BaseModel):
    id: int
    state: str
    hold_until: dt.datetime | None


class HoldRead(BaseModel):
    forwarding_id: int = Field(description="The caller's forwarding the call named.")
    notices: list[HeldNotice] = Field(description="The target's notices the hold applies to.")


DisputeReason = Literal["not_illegal", "not_hosted_here", "wrong_recipient", "duplicate", "other"]


class DisputeCreate(BaseModel):
    """A partner contests a forwarding it received."""

    model_config = ConfigDict(extra="forbid")

    reason: DisputeReason
    note: Annotated[StorableText, Field(max_length=2000)] | None = None


class DisputeRead(BaseModel):
    forwarding_id: int
    target_id: int
    partner_id: int
    partner: str
    kind: str
    rule: str
    state: str
    reason: str | None
    note: str | None
    disputed_at: dt.datetime | None
    target_status: str


class ForwardingView(BaseModel):
    """A forwarding as staff see it on the item page."""

    id: int
    partner_id: int
    partner: str
    partner_kind: str
    kind: str
    rule: str
    state: str
    hold_until: dt.datetime | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    acknowledged_at: dt.datetime | None
    partner_status: str | None = Field(description="ICCAM action type the partner reported.")
    partner_status_at: dt.datetime | None
    partner_note: str | None
    retracts_id: int | None
    disputed_at: dt.datetime | None
    dispute_reason: str | None
    dispute_note: str | None


# Documents from a peer hotline's deliveries (docs/forwarding.md), taken at our webhook ----


class PeerForwarding(BaseModel):
    """The ``forwarding`` part of a document a peer hotline delivered: its own id."""

    id: int
    kind: str | None = None
    rule: str | None = None
    retracts: int | None = None


class PeerTarget(BaseModel):
    url: StorableText


class PeerStatusBody(StatusReport):
    """The ``status`` part of a ``forwarding.status`` document: what became of the report
    we sent, and our forwarding id it answers (``reference``)."""

    model_config = ConfigDict(extra="ignore")

    reference: Annotated[StorableText, Field(max_length=200)]


class PeerDocument(BaseModel):
    """A forwarding document (docs/forwarding.schema.json) as our webhook reads it: fields
    it does not need are ignored, so a newer sender's additions do no harm."""

    version: Literal[1]
    type: Annotated[str, Field(max_length=64)]
    forwarding: PeerForwarding
    target: PeerTarget | None = None
    status: PeerStatusBody | None = None


class PeerResult(BaseModel):
    """Our webhook's answer to a peer's delivery."""

    type: str
    handled: Literal["report", "status", "noted"] = Field(
        description="report: taken as a partner report; status: recorded on the forwarding "
        "it answers; noted: kept in the audit log for staff (retraction, re-opened)."
    )
    report: ReportResult | None = None
    forwarding: ForwardingRead | None = None


# What the re-checks learned of a target, and the hotline's figures (staff) ---------------


class RemovalView(BaseModel):
    """The watch on a target (`partners.rechecks.removal`)."""

    confirmed_at: dt.datetime | None
    removed_at: dt.datetime | None
    reopened_at: dt.datetime | None
    time_to_removal_seconds: int | None
    last_result: str | None
    last_checked_at: dt.datetime | None
    next_due_at: dt.datetime | None
    checks: int


class RecheckView(BaseModel):
    id: int
    due_at: dt.datetime
    done_at: dt.datetime | None
    result: str | None = Field(description="online, moved, removed or unreachable; None: due")
    status_code: int | None
    media_found: int | None
    error: str | None


class NoticeView(BaseModel):
    id: int
    partner_id: int
    partner: str
    channel: str
    state: str
    language: str | None
    repeats_id: int | None = Field(description="The notice this one repeats (a re-notice).")
    retraction: bool = Field(
        False, description="It withdraws an earlier notice (the verdict was reversed)."
    )
    created_at: dt.datetime
    sent_at: dt.datetime | None
    last_error: str | None


class TargetWatch(BaseModel):
    """A target after its confirmation: removal, the re-checks (newest first) and the
    notices to hosting providers that named it."""

    target_id: int
    status: str
    removal: RemovalView
    rechecks: list[RecheckView]
    notices: list[NoticeView]


class CountryCount(BaseModel):
    country: str | None = Field(description="ISO 3166-1 alpha-2; None: unknown")
    targets: int


class RemovalFigures(BaseModel):
    confirmed: int
    removed: int
    removed_within: int
    within_seconds: int
    share_removed_within: float | None
    median_time_to_removal_seconds: int | None


class Statistics(BaseModel):
    since: dt.datetime | None
    reports: int
    reports_by_source: dict[str, int]
    targets_reported: int
    decided: int = Field(description="Targets confirmed or found not illegal.")
    confirmed: int = Field(description="Targets confirmed (and maybe forwarded or removed).")
    confirmation_rate: float | None
    hosting_countries: list[CountryCount]
    removal: RemovalFigures
