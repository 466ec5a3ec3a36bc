"""Tables of triage: what was found behind a target (hashes only, never content), where it
is hosted, which known lists it matches, and the sites targets belong to.

Invariant: no column holds fetched bytes. Media rows carry hashes, size, dimensions
and type; sightings carry where and when a media item was seen.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeEngine
from sqlmodel import Field, SQLModel

from hotline.db import BigIntId, UTCDateTime, str_enum, utcnow


class MediaKind(enum.StrEnum):
    image = "image"
    video = "video"
    vector = "vector"


class HashType(enum.StrEnum):
    sha256 = "sha256"
    sha1 = "sha1"
    md5 = "md5"
    phash = "phash"
    pdq = "pdq"
    photodna = "photodna"  # kept as data from imports, never matched


class MatchKind(enum.StrEnum):
    exact = "exact"
    near = "near"


class Media(SQLModel, table=True):
    __tablename__ = "media"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    sha256: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    sha1: str = Field(sa_column=Column(String(40), nullable=False, index=True))
    md5: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    phash: str | None = Field(default=None, sa_column=Column(String(16)))
    pdq: str | None = Field(default=None, sa_column=Column(String(64)))
    pdq_quality: int | None = Field(default=None, sa_column=Column(Integer))
    mime: str = Field(sa_column=Column(String(64), nullable=False))
    kind: MediaKind = Field(sa_column=Column(str_enum(MediaKind), nullable=False))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    width: int | None = Field(default=None, sa_column=Column(Integer))
    height: int | None = Field(default=None, sa_column=Column(Integer))
    frames: int | None = Field(default=None, sa_column=Column(Integer))
    # Why it is not hashed in full: image_too_large (no pHash/PDQ), decode_error (no
    # pHash/PDQ), frames_capped (more frames than counted); None when hashed in full.
    hash_note: str | None = Field(default=None, sa_column=Column(String(32)))
    first_seen_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class MediaFrame(SQLModel, table=True):
    """pHash and PDQ of a later frame of an animated media item (``hash_media`` hashes a
    few, spread over the frames); frame 0, the first, is the item's own hashes."""

    __tablename__ = "media_frame"

    media_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("media.id"), primary_key=True, autoincrement=False)
    )
    frame: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    phash: str = Field(sa_column=Column(String(16), nullable=False))
    pdq: str = Field(sa_column=Column(String(64), nullable=False))
    pdq_quality: int = Field(sa_column=Column(Integer, nullable=False))


class Sighting(SQLModel, table=True):
    """One media item seen on one target: where it was fetched from and when."""

    __tablename__ = "sighting"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    # Looked up by target through uq_sighting_target_media, which starts with it.
    target_id: int = Field(sa_column=Column(BigInteger, ForeignKey("target.id"), nullable=False))
    media_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("media.id"), nullable=False, index=True)
    )
    media_url: str = Field(sa_column=Column(Text, nullable=False))
    hosting_ip: str | None = Field(default=None, sa_column=Column(String(45)))
    hosting_country: str | None = Field(default=None, sa_column=Column(String(2)))
    hosting_asn: int | None = Field(default=None, sa_column=Column(BigInteger))
    hosting_org: str | None = Field(default=None, sa_column=Column(String(255)))
    online: bool = Field(default=True, sa_column=Column(Boolean, nullable=False))
    first_seen_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    last_seen_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )

    __table_args__ = (UniqueConstraint("target_id", "media_id", name="uq_sighting_target_media"),)


class Site(SQLModel, table=True):
    """A registered domain and what the hotline knows of it."""

    __tablename__ = "site"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    registered_domain: str = Field(sa_column=Column(String(255), nullable=False, unique=True))
    target_count: int = 0
    confirmed_count: int = 0
    dedicated: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    note: str | None = Field(default=None, sa_column=Column(Text))
    first_seen_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class HashList(SQLModel, table=True):
    """A list of known hashes: imported (Project VIC, ICSE, national) or the hotline's own."""

    __tablename__ = "hash_list"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    name: str = Field(sa_column=Column(String(100), nullable=False, unique=True))
    description: str | None = Field(default=None, sa_column=Column(Text))
    enabled: bool = Field(default=True, sa_column=Column(Boolean, nullable=False))
    # The hotline's own list: media confirmed by its analysts.
    own: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


