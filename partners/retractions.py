"""Retractions: when a supervisor reverses a confirmed verdict (``triage.assessment.reverse``,
which sends ``partners.retract_target``), every partner that received the target is
sent a signed retraction, and nothing more of the original goes out.

For each partner with report, notice or re-opened forwardings of the target:

- the originals become ``retracted``; their deliveries not yet delivered are
  ``cancelled`` (so a retry, the sweep or an admin's redelivery never sends them);
- if the partner received any of them (delivered, acknowledged, answered, disputed, a
  delivery attempt made, or a notice sent), one ``retraction`` forwarding is made,
  naming the first of them in ``retracts_id``, and delivered like any forwarding
  (docs/forwarding.md, the retraction document) to a partner with a webhook, or by
  e-mail to a contact reached by e-mail only (``partners.notices.send_retraction``: a
  notice withdrawing the earlier one). A partner that never received it (a notice
  still held, a delivery never attempted) gets nothing.

Invariants: idempotent (a second run makes nothing new); runs only for a target closed
as not illegal; nothing is deleted; no URL in a log line or an audit event. Nothing here
commits.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from sqlalchemy import exists, select
from sqlmodel import Session, col

from hotline import audit
from partners.models import (
    Forwarding,
    ForwardingKind,
    ForwardingState,
    Partner,
)
from partners.notices import send_retraction
from partners.routing import cancel_deliveries, may_have_received, queue_delivery
from reporting.models import Target, TargetStatus

RETRACTED_KINDS = (ForwardingKind.report, ForwardingKind.notice, ForwardingKind.reopened)
RULE = "reversal"
log = logging.getLogger("hotline.partners.retractions")


def _first(originals: Sequence[Forwarding]) -> Forwarding:
    """The forwarding a retraction names: the report (or notice) before a re-opening."""
    order = {ForwardingKind.report: 0, ForwardingKind.notice: 1, ForwardingKind.reopened: 2}
    return sorted(originals, key=lambda f: (order.get(f.kind, 3), f.id or 0))[0]


def retract_target(
    session: Session, target_id: int, *, now: dt.datetime, language: str = "en"
) -> list[int]:
    """Retract what partners received of a reversed target; returns the ids of the
    retraction forwardings made now (none when run again). ``language``: of an e-mail
    retraction to a contact whose languages have no retraction text."""
    target = session.get(Target, target_id)
    if target is None or target.status is not TargetStatus.not_illegal:
        return []
    forwardings = list(
        session.execute(
            select(Forwarding)
            .where(col(Forwarding.target_id) == target_id)
            .order_by(col(Forwarding.id))
            .with_for_update()
        ).scalars()
    )
    retracted_already = {f.partner_id for f in forwardings if f.kind is ForwardingKind.retraction}
    by_partner: dict[int, list[Forwarding]] = {}
    for forwarding in forwardings:
        if forwarding.kind in RETRACTED_KINDS:
            by_partner.setdefault(forwarding.partner_id, []).append(forwarding)
    made: list[int] = []
    told: list[int] = []
    not_reached: list[int] = []
    changed = False
    for partner_id, originals in sorted(by_partner.items()):
        # Cancelled (their rows locked) first: a delivery claimed meanwhile counts as an
        # attempt made, and none is claimed after.
        for forwarding in originals:
            if forwarding.id is not None:
                cancel_deliveries(session, forwarding.id, why="retracted")
        received = [f for f in originals if may_have_received(session, f)]
        for forwarding in originals:
            if forwarding.state is not ForwardingState.retracted:
                forwarding.state = ForwardingState.retracted
                session.add(forwarding)
                changed = True
        if partner_id in retracted_already:
            continue
        if not received:
            not_reached.append(partner_id)
            continue
        retraction = Forwarding(
            target_id=target_id,
            partner_id=partner_id,
            kind=ForwardingKind.retraction,
            rule=RULE,
            state=ForwardingState.pending,
            retracts_id=_first(received).id,
            created_at=now,
        )
        session.add(retraction)
        session.flush()
        partner = session.get(Partner, partner_id)
        if partner is not None:
            # By webhook: a signed delivery; an abuse contact by e-mail only: a notice
            # withdrawing the earlier one. Neither: staff tell it by hand (it shows failed).
            sent = queue_delivery(session, retraction, partner, now=now) or send_retraction(
                session, retraction, partner, now=now, default_language=language
            )
            if sent is None:
                retraction.state = ForwardingState.failed
                session.add(retraction)
                log.warning("retraction %s: partner %s has no way in", retraction.id, partner_id)
        made.append(int(retraction.id or 0))
        told.append(partner_id)
    session.flush()
    if made or changed:
        audit.record(
            session,
            action="target_retracted",
            actor="system",
            object_type="target",
            object_id=target_id,
            details={"retractions": made, "partners_told": told, "not_reached": not_reached},
            now=now,
        )
        log.info("target %s: %d retraction(s) made", target_id, len(made))
    return made


def sweep_unretracted(
    session: Session,
    *,
    now: dt.datetime,
    overdue: dt.timedelta,
    language: str = "en",
    limit: int = 50,
) -> list[int]:
    """Retract for the targets reversed more than ``overdue`` ago whose report or notice
    forwardings are not retracted yet: the wake-up of ``partners.retract_target`` was
    lost. Returns the targets retracted now."""
    unretracted = exists().where(
        col(Forwarding.target_id) == col(Target.id),
        col(Forwarding.kind).in_(RETRACTED_KINDS),
        col(Forwarding.state) != ForwardingState.retracted,
    )
    waiting = session.execute(
        select(col(Target.id))
        .where(
            col(Target.status) == TargetStatus.not_illegal,
            col(Target.status_reason) == "reversed",  # (not every not-illegal verdict)
            col(Target.status_changed_at) <= now - overdue,
            unretracted,
        )
        .order_by(col(Target.status_changed_at))
        .limit(limit)
    ).scalars()
    done = []
    for target_id in list(waiting):
        retract_target(session, int(target_id), now=now, language=language)
        done.append(int(target_id))
    if done:
        log.info("sweep: %d reversed target(s) retracted late", len(done))
    return done
