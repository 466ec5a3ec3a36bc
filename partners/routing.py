"""Who must hear of a confirmed target: one ``Forwarding`` per decision, naming its rule.

Rules (docs/partners.md):

- ``home.law_enforcement``: hosted in the home country -> national law enforcement.
- ``home.hosting_provider``: hosted at home -> a notice to the hosting provider's abuse
  contact (matched by registered domain, else by ASN), held for the law-enforcement hold.
- ``abroad.hotline``: hosted abroad -> the partner hotline(s) of that country.
- ``abroad.law_enforcement``: hosted abroad, and policy says tell the police too.
- ``abroad.fallback``: hosted abroad where no partner hotline serves -> the fallback.
- ``home.fallback``: hosted at home but no law-enforcement partner is registered.
- ``unknown.fallback``: the hosting country is unknown -> the fallback.

Invariants: routing is idempotent (one forwarding per target, partner and kind; running
it again creates nothing). Deliveries are an outbox: the ``Delivery`` rows are added in
the same unit of work as their forwardings and the ``partners.deliver`` messages are
buffered with `hotline.queue.enqueue`, so they are sent only after the commit; the
sweep re-sends what a lost message left behind. Nothing here commits.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Select, case, exists, select
from sqlmodel import Session, col

from hotline import audit
from hotline.models import AuditEvent
from hotline.queue import enqueue
from hotline.settings import Settings
from partners.models import (
    Delivery,
    DeliveryState,
    Forwarding,
    ForwardingKind,
    ForwardingState,
    Notice,
    NoticeItem,
    NoticeState,
    Partner,
    PartnerAsn,
    PartnerCountry,
    PartnerDomain,
    PartnerKind,
)
from reporting.models import Target, TargetStatus

DELIVER_TASK = "partners.deliver"
RECEIVED_STATES = frozenset(
    {ForwardingState.delivered, ForwardingState.acknowledged, ForwardingState.disputed}
)
# Forwardings that no longer count for routing: made again if the rules call for them.
_SET_ASIDE = frozenset({ForwardingState.superseded})
ROUTABLE = frozenset({TargetStatus.confirmed, TargetStatus.forwarded})
log = logging.getLogger("hotline.partners.routing")


@dataclass(frozen=True)
class RoutingPolicy:
    home_country: str = "UA"
    hold: dt.timedelta = dt.timedelta(0)
    law_enforcement_abroad: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> RoutingPolicy:
        return cls(
            home_country=settings.home_country,
            hold=dt.timedelta(minutes=settings.law_enforcement_hold_minutes),
            law_enforcement_abroad=settings.forward_abroad_to_law_enforcement,
        )


@dataclass(frozen=True)
class Decision:
    partner: Partner
    kind: ForwardingKind
    rule: str


def new_webhook_id() -> str:
    """A Standard Webhooks message id: unique, the same on every attempt of a delivery."""
    return "msg_" + secrets.token_urlsafe(18)


def _active(kind: PartnerKind) -> Select[Partner]:
    return (
        select(Partner)
        .where(col(Partner.kind) == kind, col(Partner.active).is_(True))
        .order_by(col(Partner.id))
    )


def _serving(session: Session, kind: PartnerKind, country: str) -> list[Partner]:
    query = _active(kind).join(PartnerCountry, col(PartnerCountry.partner_id) == col(Partner.id))
    return list(session.execute(query.where(col(PartnerCountry.country) == country)).scalars())


def _fallbacks(session: Session) -> list[Partner]:
    return list(session.execute(_active(PartnerKind.fallback)).scalars())


def hosting_contact(session: Session, target: Target) -> Partner | None:
    """The abuse contact answering for the target: by registered domain (a platform)
    first, else by the ASN its address belongs to."""
    by_domain = _active(PartnerKind.hosting_provider).join(
        PartnerDomain, col(PartnerDomain.partner_id) == col(Partner.id)
    )
    found = (
        session.execute(
            by_domain.where(col(PartnerDomain.registered_domain) == target.registered_domain)
        )
        .scalars()
        .first()
    )
    if found is None and target.hosting_asn is not None:
        by_asn = _active(PartnerKind.hosting_provider).join(
            PartnerAsn, col(PartnerAsn.partner_id) == col(Partner.id)
        )
        found = (
            session.execute(by_asn.where(col(PartnerAsn.asn) == target.hosting_asn))
            .scalars()
            .first()
        )
    return found


def decide(session: Session, target: Target, policy: RoutingPolicy) -> list[Decision]:
    """The forwardings the rules call for, in the order they are made (no side effects)."""
    country = target.hosting_country
    home = policy.home_country
    decisions: list[Decision] = []

    def add(partners: Sequence[Partner], kind: ForwardingKind, rule: str) -> None:
        decisions.extend(Decision(p, kind, rule) for p in partners)

    if country is None:
        add(_fallbacks(session), ForwardingKind.report, "unknown.fallback")
    elif country == home:
        police = _serving(session, PartnerKind.law_enforcement, home)
        if police:
            add(police, ForwardingKind.report, "home.law_enforcement")
        else:
            add(_fallbacks(session), ForwardingKind.report, "home.fallback")
        contact = hosting_contact(session, target)
        if contact is not None:
            add([contact], ForwardingKind.notice, "home.hosting_provider")
    else:
        hotlines = _serving(session, PartnerKind.hotline, country)
        if hotlines:
            add(hotlines, ForwardingKind.report, "abroad.hotline")
        else:
            add(_fallbacks(session), ForwardingKind.report, "abroad.fallback")
        if policy.law_enforcement_abroad:
            police = _serving(session, PartnerKind.law_enforcement, home)
            add(police, ForwardingKind.report, "abroad.law_enforcement")
    return decisions


def sweep_unrouted(
    session: Session,
    *,
    now: dt.datetime,
    overdue: dt.timedelta,
    policy: RoutingPolicy,
    limit: int = 50,
) -> list[int]:
    """Route the targets confirmed more than ``overdue`` ago that have no forwarding: the
    wake-up of ``partners.route_target`` was lost (the broker down at the commit), or no
    partner served them then. At most ``limit``: first those routing never tried (lost
    wake-ups, newest first), then those no partner served, the longest untried first,
    so that however many wait for a partner, each is tried again in turn and none holds
    up a lost wake-up. Returns those routed now."""
    has_forwarding = exists().where(col(Forwarding.target_id) == col(Target.id))
    waiting = session.execute(
        select(col(Target.id))
        .where(
            col(Target.status) == TargetStatus.confirmed,
            col(Target.status_changed_at) <= now - overdue,
            ~has_forwarding,
        )
        .order_by(
            # Tried since it was (last) confirmed: after those not tried since.
            case((col(Target.unrouted_at) >= col(Target.status_changed_at), 1), else_=0),
            col(Target.unrouted_at).asc().nulls_first(),
            col(Target.status_changed_at).desc(),
            col(Target.id).desc(),
        )
        .limit(limit)
    ).scalars()
    routed = []
    for target_id in list(waiting):
        if route_target(session, int(target_id), now=now, policy=policy):
            routed.append(int(target_id))
    if routed:
        log.info("sweep: %d confirmed target(s) routed late", len(routed))
    return routed


def sweep_corrected(
    session: Session,
    *,
    now: dt.datetime,
    overdue: dt.timedelta,
    policy: RoutingPolicy,
    within: dt.timedelta = dt.timedelta(days=1),
) -> list[int]:
    """Route again the targets whose hosting staff corrected between ``within`` and
    ``overdue`` ago (``reroute_target`` is idempotent: one rerouted already is left as
    it is), in case the wake-up of ``partners.reroute_target`` was lost. Returns those
    where a forwarding was taken back or made now."""
    corrected = session.execute(
        select(col(AuditEvent.object_id))
        .where(
            col(AuditEvent.action) == audit.Action.hosting_corrected,
            col(AuditEvent.object_type) == "target",
            col(AuditEvent.at) >= now - within,
            col(AuditEvent.at) <= now - overdue,
        )
        .distinct()
    ).scalars()
    changed = []
    for object_id in sorted({int(i) for i in corrected if i and i.isdigit()}):
        done = reroute_target(session, object_id, now=now, policy=policy)
        if done.superseded or done.made:
            changed.append(object_id)
    if changed:
        log.info("sweep: %d corrected target(s) routed again late", len(changed))
    return changed


def _reached(forwarding: Forwarding) -> bool:
    """Whether the forwarding's own row says its partner had it (delivered or answered)."""
    return (
        forwarding.state in RECEIVED_STATES
        or forwarding.delivered_at is not None
        or forwarding.acknowledged_at is not None
        or forwarding.partner_status is not None
    )


