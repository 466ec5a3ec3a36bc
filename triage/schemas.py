"""Request and response bodies of the analyst workspace's assessment API (staff only).

Field names and codes follow ICCAM, so that partner hotlines read an assessment
without translation; docs/assessment.md lists them.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hotline.types import StorableText
from triage.models import (
    AgeGroup,
    AssessmentOrigin,
    Classification,
    Commerciality,
    ContentType,
    DecisionStage,
    Gender,
    Outcome,
    SiteType,
)

NOTE_MAX = 2000
ITEMS_MAX = 500
BULK_MAX = 1000

Text = StorableText


class ItemAssessment(BaseModel):
    """The verdict on one media item of the target. The fields after ``classification``
    (except ``note``) describe illegal material and are accepted for ``baseline`` and
    ``national`` only."""

    model_config = ConfigDict(extra="forbid")

    media_id: int = Field(description="The media item's id, as in the item view.")
    classification: Classification
    age_group: AgeGroup | None = Field(None, description="Default `not_determined`.")
    gender: Gender | None = Field(None, description="Default `undetermined`.")
    virtual: bool | None = Field(None, description="Virtual or generated material.")
    child_modelling: bool | None = None
    user_generated: bool | None = None
    commerciality: Commerciality | None = Field(None, description="Default `not_determined`.")
    payment_method: Text | None = Field(None, max_length=100)
    content_type: ContentType | None = Field(
        None, description="Default: the media item's kind (`image` or `video`)."
    )
    site_type: SiteType | None = None
    note: Text | None = Field(None, max_length=NOTE_MAX)


class AssessmentCreate(BaseModel):
    """Every media item of the target, or a target-level outcome (items then optional)."""

    model_config = ConfigDict(extra="forbid")

    items: list[ItemAssessment] = Field(default_factory=list, max_length=ITEMS_MAX)
    outcome: Literal["no_longer_available", "not_assessable"] | None = Field(
        None, description="For the target as a whole, instead of a verdict from its items."
    )
    note: Text | None = Field(None, max_length=NOTE_MAX)


class SecondOpinionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agrees: bool = Field(description="Does the second analyst agree with the first verdict?")
    note: Text | None = Field(None, max_length=NOTE_MAX)


class RulingCreate(BaseModel):
    """A supervisor settles a disputed target; ``items`` may correct item verdicts first."""

    model_config = ConfigDict(extra="forbid")

    outcome: Outcome
    note: Text | None = Field(None, max_length=NOTE_MAX)
    items: list[ItemAssessment] = Field(default_factory=list, max_length=ITEMS_MAX)


class ReversalCreate(BaseModel):
    """A supervisor reverses a confirmed target's verdict; the note says why."""

    model_config = ConfigDict(extra="forbid")

    note: Text = Field(min_length=1, max_length=NOTE_MAX, description="Why it is reversed.")


class ReversalResult(BaseModel):
    """What a reversal changed: the target closed, hashes off the own list (or kept because
    another confirmed target still holds them), retractions to follow."""

    target_id: int
    status: str
    status_reason: str | None
    previous_status: str
    media_reversed: list[int] = Field(description="Media items whose verdict became not illegal.")
    entries_removed: int = Field(description="Entries taken off the hotline's own hash list.")
    media_kept_on_list: list[int] = Field(
        description="Media whose hashes stay listed: another confirmed target holds them."
    )


class HostingUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    country: str = Field(
        description="ISO 3166-1 alpha-2 code of the hosting country, e.g. `NL`.",
        min_length=2,
        max_length=2,
    )


class BulkConfirm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_ids: list[int] | None = Field(
        None,
        max_length=BULK_MAX,
        description="The targets to confirm; without it, every eligible queued target "
        f"(at most {BULK_MAX} per call).",
    )


class AssessmentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    target_id: int
    media_id: int
    analyst_id: int | None
    origin: AssessmentOrigin
    source_id: int | None
    classification: Classification
    age_group: AgeGroup | None
    gender: Gender | None
    virtual: bool | None
    child_modelling: bool | None
    user_generated: bool | None
    commerciality: Commerciality | None
    payment_method: str | None
    content_type: ContentType | None
    site_type: SiteType | None
    note: str | None
    current: bool
    created_at: dt.datetime


class DecisionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    stage: DecisionStage
    outcome: Outcome
    staff_id: int | None
    agrees: bool | None
    note: str | None
    created_at: dt.datetime


class DecisionResult(BaseModel):
    """Where a target stands after an assessment, second opinion or ruling."""

    target_id: int
    status: str
    status_reason: str | None
    outcome: Outcome | None = Field(
        description="The target's outcome; null while only doubtful verdicts stand."
    )
    assessments: list[AssessmentRead] = Field(default_factory=list)


class WaitingItem(BaseModel):
    """A target waiting for a second opinion or a supervisor's ruling."""

    id: int
    canonical_url: str
    registered_domain: str
    priority: int
    hosting_country: str | None
    status: str
    status_reason: str | None
    status_changed_at: dt.datetime
    first_outcome: Outcome | None
    first_staff_id: int | None


class BulkSkipped(BaseModel):
    target_id: int
    reason: str


class BulkResult(BaseModel):
    confirmed: list[int]
    skipped: list[BulkSkipped]


class HostingRead(BaseModel):
    target_id: int
    country: str
    previous: str | None
