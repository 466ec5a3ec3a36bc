"""The watch on confirmed targets until the material is gone (docs/rechecks.md).

A confirmed target is re-fetched through the guarded client 1 h, 6 h, 24 h and 72 h
after its confirmation, then daily, until it is removed or ``max_age`` has passed. The
schedule is lazy: each watched target has at most one open ``Recheck`` row (the next
one due); recording a check opens the next. Beat runs `sweep`, which opens the first
re-check of newly confirmed targets and hands the due ones to the workers
(``partners.recheck``); a worker runs `run_recheck`.

What a check finds:

- ``removed``: the URL answers 404, 410 or 451, or it answers but none of the confirmed
  media is there any more (no media at all, or only other media, and no media link
  failed for a passing reason). The first removal sets ``Target.removed_at``.
- ``online``: a confirmed media item is there: the same SHA-256, or for images a pHash
  or PDQ within the near-duplicate radius, so a re-encoded or resized copy still counts.
  ``moved`` is online under another host (the page now redirects elsewhere).
- ``unreachable``: no answer (timeout, DNS, refused, 5xx, 429, TLS), or only broken
  media links for such reasons. Neither online nor removed: the schedule goes on.

A removed target that is found online again is re-opened: back to ``forwarded`` (or
``confirmed`` when it never was forwarded), ``reopened_at`` set, ``removed_at`` cleared,
and ``partners.notify_reopened`` queued, which tells every partner that received it.
Re-checks go on for ``after_removal`` after a removal so that a return is noticed.

Invariants: fetched bytes stay inside ``triage.service.gather``; only hashes come out.
No URL in logs, errors or audit events (ids only). Nothing here commits.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement, and_, exists, func, select
from sqlmodel import Session, col

from hotline import audit
from hotline.db import utcnow
from hotline.queue import enqueue
from hotline.settings import Settings
from partners import peers
from partners.errors import TargetNotWatched
from partners.models import (
    Forwarding,
    ForwardingKind,
    ForwardingState,
    Partner,
    Recheck,
    RecheckResult,
)
from partners.routing import may_have_received, queue_delivery
from reporting.models import Target, TargetStatus
from triage.assessment import current_assessments
from triage.fetcher import Fetcher
from triage.hashing import MediaHashes
from triage.models import ILLEGAL, Decision, Media, Outcome
from triage.neardup import informative_phashes
from triage.service import Failure, Gathered, Limits, frame_hashes, gather, is_retryable

log = logging.getLogger("hotline.partners.rechecks")

RECHECK_TASK = "partners.recheck"
REOPENED_TASK = "partners.notify_reopened"
# Targets under watch: confirmed (maybe forwarded) and removed (watched for a return).
WATCHED = frozenset({TargetStatus.confirmed, TargetStatus.forwarded, TargetStatus.removed})
# The first re-checks after confirmation; daily after the last of them.
FIRST_OFFSETS = (
    dt.timedelta(hours=1),
    dt.timedelta(hours=6),
    dt.timedelta(hours=24),
    dt.timedelta(hours=72),
)
DAY = dt.timedelta(days=1)
# Answers that say the content is gone (451: unavailable for legal reasons).
GONE_STATUSES = frozenset({404, 410, 451})
THREE_DAYS = dt.timedelta(days=3)


@dataclass(frozen=True)
class RecheckPolicy:
    max_age: dt.timedelta = dt.timedelta(days=90)
    after_removal: dt.timedelta = dt.timedelta(days=14)
    lease: dt.timedelta = dt.timedelta(minutes=10)
    batch_size: int = 50
    phash_radius: int = 8
    pdq_radius: int = 31
    pdq_min_quality: int = 50

    @classmethod
    def from_settings(cls, settings: Settings) -> RecheckPolicy:
        return cls(
            max_age=dt.timedelta(days=settings.recheck_max_age_days),
            after_removal=dt.timedelta(days=settings.recheck_after_removal_days),
            lease=dt.timedelta(seconds=settings.process_lease_seconds),
            batch_size=settings.recheck_batch_size,
            phash_radius=settings.phash_radius,
            pdq_radius=settings.pdq_radius,
            pdq_min_quality=settings.pdq_min_quality,
        )


# The schedule ------------------------------------------------------------------------------


def schedule_points(confirmed_at: dt.datetime, max_age: dt.timedelta) -> Iterable[dt.datetime]:
    """Every time a target confirmed at ``confirmed_at`` is due: +1 h, +6 h, +24 h, +72 h,
    then every 24 h, up to ``max_age`` after confirmation."""
    end = confirmed_at + max_age
    for offset in FIRST_OFFSETS:
        if confirmed_at + offset > end:
            return
        yield confirmed_at + offset
    at = confirmed_at + FIRST_OFFSETS[-1] + DAY
    while at <= end:
        yield at
        at += DAY


def next_due(
    confirmed_at: dt.datetime,
    after: dt.datetime,
    *,
    max_age: dt.timedelta,
    removed_at: dt.datetime | None = None,
    after_removal: dt.timedelta = dt.timedelta(days=14),
) -> dt.datetime | None:
    """The first point of the schedule later than ``after`` (points missed while nothing
    ran are skipped, not made up); None when the watch is over: past ``max_age``, or past
    ``after_removal`` since the target was removed."""
    for point in schedule_points(confirmed_at, max_age):
        if point <= after:
            continue
        if removed_at is not None and point > removed_at + after_removal:
            return None
        return point
    return None


def confirmed_at(session: Session, target: Target) -> dt.datetime:
    """When the target was confirmed: the latest illegal decision on it (the one that
    made it confirmed); a target without decisions (made by hand) counts from its last
    status change."""
    found = session.execute(
        select(func.max(col(Decision.created_at))).where(
            col(Decision.target_id) == target.id, col(Decision.outcome) == Outcome.illegal
        )
    ).scalar_one_or_none()
    return found if found is not None else target.status_changed_at


def _open_recheck(session: Session, target_id: int) -> Recheck | None:
    return session.execute(
        select(Recheck)
        .where(col(Recheck.target_id) == target_id, col(Recheck.done_at).is_(None))
        .order_by(col(Recheck.id))
        .limit(1)
    ).scalar_one_or_none()


def schedule(
    session: Session, target: Target, *, now: dt.datetime, policy: RecheckPolicy
) -> Recheck | None:
    """Open the target's next re-check (idempotent: an open one is returned as it is).

    Due at the first point of the schedule after the last check done; for a target not
    checked yet the first point (+1 h), due at once if that has passed. None when the
    target is not watched or its watch is over.
    """
    if target.id is None or target.status not in WATCHED:
        return None
    existing = _open_recheck(session, target.id)
    if existing is not None:
        return existing
    last_done = session.execute(
        select(func.max(col(Recheck.done_at))).where(col(Recheck.target_id) == target.id)
    ).scalar_one_or_none()
    confirmed = confirmed_at(session, target)
    due = next_due(
        confirmed,
        last_done if last_done is not None else confirmed,
        max_age=policy.max_age,
        removed_at=target.removed_at,
        after_removal=policy.after_removal,
    )
    if due is None:
        return None
    row = Recheck(target_id=target.id, due_at=due)
    session.add(row)
    session.flush()
    return row


def seed(session: Session, *, now: dt.datetime, policy: RecheckPolicy) -> int:
    """Open the first re-check of watched targets that have none yet (the newly
    confirmed); returns how many were opened. Targets whose last status change is older
    than ``max_age`` are not looked at."""
    never_checked = ~exists().where(col(Recheck.target_id) == col(Target.id))
    query = (
        select(Target)
        .where(
            col(Target.status).in_(list(WATCHED)),
            col(Target.status_changed_at) >= now - policy.max_age,
            never_checked,
        )
        .order_by(col(Target.id))
        .with_for_update(skip_locked=True)
    )
    opened = 0
    for target in session.execute(query).scalars():
        if schedule(session, target, now=now, policy=policy) is not None:
            opened += 1
    return opened


def claim_due(session: Session, *, now: dt.datetime, policy: RecheckPolicy) -> list[int]:
    """Take up to ``batch_size`` due re-checks for the workers (other sweeps skip them:
    ``FOR UPDATE SKIP LOCKED`` on PostgreSQL). While one runs its ``due_at`` is moved
    to the end of its lease, so a check whose message or worker was lost is taken again
    then; recording it puts ``due_at`` back to when the check was made."""
    query = (
        select(Recheck)
        .where(col(Recheck.done_at).is_(None), col(Recheck.due_at) <= now)
        .order_by(col(Recheck.due_at), col(Recheck.id))
        .limit(policy.batch_size)
        .with_for_update(skip_locked=True)
    )
    claimed = []
    for row in session.execute(query).scalars():
        row.due_at = now + policy.lease
        session.add(row)
        if row.id is not None:
            claimed.append(row.id)
    session.flush()
    return claimed


def due_now(session: Session, target_id: int, *, now: dt.datetime, policy: RecheckPolicy) -> int:
    """Make the watched target's next re-check due now (outside its schedule: staff want
    to know at once); returns its id. `TargetNotWatched` when it is not watched."""
    target = session.get(Target, target_id)
    row = None if target is None else schedule(session, target, now=now, policy=policy)
    if row is None or row.id is None:
        raise TargetNotWatched()
    row.due_at = now
    session.add(row)
    session.flush()
    return row.id


def sweep(session: Session, *, now: dt.datetime, policy: RecheckPolicy) -> list[int]:
    """Beat's step: open first re-checks, then hand the due ones to the workers (the
    ``partners.recheck`` messages go after the commit). Returns the re-check ids."""
    seed(session, now=now, policy=policy)
    claimed = claim_due(session, now=now, policy=policy)
    for recheck_id in claimed:
        enqueue(session, RECHECK_TASK, recheck_id=recheck_id)
    return claimed


# One check ---------------------------------------------------------------------------------


# One picture's perceptual hashes: pHash, PDQ, PDQ quality.
Picture = tuple[str | None, str | None, int | None]


@dataclass(frozen=True)
class Known:
    """The hashes of one confirmed media item, to look for."""

    media_id: int
    sha256: str
    phash: str | None
    pdq: str | None
    pdq_quality: int | None
    # Its hashed later frames, if it is an animation (``MediaFrame``).
    frames: tuple[Picture, ...] = ()


@dataclass(frozen=True)
class Watched:
    """What a check needs to know, read before the fetch (no transaction stays open)."""

    recheck_id: int
    target_id: int
    url: str
    host: str
    media: tuple[Known, ...]

    def __repr__(self) -> str:
        return f"Watched(recheck={self.recheck_id}, target={self.target_id})"


@dataclass(frozen=True)
class Observation:
    result: RecheckResult
    status_code: int | None = None
    media_found: int | None = None
    error: str | None = None


def confirmed_media(session: Session, target_id: int) -> list[Media]:
    """The target's media whose current verdict is illegal (baseline or national)."""
    ids = [
        media_id
        for media_id, a in current_assessments(session, target_id).items()
        if a.classification in ILLEGAL
    ]
    if not ids:
        return []
    rows = session.execute(select(Media).where(col(Media.id).in_(ids)).order_by(col(Media.id)))
    return list(rows.scalars())


