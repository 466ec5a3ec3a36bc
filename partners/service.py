"""What staff see of a target's partners side: its forwardings, with the partner, the
rule, the state, and what the partner answered (ICCAM action types) or disputed."""

from __future__ import annotations

from sqlmodel import Session

from partners.delivery import forwardings_of
from partners.disputes import split_reason
from partners.schemas import ForwardingView


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