def _hash_text(length: int) -> TypeEngine[str]:
    """Hash text, compared byte by byte on PostgreSQL (``COLLATE "C"``): the key index of
    a list is then built by memcmp, not by the locale's rules."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


class KnownEntry(SQLModel, table=True):
    """One entry of a known list: the hashes of one file, as one line of the list gives
    them (a list line naming MD5 and SHA-1 is one entry with both).

    An entry is identified within its list by its key, the first of SHA-256, SHA-1, MD5,
    PDQ, pHash, PhotoDNA it has (``triage.hashlists.entry_key``); one index on the key
    serves both de-duplication and exact matching. On PostgreSQL the table is
    partitioned by list (one partition per list, built by ``triage.hashlists``), so a
    list is imported into a table of its own and indexed once at the end, and removed by
    dropping it; on SQLite it is one plain table.
    """

    __tablename__ = "known_entry"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    # On PostgreSQL the foreign key is on each list's partition, not on the partitioned
    # table (see triage.hashlists._tie_to_list and migration 0008).
    list_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("hash_list.id", ondelete="CASCADE"), nullable=False)
    )
    sha256: str | None = Field(default=None, sa_column=Column(_hash_text(64)))
    sha1: str | None = Field(default=None, sa_column=Column(_hash_text(40)))
    md5: str | None = Field(default=None, sa_column=Column(_hash_text(32)))
    pdq: str | None = Field(default=None, sa_column=Column(_hash_text(64)))
    phash: str | None = Field(default=None, sa_column=Column(_hash_text(16)))
    photodna: str | None = Field(default=None, sa_column=Column(_hash_text(1024)))
    category: str | None = Field(default=None, sa_column=Column(String(64)))
    added_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class MediaMatch(SQLModel, table=True):
    """Why a media item is recognised: a known list entry or media already seen here."""

    __tablename__ = "media_match"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    # Looked up by media item through uq_media_match, which starts with it.
    media_id: int = Field(sa_column=Column(BigInteger, ForeignKey("media.id"), nullable=False))
    kind: MatchKind = Field(sa_column=Column(str_enum(MatchKind), nullable=False))
    hash_type: HashType = Field(sa_column=Column(str_enum(HashType), nullable=False))
    distance: int = 0
    list_id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, ForeignKey("hash_list.id", ondelete="CASCADE")),
    )
    # No foreign key: a partitioned table has no unique id to refer to. Removing a list
    # or an own-list entry deletes its matches explicitly.
    known_entry_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    matched_media_id: int | None = Field(
        default=None, sa_column=Column(BigInteger, ForeignKey("media.id"))
    )
    # "k<known_entry_id>" or "m<matched_media_id>": one non-null key for uniqueness, since
    # NULLs never collide in a unique constraint.
    ref: str = Field(sa_column=Column(String(24), nullable=False))
    # The frame of an animation whose hashes matched (a near match through a later
    # frame, see MediaFrame); None for the file's hashes and its first frame.
    frame: int | None = Field(default=None, sa_column=Column(Integer))
    found_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )

    __table_args__ = (UniqueConstraint("media_id", "hash_type", "ref", name="uq_media_match"),)


# Assessment (ICCAM scheme) ---------------------------------------------------------------


class Classification(enum.StrEnum):
    """ICCAM's classification of one media item."""

    baseline = "baseline"  # illegal under INTERPOL's international (baseline) criteria
    national = "national"  # illegal under national law
    doubtful = "doubtful"
    not_illegal = "not_illegal"
    ignore = "ignore"  # page furniture: icons, logos, banners


ILLEGAL = frozenset({Classification.baseline, Classification.national})


class AgeGroup(enum.StrEnum):
    not_determined = "not_determined"
    infant = "infant"
    prepubescent = "prepubescent"
    pubescent = "pubescent"


class Gender(enum.StrEnum):
    undetermined = "undetermined"
    female = "female"
    male = "male"
    both = "both"