def load(session: Session, recheck_id: int) -> Watched | None:
    """The open re-check and its target's confirmed media; None if already recorded."""
    row = session.get(Recheck, recheck_id)
    if row is None or row.done_at is not None:
        return None
    target = session.get(Target, row.target_id)
    if target is None:
        return None
    confirmed = confirmed_media(session, row.target_id)
    frames = frame_hashes(session, [int(m.id or 0) for m in confirmed])
    media = tuple(
        Known(
            int(m.id or 0),
            m.sha256,
            m.phash,
            m.pdq,
            m.pdq_quality,
            tuple((f["phash"], f["pdq"], f["pdq_quality"]) for f in frames.get(int(m.id or 0), ())),
        )
        for m in confirmed
    )
    return Watched(recheck_id, row.target_id, target.canonical_url, target.host, media)


def _distance(a: str | None, b: str | None) -> int | None:
    if not a or not b or len(a) != len(b):
        return None
    try:
        return (int(a, 16) ^ int(b, 16)).bit_count()
    except ValueError:
        return None


def is_same_media(found: MediaHashes, media: Known, policy: RecheckPolicy) -> bool:
    """The same file, or for images the same picture within the near-duplicate radius.

    Of an animation, every hashed frame counts as one of its pictures, on either side:
    a confirmed GIF whose abusive frame is still shown under a new first frame, or
    alone as a still picture, is still there."""
    if found.sha256 == media.sha256:
        return True
    shown: list[Picture] = [(found.phash, found.pdq, found.pdq_quality)]
    shown += [(f.phash, f.pdq, f.pdq_quality) for f in found.frame_hashes]
    confirmed: list[Picture] = [(media.phash, media.pdq, media.pdq_quality), *media.frames]
    return any(_same_picture(a, b, policy) for a in shown for b in confirmed)