def _unsent(forwarding: Forwarding) -> bool:
    """Superseded before it reached its partner."""
    return forwarding.state in _SET_ASIDE and not _reached(forwarding)


def route_target(
    session: Session, target_id: int, *, now: dt.datetime, policy: RoutingPolicy
) -> list[Forwarding]:
    """Make the forwardings a confirmed target calls for and queue their deliveries.

    Returns the forwardings made now (none when run again). The target becomes
    ``forwarded`` once it has any forwarding.
    """
    target = session.get(Target, target_id, with_for_update=True)
    if target is None or target.status not in ROUTABLE:
        return []
    rows = list(
        session.execute(select(Forwarding).where(col(Forwarding.target_id) == target_id)).scalars()
    )
    # Taken back before its partner had it (the hosting moved or was corrected): made
    # good again if called for. One the partner had stays as it is, answers and all.
    set_aside = {(f.partner_id, f.kind): f for f in rows if _unsent(f)}
    existing = {(f.partner_id, f.kind) for f in rows if not _unsent(f)}
    made = []
    for decision in decide(session, target, policy):
        partner_id = decision.partner.id
        key = (partner_id, decision.kind)
        if partner_id is None or key in existing:
            continue
        existing.add(key)
        held = decision.kind is ForwardingKind.notice and policy.hold > dt.timedelta(0)
        forwarding = set_aside.get(key) or Forwarding(
            target_id=target_id, partner_id=partner_id, kind=decision.kind, rule=decision.rule
        )
        forwarding.rule = decision.rule
        forwarding.state = ForwardingState.held if held else ForwardingState.pending
        forwarding.hold_until = now + policy.hold if held else None
        if forwarding.id is None:  # (one made good again keeps when it was first made)
            forwarding.created_at = now
        session.add(forwarding)
        session.flush()
        if not held:
            queue_delivery(session, forwarding, decision.partner, now=now)
        made.append(forwarding)
    if existing and target.status is not TargetStatus.forwarded:
        target.status = TargetStatus.forwarded
        target.status_changed_at = now
        session.add(target)
    if not existing:
        # Said once per confirmation (and per hosting correction, which clears the
        # mark); the sweep tries again, a partner may be added, without repeating it.
        said = target.unrouted_at is not None and target.unrouted_at >= target.status_changed_at
        log.log(
            logging.DEBUG if said else logging.WARNING,
            "target %s: no partner to forward to (hosting %s)",
            target_id,
            target.hosting_country,
        )
        target.unrouted_at = now
        session.add(target)
    return made


