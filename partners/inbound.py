"""The partner API's side of things: who is calling, whether the call is genuine and new,
and what it changes (reports submitted, forwardings acknowledged, status reported).

Invariants:

- A call is accepted only with a valid API key of an active partner *and* a Standard
  Webhooks signature over the exact body by one of the partner's valid inbound signing
  secrets, with a timestamp within five minutes (the ``standardwebhooks`` library's
  tolerance). Anything else is `PartnerUnauthorized` (401), with one detail for every
  cause, so a caller learns nothing about which part failed.
- Replay protection: the answer to each ``webhook-id`` is stored per partner
  (``InboundMessage``) in the unit of work that made the change; the same id again gets
  the stored answer and changes nothing.
- A partner sees and changes only its own forwardings; a reported URL never appears
  in a log line or an audit event.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.fernet import MultiFernet
from sqlalchemy import delete, select
from sqlmodel import Session, col
from standardwebhooks import Webhook, WebhookVerificationError

from hotline import audit
from hotline.errors import HotlineError
from hotline.settings import Settings
from partners import peers, registry
from partners.errors import ForwardingNotFound, NotAllowed, PartnerUnauthorized
from partners.models import (
    Forwarding,
    ForwardingState,
    InboundMessage,
    Partner,
    PartnerAction,
    PartnerReport,
    SecretPurpose,
)
from partners.schemas import (
    ForwardingRead,
    InboundReport,
    PeerDocument,
    PeerResult,
    ReportResult,
    StatusReport,
)
from reporting.models import Report, ReportSource, Target, TargetStatus
from reporting.schemas import ReportCreate
from reporting.service import submit_report

log = logging.getLogger("hotline.partners.inbound")
GONE = frozenset({PartnerAction.content_removed, PartnerAction.content_unavailable})


def authenticate(
    session: Session,
    *,
    api_key: str | None,
    body: bytes,
    headers: Mapping[str, str],
    now: dt.datetime,
    cipher: MultiFernet,
) -> tuple[Partner, str]:
    """The calling partner and the call's ``webhook-id``; `PartnerUnauthorized` otherwise."""
    if not api_key:
        raise PartnerUnauthorized()
    partner = registry.partner_for_api_key(session, api_key, now=now)
    if partner is None or partner.id is None:
        raise PartnerUnauthorized()
    wanted = {
        k: headers[k]
        for k in ("webhook-id", "webhook-timestamp", "webhook-signature")
        if k in headers
    }
    secrets = registry.valid_secrets(
        session, partner.id, SecretPurpose.inbound_signing, now=now, cipher=cipher
    )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PartnerUnauthorized() from None
    for secret in secrets:
        try:
            Webhook(secret).verify(text, wanted, json_parse=False)
        except (WebhookVerificationError, ValueError):
            continue
        return partner, wanted["webhook-id"][:255]
    log.warning("partner %s: a call with an invalid signature was refused", partner.id)
    raise PartnerUnauthorized()


def replayed(session: Session, partner: Partner, webhook_id: str) -> InboundMessage | None:
    return session.execute(
        select(InboundMessage).where(
            col(InboundMessage.partner_id) == partner.id,
            col(InboundMessage.webhook_id) == webhook_id,
        )
    ).scalar_one_or_none()


def remember(
    session: Session,
    partner: Partner,
    webhook_id: str,
    *,
    endpoint: str,
    status_code: int,
    result: Any,
    now: dt.datetime,
) -> None:
    """Store the answer to this call, for a replay of the same id."""
    if partner.id is None:  # pragma: no cover - loaded from the database
        return
    session.add(
        InboundMessage(
            partner_id=partner.id,
            webhook_id=webhook_id,
            endpoint=endpoint,
            received_at=now,
            status_code=status_code,
            result=json.dumps(result, default=str),
        )
    )
    session.flush()


def purge_answers(session: Session, *, now: dt.datetime, kept: dt.timedelta) -> int:
    """Erase the stored answers older than ``kept``; returns how many went. A retry of
    such a call would be taken as new, so ``kept`` outlasts any partner's retries."""
    done = session.execute(
        delete(InboundMessage).where(col(InboundMessage.received_at) < now - kept)
    )
    return int(done.rowcount)  # type: ignore[attr-defined]


def _actor(partner: Partner) -> str:
    return f"partner:{partner.id}"


def submit_reports(
    session: Session,
    partner: Partner,
    items: Sequence[InboundReport],
    *,
    settings: Settings,
    now: dt.datetime,
) -> list[ReportResult]:
    """Each URL is taken like a public report with the partner as its source; a URL that
    is refused does not stop the others."""
    if not partner.may_submit or partner.id is None:
        raise NotAllowed("This partner may not submit reports.")
    results = []
    for item in items:
        try:
            with session.begin_nested():
                _, report = submit_report(
                    session,
                    ReportCreate(url=item.url, category=item.category),
                    source=ReportSource.partner,
                    now=now,
                    max_url_length=settings.max_url_length,
                    allow_networks=settings.fetch_allow_networks,
                )
                if report.id is None:  # pragma: no cover - submit_report flushes
                    raise HotlineError()
                session.add(
                    PartnerReport(
                        partner_id=partner.id,
                        report_id=report.id,
                        external_ref=item.reference,
                        created_at=now,
                    )
                )
        except HotlineError as exc:
            results.append(ReportResult(reference=item.reference, accepted=False, code=exc.code))
            continue
        results.append(
            ReportResult(
                reference=item.reference,
                accepted=True,
                report_id=report.id,
                target_id=report.target_id,
            )
        )
    audit.record(
        session,
        action="partner_reports",
        actor=_actor(partner),
        object_type="partner",
        object_id=partner.id,
        details={
            "accepted": sum(r.accepted for r in results),
            "refused": sum(not r.accepted for r in results),
        },
        now=now,
    )
    return results


