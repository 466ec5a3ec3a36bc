"""The audit log: every staff action as an ``AuditEvent``, hash-chained and append-only.

Invariants:

- An event names its actor, action, object (type and id) and time, never a URL: any
  string field or ``details`` value containing ``://`` is refused with ``ValueError``.
- Each event's ``hash`` is SHA-256 over a canonical JSON serialisation of its own id,
  ``prev_hash`` and content (``payload``); ``prev_hash`` is the hash of the event with the
  next lower id (64 zeros for the first). Walking the table by id and recomputing
  therefore finds a changed row (its hash), a deleted row (the next row's ``prev_hash``)
  and a row inserted out of order (a link that no longer fits).
- One writer at a time: on PostgreSQL ``record`` takes a transaction-scoped advisory
  lock before it reads the head, so two transactions never chain onto the same event;
  on SQLite a no-op write takes the database's single write lock first.
- ``record`` never commits; the caller's unit of work does, so the event is written
  if and only if the action it records is.
- Rows are never updated or deleted: migration 0003 installs triggers that refuse it
  for every role. A superuser can get past the trigger, not past ``verify``; appending
  forged events at the end is caught only against a head exported earlier (``head``).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import func, select, text
from sqlmodel import Session, col

from hotline.models import AuditEvent

GENESIS_HASH = "0" * 64
# Key of the PostgreSQL advisory lock that serialises writers of the chain (any
# constant unique to this purpose in the database: ASCII "hotlaudt").
ADVISORY_LOCK_KEY = 0x686F746C61756474
BATCH_SIZE = 2000

_LIMITS = {"actor": 254, "action": 64, "object_type": 32, "object_id": 64}


class Action(enum.StrEnum):
    """The actions the issue names; ``record`` accepts other lowercase names as well."""

    login = "login"
    login_failed = "login_failed"
    logout = "logout"
    item_viewed = "item_viewed"
    unblurred = "unblurred"
    claimed = "claimed"
    released = "released"
    assessed = "assessed"
    second_opinion = "second_opinion"
    ruled = "ruled"
    bulk_confirmed = "bulk_confirmed"
    hosting_corrected = "hosting_corrected"
    exported = "exported"
    admin_change = "admin_change"


class Head(NamedTuple):
    """The newest event: keep a copy outside the database to anchor later checks."""

    id: int
    hash: str
    at: dt.datetime

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "hash": self.hash, "at": _timestamp(self.at)}


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_broken_id: int | None = None
    reason: str | None = None
    head_hash: str | None = None


def _timestamp(at: dt.datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return at.astimezone(dt.UTC).isoformat(timespec="microseconds")


def payload(
    *,
    id: int,
    prev_hash: str,
    at: dt.datetime,
    actor_id: int | None,
    actor: str,
    action: str,
    object_type: str | None,
    object_id: str | None,
    details: str | None,
) -> bytes:
    """The canonical bytes an event's hash covers (``details`` as its stored JSON text)."""
    document = {
        "id": id,
        "prev_hash": prev_hash,
        "at": _timestamp(at),
        "actor_id": actor_id,
        "actor": actor,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "details": details,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_hash(**fields: Any) -> str:
    return hashlib.sha256(payload(**fields)).hexdigest()


def _refuse_urls(value: Any, where: str) -> None:
    if isinstance(value, str):
        if "://" in value:
            raise ValueError(f"audit {where} must not contain a URL")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_urls(key, where)
            _refuse_urls(item, where)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_urls(item, where)


def _check_field(name: str, value: str | None) -> None:
    if value is None:
        return
    if len(value) > _LIMITS[name]:
        raise ValueError(f"audit {name} longer than {_LIMITS[name]} characters")
    _refuse_urls(value, name)


def _lock_and_next_id(session: Session) -> int:
    """Take the writer lock (PostgreSQL) and choose the new event's id under it."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        next_id = session.execute(
            text("SELECT nextval(pg_get_serial_sequence('audit_event', 'id'))")
        ).scalar_one()
        return int(next_id)
    # SQLite admits one writer at a time. A write that touches no row (and fires no
    # trigger) takes the write lock now, waiting for the busy timeout, so the head read
    # next is the newest; otherwise two writers could read the same head.
    session.execute(text("DELETE FROM audit_event WHERE 0 = 1"))
    top = session.execute(select(func.max(col(AuditEvent.id)))).scalar_one()
    return int(top or 0) + 1


def _head_row(session: Session) -> tuple[int, str, dt.datetime] | None:
    row = session.execute(
        select(col(AuditEvent.id), col(AuditEvent.hash), col(AuditEvent.at))
        .order_by(col(AuditEvent.id).desc())
        .limit(1)
    ).first()
    return None if row is None else (int(row[0]), str(row[1]), row[2])


def console_actor() -> str:
    """The actor of a change made at the console: ``cli:`` and the operating-system
    account that ran the command."""
    import getpass

    try:
        operator = getpass.getuser()
    except (KeyError, OSError):
        operator = "unknown"
    return f"cli:{operator}"[:254]


def record(
    session: Session,
    *,
    action: str,
    actor: str,
    actor_id: int | None = None,
    object_type: str | None = None,
    object_id: str | int | None = None,
    details: dict[str, Any] | None = None,
    now: dt.datetime,
) -> AuditEvent:
    """Append one event to the chain (flushed, not committed; the caller commits).

    ``actor`` is the staff member's email or a system name (``"system"``,
    ``"worker"``); ``details`` is small JSON of ids and counts, never a URL or content.
    """
    if not action or not action.replace("_", "").replace(".", "").isalnum():
        raise ValueError("audit action must be a word like 'item_viewed'")
    if action != action.lower():
        raise ValueError("audit action must be lowercase")
    object_key = None if object_id is None else str(object_id)
    for name, value in (
        ("actor", actor),
        ("action", action),
        ("object_type", object_type),
        ("object_id", object_key),
    ):
        _check_field(name, value)
    details_text = None
    if details is not None:
        _refuse_urls(details, "details")
        details_text = json.dumps(
            details, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    at = now.astimezone(dt.UTC) if now.tzinfo is not None else now
    _timestamp(at)  # refuses a naive time before anything is written

    event_id = _lock_and_next_id(session)
    # Under the lock: nobody else can append between reading the head and our insert.
    head = _head_row(session)
    prev_hash = GENESIS_HASH if head is None else head[1]
    fields: dict[str, Any] = {
        "id": event_id,
        "prev_hash": prev_hash,
        "at": at,
        "actor_id": actor_id,
        "actor": actor,
        "action": action,
        "object_type": object_type,
        "object_id": object_key,
        "details": details_text,
    }
    event = AuditEvent(**fields, hash=compute_hash(**fields))
    session.add(event)
    session.flush()
    return event


def head(session: Session) -> Head | None:
    """The newest event's id, hash and time, or None for an empty log."""
    row = _head_row(session)
    return None if row is None else Head(*row)