class Commerciality(enum.StrEnum):
    not_determined = "not_determined"
    commercial = "commercial"
    non_commercial = "non_commercial"


class ContentType(enum.StrEnum):
    image = "image"
    video = "video"
    link = "link"
    container = "container"
    other = "other"
    text = "text"


class SiteType(enum.StrEnum):
    """The INHOPE glossary's site types."""

    website = "website"
    image_host = "image_host"
    file_host = "file_host"
    image_store = "image_store"
    imageboard = "imageboard"
    forum = "forum"
    banner_site = "banner_site"
    link_site = "link_site"
    social_networking = "social_networking"
    redirector = "redirector"
    web_archive = "web_archive"
    search_provider = "search_provider"
    blog = "blog"


class AssessmentOrigin(enum.StrEnum):
    analyst = "analyst"  # an analyst decided
    earlier = "earlier"  # taken automatically from an earlier verdict on the same media
    bulk = "bulk"  # a supervisor's bulk confirmation of exact trusted-list matches


class Assessment(SQLModel, table=True):
    """The verdict on one media item as seen on one target. Never updated in place except
    ``current``: a new assessment (or a reversal) supersedes the old one, which stays."""

    __tablename__ = "assessment"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    target_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("target.id"), nullable=False, index=True)
    )
    media_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("media.id"), nullable=False, index=True)
    )
    analyst_id: int | None = Field(
        default=None, sa_column=Column(BigInteger, ForeignKey("staff_user.id"))
    )
    origin: AssessmentOrigin = Field(
        default=AssessmentOrigin.analyst,
        sa_column=Column(str_enum(AssessmentOrigin), nullable=False),
    )
    # For ``earlier``: the assessment whose verdict was taken over.
    source_id: int | None = Field(
        default=None, sa_column=Column(BigInteger, ForeignKey("assessment.id"))
    )
    classification: Classification = Field(
        sa_column=Column(str_enum(Classification), nullable=False)
    )
    age_group: AgeGroup | None = Field(default=None, sa_column=Column(str_enum(AgeGroup)))
    gender: Gender | None = Field(default=None, sa_column=Column(str_enum(Gender)))
    virtual: bool | None = Field(default=None, sa_column=Column(Boolean))
    child_modelling: bool | None = Field(default=None, sa_column=Column(Boolean))
    user_generated: bool | None = Field(default=None, sa_column=Column(Boolean))
    commerciality: Commerciality | None = Field(
        default=None, sa_column=Column(str_enum(Commerciality))
    )
    payment_method: str | None = Field(default=None, sa_column=Column(String(100)))
    content_type: ContentType | None = Field(default=None, sa_column=Column(str_enum(ContentType)))
    site_type: SiteType | None = Field(default=None, sa_column=Column(str_enum(SiteType)))
    note: str | None = Field(default=None, sa_column=Column(Text))
    current: bool = Field(default=True, sa_column=Column(Boolean, nullable=False))
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class DecisionStage(enum.StrEnum):
    first = "first"  # the analyst who assessed the target
    second = "second"  # a second, different analyst or a supervisor (second-opinion policy)
    supervisor = "supervisor"  # settles a disagreement, reverses, or confirms in bulk


class Outcome(enum.StrEnum):
    illegal = "illegal"
    not_illegal = "not_illegal"
    no_longer_available = "no_longer_available"
    not_assessable = "not_assessable"


class Decision(SQLModel, table=True):
    """A step in deciding a target: first verdict, second opinion, supervisor's ruling."""

    __tablename__ = "decision"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    target_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("target.id"), nullable=False, index=True)
    )
    staff_id: int | None = Field(
        default=None, sa_column=Column(BigInteger, ForeignKey("staff_user.id"))
    )
    stage: DecisionStage = Field(sa_column=Column(str_enum(DecisionStage), nullable=False))
    outcome: Outcome = Field(sa_column=Column(str_enum(Outcome, length=24), nullable=False))
    # Second opinions: did it agree with the first verdict?
    agrees: bool | None = Field(default=None, sa_column=Column(Boolean))
    note: str | None = Field(default=None, sa_column=Column(Text))
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
