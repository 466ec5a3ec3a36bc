"""Tables of partners: who hears of a confirmed target, what was sent them, what they
answered, and the watch on the URL until the material is gone.

Secrets are never stored in clear: signing secrets and outbound API keys are
Fernet-encrypted (``partner_keys``), inbound API keys are SHA-256 digests. No table
here holds reporter data; forwardings, deliveries and notices carry ids only.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from hotline.db import BigIntId, UTCDateTime, str_enum, utcnow
from partners.kinds import PartnerKind as PartnerKind  # re-exported
from partners.kinds import SecretPurpose as SecretPurpose  # re-exported


class Partner(SQLModel, table=True):
    """One recipient of forwardings, and a sender of reports and status through the API.

    A partner is reached at a webhook URL (signed POSTs) or an e-mail address (notices),
    or both; an inactive partner receives nothing and its API credentials are refused.
    """

    __tablename__ = "partner"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    name: str = Field(sa_column=Column(String(200), nullable=False, unique=True))
    kind: PartnerKind = Field(sa_column=Column(str_enum(PartnerKind), nullable=False, index=True))
    webhook_url: str | None = Field(default=None, sa_column=Column(Text))
    email: str | None = Field(default=None, sa_column=Column(String(254)))
    active: bool = Field(default=True, sa_column=Column(Boolean, nullable=False))
    # Why it was disabled: "gone" (its endpoint answered 410), "admin", ...
    disabled_reason: str | None = Field(default=None, sa_column=Column(String(200)))
    disabled_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # Authorised to fetch the URL and hash list exports.
    may_export: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    # Authorised to submit reports through the inbound API.
    may_submit: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    note: str | None = Field(default=None, sa_column=Column(Text))
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


def _partner_fk() -> Column[int]:
    return Column(
        BigInteger, ForeignKey("partner.id", ondelete="CASCADE"), nullable=False, index=True
    )


class PartnerCountry(SQLModel, table=True):
    """A country (ISO 3166-1 alpha-2) a partner serves."""

    __tablename__ = "partner_country"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    partner_id: int = Field(sa_column=_partner_fk())
    country: str = Field(sa_column=Column(String(2), nullable=False, index=True))

    __table_args__ = (UniqueConstraint("partner_id", "country", name="uq_partner_country"),)


class PartnerAsn(SQLModel, table=True):
    """An autonomous system whose addresses a hosting provider's abuse contact answers for."""

    __tablename__ = "partner_asn"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    partner_id: int = Field(sa_column=_partner_fk())
    asn: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))

    __table_args__ = (UniqueConstraint("partner_id", "asn", name="uq_partner_asn"),)


class PartnerDomain(SQLModel, table=True):
    """A registered domain a hosting provider's abuse contact answers for (a platform)."""

    __tablename__ = "partner_domain"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    partner_id: int = Field(sa_column=_partner_fk())
    registered_domain: str = Field(sa_column=Column(String(255), nullable=False, index=True))

    __table_args__ = (
        UniqueConstraint("partner_id", "registered_domain", name="uq_partner_domain"),
    )


class PartnerLanguage(SQLModel, table=True):
    """A language (BCP 47 tag) a partner reads, in order of preference (``position``)."""

    __tablename__ = "partner_language"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    partner_id: int = Field(sa_column=_partner_fk())
    position: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    language: str = Field(sa_column=Column(String(35), nullable=False))

    __table_args__ = (UniqueConstraint("partner_id", "language", name="uq_partner_language"),)


class PartnerSecret(SQLModel, table=True):
    """A secret shared with a partner. Several of one purpose may be valid at once while
    a rotation runs: the newest signs, every valid one verifies, until ``retires_at``."""

    __tablename__ = "partner_secret"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    partner_id: int = Field(sa_column=_partner_fk())
    purpose: SecretPurpose = Field(sa_column=Column(str_enum(SecretPurpose), nullable=False))
    # Fernet token of the secret (signing secrets, outbound API keys).
    value_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    # SHA-256 of an inbound API key: looked up, never decrypted.
    digest: str | None = Field(default=None, sa_column=Column(String(64), unique=True))
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    # Valid until then; None: until the next rotation sets it.
    retires_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))

    __table_args__ = (Index("ix_partner_secret_partner_purpose", "partner_id", "purpose"),)