def _same_picture(a: Picture, b: Picture, policy: RecheckPolicy) -> bool:
    (a_phash, a_pdq, a_quality), (b_phash, b_pdq, b_quality) = a, b
    if a_phash and b_phash:
        # A pHash saying nothing of its picture (a flat placeholder) matches no other.
        d = _distance(a_phash, b_phash)
        near = d is not None and d <= policy.phash_radius
        if near and informative_phashes(a_phash, b_phash):
            return True
    good = min(a_quality or 0, b_quality or 0) >= policy.pdq_min_quality
    d = _distance(a_pdq, b_pdq)
    return good and d is not None and d <= policy.pdq_radius


def _status_of(reason: str) -> int | None:
    if reason.startswith("http_error_") and reason[11:].isdigit():
        return int(reason[11:])
    return None


def observe(watched: Watched, gathered: Gathered | Failure, policy: RecheckPolicy) -> Observation:
    """What a fetch result means for the watch (no database, no network)."""
    if isinstance(gathered, Failure):
        status = _status_of(gathered.reason)
        if status in GONE_STATUSES:
            return Observation(RecheckResult.removed, status, 0)
        if gathered.reason in ("not_media",):
            # It answers with something that is neither a page nor media: gone.
            return Observation(RecheckResult.removed, None, 0, gathered.reason)
        return Observation(RecheckResult.unreachable, status, None, gathered.reason[:64])
    found = sum(
        1 for m in watched.media if any(is_same_media(f.hashes, m, policy) for f in gathered.media)
    )
    if not watched.media:
        # Nothing to look for (a target confirmed without media verdicts): it answers.
        found = 1
    if found:
        host = urlsplit(gathered.final_url).hostname or ""
        moved = host.lower() != watched.host.lower()
        return Observation(RecheckResult.moved if moved else RecheckResult.online, 200, found)
    passing = [r for r in gathered.broken_reasons if is_retryable(r)]
    if passing:
        return Observation(RecheckResult.unreachable, 200, 0, f"media_{passing[0]}"[:64])
    return Observation(RecheckResult.removed, 200, 0)


