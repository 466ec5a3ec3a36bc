"""Request and response bodies of public intake."""

from __future__ import annotations

import enum

from pydantic import BaseModel, ConfigDict, Field

from hotline.types import StorableText
from reporting.models import ReportCategory

DESCRIPTION_MAX = 2000
CONTACT_MAX = 500


Text = StorableText


class ReportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Text = Field(
        description="The web address where the material was seen, as copied from the address bar.",
        examples=["https://example.com/gallery/123"],
    )
    category: ReportCategory = Field(
        description="`csam`: child sexual abuse material; `grooming`: grooming or enticement "
        "of a child; `trafficking`: trafficking-related content; `other`."
    )
    # Lengths are checked by the service so that they get their own error codes.
    description: Text | None = Field(
        None,
        description="What you saw and where on the page (optional).",
        json_schema_extra={"maxLength": DESCRIPTION_MAX},
    )
    language: str | None = Field(
        None,
        description="The reporter's language as a BCP 47 tag, e.g. `en` or `uk`.",
        pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}$",
        max_length=35,
    )
    contact: Text | None = Field(
        None,
        description="Optional way to reach the reporter. Stored encrypted, erased after the "
        "retention period, never shown in any response.",
        max_length=CONTACT_MAX,
    )


class ReportAccepted(BaseModel):
    receipt: str = Field(
        description="Shown once: keep it to check the status of the report. The hotline "
        "stores only a hash of it and cannot show it again."
    )
    status_url: str = Field(description="Where the status of this report can be read.")


class PublicStatus(enum.StrEnum):
    received = "received"
    being_assessed = "being_assessed"
    action_taken = "action_taken"
    no_action_possible = "no_action_possible"


class ReportStatusPublic(BaseModel):
    status: PublicStatus = Field(
        description="`received`: waiting for processing; `being_assessed`: an analyst will "
        "look at it or is looking at it; `action_taken`: confirmed and passed to those who "
        "can remove it; `no_action_possible`: not illegal, or could not be reached."
    )


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable error code.")
    detail: str = Field(description="What went wrong, for a person.")
    fields: list[str] | None = Field(None, description="Fields that failed validation.")
