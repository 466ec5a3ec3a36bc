"""Exports for authorised partners (docs/exports.md): the current URL list and the hash
list, as CSV, JSON lines or Project VIC VICS JSON, signed, with incremental ``since``.

- URL list: targets confirmed (or forwarded) and not removed, one row each; ``since``
  keeps those whose status changed after the time (newly confirmed, forwarded, or
  re-opened). Removed targets are never listed.
- Hash list: the hotline's own list (the media its analysts confirmed; a reversed
  verdict takes them off), one row per media item with SHA-256, SHA-1, MD5, PDQ and
  pHash and its category (``baseline`` or ``national``); ``since`` keeps the items
  added after the time. The three formats are exactly what ``triage.hashlists``
  imports, so another hotline running this software loads them with
  ``hotline hashes import`` unchanged.
- Signed with the Standard Webhooks scheme (``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature``: HMAC-SHA256 over ``id.timestamp.body``), with the partner's
  signing secrets, the ones its deliveries are signed with.

No reporter data, no content: URLs, hosts, countries and hashes only. Nothing here
commits; the caller audits the export.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import secrets as random_secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.fernet import MultiFernet
from sqlalchemy import and_, func, select
from sqlmodel import Session, col
from standardwebhooks import Webhook

from hotline import audit
from hotline.errors import HotlineError
from partners import registry
from partners.errors import NotAllowed
from partners.models import Partner, SecretPurpose
from reporting.models import Target, TargetStatus
from triage.models import Classification, Decision, HashList, KnownEntry, Media, Outcome

Kind = Literal["urls", "hashes"]
Format = Literal["csv", "jsonl", "vics"]
FORMATS: tuple[Format, ...] = ("csv", "jsonl", "vics")
LISTED = (TargetStatus.confirmed, TargetStatus.forwarded)
MEDIA_TYPES: dict[Format, str] = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "vics": "application/json",
}
URL_COLUMNS = ("url", "registered_domain", "host", "hosting_country", "hosting_asn", "confirmed_at")
HASH_COLUMNS = ("sha256", "sha1", "md5", "pdq", "phash", "category", "added_at")
# Project VIC's categories: 1 child abuse material; 3 computer-generated or animated,
# which this hotline's importer (like its bulk confirmation) reads as national.
VICS_CATEGORY = {Classification.baseline.value: 1, Classification.national.value: 3}
VICS_CONTEXT = "http://github.com/ICMEC/ProjectVic/DataModels/2.0.xml/US/$metadata#Media"


class UnsupportedExport(HotlineError):
    code = "unsupported_export"
    status_code = 422
    detail = "The URL list is exported as csv or jsonl; the hash list as csv, jsonl or vics."


class NoSigningSecret(HotlineError):
    code = "no_signing_secret"
    status_code = 409
    detail = "The hotline holds no valid signing secret for this partner; ask it to rotate one."


class InvalidSince(HotlineError):
    code = "invalid_since"
    status_code = 422
    detail = "since is an ISO 8601 time with a time zone, e.g. 2025-03-01T00:00:00Z."


def parse_since(value: str | None) -> dt.datetime | None:
    """An ISO 8601 time with a zone (``Z`` accepted); a date alone is midnight UTC."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidSince() from None
    if parsed.tzinfo is None:
        if len(text) == 10:  # a date
            return parsed.replace(tzinfo=dt.UTC)
        raise InvalidSince()
    return parsed.astimezone(dt.UTC)


def _iso(at: dt.datetime | None) -> str | None:
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if at is not None else None


# Rows ------------------------------------------------------------------------------------------