def may_have_received(session: Session, forwarding: Forwarding) -> bool:
    """Whether the partner may have this forwarding: it was delivered, answered, or at
    least one attempt went out (an attempt that timed out may have arrived), or it was in
    a notice being sent or sent."""
    if _reached(forwarding):
        return True
    attempted = session.execute(
        select(
            exists().where(col(Delivery.forwarding_id) == forwarding.id, col(Delivery.attempts) > 0)
        )
    ).scalar()
    if attempted:
        return True
    noticed = session.execute(
        select(
            exists()
            .where(col(NoticeItem.forwarding_id) == forwarding.id)
            .where(col(Notice.id) == col(NoticeItem.notice_id))
            .where(col(Notice.state).in_([NoticeState.sending, NoticeState.sent]))
        )
    ).scalar()
    return bool(noticed)


def cancel_deliveries(session: Session, forwarding_id: int, *, why: str) -> None:
    """Cancel the forwarding's deliveries not yet delivered: no retry, sweep or
    redelivery sends them."""
    rows = session.execute(
        select(Delivery)
        .where(
            col(Delivery.forwarding_id) == forwarding_id,
            col(Delivery.state).in_(
                [DeliveryState.pending, DeliveryState.failed, DeliveryState.dead]
            ),
        )
        .with_for_update()
    ).scalars()
    for delivery in rows:
        delivery.state = DeliveryState.cancelled
        delivery.last_error = why
        session.add(delivery)


@dataclass(frozen=True)
class Rerouted:
    superseded: list[int]  # forwardings taken back before they reached their partner
    kept: list[int]  # forwardings the rules no longer call for, but already received
    made: list[Forwarding]


def supersede(
    session: Session,
    forwarding: Forwarding,
    target: Target,
    *,
    reason: str,
    now: dt.datetime,
    **extra: object,
) -> None:
    """Take back a forwarding its partner is not to get after all (``hosting_moved``:
    the notice sweep found the site elsewhere; ``hosting_corrected``: staff corrected
    the country): ``superseded``, its deliveries cancelled, audited with ids,
    countries and ``extra``, never the URL."""
    forwarding.state = ForwardingState.superseded
    session.add(forwarding)
    if forwarding.id is not None:
        cancel_deliveries(session, forwarding.id, why=reason)
    audit.record(
        session,
        action="forwarding_superseded",
        actor="system",
        object_type="forwarding",
        object_id=forwarding.id,
        details={
            "target_id": target.id,
            "partner_id": forwarding.partner_id,
            "reason": reason,
            **extra,
            "country_now": target.hosting_country,
        },
        now=now,
    )