def own_forwarding(session: Session, partner: Partner, forwarding_id: int) -> Forwarding:
    forwarding = session.get(Forwarding, forwarding_id, with_for_update=True)
    if forwarding is None or forwarding.partner_id != partner.id:
        raise ForwardingNotFound()
    return forwarding


def acknowledge(
    session: Session, partner: Partner, forwarding_id: int, *, now: dt.datetime
) -> Forwarding:
    """The partner confirms it received the forwarding (it may also have been delivered
    by e-mail or not yet recorded as delivered)."""
    forwarding = own_forwarding(session, partner, forwarding_id)
    if forwarding.acknowledged_at is None:
        forwarding.acknowledged_at = now
    if forwarding.state in (
        ForwardingState.pending,
        ForwardingState.delivered,
        ForwardingState.failed,
    ):
        forwarding.state = ForwardingState.acknowledged
    session.add(forwarding)
    audit.record(
        session,
        action="forwarding_acknowledged",
        actor=_actor(partner),
        object_type="forwarding",
        object_id=forwarding.id,
        now=now,
    )
    return forwarding


def report_status(
    session: Session,
    partner: Partner,
    forwarding_id: int,
    data: StatusReport,
    *,
    now: dt.datetime,
) -> Forwarding:
    """Record what the partner did or found, in ICCAM's action types. Content removed or
    unavailable sets the target's ``removed_at`` (the earliest time anyone saw it gone)."""
    forwarding = own_forwarding(session, partner, forwarding_id)
    at = min(data.at or now, now)
    if data.status == "received":
        return acknowledge(session, partner, forwarding_id, now=now)
    action = PartnerAction(data.status)
    forwarding.partner_status = action
    forwarding.partner_status_at = at
    forwarding.partner_note = data.note
    if forwarding.acknowledged_at is None:
        forwarding.acknowledged_at = now
    if forwarding.state in (ForwardingState.pending, ForwardingState.delivered):
        forwarding.state = ForwardingState.acknowledged
    session.add(forwarding)
    if action in GONE:
        target = session.get(Target, forwarding.target_id, with_for_update=True)
        if target is not None:
            if target.removed_at is None or at < target.removed_at:
                target.removed_at = at
            if target.status in (TargetStatus.confirmed, TargetStatus.forwarded):
                target.status = TargetStatus.removed
                target.status_changed_at = now
            session.add(target)
            session.flush()
            # A target a peer hotline sent us: it hears of the removal in turn.
            peers.tell_sources(session, forwarding.target_id, now=now)
    audit.record(
        session,
        action="forwarding_status",
        actor=_actor(partner),
        object_type="forwarding",
        object_id=forwarding.id,
        details={"status": action.value, "at": at.isoformat()},
        now=now,
    )
    return forwarding


# A peer hotline's deliveries, taken at our webhook --------------------------------------------


def receive(
    session: Session,
    partner: Partner,
    document: PeerDocument,
    *,
    settings: Settings,
    now: dt.datetime,
) -> PeerResult:
    """A document a peer hotline delivered to our webhook (docs/forwarding.md):

    - ``forwarding.report``: its URL is taken like a public report with the peer as its
      source and the peer's forwarding id as reference (once: the same forwarding again,
      under a new ``webhook-id``, gets the first result), then processed like any report;
    - ``forwarding.status``: what the peer did with a forwarding of ours, as through
      ``/forwardings/{reference}/status``;
    - anything else (a retraction, a re-opened target): audited for staff to act on.
    """
    kind = document.type
    if kind == "forwarding.report" and document.target is not None:
        reference = str(document.forwarding.id)
        earlier = session.execute(
            select(PartnerReport, col(Report.target_id))
            .join(Report, col(Report.id) == col(PartnerReport.report_id))
            .where(
                col(PartnerReport.partner_id) == partner.id,
                col(PartnerReport.external_ref) == reference,
            )
        ).first()
        if earlier is not None:
            row, target_id = earlier
            result = ReportResult(
                reference=reference, accepted=True, report_id=row.report_id, target_id=target_id
            )
        else:
            item = InboundReport(url=document.target.url, reference=reference)
            (result,) = submit_reports(session, partner, [item], settings=settings, now=now)
        return PeerResult(type=kind, handled="report", report=result)
    if kind == "forwarding.status" and document.status is not None:
        reference = document.status.reference
        if not reference.isdigit():
            raise ForwardingNotFound()
        status = StatusReport(
            status=document.status.status, at=document.status.at, note=document.status.note
        )
        forwarding = report_status(session, partner, int(reference), status, now=now)
        return PeerResult(
            type=kind,
            handled="status",
            forwarding=ForwardingRead(
                id=int(forwarding.id or 0),
                state=forwarding.state.value,
                acknowledged_at=forwarding.acknowledged_at,
                partner_status=forwarding.partner_status.value
                if forwarding.partner_status
                else None,
                partner_status_at=forwarding.partner_status_at,
            ),
        )
    audit.record(
        session,
        action="peer_document_noted",
        actor=_actor(partner),
        object_type="partner",
        object_id=partner.id,
        details={
            "type": kind[:64],
            "forwarding_id": document.forwarding.id,
            "retracts": document.forwarding.retracts,
        },
        now=now,
    )
    return PeerResult(type=kind, handled="noted")