@dataclass(frozen=True)
class Recorded:
    result: RecheckResult | None
    removed: bool = False  # this check set removed_at
    reopened: bool = False  # this check re-opened a removed target
    next_due: dt.datetime | None = None


def _forwarded(session: Session, target_id: int) -> bool:
    return (
        session.execute(
            select(col(Forwarding.id)).where(col(Forwarding.target_id) == target_id).limit(1)
        ).first()
        is not None
    )


def _remove(session: Session, target: Target, *, at: dt.datetime) -> None:
    target.removed_at = at
    target.status = TargetStatus.removed
    target.status_reason = None
    target.status_changed_at = at
    session.add(target)


def _reopen(session: Session, target: Target, *, now: dt.datetime) -> None:
    target_id = int(target.id or 0)
    target.status = (
        TargetStatus.forwarded if _forwarded(session, target_id) else TargetStatus.confirmed
    )
    target.removed_at = None
    target.reopened_at = now
    target.status_changed_at = now
    session.add(target)
    enqueue(session, REOPENED_TASK, target_id=target.id)


def record(
    session: Session,
    recheck_id: int,
    observation: Observation,
    *,
    now: dt.datetime,
    policy: RecheckPolicy,
) -> Recorded:
    """Store what a check found, change the target (removed, re-opened) and open the next
    re-check. A re-check recorded already (a duplicate message) changes nothing."""
    row = session.get(Recheck, recheck_id, with_for_update=True, populate_existing=True)
    if row is None or row.done_at is not None:
        return Recorded(None)
    target = session.get(Target, row.target_id, with_for_update=True, populate_existing=True)
    row.done_at = now
    row.due_at = min(row.due_at, now)
    session.add(row)
    if target is None or target.status not in WATCHED:
        # Reversed or otherwise no longer confirmed: the watch ends.
        row.error = "not_watched"
        session.flush()
        return Recorded(None)
    row.result = observation.result
    row.status_code = observation.status_code
    row.media_found = observation.media_found
    row.error = observation.error
    removed = reopened = False
    if observation.result is RecheckResult.removed and target.removed_at is None:
        _remove(session, target, at=now)
        removed = True
        _audit(session, "target_removed", target, now=now, details={"source": "recheck"})
        log.info("target %s: removed (recheck %s)", target.id, recheck_id)
        session.flush()
        peers.tell_sources(session, row.target_id, now=now)
    elif (
        observation.result in (RecheckResult.online, RecheckResult.moved)
        and target.status is TargetStatus.removed
    ):
        _reopen(session, target, now=now)
        reopened = True
        _audit(session, "target_reopened", target, now=now, details={"recheck_id": recheck_id})
        log.info("target %s: online again, re-opened (recheck %s)", target.id, recheck_id)
    session.flush()
    following = schedule(session, target, now=now, policy=policy)
    return Recorded(
        observation.result,
        removed=removed,
        reopened=reopened,
        next_due=following.due_at if following is not None else None,
    )


