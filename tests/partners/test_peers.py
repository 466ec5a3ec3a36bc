"""Status back to the peer hotline that sent us a target (partners.peers): what the
document says, and that one waiting delivery carries every change."""

from __future__ import annotations

import hashlib
import json

import jsonschema
from sqlalchemy import select
from sqlmodel import Session, col

from hotline.db import utcnow
from partners import delivery, peers, registry
from partners.models import Delivery, Forwarding, ForwardingKind, PartnerReport
from reporting.models import Report, ReportCategory, ReportSource, TargetStatus
from tests.conftest import REPO
from tests.partners.conftest import confirmed_target

SCHEMA = json.loads((REPO / "docs" / "forwarding.schema.json").read_text(encoding="utf-8"))
SENDER = {"name": "Dyzurnet PL", "country": "PL"}


def test_a_peer_hears_what_became_of_its_report_in_a_valid_status_document(
    session: Session,
) -> None:
    now = utcnow()
    target = confirmed_target(session, country="PL")
    assert target.id is not None
    peer = registry.add_partner(
        session,
        registry.parse_spec(
            {
                "name": "Hotline UA",
                "kind": "hotline",
                "countries": ["UA"],
                "webhook_url": "http://127.0.0.1:9/api/v1/partner/webhook",
                "may_submit": True,
            }
        ),
        now=now,
        cipher=registry.partner_cipher(),
    ).partner
    report = Report(
        receipt_hash=hashlib.sha256(b"receipt").hexdigest(),
        target_id=target.id,
        source=ReportSource.partner,
        category=ReportCategory.csam,
    )
    session.add(report)
    session.flush()
    assert report.id is not None
    assert peer.id is not None
    session.add(PartnerReport(partner_id=peer.id, report_id=report.id, external_ref="42"))
    session.flush()

    (status_id,) = peers.tell_confirmed(session, target.id, now=now)
    # A second change before the first delivery was tried adds none: it sends the latest.
    assert peers.tell_sources(session, target.id, now=now) == []
    deliveries = session.execute(
        select(Delivery).where(col(Delivery.forwarding_id) == status_id)
    ).scalars()
    assert [d.event for d in deliveries] == ["forwarding.status"]

    forwarding = session.get(Forwarding, status_id)
    assert forwarding is not None
    assert forwarding.kind is ForwardingKind.status
    document = delivery.build_document(session, forwarding, sender=SENDER)
    jsonschema.validate(document, SCHEMA)
    assert document["status"]["reference"] == "42"
    assert document["status"]["status"] == "received"

    target.status = TargetStatus.not_illegal
    session.add(target)
    session.flush()
    document = delivery.build_document(session, forwarding, sender=SENDER)
    assert document["status"]["status"] == "not_illegal"

    target.status = TargetStatus.removed
    target.removed_at = now
    session.add(target)
    session.flush()
    document = delivery.build_document(session, forwarding, sender=SENDER)
    jsonschema.validate(document, SCHEMA)
    assert document["status"]["status"] == "content_removed"
    assert document["status"]["at"] == now.isoformat().replace("+00:00", "Z")
