"""Law enforcement's hold on notices: released early or extended through the partner API.

A notice to a hosting provider about content at home waits ``HOTLINE_LAW_ENFORCEMENT_HOLD_MINUTES``
after law enforcement was told (``partners.routing``), so an investigation is not spoiled
by the provider taking the content down. The law-enforcement partner that received the
target can end that wait now (``release``) or move its end (``extend``), up to
``HOTLINE_LAW_ENFORCEMENT_HOLD_MAX_DAYS`` after the notice was decided.

Invariants: only a partner of kind ``law_enforcement`` changes a hold, and only on the
notices of a target it received itself; each change is recorded on the notice forwarding
(``hold_until``, ``state``) and audited as the partner. Nothing here commits.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlmodel import Session, col

from hotline import audit
from hotline.errors import HotlineError
from partners.errors import NotAllowed
from partners.inbound import own_forwarding
from partners.models import Forwarding, ForwardingKind, ForwardingState, Partner, PartnerKind
from partners.routing import release_holds
from partners.schemas import HeldNotice, HoldChange, HoldRead


class NothingHeld(HotlineError):
    code = "nothing_held"
    status_code = 409
    detail = "No notice of this target is held: it was sent already or there is none."


class InvalidHold(HotlineError):
    code = "invalid_hold"
    status_code = 422
    detail = "The hold cannot end at that time."


def held_notices(session: Session, target_id: int) -> list[Forwarding]:
    return list(
        session.execute(
            select(Forwarding)
            .where(
                col(Forwarding.target_id) == target_id,
                col(Forwarding.kind) == ForwardingKind.notice,
                col(Forwarding.state) == ForwardingState.held,
            )
            .order_by(col(Forwarding.id))
            .with_for_update()
        ).scalars()
    )


def change_hold(
    session: Session,
    partner: Partner,
    forwarding_id: int,
    data: HoldChange,
    *,
    now: dt.datetime,
    max_hold: dt.timedelta,
) -> HoldRead:
    """Release or extend the hold on the held notices of the target of the caller's
    forwarding ``forwarding_id``. A release hands them on at once (as the sweep would)."""
    if partner.kind is not PartnerKind.law_enforcement:
        raise NotAllowed("Only law enforcement can change the hold on notices.")
    own = own_forwarding(session, partner, forwarding_id)
    notices = held_notices(session, own.target_id)
    if not notices:
        raise NothingHeld()
    if data.action == "extend":
        until = data.until
        if until is None or until <= now:
            raise InvalidHold("The hold must end in the future.")
        for notice in notices:
            limit = notice.created_at + max_hold
            if until > limit:
                raise InvalidHold(
                    f"The hold can last until {limit.isoformat()} at most "
                    f"({max_hold.days} days after the notice was decided)."
                )
    for notice in notices:
        previous = notice.hold_until
        notice.hold_until = now if data.action == "release" else data.until
        session.add(notice)
        audit.record(
            session,
            action=f"hold_{'released' if data.action == 'release' else 'extended'}",
            actor=f"partner:{partner.id}",
            object_type="forwarding",
            object_id=notice.id,
            details={
                "target_id": notice.target_id,
                "by_forwarding": own.id,
                "previous": previous.isoformat() if previous else None,
                "until": notice.hold_until.isoformat() if notice.hold_until else None,
            },
            now=now,
        )
    session.flush()
    if data.action == "release":
        release_holds(session, now=now)
    return HoldRead(
        forwarding_id=int(own.id or 0),
        notices=[
            HeldNotice(id=int(n.id or 0), state=n.state.value, hold_until=n.hold_until)
            for n in notices
        ],
    )