def _rows(session: Session, batch_size: int) -> Iterator[Sequence[Any]]:
    columns = (
        col(AuditEvent.id),
        col(AuditEvent.prev_hash),
        col(AuditEvent.hash),
        col(AuditEvent.at),
        col(AuditEvent.actor_id),
        col(AuditEvent.actor),
        col(AuditEvent.action),
        col(AuditEvent.object_type),
        col(AuditEvent.object_id),
        col(AuditEvent.details),
    )
    after: int | None = None
    while True:
        query = select(*columns).order_by(col(AuditEvent.id)).limit(batch_size)
        if after is not None:
            query = query.where(col(AuditEvent.id) > after)
        batch = session.execute(query).all()
        yield from batch
        if len(batch) < batch_size:
            return
        after = int(batch[-1][0])


def _unlinked_reason(session: Session, event_id: int, prev_id: int | None, prev_hash: str) -> str:
    """Why an event's prev_hash does not name the event before it, as far as can be told."""
    expected = "the start of the log" if prev_id is None else f"event {prev_id}"
    if prev_hash == GENESIS_HASH:
        return f"claims to start the log, but follows {expected}"
    claimed = session.execute(
        select(col(AuditEvent.id)).where(col(AuditEvent.hash) == prev_hash)
    ).scalar_one_or_none()
    if claimed is None:
        return (
            f"does not follow {expected}: the event it followed was deleted or changed, "
            "or this event was inserted"
        )
    return (
        f"follows event {claimed}, not {expected}: the events between them were inserted "
        "out of order, or this event was"
    )


def verify(
    session: Session,
    *,
    anchor: tuple[int, str] | None = None,
    batch_size: int = BATCH_SIZE,
) -> VerifyResult:
    """Walk the whole log by id and report the first event whose hash or link is wrong.

    ``anchor`` is an exported head ``(id, hash)``: that event must still be in the log
    with that hash, which catches a log cut short or rewritten from some point on.
    """
    checked = 0
    prev_id: int | None = None
    prev_hash = GENESIS_HASH
    anchor_seen = anchor is None
    for row in _rows(session, batch_size):
        event_id, stored_prev, stored_hash = int(row[0]), str(row[1]), str(row[2])
        if stored_prev != prev_hash:
            reason = _unlinked_reason(session, event_id, prev_id, stored_prev)
            return VerifyResult(False, checked, event_id, reason, prev_hash)
        recomputed = compute_hash(
            id=event_id,
            prev_hash=stored_prev,
            at=row[3],
            actor_id=row[4],
            actor=row[5],
            action=row[6],
            object_type=row[7],
            object_id=row[8],
            details=row[9],
        )
        if recomputed != stored_hash:
            reason = "its hash does not match its content: the event was changed"
            return VerifyResult(False, checked, event_id, reason, prev_hash)
        if anchor is not None and event_id == anchor[0]:
            if stored_hash != anchor[1]:
                reason = "its hash differs from the exported head: the log was rewritten"
                return VerifyResult(False, checked, event_id, reason, prev_hash)
            anchor_seen = True
        checked += 1
        prev_id, prev_hash = event_id, stored_hash
    if not anchor_seen and anchor is not None:
        reason = "the exported head is no longer in the log: events were deleted"
        return VerifyResult(False, checked, anchor[0], reason, prev_hash if checked else None)
    return VerifyResult(True, checked, None, None, prev_hash if checked else None)


def events(session: Session, *, limit: int = 50, action: str | None = None) -> Sequence[AuditEvent]:
    """The newest events first, optionally of one action only."""
    query = select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(limit)
    if action is not None:
        query = query.where(col(AuditEvent.action) == action)
    return session.execute(query).scalars().all()
