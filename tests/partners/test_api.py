"""The partner API: API key plus a Standard Webhooks signature, replay protection, bulk
reports, acknowledgements and status that flows into ``removed_at``."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlmodel import col
from standardwebhooks import Webhook

from hotline.db import session_scope, utcnow
from partners import inbound, registry, routing
from partners.models import (
    Forwarding,
    ForwardingState,
    InboundMessage,
    PartnerAction,
    PartnerReport,
    SecretPurpose,
)
from reporting.models import Report, ReportSource, Target, TargetStatus
from tests.partners.conftest import confirmed_target


class Caller:
    """A partner as it calls the API: its key and its signing secret."""

    def __init__(self, client: Any, name: str, **fields: Any) -> None:
        data = {
            "name": name,
            "kind": "hotline",
            "countries": ["PL"],
            "webhook_url": "https://in.example.org/hook",
            "may_submit": True,
            **fields,
        }
        with session_scope() as session:
            added = registry.add_partner(
                session, registry.parse_spec(data), now=utcnow(), cipher=registry.partner_cipher()
            )
            self.id = added.partner.id
        self.key = added.secrets[SecretPurpose.inbound_api_key]
        self.secret = added.secrets[SecretPurpose.inbound_signing]
        self.client = client

    def headers(
        self, body: bytes, *, msg_id: str | None = None, at: dt.datetime | None = None
    ) -> dict[str, str]:
        msg_id = msg_id or "msg_" + secrets.token_hex(8)
        at = at or utcnow()
        return {
            "Authorization": f"Bearer {self.key}",
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": Webhook(self.secret).sign(msg_id, at, body.decode()),
        }

    def post(self, path: str, payload: Any, **options: Any) -> Any:
        body = json.dumps(payload).encode()
        return self.client.post(
            f"/api/v1/partner{path}", content=body, headers=self.headers(body, **options)
        )


def forwarding_for(caller: Caller) -> int:
    """A confirmed target hosted in PL, routed to the caller."""
    with session_scope() as session:
        target = confirmed_target(session, country="PL")
        assert target.id is not None
        (made,) = routing.route_target(
            session, target.id, now=utcnow(), policy=routing.RoutingPolicy(home_country="UA")
        )
        assert made.partner_id == caller.id
        assert made.id is not None
        return made.id


def state(forwarding_id: int) -> Forwarding:
    with session_scope() as session:
        found = session.get(Forwarding, forwarding_id)
        assert found is not None
        return found


def test_a_valid_call_is_accepted(client: Any) -> None:
    caller = Caller(client, "hotline-pl")
    forwarding_id = forwarding_for(caller)
    response = caller.post(f"/forwardings/{forwarding_id}/acknowledge", {})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "acknowledged"
    assert state(forwarding_id).acknowledged_at is not None


def tampered(caller: Caller, body: bytes) -> list[tuple[str, bytes, dict[str, str]]]:
    good = caller.headers(body)
    stale = caller.headers(body, at=utcnow() - dt.timedelta(minutes=6))
    other = registry.new_signing_secret()
    wrong = dict(
        good,
        **{"webhook-signature": Webhook(other).sign(good["webhook-id"], utcnow(), body.decode())},
    )
    return [
        ("a changed byte", body.replace(b"LEA", b"ISP"), good),
        ("a wrong secret", body, wrong),
        ("a stale timestamp", body, stale),
        ("no signature", body, {k: v for k, v in good.items() if k != "webhook-signature"}),
        ("no id", body, {k: v for k, v in good.items() if k != "webhook-id"}),
        ("no timestamp", body, {k: v for k, v in good.items() if k != "webhook-timestamp"}),
        ("no API key", body, {k: v for k, v in good.items() if k != "Authorization"}),
        ("a wrong API key", body, dict(good, Authorization=f"Bearer {registry.new_api_key()}")),
    ]


def test_anything_but_a_genuine_fresh_call_is_401_and_changes_nothing(client: Any) -> None:
    caller = Caller(client, "hotline-pl")
    forwarding_id = forwarding_for(caller)
    body = json.dumps({"status": "LEA"}).encode()
    for why, sent, headers in tampered(caller, body):
        response = client.post(
            f"/api/v1/partner/forwardings/{forwarding_id}/status", content=sent, headers=headers
        )
        assert response.status_code == 401, why
        assert response.json()["code"] == "unauthorized", why
    found = state(forwarding_id)
    assert (found.partner_status, found.acknowledged_at) == (None, None)


def test_a_disabled_partner_is_refused(client: Any) -> None:
    caller = Caller(client, "hotline-pl")
    forwarding_id = forwarding_for(caller)
    with session_scope() as session:
        partner = registry.find_partner(session, "hotline-pl")
        registry.disable_partner(session, partner, reason="admin", now=utcnow())
    assert caller.post(f"/forwardings/{forwarding_id}/acknowledge", {}).status_code == 401


def test_a_replay_gets_the_first_answer_and_changes_nothing(client: Any) -> None:
    caller = Caller(client, "hotline-pl")
    payload = {"reports": [{"url": "https://example.com/a/1", "reference": "pl-1"}]}
    body = json.dumps(payload).encode()
    headers = caller.headers(body, msg_id="msg_once")
    first = client.post("/api/v1/partner/reports", content=body, headers=headers)
    assert first.status_code == 200, first.text
    again = client.post("/api/v1/partner/reports", content=body, headers=headers)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["webhook-replayed"] == "true"
    with session_scope() as session:
        assert session.execute(select(func.count()).select_from(Report)).scalar_one() == 1
    # Another partner may use the same id: ids are per partner.
    other = Caller(client, "hotline-de", countries=["DE"])
    body2 = json.dumps({"reports": [{"url": "https://example.com/b/2"}]}).encode()
    response = client.post(
        "/api/v1/partner/reports", content=body2, headers=other.headers(body2, msg_id="msg_once")
    )
    assert response.status_code == 200
    assert "webhook-replayed" not in response.headers


def test_answers_are_kept_for_the_replay_period_then_erased(client: Any) -> None:
    caller = Caller(client, "hotline-pl")
    sent = {}
    for msg_id in ("msg_old", "msg_new"):
        body = json.dumps({"reports": [{"url": f"https://example.com/{msg_id}"}]}).encode()
        sent[msg_id] = (body, caller.headers(body, msg_id=msg_id))
        response = client.post("/api/v1/partner/reports", content=body, headers=sent[msg_id][1])
        assert response.status_code == 200, response.text
    with session_scope() as session:
        session.execute(
            update(InboundMessage)
            .where(col(InboundMessage.webhook_id) == "msg_old")
            .values(received_at=utcnow() - dt.timedelta(days=31))
        )
    with session_scope() as session:
        kept = dt.timedelta(days=30)
        assert inbound.purge_answers(session, now=utcnow(), kept=kept) == 1
    with session_scope() as session:
        left = session.execute(select(col(InboundMessage.webhook_id))).scalars().all()
    assert left == ["msg_new"]
    body, headers = sent["msg_new"]
    again = client.post("/api/v1/partner/reports", content=body, headers=headers)
    assert again.headers["webhook-replayed"] == "true"


def test_bulk_reports_are_taken_like_public_reports(client: Any) -> None:
    caller = Caller(client, "hotline-pl")
    payload = {
        "reports": [
            {"url": "https://example.com/gallery/1", "reference": "pl-1"},
            {"url": "ftp://example.com/x", "reference": "pl-2"},
            {"url": "https://example.com/gallery/1", "reference": "pl-3", "category": "csam"},
        ]
    }
    response = caller.post("/reports", payload)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["reference"], r["accepted"], r["code"]) for r in results] == [
        ("pl-1", True, None),
        ("pl-2", False, "unsupported_scheme"),
        ("pl-3", True, None),
    ]
    assert results[0]["target_id"] == results[2]["target_id"]  # one target per URL
    with session_scope() as session:
        reports = session.execute(select(Report)).scalars().all()
        assert {r.source for r in reports} == {ReportSource.partner}
        links = session.execute(select(PartnerReport)).scalars().all()
        assert sorted(link.external_ref or "" for link in links) == ["pl-1", "pl-3"]
        assert {link.partner_id for link in links} == {caller.id}
        target = session.get(Target, results[0]["target_id"])
        assert target is not None
        assert target.report_count == 2
        assert target.status is TargetStatus.pending


def test_bulk_reports_have_limits(client: Any) -> None:
    caller = Caller(client, "hotline-pl")
    assert caller.post("/reports", {"reports": []}).status_code == 422
    refused = Caller(client, "police", kind="law_enforcement", countries=["UA"], may_submit=False)
    response = refused.post("/reports", {"reports": [{"url": "https://example.com/x"}]})
    assert response.status_code == 403


def test_content_removed_sets_removed_at(client: Any) -> None:
    caller = Caller(client, "hotline-pl")
    forwarding_id = forwarding_for(caller)
    removed = (utcnow() - dt.timedelta(hours=5)).replace(microsecond=0)
    response = caller.post(
        f"/forwardings/{forwarding_id}/status",
        {"status": "content_removed", "at": removed.isoformat(), "note": "host took it down"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["partner_status"] == "content_removed"
    found = state(forwarding_id)
    assert found.partner_status is PartnerAction.content_removed
    assert found.state is ForwardingState.acknowledged
    with session_scope() as session:
        target = session.get(Target, found.target_id)
        assert target is not None
        assert target.removed_at == removed
        assert target.status is TargetStatus.removed


@pytest.mark.parametrize("status", ["LEA", "ISP", "moved", "not_illegal", "received"])
def test_other_statuses_are_recorded_without_removal(client: Any, status: str) -> None:
    caller = Caller(client, "hotline-pl")
    forwarding_id = forwarding_for(caller)
    assert (
        caller.post(f"/forwardings/{forwarding_id}/status", {"status": status}).status_code == 200
    )
    found = state(forwarding_id)
    assert found.acknowledged_at is not None
    if status != "received":
        assert found.partner_status == PartnerAction(status)
    with session_scope() as session:
        target = session.get(Target, found.target_id)
        assert target is not None
        assert target.removed_at is None


def test_a_partner_sees_only_its_own_forwardings(client: Any) -> None:
    caller = Caller(client, "hotline-pl")
    forwarding_id = forwarding_for(caller)
    other = Caller(client, "hotline-de", countries=["DE"])
    response = other.post(f"/forwardings/{forwarding_id}/status", {"status": "content_removed"})
    assert response.status_code == 404
    assert state(forwarding_id).partner_status is None
    assert caller.post("/forwardings/999999/acknowledge", {}).status_code == 404