class PartnerReport(SQLModel, table=True):
    """A report a partner submitted through the API, with the partner's own reference
    (for a peer hotline: the id of the forwarding it sent), so status can flow back."""

    __tablename__ = "partner_report"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    partner_id: int = Field(sa_column=_partner_fk())
    report_id: int = Field(
        sa_column=Column(
            BigInteger, ForeignKey("report.id", ondelete="CASCADE"), nullable=False, unique=True
        )
    )
    external_ref: str | None = Field(default=None, sa_column=Column(String(200)))
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )

    __table_args__ = (Index("ix_partner_report_ref", "partner_id", "external_ref"),)


# Forwardings and deliveries ---------------------------------------------------------------


class ForwardingKind(enum.StrEnum):
    report = "report"  # the confirmed target, to law enforcement, a hotline or the fallback
    notice = "notice"  # notice and takedown to the hosting provider's abuse contact
    retraction = "retraction"  # a reversed verdict: please disregard
    reopened = "reopened"  # a target that was removed is back online
    # What became of a report a peer hotline sent us (partners.peers), back to that hotline.
    status = "status"


class ForwardingState(enum.StrEnum):
    held = "held"  # waiting for the law-enforcement hold to end
    pending = "pending"  # to be delivered
    delivered = "delivered"  # the partner's endpoint took it (2xx) or the mail was sent
    acknowledged = "acknowledged"  # the partner confirmed receipt through the API
    failed = "failed"  # could not be delivered (dead letter)
    disputed = "disputed"  # the partner contests it
    retracted = "retracted"  # the verdict was reversed and a retraction sent
    superseded = "superseded"  # the site moved before the notice went out: routed anew


class PartnerAction(enum.StrEnum):
    """ICCAM's action types: what a partner reports it did or found."""

    lea = "LEA"  # passed to law enforcement
    isp = "ISP"  # passed to the hosting provider
    content_removed = "content_removed"
    content_unavailable = "content_unavailable"
    moved = "moved"
    not_illegal = "not_illegal"


class Forwarding(SQLModel, table=True):
    """One routing decision: this target goes to this partner, because of this rule."""

    __tablename__ = "forwarding"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    target_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("target.id"), nullable=False, index=True)
    )
    partner_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("partner.id"), nullable=False, index=True)
    )
    kind: ForwardingKind = Field(sa_column=Column(str_enum(ForwardingKind), nullable=False))
    # The routing rule that produced it, e.g. "home.law_enforcement", "abroad.hotline".
    rule: str = Field(sa_column=Column(String(64), nullable=False))
    state: ForwardingState = Field(
        default=ForwardingState.pending,
        sa_column=Column(str_enum(ForwardingState), nullable=False, index=True),
    )
    # A retraction names the forwarding it takes back.
    retracts_id: int | None = Field(
        default=None, sa_column=Column(BigInteger, ForeignKey("forwarding.id"))
    )
    # Notices wait for the law-enforcement hold: not sent before this time.
    hold_until: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    delivered_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    acknowledged_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # The partner's latest status, in ICCAM's action types.
    partner_status: PartnerAction | None = Field(
        default=None, sa_column=Column(str_enum(PartnerAction, length=24))
    )
    partner_status_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    partner_note: str | None = Field(default=None, sa_column=Column(Text))
    disputed_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    dispute_reason: str | None = Field(default=None, sa_column=Column(Text))

    __table_args__ = (
        # Routing is idempotent: one forwarding of a kind per target and partner.
        UniqueConstraint("target_id", "partner_id", "kind", name="uq_forwarding_target_partner"),
    )


class DeliveryState(enum.StrEnum):
    pending = "pending"  # to be sent, or waiting for its next attempt
    delivered = "delivered"
    failed = "failed"  # a failure that retrying cannot fix (redirect, 410, no endpoint)
    dead = "dead"  # every attempt failed: on the dead-letter list
    cancelled = "cancelled"  # its forwarding was retracted first: never to be sent


class Delivery(SQLModel, table=True):
    """The outbox: one signed message to a partner's webhook, retried until it lands.

    ``webhook_id`` is the Standard Webhooks message id, the same on every attempt so
    the receiver can de-duplicate. A redelivery by an admin keeps it too.
    """

    __tablename__ = "delivery"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    forwarding_id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, ForeignKey("forwarding.id"), index=True),
    )
    notice_id: int | None = Field(
        default=None, sa_column=Column(BigInteger, ForeignKey("notice.id"), index=True)
    )
    partner_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("partner.id"), nullable=False, index=True)
    )
    webhook_id: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    # The event type of the document, e.g. "forwarding.report".
    event: str = Field(sa_column=Column(String(64), nullable=False))
    state: DeliveryState = Field(
        default=DeliveryState.pending, sa_column=Column(str_enum(DeliveryState), nullable=False)
    )
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    next_attempt_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    last_attempt_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    last_status: int | None = Field(default=None, sa_column=Column(Integer))
    # A short code, never a URL: "timeout", "http_500", "redirect", "blocked_address", ...
    last_error: str | None = Field(default=None, sa_column=Column(String(64)))
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    delivered_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))

    __table_args__ = (Index("ix_delivery_state_next", "state", "next_attempt_at"),)


