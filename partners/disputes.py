"""Disputes: a partner (a notice recipient, a hotline, law enforcement) contests a
forwarding it received, and supervisors see and settle them.

A dispute marks the forwarding ``disputed`` with its time and reason; the item page
shows it and supervisors list the open ones (`list_disputes`). A supervisor settles a
dispute either by reversing the target's verdict (``triage.assessment.reverse``, which
retracts the forwarding) or by keeping the verdict (`dismiss`), which puts the
forwarding back where it was and keeps the dispute's time and reason as history.

Invariants: a partner disputes only its own forwardings; the partner's note is stored
with the forwarding, never in a log line or an audit event (it may hold a URL).
Nothing here commits.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlmodel import Session, col

from hotline import audit
from hotline.errors import HotlineError, NotFound
from hotline.models import StaffUser
from partners.inbound import own_forwarding
from partners.models import Forwarding, ForwardingKind, ForwardingState, Partner
from partners.schemas import DisputeCreate, DisputeRead
from reporting.models import Target

DISPUTABLE = frozenset({ForwardingKind.report, ForwardingKind.notice, ForwardingKind.reopened})


class NotDisputable(HotlineError):
    code = "not_disputable"
    status_code = 409
    detail = "This forwarding cannot be disputed (it is a retraction, or it was retracted)."


class NotDisputed(HotlineError):
    code = "forwarding_not_disputed"
    status_code = 409
    detail = "This forwarding is not disputed."


def compose_reason(reason: str, note: str | None) -> str:
    """The stored text: the reason code, then the partner's note on the following lines."""
    return reason if not note else f"{reason}\n{note}"


def split_reason(stored: str | None) -> tuple[str | None, str | None]:
    if not stored:
        return None, None
    reason, _, note = stored.partition("\n")
    return reason, note or None


def dispute(
    session: Session,
    partner: Partner,
    forwarding_id: int,
    data: DisputeCreate,
    *,
    now: dt.datetime,
) -> Forwarding:
    """The partner contests its forwarding: ``disputed``, with the time of the first
    dispute and the latest reason. Audited as the partner."""
    forwarding = own_forwarding(session, partner, forwarding_id)
    if forwarding.kind not in DISPUTABLE or forwarding.state is ForwardingState.retracted:
        raise NotDisputable()
    forwarding.state = ForwardingState.disputed
    if forwarding.disputed_at is None:
        forwarding.disputed_at = now
    forwarding.dispute_reason = compose_reason(data.reason, data.note)
    session.add(forwarding)
    audit.record(
        session,
        action="forwarding_disputed",
        actor=f"partner:{partner.id}",
        object_type="forwarding",
        object_id=forwarding.id,
        details={"target_id": forwarding.target_id, "reason": data.reason},
        now=now,
    )
    return forwarding


def _state_before_dispute(forwarding: Forwarding) -> ForwardingState:
    if forwarding.acknowledged_at is not None or forwarding.partner_status is not None:
        return ForwardingState.acknowledged
    if forwarding.delivered_at is not None:
        return ForwardingState.delivered
    return ForwardingState.pending


def dismiss(
    session: Session, forwarding_id: int, *, user: StaffUser, now: dt.datetime
) -> Forwarding:
    """A supervisor keeps the verdict: the forwarding leaves the dispute list and is back
    to acknowledged (or delivered); ``disputed_at`` and the reason stay. Audited."""
    forwarding = session.get(Forwarding, forwarding_id, with_for_update=True)
    if forwarding is None:
        raise NotFound("No forwarding has this id.")
    if forwarding.state is not ForwardingState.disputed:
        raise NotDisputed()
    forwarding.state = _state_before_dispute(forwarding)
    session.add(forwarding)
    audit.record(
        session,
        action="dispute_dismissed",
        actor=user.email,
        actor_id=user.id,
        object_type="forwarding",
        object_id=forwarding.id,
        details={"target_id": forwarding.target_id, "state": forwarding.state.value},
        now=now,
    )
    return forwarding


def list_disputes(session: Session, *, limit: int = 100, offset: int = 0) -> list[DisputeRead]:
    """Open disputes, oldest first."""
    rows = session.execute(
        select(Forwarding, col(Partner.name), col(Target.status))
        .join(Partner, col(Partner.id) == col(Forwarding.partner_id))
        .join(Target, col(Target.id) == col(Forwarding.target_id))
        .where(col(Forwarding.state) == ForwardingState.disputed)
        .order_by(col(Forwarding.disputed_at), col(Forwarding.id))
        .limit(limit)
        .offset(offset)
    ).all()
    disputes = []
    for forwarding, name, status in rows:
        reason, note = split_reason(forwarding.dispute_reason)
        disputes.append(
            DisputeRead(
                forwarding_id=int(forwarding.id or 0),
                target_id=forwarding.target_id,
                partner_id=forwarding.partner_id,
                partner=name,
                kind=forwarding.kind.value,
                rule=forwarding.rule,
                state=forwarding.state.value,
                reason=reason,
                note=note,
                disputed_at=forwarding.disputed_at,
                target_status=str(status),
            )
        )
    return disputes
