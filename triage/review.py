"""The analyst queue and claims on its items.

The queue is every `queued` target nobody holds, most urgent first (priority, then
age). Claiming is race-free: on PostgreSQL the top row is locked with ``FOR UPDATE
SKIP LOCKED``, so analysts pressing "next" at once get different items; on SQLite
writes are serialised and the claim is one conditional ``UPDATE``. A claim lasts a
lease; an expired claim puts the item back in the queue for everyone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col

from reporting.models import Report, Target, TargetStatus
from reporting.ranking import reasons_with_reports
from triage.models import HashList, MediaMatch, Sighting


@dataclass(frozen=True)
class QueueFilters:
    category: str | None = None
    registered_domain: str | None = None
    country: str | None = None
    list_name: str | None = None
    # None: the open items (queued, nobody holds them). Another status lists the targets
    # in it (waiting for a second opinion, disputed, confirmed...), most urgent first.
    status: TargetStatus | None = None


def _unclaimed(now: dt.datetime) -> ColumnElement[bool]:
    expires = col(Target.claim_expires_at)
    return or_(col(Target.claimed_by).is_(None), expires.is_(None), expires < now)


def _filtered(filters: QueueFilters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.registered_domain:
        conditions.append(col(Target.registered_domain) == filters.registered_domain.lower())
    if filters.country:
        conditions.append(col(Target.hosting_country) == filters.country.upper())
    if filters.category:
        conditions.append(
            exists().where(
                col(Report.target_id) == col(Target.id), col(Report.category) == filters.category
            )
        )
    if filters.list_name:
        conditions.append(
            exists()
            .where(col(Sighting.target_id) == col(Target.id), col(Sighting.online).is_(True))
            .where(col(MediaMatch.media_id) == col(Sighting.media_id))
            .where(col(HashList.id) == col(MediaMatch.list_id))
            .where(col(HashList.name) == filters.list_name, col(HashList.enabled))
        )
    return conditions


def _open_items(now: dt.datetime, filters: QueueFilters) -> list[ColumnElement[bool]]:
    return [col(Target.status) == TargetStatus.queued, _unclaimed(now), *_filtered(filters)]


def _listed(now: dt.datetime, filters: QueueFilters) -> list[ColumnElement[bool]]:
    if filters.status is None:
        return _open_items(now, filters)
    return [col(Target.status) == filters.status, *_filtered(filters)]


ORDER = (col(Target.priority).desc(), col(Target.first_reported_at), col(Target.id))


def queue_item(target: Target) -> dict[str, Any]:
    return {
        "id": target.id,
        "canonical_url": target.canonical_url,
        "registered_domain": target.registered_domain,
        "priority": target.priority,
        "priority_reasons": reasons_with_reports(target.priority_reasons, target.report_count),
        "hosting_country": target.hosting_country,
        "report_count": target.report_count,
        "first_reported_at": target.first_reported_at.isoformat(),
        "claimed_by": target.claimed_by,
        "claim_expires_at": target.claim_expires_at.isoformat()
        if target.claim_expires_at
        else None,
    }


def list_queue(
    session: Session,
    *,
    now: dt.datetime,
    filters: QueueFilters = QueueFilters(),
    limit: int = 50,
    offset: int = 0,
) -> list[Target]:
    """Open items (or the targets in ``filters.status``), most urgent first."""
    query = select(Target).where(*_listed(now, filters)).order_by(*ORDER)
    return list(session.execute(query.limit(limit).offset(offset)).scalars())


def queue_counts(session: Session, *, now: dt.datetime) -> dict[str, int]:
    """How many items are open, claimed, and waiting for the workers."""
    # Open is counted as queued minus claimed: counting the queued rows needs no look
    # at each claim (an index-only scan), and live claims are few (their own index).
    queued = col(Target.status) == TargetStatus.queued
    claimed = and_(
        queued,
        col(Target.claimed_by).is_not(None),
        col(Target.claim_expires_at).is_not(None),
        col(Target.claim_expires_at) >= now,
    )
    processing = col(Target.status).in_([TargetStatus.pending, TargetStatus.fetching])
    row = session.execute(
        select(
            *(
                select(func.count()).select_from(Target).where(condition).scalar_subquery()
                for condition in (queued, claimed, processing)
            )
        )
    ).one()
    total, held, waiting = (int(value) for value in row)
    return {"open": total - held, "claimed": held, "processing": waiting}


def queue_by_site(session: Session, *, now: dt.datetime, limit: int = 50) -> list[dict[str, Any]]:
    """Open items grouped by registered domain, so a whole site can be worked at once."""
    rows = session.execute(
        select(
            col(Target.registered_domain),
            func.count(),
            func.max(col(Target.priority)),
        )
        .where(*_open_items(now, QueueFilters()))
        .group_by(col(Target.registered_domain))
        .order_by(func.max(col(Target.priority)).desc(), func.count().desc())
        .limit(limit)
    ).all()
    return [
        {"registered_domain": domain, "open": int(count), "top_priority": int(top)}
        for domain, count, top in rows
    ]


def claim_next(
    session: Session,
    *,
    user_id: int,
    now: dt.datetime,
    lease: dt.timedelta,
    filters: QueueFilters = QueueFilters(),
    released: list[int] | None = None,
) -> Target | None:
    """Give the analyst the most urgent open item for a lease; None when the queue is empty.

    Whatever the analyst held before goes back to the queue for others: "next" means
    the next item, not the one just put down. Their ids are added to ``released``, for
    the caller's audit.
    """
    candidate = select(col(Target.id)).where(*_open_items(now, filters)).order_by(*ORDER).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        candidate = candidate.with_for_update(skip_locked=True)
    claimed = session.execute(
        update(Target)
        .where(col(Target.id) == candidate.scalar_subquery(), _unclaimed(now))
        .values(claimed_by=user_id, claim_expires_at=now + lease)
        .returning(col(Target.id))
        .execution_options(synchronize_session=False)
    ).scalar()
    if claimed is None:
        return None
    given_back = session.execute(
        update(Target)
        .where(col(Target.claimed_by) == user_id, col(Target.id) != claimed)
        .values(claimed_by=None, claim_expires_at=None)
        .returning(col(Target.id))
        .execution_options(synchronize_session=False)
    ).scalars()
    if released is not None:
        released += sorted(int(i) for i in given_back)
    return session.get(Target, claimed, populate_existing=True)


def renew_claim(
    session: Session, target_id: int, *, user_id: int, now: dt.datetime, lease: dt.timedelta
) -> bool:
    """Extend the analyst's own, still valid claim; False if it is not theirs any more."""
    result = session.execute(
        update(Target)
        .where(
            col(Target.id) == target_id,
            col(Target.claimed_by) == user_id,
            col(Target.claim_expires_at) >= now,
        )
        .values(claim_expires_at=now + lease)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def release_claims(session: Session, *, user_id: int, target_id: int | None = None) -> int:
    """Give back the analyst's claims (one, or all); returns how many."""
    query = update(Target).where(col(Target.claimed_by) == user_id)
    if target_id is not None:
        query = query.where(col(Target.id) == target_id)
    result = session.execute(
        query.values(claimed_by=None, claim_expires_at=None).execution_options(
            synchronize_session=False
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def claimed_by(session: Session, user_id: int, *, now: dt.datetime) -> list[Target]:
    """The items an analyst holds now (normally one: "next" gives the last one back)."""
    query = (
        select(Target)
        .where(col(Target.claimed_by) == user_id, col(Target.claim_expires_at) > now)
        .order_by(*ORDER)
    )
    return list(session.execute(query).scalars())
