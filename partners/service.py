"""What staff see of a target's partners side: its forwardings, with the partner, the
rule, the state, and what the partner answered (ICCAM action types) or disputed; and
what the re-checks learned (removal, the checks) and the notices that named it."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import Session, col

from hotline.errors import NotFound
from partners.delivery import forwardings_of
from partners.disputes import split_reason
from partners.models import Partner, Recheck
from partners.notices import notices_of
from partners.rechecks import removal
from partners.schemas import ForwardingView, NoticeView, RecheckView, RemovalView, TargetWatch
from reporting.models import Target


def target_forwardings(session: Session, target_id: int) -> list[ForwardingView]:
    """The target's forwardings, oldest first (empty for a target never forwarded)."""
    views = []
    for forwarding, partner in forwardings_of(session, target_id):
        reason, note = split_reason(forwarding.dispute_reason)
        views.append(
            ForwardingView(
                id=int(forwarding.id or 0),
                partner_id=forwarding.partner_id,
                partner=partner.name,
                partner_kind=partner.kind.value,
                kind=forwarding.kind.value,
                rule=forwarding.rule,
                state=forwarding.state.value,
                hold_until=forwarding.hold_until,
                created_at=forwarding.created_at,
                delivered_at=forwarding.delivered_at,
                acknowledged_at=forwarding.acknowledged_at,
                partner_status=forwarding.partner_status.value
                if forwarding.partner_status
                else None,
                partner_status_at=forwarding.partner_status_at,
                partner_note=forwarding.partner_note,
                retracts_id=forwarding.retracts_id,
                disputed_at=forwarding.disputed_at,
                dispute_reason=reason,
                dispute_note=note,
            )
        )
    return views


def target_watch(session: Session, target_id: int) -> TargetWatch:
    """The target since its confirmation: removal and time to removal, every re-check
    (newest first) and every notice to a hosting provider that named it."""
    target = session.get(Target, target_id)
    if target is None:
        raise NotFound("No target has this id.")
    checks = session.execute(
        select(Recheck)
        .where(col(Recheck.target_id) == target_id)
        .order_by(col(Recheck.due_at).desc(), col(Recheck.id).desc())
    ).scalars()
    notices = notices_of(session, target_id=target_id)
    partners = select(col(Partner.id), col(Partner.name)).where(
        col(Partner.id).in_({n.partner_id for n in notices})
    )
    names = {int(pid): str(name) for pid, name in session.execute(partners).all()}
    return TargetWatch(
        target_id=target_id,
        status=target.status.value,
        removal=RemovalView.model_validate(removal(session, target).as_json()),
        rechecks=[
            RecheckView(
                id=int(c.id or 0),
                due_at=c.due_at,
                done_at=c.done_at,
                result=c.result.value if c.result else None,
                status_code=c.status_code,
                media_found=c.media_found,
                error=c.error,
            )
            for c in checks
        ],
        notices=[
            NoticeView(
                id=n.id,
                partner_id=n.partner_id,
                partner=names.get(n.partner_id, ""),
                channel=n.channel,
                state=n.state,
                language=n.language,
                repeats_id=n.repeats_id,
                retraction=n.retraction,
                created_at=n.created_at,
                sent_at=n.sent_at,
                last_error=n.last_error,
            )
            for n in notices
        ],
    )
