"""Tables of public intake: one ``Target`` per canonical URL, one ``Report`` per submission.

No reporter address, user agent or cookie has a column here. Contact details are
stored only encrypted and erased after the retention period.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import BigInteger, Column, ForeignKey, Index, String, Text, text
from sqlmodel import Field, SQLModel

from hotline.db import BigIntId, UTCDateTime, str_enum, utcnow


class TargetStatus(enum.StrEnum):
    pending = "pending"
    fetching = "fetching"
    queued = "queued"
    in_review = "in_review"
    # Assessed as illegal, waiting for a second analyst (the second-opinion policy).
    second_opinion = "second_opinion"
    # The second opinion disagreed: a supervisor decides.
    disputed = "disputed"
    confirmed = "confirmed"
    not_illegal = "not_illegal"
    unreachable = "unreachable"
    forwarded = "forwarded"
    removed = "removed"


class ReportCategory(enum.StrEnum):
    csam = "csam"
    grooming = "grooming"
    trafficking = "trafficking"
    other = "other"


class ReportSource(enum.StrEnum):
    public = "public"
    api = "api"
    partner = "partner"


class Target(SQLModel, table=True):
    __tablename__ = "target"

    id: int | None = Field(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    canonical_url: str = Field(sa_column=Column(Text, nullable=False))
    # Unique on the digest, not the text: a btree cannot index arbitrarily long URLs.
    url_sha256: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    host: str = Field(sa_column=Column(String(255), nullable=False))
    registered_domain: str = Field(sa_column=Column(String(255), nullable=False, index=True))
    status: TargetStatus = Field(
        default=TargetStatus.pending, sa_column=Column(str_enum(TargetStatus), nullable=False)
    )
    status_reason: str | None = Field(default=None, sa_column=Column(String(64)))
    priority: int = 0
    report_count: int = 1
    first_reported_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    last_reported_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    status_changed_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    handed_over_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # Filled by triage: processing attempts and where the content is hosted.
    attempts: int = 0
    priority_reasons: str | None = Field(default=None, sa_column=Column(Text))
    # A page's media links that could not be fetched: JSON {reason code: count}.
    broken_links: str | None = Field(default=None, sa_column=Column(Text))
    hosting_ip: str | None = Field(default=None, sa_column=Column(String(45)))
    hosting_country: str | None = Field(default=None, sa_column=Column(String(2), index=True))
    hosting_asn: int | None = Field(default=None, sa_column=Column(BigInteger))
    hosting_org: str | None = Field(default=None, sa_column=Column(String(255)))
    processed_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # When an analyst's (or supervisor's) verdict last decided the target: a report made
    # after it is not told the outcome (reporting.service.report_status).
    decided_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # When routing last found no partner to forward the confirmed target to: the sweep
    # tries such targets after those never tried (partners.routing.sweep_unrouted).
    unrouted_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # An analyst's claim on the item (triage.review): offered to no one else until expiry.
    claimed_by: int | None = Field(default=None, sa_column=Column(BigInteger))
    claim_expires_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # Filled by partners: when the material was first seen gone (a re-check or a
    # partner's status), and when a removed target came back online.
    removed_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    reopened_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))

    __table_args__ = (
        Index("ix_target_status_handed_over", "status", "handed_over_at"),
        Index("ix_target_queue", "status", "priority", "first_reported_at"),
        # The queue page's counts and sites read only these (an index-only scan of the
        # queued rows), and each analyst's claims are found without a scan.
        Index(
            "ix_target_open_sites",
            "registered_domain",
            "priority",
            "claimed_by",
            "claim_expires_at",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
        Index(
            "ix_target_claimed_by",
            "claimed_by",
            postgresql_where=text("claimed_by IS NOT NULL"),
            sqlite_where=text("claimed_by IS NOT NULL"),
        ),
    )


class Report(SQLModel, table=True):
    __tablename__ = "report"

    id: int | None = Field(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    receipt_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    target_id: int = Field(
        sa_column=Column(
            BigInteger, ForeignKey("target.id", ondelete="RESTRICT"), nullable=False, index=True
        )
    )
    category: ReportCategory = Field(sa_column=Column(str_enum(ReportCategory), nullable=False))
    description: str | None = Field(default=None, sa_column=Column(Text))
    language: str | None = Field(default=None, sa_column=Column(String(35)))
    contact_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    source: ReportSource = Field(sa_column=Column(str_enum(ReportSource), nullable=False))
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False, index=True)
    )