UnitOfWork = Callable[[], AbstractContextManager[Session]]


def run_recheck(
    recheck_id: int,
    *,
    units: UnitOfWork,
    fetcher: Fetcher,
    limits: Limits,
    policy: RecheckPolicy,
    now: Callable[[], dt.datetime],
) -> Recorded:
    """Load, fetch (outside any transaction) and record one re-check."""
    with units() as session:
        watched = load(session, recheck_id)
    if watched is None:
        return Recorded(None)
    try:
        gathered = gather(watched.url, fetcher=fetcher, limits=limits)
    except Exception as exc:  # a bug must not end the watch, nor leak a URL
        log.error("recheck %s: failed with %s", recheck_id, type(exc).__name__)
        gathered = Failure("internal_error")
    observation = observe(watched, gathered, policy)
    del gathered
    with units() as session:
        return record(session, recheck_id, observation, now=now(), policy=policy)


# Removal reported from elsewhere, re-opening, statistics --------------------------------------


def _audit(
    session: Session,
    action: str,
    target: Target,
    *,
    now: dt.datetime,
    details: dict[str, object],
    actor: str = "system",
) -> None:
    audit.record(
        session,
        action=action,
        actor=actor,
        object_type="target",
        object_id=target.id,
        details=details,
        now=now,
    )


def mark_removed(
    session: Session,
    target_id: int,
    at: dt.datetime,
    source: str,
    *,
    now: dt.datetime | None = None,
) -> bool:
    """Removal reported from outside the re-checks (a partner's "content removed at T"):
    ``removed_at`` becomes ``at`` unless an earlier removal is known. ``source`` names
    who said so (e.g. ``"partner:12"``), for the audit log. Returns whether anything
    changed. Re-checks go on, so a target still online is re-opened by the next one."""
    target = session.get(Target, target_id, with_for_update=True, populate_existing=True)
    if target is None or target.status not in WATCHED:
        return False
    if target.removed_at is not None and target.removed_at <= at:
        return False
    if target.removed_at is None:
        _remove(session, target, at=at)
    else:
        target.removed_at = at
        session.add(target)
    _audit(
        session,
        "target_removed",
        target,
        now=now or utcnow(),
        details={"source": source[:64], "removed_at": at.isoformat()},
        actor=source[:254] or "system",
    )
    session.flush()
    peers.tell_sources(session, target_id, now=now or utcnow())
    return True


def notify_reopened(session: Session, target_id: int, *, now: dt.datetime) -> list[int]:
    """Tell every partner that received the target (report or notice) that it is back
    online: one ``reopened`` forwarding per partner (made once, delivered again on each
    later return). Returns the forwarding ids delivered now."""
    target = session.get(Target, target_id)
    if target is None or target.status is TargetStatus.removed or target.removed_at is not None:
        return []
    named = session.execute(
        select(Forwarding).where(
            col(Forwarding.target_id) == target_id,
            col(Forwarding.kind).in_([ForwardingKind.report, ForwardingKind.notice]),
            col(Forwarding.state).not_in([ForwardingState.retracted, ForwardingState.held]),
        )
    ).scalars()
    # One taken back before it reached its partner (superseded: the site moved, or its
    # country was corrected) told that partner nothing: nothing to tell it now.
    partner_ids = sorted(
        {
            f.partner_id
            for f in named
            if f.state is not ForwardingState.superseded or may_have_received(session, f)
        }
    )
    told = []
    for partner_id in partner_ids:
        partner = session.get(Partner, partner_id)
        if partner is None or not partner.active:
            continue
        forwarding = session.execute(
            select(Forwarding).where(
                col(Forwarding.target_id) == target_id,
                col(Forwarding.partner_id) == partner_id,
                col(Forwarding.kind) == ForwardingKind.reopened,
            )
        ).scalar_one_or_none()
        if forwarding is None:
            forwarding = Forwarding(
                target_id=target_id,
                partner_id=partner_id,
                kind=ForwardingKind.reopened,
                rule="reopened",
                state=ForwardingState.pending,
                created_at=now,
            )
            session.add(forwarding)
            session.flush()
        else:
            forwarding.state = ForwardingState.pending
            session.add(forwarding)
        queue_delivery(session, forwarding, partner, now=now)
        if forwarding.id is not None:
            told.append(forwarding.id)
    return told