def reroute_target(
    session: Session,
    target_id: int,
    *,
    now: dt.datetime,
    policy: RoutingPolicy,
    reason: str = "hosting_corrected",
) -> Rerouted:
    """Route a confirmed target again after its hosting changed (an analyst corrected
    the country): forwardings the rules no longer call for are superseded if their
    partner cannot have them yet (pending or held, no attempt made, in no notice sent;
    their deliveries cancelled), kept otherwise; then the forwardings the rules call for
    now are made. Audited as ``forwarding_superseded`` (ids and countries, never the
    URL). Idempotent.

    Locks in the notice sweep's order (notices carrying the target, then the target,
    its forwardings, their deliveries), and a forwarding's deliveries before asking
    whether an attempt went out: a delivery claimed meanwhile is seen, not cancelled
    after its POST."""
    session.execute(
        select(col(Notice.id))
        .join(NoticeItem, col(NoticeItem.notice_id) == col(Notice.id))
        .join(Forwarding, col(Forwarding.id) == col(NoticeItem.forwarding_id))
        .where(col(Forwarding.target_id) == target_id)
        .order_by(col(Notice.id))
        .with_for_update(of=Notice)
    ).all()
    target = session.get(Target, target_id, with_for_update=True)
    if target is None or target.status not in ROUTABLE:
        return Rerouted([], [], [])
    wanted = {(d.partner.id, d.kind) for d in decide(session, target, policy)}
    superseded: list[int] = []
    kept: list[int] = []
    forwardings = session.execute(
        select(Forwarding)
        .where(
            col(Forwarding.target_id) == target_id,
            col(Forwarding.kind).in_([ForwardingKind.report, ForwardingKind.notice]),
            col(Forwarding.state).not_in([*_SET_ASIDE, ForwardingState.retracted]),
        )
        .order_by(col(Forwarding.id))
        .with_for_update()
    ).scalars()
    for forwarding in forwardings:
        if (forwarding.partner_id, forwarding.kind) in wanted or forwarding.id is None:
            continue
        session.execute(
            select(col(Delivery.id))
            .where(col(Delivery.forwarding_id) == forwarding.id)
            .order_by(col(Delivery.id))
            .with_for_update()
        ).all()
        if forwarding.state not in (
            ForwardingState.pending,
            ForwardingState.held,
        ) or may_have_received(session, forwarding):
            kept.append(forwarding.id)
            continue
        supersede(session, forwarding, target, reason=reason, now=now)
        superseded.append(forwarding.id)
    session.flush()
    made = route_target(session, target_id, now=now, policy=policy)
    if superseded or made:
        log.info(
            "target %s routed again (%s): %d superseded, %d kept, %d made",
            target_id,
            reason,
            len(superseded),
            len(kept),
            len(made),
        )
    return Rerouted(superseded, kept, made)


def queue_delivery(
    session: Session, forwarding: Forwarding, partner: Partner, *, now: dt.datetime
) -> Delivery | None:
    """Put the forwarding in the outbox of the partner's webhook (sent after the commit).

    A partner reached by e-mail only gets no delivery here, and neither does a notice:
    notices are grouped per abuse contact and sent by ``partners.notices`` (by e-mail or
    webhook), which picks up the ``pending`` notice forwardings.
    """
    if forwarding.kind is ForwardingKind.notice:
        return None
    if not partner.webhook_url or partner.id is None or forwarding.id is None:
        return None
    delivery = Delivery(
        forwarding_id=forwarding.id,
        partner_id=partner.id,
        webhook_id=new_webhook_id(),
        event=f"forwarding.{forwarding.kind.value}",
        state=DeliveryState.pending,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(delivery)
    session.flush()
    enqueue(session, DELIVER_TASK, delivery_id=delivery.id)
    return delivery


def release_holds(session: Session, *, now: dt.datetime) -> list[int]:
    """Make the held notices whose law-enforcement hold has ended ``pending`` (the notice
    sweep groups and sends them); returns their ids."""
    query = (
        select(Forwarding)
        .where(
            col(Forwarding.state) == ForwardingState.held,
            col(Forwarding.hold_until) <= now,
        )
        .order_by(col(Forwarding.id))
        .with_for_update(skip_locked=True)
    )
    released = []
    for forwarding in session.execute(query).scalars():
        partner = session.get(Partner, forwarding.partner_id)
        forwarding.state = ForwardingState.pending
        session.add(forwarding)
        if partner is not None and partner.active:
            queue_delivery(session, forwarding, partner, now=now)
        if forwarding.id is not None:
            released.append(forwarding.id)
    session.flush()
    return released