def url_rows(
    session: Session, *, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """The confirmed targets still online (not removed), oldest change first."""
    confirmed = (
        select(
            col(Decision.target_id).label("target_id"),
            func.max(col(Decision.created_at)).label("at"),
        )
        .where(col(Decision.outcome) == Outcome.illegal)
        .group_by(col(Decision.target_id))
        .subquery()
    )
    query = (
        select(Target, confirmed.c.at)
        .outerjoin(confirmed, confirmed.c.target_id == col(Target.id))
        .where(col(Target.status).in_(list(LISTED)), col(Target.removed_at).is_(None))
        .order_by(col(Target.status_changed_at), col(Target.id))
    )
    if since is not None:
        query = query.where(col(Target.status_changed_at) > since)
    if until is not None:
        query = query.where(col(Target.status_changed_at) <= until)
    return [
        {
            "url": target.canonical_url,
            "registered_domain": target.registered_domain,
            "host": target.host,
            "hosting_country": target.hosting_country,
            "hosting_asn": target.hosting_asn,
            "confirmed_at": _iso(at or target.status_changed_at),
        }
        for target, at in session.execute(query).all()
    ]


def hash_rows(
    session: Session, *, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """The media of the hotline's own list, one row per item with all its hashes."""
    own = select(col(HashList.id)).where(col(HashList.own).is_(True)).scalar_subquery()
    query = (
        select(Media, col(KnownEntry.category), col(KnownEntry.added_at))
        .join(
            KnownEntry,
            and_(col(KnownEntry.sha256) == col(Media.sha256), col(KnownEntry.list_id).in_(own)),
        )
        .order_by(col(KnownEntry.added_at), col(KnownEntry.id))
    )
    if since is not None:
        query = query.where(col(KnownEntry.added_at) > since)
    if until is not None:
        query = query.where(col(KnownEntry.added_at) <= until)
    return [
        {
            "sha256": media.sha256,
            "sha1": media.sha1,
            "md5": media.md5,
            "pdq": media.pdq,
            "phash": media.phash,
            "category": category,
            "added_at": _iso(added_at),
        }
        for media, category, added_at in session.execute(query).all()
    ]


# Formats ---------------------------------------------------------------------------------------


def to_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return out.getvalue().encode("utf-8")


def to_jsonl(rows: Iterable[Mapping[str, Any]]) -> bytes:
    return "".join(
        json.dumps(dict(row), ensure_ascii=False, separators=(",", ":")) + "\n" for row in rows
    ).encode("utf-8")


def to_vics(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """A VICS 2.0 (OData) document of media items: ``{"@odata.context": ..., "value":
    [{"MediaID", "Category", "MD5", "SHA1", "SHA256", "PDQ", "pHash", ...}]}``."""
    media = []
    for number, row in enumerate(rows, 1):
        item: dict[str, Any] = {
            "MediaID": number,
            "Category": VICS_CATEGORY.get(str(row.get("category")), row.get("category")),
            "MD5": row["md5"],
            "SHA1": row["sha1"],
            "SHA256": row["sha256"],
        }
        if row.get("pdq"):
            item["PDQ"] = row["pdq"]
        if row.get("phash"):
            item["pHash"] = row["phash"]
        item["Classification"] = row.get("category")  # ICCAM's word, for people
        item["DateAdded"] = row.get("added_at")
        media.append(item)
    document = {"@odata.context": VICS_CONTEXT, "value": media}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


@dataclass(frozen=True)
class Export:
    kind: Kind
    format: Format
    body: bytes
    rows: int
    since: dt.datetime | None
    as_of: dt.datetime

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]

    def __repr__(self) -> str:
        return f"Export({self.kind}, {self.format}, rows={self.rows})"


def export(
    session: Session,
    kind: Kind,
    fmt: Format,
    *,
    now: dt.datetime,
    since: dt.datetime | None = None,
) -> Export:
    """The URL or hash list in a format: rows changed after ``since`` up to ``now`` (the
    ``as_of`` a partner passes as ``since`` next time)."""
    if fmt not in FORMATS or (kind == "urls" and fmt == "vics"):
        raise UnsupportedExport()
    if kind == "urls":
        rows = url_rows(session, since=since, until=now)
        body = to_csv(rows, URL_COLUMNS) if fmt == "csv" else to_jsonl(rows)
    elif kind == "hashes":
        rows = hash_rows(session, since=since, until=now)
        if fmt == "csv":
            body = to_csv(rows, HASH_COLUMNS)
        elif fmt == "jsonl":
            body = to_jsonl(rows)
        else:
            body = to_vics(rows)
    else:
        raise UnsupportedExport()
    return Export(kind, fmt, body, len(rows), since, now)


# Signatures ------------------------------------------------------------------------------------


def new_export_id() -> str:
    return "exp_" + random_secrets.token_urlsafe(18)


def signature_headers(
    body: bytes, signing_secrets: Sequence[str], *, at: dt.datetime, export_id: str | None = None
) -> dict[str, str]:
    """The Standard Webhooks headers over ``body``: one ``v1`` signature per secret
    (newest first), so a partner in the middle of a rotation verifies with either."""
    export_id = export_id or new_export_id()
    text = body.decode("utf-8")
    signatures = " ".join(Webhook(s).sign(export_id, at, text) for s in signing_secrets)
    return {
        "webhook-id": export_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
    }


def verify_detached(body: bytes, headers: Mapping[str, str], secret: str) -> bool:
    """Check a stored export against its signature headers, without the 5-minute window
    that ``Webhook.verify`` applies to live messages (a file is verified later)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for part in headers["webhook-signature"].split():
        version, _, value = part.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


def for_partner(
    session: Session,
    partner: Partner,
    kind: Kind,
    fmt: Format,
    *,
    since: dt.datetime | None,
    now: dt.datetime,
    cipher: MultiFernet,
) -> tuple[Export, dict[str, str]]:
    """An export for a partner allowed to have it (``may_export``), signed with the
    partner's signing secrets and audited as ``exported`` (list, format, since, rows)."""
    if not partner.may_export or partner.id is None:
        raise NotAllowed("This partner may not fetch exports.")
    made = export(session, kind, fmt, now=now, since=since)
    keys = registry.valid_secrets(
        session, partner.id, SecretPurpose.outbound_signing, now=now, cipher=cipher
    )
    if not keys:
        raise NoSigningSecret()
    headers = signature_headers(made.body, keys, at=now)
    audit.record(
        session,
        action=audit.Action.exported,
        actor=f"partner:{partner.id}",
        object_type="partner",
        object_id=partner.id,
        details={
            "list": kind,
            "format": fmt,
            "since": _iso(since),
            "rows": made.rows,
            "export_id": headers["webhook-id"],
        },
        now=now,
    )
    return made, headers
