"""Peer hotlines running this software: what became of the reports they sent us goes back.

A peer hotline forwards a confirmed target to our webhook (``POST /api/v1/partner/webhook``,
see `partners.inbound.receive`); it becomes a report with source ``partner`` and a
``PartnerReport`` keeping the peer's forwarding id as its reference. From then on each
change that matters to the peer (we confirmed and routed it, the content was removed)
puts a ``status`` forwarding to that peer in the outbox: one per target and peer, made
once and delivered again on each change, as a signed ``forwarding.status`` document
(docs/forwarding.md) through the same delivery machinery as any forwarding. The peer's
webhook takes it like a call to its status endpoint: content removed sets ``removed_at``
there.

The document is built when it is sent, from the target as it is then (`current_status`),
so a retried or late delivery always carries the latest status, and a change while one
delivery still waits for its first attempt needs no second one.

Invariants: only peers of kind ``hotline`` that gave a reference and have a webhook are
told; no URL in a log line or an audit event; nothing here commits.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import Session, col

from partners.models import (
    Delivery,
    DeliveryState,
    Forwarding,
    ForwardingKind,
    ForwardingState,
    Partner,
    PartnerKind,
    PartnerReport,
)
from partners.routing import ROUTABLE, queue_delivery
from reporting.models import Report, Target, TargetStatus

RULE = "peer.status"
log = logging.getLogger("hotline.partners.peers")


@dataclass(frozen=True)
class PeerStatus:
    """What we tell a peer about the target it sent us, in the status endpoint's terms."""

    status: str  # received, LEA, ISP, content_removed, not_illegal
    at: dt.datetime
    reference: str  # the peer's own id of it: the forwarding it sent us


def sources(session: Session, target_id: int) -> list[tuple[Partner, str]]:
    """The active peer hotlines that sent us this target, each with its first reference."""
    rows = session.execute(
        select(Partner, col(PartnerReport.external_ref))
        .join(PartnerReport, col(PartnerReport.partner_id) == col(Partner.id))
        .join(Report, col(Report.id) == col(PartnerReport.report_id))
        .where(
            col(Report.target_id) == target_id,
            col(PartnerReport.external_ref).is_not(None),
            col(Partner.kind) == PartnerKind.hotline,
            col(Partner.active).is_(True),
        )
        .order_by(col(PartnerReport.id))
    ).all()
    found: dict[int | None, tuple[Partner, str]] = {}
    for partner, reference in rows:
        if partner.webhook_url and reference:
            found.setdefault(partner.id, (partner, reference))
    return list(found.values())


def reference_of(session: Session, target_id: int, partner_id: int) -> str | None:
    for partner, reference in sources(session, target_id):
        if partner.id == partner_id:
            return reference
    return None


def current_status(session: Session, forwarding: Forwarding) -> PeerStatus | None:
    """The status of a ``status`` forwarding's target as it is now; None when the peer's
    reference is gone (it was disabled, say)."""
    target = session.get(Target, forwarding.target_id)
    reference = reference_of(session, forwarding.target_id, forwarding.partner_id)
    if target is None or reference is None:
        return None
    if target.removed_at is not None:
        return PeerStatus("content_removed", target.removed_at, reference)
    if target.status is TargetStatus.not_illegal:
        return PeerStatus("not_illegal", target.status_changed_at, reference)
    passed_on = session.execute(
        select(col(Forwarding.kind), col(Partner.kind))
        .join(Partner, col(Partner.id) == col(Forwarding.partner_id))
        .where(
            col(Forwarding.target_id) == forwarding.target_id,
            col(Forwarding.kind).in_([ForwardingKind.report, ForwardingKind.notice]),
            col(Forwarding.state).not_in([ForwardingState.retracted, ForwardingState.superseded]),
        )
    ).all()
    if any(kind is PartnerKind.law_enforcement for _, kind in passed_on):
        return PeerStatus("LEA", target.status_changed_at, reference)
    if any(kind is ForwardingKind.notice for kind, _ in passed_on):
        return PeerStatus("ISP", target.status_changed_at, reference)
    return PeerStatus("received", target.status_changed_at, reference)


def tell_sources(session: Session, target_id: int, *, now: dt.datetime) -> list[int]:
    """Put the target's current status in the outbox of every peer hotline that sent it
    to us (sent after the commit). Returns the ``status`` forwardings queued now; a peer
    whose previous status delivery has not been attempted yet gets no second one."""
    queued = []
    for partner, _reference in sources(session, target_id):
        forwarding = session.execute(
            select(Forwarding).where(
                col(Forwarding.target_id) == target_id,
                col(Forwarding.partner_id) == partner.id,
                col(Forwarding.kind) == ForwardingKind.status,
            )
        ).scalar_one_or_none()
        if forwarding is None:
            forwarding = Forwarding(
                target_id=target_id,
                partner_id=int(partner.id or 0),
                kind=ForwardingKind.status,
                rule=RULE,
                created_at=now,
            )
            session.add(forwarding)
            session.flush()
        else:
            waiting = session.execute(
                select(col(Delivery.id)).where(
                    col(Delivery.forwarding_id) == forwarding.id,
                    col(Delivery.state) == DeliveryState.pending,
                    col(Delivery.attempts) == 0,
                )
            ).first()
            if waiting is not None:
                continue
            forwarding.state = ForwardingState.pending
            session.add(forwarding)
        queue_delivery(session, forwarding, partner, now=now)
        if forwarding.id is not None:
            queued.append(forwarding.id)
            log.info("target %s: status queued for partner %s", target_id, partner.id)
    return queued


def tell_confirmed(session: Session, target_id: int, *, now: dt.datetime) -> list[int]:
    """After routing: a confirmed target that a peer sent us is reported back to it (as
    ``LEA``, ``ISP`` or ``received``, by what routing did)."""
    target = session.get(Target, target_id)
    if target is None or target.status not in ROUTABLE:
        return []
    return tell_sources(session, target_id, now=now)