# Notice and takedown ----------------------------------------------------------------------


class NoticeChannel(enum.StrEnum):
    email = "email"
    webhook = "webhook"


class NoticeState(enum.StrEnum):
    collecting = "collecting"  # open for more URLs of the same contact until send_after
    sending = "sending"
    sent = "sent"
    failed = "failed"


class Notice(SQLModel, table=True):
    """One notice to a hosting provider's abuse contact, grouping the URLs of its window."""

    __tablename__ = "notice"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    partner_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("partner.id"), nullable=False, index=True)
    )
    channel: NoticeChannel = Field(sa_column=Column(str_enum(NoticeChannel), nullable=False))
    state: NoticeState = Field(
        default=NoticeState.collecting,
        sa_column=Column(str_enum(NoticeState), nullable=False, index=True),
    )
    language: str | None = Field(default=None, sa_column=Column(String(35)))
    # A re-notice (the material is still online) names the notice it repeats.
    repeats_id: int | None = Field(
        default=None, sa_column=Column(BigInteger, ForeignKey("notice.id"))
    )
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    send_after: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    sent_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    last_error: str | None = Field(default=None, sa_column=Column(String(64)))


class NoticeItem(SQLModel, table=True):
    """A forwarding (of kind notice) carried by a notice; re-notices carry it again."""

    __tablename__ = "notice_item"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    notice_id: int = Field(
        sa_column=Column(
            BigInteger, ForeignKey("notice.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    forwarding_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("forwarding.id"), nullable=False, index=True)
    )

    __table_args__ = (UniqueConstraint("notice_id", "forwarding_id", name="uq_notice_item"),)


class NoticeTemplate(SQLModel, table=True):
    """The text of notices in one language: for one abuse contact, or the default (no
    partner). Subject and body are Jinja templates (sandboxed) over the notice's URLs."""

    __tablename__ = "notice_template"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    partner_id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, ForeignKey("partner.id", ondelete="CASCADE"), index=True),
    )
    language: str = Field(sa_column=Column(String(35), nullable=False))
    subject: str = Field(sa_column=Column(Text, nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )

    __table_args__ = (
        UniqueConstraint("partner_id", "language", name="uq_notice_template_partner_language"),
    )


# Re-checks and inbound messages -----------------------------------------------------------


class RecheckResult(enum.StrEnum):
    online = "online"  # a confirmed media hash is still there
    removed = "removed"  # 404/410, or none of the confirmed hashes any more
    unreachable = "unreachable"  # no answer: neither online nor proven removed
    moved = "moved"  # hosted elsewhere now


class Recheck(SQLModel, table=True):
    """One scheduled re-fetch of a confirmed target, and what it found."""

    __tablename__ = "recheck"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    target_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("target.id"), nullable=False, index=True)
    )
    due_at: dt.datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    done_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    result: RecheckResult | None = Field(default=None, sa_column=Column(str_enum(RecheckResult)))
    status_code: int | None = Field(default=None, sa_column=Column(Integer))
    # How many of the confirmed media hashes were still found.
    media_found: int | None = Field(default=None, sa_column=Column(Integer))
    error: str | None = Field(default=None, sa_column=Column(String(64)))

    __table_args__ = (Index("ix_recheck_done_due", "done_at", "due_at"),)


class InboundMessage(SQLModel, table=True):
    """A signed call a partner made to our API, kept for replay protection: the same
    ``webhook_id`` from the same partner gets the stored result, never a second change."""

    __tablename__ = "inbound_message"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    partner_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("partner.id"), nullable=False, index=True)
    )
    webhook_id: str = Field(sa_column=Column(String(255), nullable=False))
    # What was called, e.g. "reports", "forwardings.status".
    endpoint: str = Field(sa_column=Column(String(64), nullable=False))
    received_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False, index=True)
    )
    status_code: int = Field(sa_column=Column(Integer, nullable=False))
    result: str = Field(sa_column=Column(Text, nullable=False))  # JSON of the answer

    __table_args__ = (
        UniqueConstraint("partner_id", "webhook_id", name="uq_inbound_message_partner_id"),
    )