@dataclass(frozen=True)
class Removal:
    """The watch on one target, for the item view."""

    confirmed_at: dt.datetime | None
    removed_at: dt.datetime | None
    reopened_at: dt.datetime | None
    time_to_removal: dt.timedelta | None
    last_result: RecheckResult | None
    last_checked_at: dt.datetime | None
    next_due_at: dt.datetime | None
    checks: int

    def as_json(self) -> dict[str, object]:
        def iso(at: dt.datetime | None) -> str | None:
            return at.isoformat() if at is not None else None

        ttr = self.time_to_removal
        return {
            "confirmed_at": iso(self.confirmed_at),
            "removed_at": iso(self.removed_at),
            "reopened_at": iso(self.reopened_at),
            "time_to_removal_seconds": int(ttr.total_seconds()) if ttr is not None else None,
            "last_result": self.last_result.value if self.last_result else None,
            "last_checked_at": iso(self.last_checked_at),
            "next_due_at": iso(self.next_due_at),
            "checks": self.checks,
        }


def time_to_removal(session: Session, target: Target) -> dt.timedelta | None:
    """``removed_at`` minus the confirmation time; None while not removed."""
    if target.removed_at is None:
        return None
    return target.removed_at - confirmed_at(session, target)


def removal(session: Session, target: Target) -> Removal:
    """The target's watch: confirmation, removal and time to removal, the checks."""
    done = session.execute(
        select(Recheck)
        .where(col(Recheck.target_id) == target.id, col(Recheck.done_at).is_not(None))
        .order_by(col(Recheck.done_at).desc(), col(Recheck.id).desc())
    ).scalars()
    rows = list(done)
    pending = _open_recheck(session, int(target.id or 0))
    watched = target.status in WATCHED
    return Removal(
        confirmed_at=confirmed_at(session, target) if watched else None,
        removed_at=target.removed_at,
        reopened_at=target.reopened_at,
        time_to_removal=time_to_removal(session, target),
        last_result=rows[0].result if rows else None,
        last_checked_at=rows[0].done_at if rows else None,
        next_due_at=pending.due_at if pending is not None else None,
        checks=len(rows),
    )


@dataclass(frozen=True)
class RemovalStats:
    confirmed: int
    removed: int
    removed_within: int
    within: dt.timedelta
    median_time_to_removal: dt.timedelta | None

    @property
    def share_removed_within(self) -> float | None:
        """INHOPE's headline figure: the share removed within ``within`` (3 days)."""
        return self.removed_within / self.confirmed if self.confirmed else None


def removal_statistics(
    session: Session,
    *,
    confirmed_from: dt.datetime | None = None,
    confirmed_until: dt.datetime | None = None,
    within: dt.timedelta = THREE_DAYS,
) -> RemovalStats:
    """Over the targets confirmed in the period (still confirmed, forwarded or removed):
    how many, how many removed, how many within ``within`` of confirmation."""
    confirmed_times = (
        select(
            col(Decision.target_id).label("target_id"),
            func.max(col(Decision.created_at)).label("at"),
        )
        .where(col(Decision.outcome) == Outcome.illegal)
        .group_by(col(Decision.target_id))
        .subquery()
    )
    query = select(col(Target.removed_at), confirmed_times.c.at).join(
        confirmed_times, confirmed_times.c.target_id == col(Target.id)
    )
    conditions: list[ColumnElement[bool]] = [col(Target.status).in_(list(WATCHED))]
    if confirmed_from is not None:
        conditions.append(confirmed_times.c.at >= confirmed_from)
    if confirmed_until is not None:
        conditions.append(confirmed_times.c.at < confirmed_until)
    rows = session.execute(query.where(and_(*conditions))).all()
    durations = sorted(
        max(removed - at, dt.timedelta(0)) for removed, at in rows if removed is not None
    )
    median = durations[len(durations) // 2] if durations else None
    return RemovalStats(
        confirmed=len(rows),
        removed=len(durations),
        removed_within=sum(1 for d in durations if d <= within),
        within=within,
        median_time_to_removal=median,
    )
