"""Public intake: accept a report, deduplicate its target, hand the target to the workers.

Services never commit; ``hotline.db.session_scope`` does, and only then are the
buffered task messages sent. A lost message is recovered by ``sweep_pending``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, select, update
from sqlmodel import Session, col

from hotline.db import built
from hotline.queue import enqueue
from hotline.settings import IPNetwork, Settings
from reporting.contacts import encrypt_contact
from reporting.errors import DescriptionTooLong, ReceiptNotFound
from reporting.models import Report, ReportSource, Target, TargetStatus
from reporting.ranking import next_report_bonus_sql
from reporting.ratelimit import SubmissionLimiter, client_address
from reporting.receipts import RECEIPT_MAX_LENGTH, new_receipt, receipt_digest
from reporting.schemas import DESCRIPTION_MAX, PublicStatus, ReportCreate
from reporting.urls import CanonicalURL, canonicalise

PROCESS_TARGET = "triage.process_target"
log = logging.getLogger("hotline.reporting")

VERDICTS = frozenset({PublicStatus.action_taken, PublicStatus.no_action_possible})
PUBLIC_STATUS = {
    TargetStatus.pending: PublicStatus.received,
    TargetStatus.fetching: PublicStatus.received,
    TargetStatus.queued: PublicStatus.being_assessed,
    TargetStatus.in_review: PublicStatus.being_assessed,
    TargetStatus.second_opinion: PublicStatus.being_assessed,
    TargetStatus.disputed: PublicStatus.being_assessed,
    TargetStatus.confirmed: PublicStatus.action_taken,
    TargetStatus.forwarded: PublicStatus.action_taken,
    TargetStatus.removed: PublicStatus.action_taken,
    TargetStatus.not_illegal: PublicStatus.no_action_possible,
    TargetStatus.unreachable: PublicStatus.no_action_possible,
}


def _add_target(insert: Any) -> Any:
    table = Target.__table__  # type: ignore[attr-defined]
    statement = insert(table)
    return statement.on_conflict_do_update(
        index_elements=[table.c.url_sha256],
        set_={
            "report_count": table.c.report_count + 1,
            "priority": table.c.priority + next_report_bonus_sql(table.c.report_count),
            "last_reported_at": statement.excluded.last_reported_at,
        },
    ).returning(table.c.id, table.c.report_count, table.c.status)


def upsert_target(
    session: Session, url: str, host: str, domain: str, *, now: dt.datetime
) -> tuple[int, bool]:
    """Insert the target or count one more report on it; returns (id, hand it over).
    Race-free. An unreachable target reported again is tried afresh."""
    target_id, count, status = session.execute(
        built(session, _add_target),
        {
            "canonical_url": url,
            "url_sha256": hashlib.sha256(url.encode()).hexdigest(),
            "host": host,
            "registered_domain": domain,
            "status": TargetStatus.pending,
            "priority": 0,
            "report_count": 1,
            "first_reported_at": now,
            "last_reported_at": now,
            "status_changed_at": now,
            "handed_over_at": now,
        },
    ).one()
    if status == TargetStatus.unreachable:
        # Reported again: the site may be back. Try afresh rather than answer 202 and
        # do nothing.
        _try_afresh(session, [int(target_id)], now=now)
        return int(target_id), True
    return int(target_id), count == 1


def _try_afresh(session: Session, ids: Sequence[int], *, now: dt.datetime) -> list[int]:
    """Unreachable targets of ``ids`` back to pending, their attempts counted from
    nought; returns those that were unreachable (the caller hands them over)."""
    reopened: list[int] = []
    for start in range(0, len(ids), 5000):  # (drivers bound the parameters of a statement)
        reopened += session.execute(
            update(Target)
            .where(
                col(Target.id).in_(ids[start : start + 5000]),
                col(Target.status) == TargetStatus.unreachable,
            )
            .values(
                status=TargetStatus.pending, attempts=0, status_changed_at=now, handed_over_at=now
            )
            .returning(col(Target.id))
        ).scalars()
    return sorted(int(i) for i in reopened)


def retry_unreachable(
    session: Session,
    *,
    now: dt.datetime,
    ids: Sequence[int] | None = None,
    reason: str | None = None,
    since: dt.datetime | None = None,
    dry_run: bool = False,
) -> list[int]:
    """Try unreachable targets afresh, e.g. after an outage of the network or the
    resolver made them fail: back to pending with their attempts counted from nought,
    handed to the workers once the caller commits. Returns their ids.

    ``ids``: those of these targets that are unreachable; otherwise every unreachable
    target, narrowed to a status reason (``dns_error``) and to those unreachable since
    ``since``. ``dry_run``: only which targets it would be."""
    query = select(col(Target.id)).where(col(Target.status) == TargetStatus.unreachable)
    if ids is not None:
        query = query.where(col(Target.id).in_(ids))
    if reason is not None:
        query = query.where(col(Target.status_reason) == reason)
    if since is not None:
        query = query.where(col(Target.status_changed_at) >= since)
    chosen = [int(i) for i in session.execute(query.order_by(col(Target.id))).scalars()]
    if dry_run:
        return chosen
    retried = _try_afresh(session, chosen, now=now)
    for target_id in retried:
        enqueue(session, PROCESS_TARGET, target_id=target_id)
    if retried:
        log.info("%d unreachable target(s) handed over again", len(retried))
    return retried


def check_report(
    data: ReportCreate, *, max_url_length: int, allow_networks: Sequence[IPNetwork] = ()
) -> CanonicalURL:
    """The report's canonical URL; raises what a report is refused for (bad URL, long
    description) before anything is written."""
    canonical = canonicalise(data.url, allow_networks=allow_networks, max_length=max_url_length)
    if data.description is not None and len(data.description.strip()) > DESCRIPTION_MAX:
        raise DescriptionTooLong()
    return canonical


def submit_report(
    session: Session,
    data: ReportCreate,
    *,
    source: ReportSource,
    now: dt.datetime,
    max_url_length: int,
    allow_networks: Sequence[IPNetwork] = (),
    canonical: CanonicalURL | None = None,
) -> tuple[str, Report]:
    """Record a report and its target; a new target is handed to the workers after commit.

    Returns the receipt (the only time it exists in clear) and the report row.
    ``canonical``: the URL as ``check_report`` gave it, when the caller checked already.
    """
    if canonical is None:
        canonical = check_report(data, max_url_length=max_url_length, allow_networks=allow_networks)
    target_id, created = upsert_target(
        session, canonical.url, canonical.host, canonical.registered_domain, now=now
    )
    receipt = new_receipt()
    description = (data.description or "").strip() or None
    contact = (data.contact or "").strip()
    report = Report(
        receipt_hash=receipt_digest(receipt),
        target_id=target_id,
        category=data.category,
        description=description,
        language=data.language.lower() if data.language else None,
        contact_encrypted=encrypt_contact(contact) if contact else None,
        source=source,
        created_at=now,
    )
    session.add(report)
    session.flush()
    if created:
        enqueue(session, PROCESS_TARGET, target_id=target_id)
    log.info("report %s accepted for target %s (new target: %s)", report.id, target_id, created)
    return receipt, report


def accept_public_report(
    session: Session,
    data: ReportCreate,
    *,
    source: ReportSource,
    settings: Settings,
    peer: tuple[str | None, str | None],
    now: dt.datetime,
    limiter: SubmissionLimiter,
) -> str:
    """A report from the form or the public API: checked, counted against the client's
    rate limit (by keyed hash, never stored), then submitted; returns the receipt.

    A refused report is not counted: who mistypes an address a few times is not locked
    out of reporting. Refusals write nothing, so they cost the hotline little."""
    canonical = check_report(
        data,
        max_url_length=settings.max_url_length,
        allow_networks=settings.fetch_allow_networks,
    )
    limiter.hit(client_address(*peer, settings.trusted_proxies))
    receipt, _ = submit_report(
        session,
        data,
        source=source,
        now=now,
        max_url_length=settings.max_url_length,
        allow_networks=settings.fetch_allow_networks,
        canonical=canonical,
    )
    return receipt


def report_status(session: Session, receipt: str) -> PublicStatus:
    """The coarse status of the report with this receipt; unknown and wrong receipts alike."""
    if not receipt or len(receipt) > RECEIPT_MAX_LENGTH:
        raise ReceiptNotFound()
    row = session.execute(
        select(
            col(Target.status),
            col(Target.decided_at),
            col(Target.status_changed_at),
            col(Report.created_at),
        )
        .join(Report, col(Report.target_id) == col(Target.id))
        .where(col(Report.receipt_hash) == receipt_digest(receipt))
    ).first()
    if row is None:
        raise ReceiptNotFound()
    status, decided_at, changed_at, reported_at = row
    shown = PUBLIC_STATUS[TargetStatus(status)]
    # A report made after the verdict is not told it: else anyone could learn, by
    # reporting a URL, whether the hotline has it confirmed (during a law-enforcement
    # hold, too) or judged it legal.
    if shown in VERDICTS and reported_at > (decided_at or changed_at):
        return PublicStatus.being_assessed
    return shown


def sweep_pending(
    session: Session,
    *,
    now: dt.datetime,
    older_than: dt.timedelta,
    stale_after: dt.timedelta | None = None,
    limit: int = 500,
) -> list[int]:
    """Hand over again targets still pending since their last hand-over, and targets a
    worker claimed but did not finish within ``stale_after`` (it died); returns their ids.

    A dead worker's target is pending again with the reason ``internal_error``: a worker
    that finds its attempts used up ends it as unreachable (and counts it on its site)
    without fetching it, so a URL that kills workers cannot keep them busy for ever. The
    rows are locked and skipped by concurrent sweeps on PostgreSQL, so two beats never
    hand the same target over twice in one round.
    """
    handed_over = col(Target.handed_over_at)
    due = (col(Target.status) == TargetStatus.pending) & (handed_over < now - older_than)
    if stale_after is not None:
        due = due | (
            (col(Target.status) == TargetStatus.fetching) & (handed_over < now - stale_after)
        )
    query = (
        select(col(Target.id))
        .where(due)
        .order_by(handed_over)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = [int(i) for i in session.execute(query).scalars()]
    if ids:
        # A dead worker's claim is void: the target is pending again, so the next worker
        # may claim it at once.
        dead = col(Target.status) == TargetStatus.fetching
        session.execute(
            update(Target)
            .where(col(Target.id).in_(ids))
            .values(
                handed_over_at=now,
                status=TargetStatus.pending,
                status_reason=case((dead, "internal_error"), else_=col(Target.status_reason)),
            )
        )
        for target_id in ids:
            enqueue(session, PROCESS_TARGET, target_id=target_id)
        log.info("sweep handed over %d pending target(s) again", len(ids))
    return ids


def purge_expired_contacts(session: Session, *, now: dt.datetime, retention: dt.timedelta) -> int:
    """Erase contact details of reports older than the retention period; returns how many."""
    result = session.execute(
        update(Report)
        .where(col(Report.contact_encrypted).is_not(None))
        .where(col(Report.created_at) < now - retention)
        .values(contact_encrypted=None)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
