"""Partners' calls that correct the course of a forwarding, signed like every partner
call: law enforcement releases or extends the hold on the notices of a target it
received, and any partner disputes a forwarding, which supervisors then see and settle."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col

from hotline import audit
from hotline.auth import configured_staff_cipher, create_user, issue_token
from hotline.db import session_scope, utcnow
from hotline.models import AuditEvent, Role
from partners import registry, routing
from partners.models import Forwarding, ForwardingKind, ForwardingState
from tests.partners.conftest import confirmed_target
from tests.partners.test_api import Caller, state, tampered

HOLD = routing.RoutingPolicy(home_country="UA", hold=dt.timedelta(hours=1))


def domestic_target(host_asn: int = 64500) -> tuple[int, dict[int, Forwarding]]:
    """A confirmed target hosted at home, routed with an hour's hold on the notice;
    returns its id and its forwardings by partner."""
    with session_scope() as session:
        target = confirmed_target(session, country="UA", asn=host_asn)
        target_id = int(target.id or 0)
        made = routing.route_target(session, target_id, now=utcnow(), policy=HOLD)
        return target_id, {f.partner_id: f for f in made}


def host_partner(asn: int = 64500) -> int:
    data = {
        "name": "host",
        "kind": "hosting_provider",
        "asns": [asn],
        "email": "abuse@host.example",
    }
    with session_scope() as session:
        added = registry.add_partner(
            session, registry.parse_spec(data), now=utcnow(), cipher=registry.partner_cipher()
        )
        return int(added.partner.id or 0)


def police(client: Any) -> Caller:
    return Caller(client, "police", kind="law_enforcement", countries=["UA"], may_submit=False)


@pytest.fixture(autouse=True)
def audit_from(client: Any) -> None:
    """Where this test's audit events start (the log outlives tests)."""
    global AUDIT_FROM
    with session_scope() as session:
        head = audit.head(session)
        AUDIT_FROM = head.id if head else 0


AUDIT_FROM = 0


def events(action: str) -> list[AuditEvent]:
    """This test's audit events of ``action``."""
    with session_scope() as session:
        return list(
            session.execute(
                select(AuditEvent)
                .where(col(AuditEvent.action) == action, col(AuditEvent.id) > AUDIT_FROM)
                .order_by(col(AuditEvent.id))
            ).scalars()
        )


# -- the law-enforcement hold ----------------------------------------------------------------


def test_law_enforcement_releases_the_hold_on_the_notice(client: Any) -> None:
    caller = police(client)
    host = host_partner()
    _, made = domestic_target()
    report, notice = made[caller.id], made[host]
    assert notice.state is ForwardingState.held

    response = caller.post(f"/forwardings/{report.id}/hold", {"action": "release"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["forwarding_id"] == report.id
    assert [n["id"] for n in body["notices"]] == [notice.id]
    released = state(int(notice.id or 0))
    assert released.state is ForwardingState.pending  # on its way to the hosting provider
    assert released.hold_until is not None
    assert released.hold_until <= utcnow()
    (event,) = events("hold_released")
    assert event.actor == f"partner:{caller.id}"
    assert event.object_id == str(notice.id)
    # Released already: nothing is held any more.
    again = caller.post(f"/forwardings/{report.id}/hold", {"action": "release"})
    assert (again.status_code, again.json()["code"]) == (409, "nothing_held")


def test_law_enforcement_extends_the_hold_within_the_limit(
    client: Any, configure: Callable[..., None]
) -> None:
    configure(law_enforcement_hold_max_days=3)
    caller = police(client)
    host = host_partner()
    _, made = domestic_target()
    report, notice = made[caller.id], made[host]
    until = (utcnow() + dt.timedelta(days=2)).replace(microsecond=0)

    response = caller.post(
        f"/forwardings/{report.id}/hold", {"action": "extend", "until": until.isoformat()}
    )

    assert response.status_code == 200, response.text
    extended = state(int(notice.id or 0))
    assert extended.state is ForwardingState.held
    assert extended.hold_until == until
    (event,) = events("hold_extended")
    assert event.actor == f"partner:{caller.id}"
    too_long = (utcnow() + dt.timedelta(days=4)).isoformat()
    refused = caller.post(f"/forwardings/{report.id}/hold", {"action": "extend", "until": too_long})
    assert (refused.status_code, refused.json()["code"]) == (422, "invalid_hold")
    past = caller.post(
        f"/forwardings/{report.id}/hold",
        {"action": "extend", "until": (utcnow() - dt.timedelta(hours=1)).isoformat()},
    )
    assert past.status_code == 422
    no_time = caller.post(f"/forwardings/{report.id}/hold", {"action": "extend"})
    assert (no_time.status_code, no_time.json()["code"]) == (422, "validation_error")
    assert state(int(notice.id or 0)).hold_until == until


def test_only_law_enforcement_holds_and_only_for_its_own_targets(client: Any) -> None:
    caller = police(client)
    host = host_partner()
    _, made = domestic_target()
    hotline = Caller(client, "hotline-pl")
    with session_scope() as session:
        abroad = confirmed_target(session, country="PL")
        (forwarded,) = routing.route_target(session, int(abroad.id or 0), now=utcnow(), policy=HOLD)
    refused = hotline.post(f"/forwardings/{forwarded.id}/hold", {"action": "release"})
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    # Law enforcement cannot name another partner's forwarding, not even the notice.
    other = caller.post(f"/forwardings/{made[host].id}/hold", {"action": "release"})
    assert other.status_code == 404
    assert state(int(made[host].id or 0)).state is ForwardingState.held


def test_a_hold_call_that_is_not_genuine_is_401_and_a_replay_changes_nothing(
    client: Any,
) -> None:
    caller = police(client)
    host = host_partner()
    _, made = domestic_target()
    report, notice = made[caller.id], made[host]
    body = json.dumps({"action": "release"}).encode()
    cases = tampered(caller, body)
    why, _, headers = cases[0]  # tampered() changes "LEA", which this body has not
    cases[0] = (why, body.replace(b"release", b"releasE"), headers)
    for why, sent, headers in cases:
        response = client.post(
            f"/api/v1/partner/forwardings/{report.id}/hold", content=sent, headers=headers
        )
        assert response.status_code == 401, why
    assert state(int(notice.id or 0)).state is ForwardingState.held

    until = (utcnow() + dt.timedelta(hours=5)).replace(microsecond=0)
    extend = json.dumps({"action": "extend", "until": until.isoformat()}).encode()
    headers = caller.headers(extend, msg_id="msg_hold_once")
    first = client.post(
        f"/api/v1/partner/forwardings/{report.id}/hold", content=extend, headers=headers
    )
    assert first.status_code == 200
    # Meanwhile the hold is released; the replayed extension must not hold it again.
    assert caller.post(f"/forwardings/{report.id}/hold", {"action": "release"}).status_code == 200
    again = client.post(
        f"/api/v1/partner/forwardings/{report.id}/hold", content=extend, headers=headers
    )
    assert again.json() == first.json()
    assert again.headers["webhook-replayed"] == "true"
    assert state(int(notice.id or 0)).state is ForwardingState.pending
    assert len(events("hold_extended")) == 1


# -- disputes --------------------------------------------------------------------------------


def supervisor() -> str:
    with session_scope() as session:
        user, _ = create_user(
            session,
            "sue@disputes.example",
            Role.supervisor,
            "correct horse battery",
            now=utcnow(),
            cipher=configured_staff_cipher(),
        )
        return issue_token(session, user, now=utcnow())


def analyst() -> str:
    with session_scope() as session:
        user, _ = create_user(
            session,
            "ana@disputes.example",
            Role.analyst,
            "correct horse battery",
            now=utcnow(),
            cipher=configured_staff_cipher(),
        )
        return issue_token(session, user, now=utcnow())


def test_a_dispute_with_a_bad_signature_is_401_and_changes_nothing(client: Any) -> None:
    caller = Caller(client, "hotline-pl")
    with session_scope() as session:
        target = confirmed_target(session, country="PL")
        (forwarded,) = routing.route_target(session, int(target.id or 0), now=utcnow(), policy=HOLD)
    body = json.dumps({"reason": "not_illegal", "note": "an adult"}).encode()
    for why, sent, headers in tampered(caller, body.replace(b"an adult", b"an adult LEA")):
        response = client.post(
            f"/api/v1/partner/forwardings/{forwarded.id}/dispute", content=sent, headers=headers
        )
        assert response.status_code == 401, why
        assert response.json()["code"] == "unauthorized", why
    found = state(int(forwarded.id or 0))
    assert (found.state, found.disputed_at, found.dispute_reason) == (
        ForwardingState.pending,
        None,
        None,
    )
    assert events("forwarding_disputed") == []


def test_a_partner_disputes_a_forwarding_and_supervisors_see_and_settle_it(
    client: Any,
) -> None:
    caller = Caller(client, "hotline-pl")
    with session_scope() as session:
        target = confirmed_target(session, country="PL")
        target_id = int(target.id or 0)
        (forwarded,) = routing.route_target(session, target_id, now=utcnow(), policy=HOLD)
    note = "An adult model, see https://evidence.example/age"

    response = caller.post(
        f"/forwardings/{forwarded.id}/dispute", {"reason": "not_illegal", "note": note}
    )

    assert response.status_code == 200, response.text
    assert response.json()["state"] == "disputed"
    (event,) = events("forwarding_disputed")
    assert event.actor == f"partner:{caller.id}"
    assert "evidence.example" not in (event.details or "")
    sue = {"authorization": f"Bearer {supervisor()}"}
    listed = client.get("/api/v1/partner-disputes", headers=sue)
    assert listed.status_code == 200
    (dispute,) = listed.json()
    assert (dispute["forwarding_id"], dispute["target_id"], dispute["partner"]) == (
        forwarded.id,
        target_id,
        "hotline-pl",
    )
    assert (dispute["reason"], dispute["note"]) == ("not_illegal", note)
    assert (
        client.get(
            "/api/v1/partner-disputes", headers={"authorization": f"Bearer {analyst()}"}
        ).status_code
        == 403
    )
    # The item's forwardings show it.
    (shown,) = client.get(f"/api/v1/targets/{target_id}/forwardings", headers=sue).json()
    assert (shown["state"], shown["dispute_reason"], shown["dispute_note"]) == (
        "disputed",
        "not_illegal",
        note,
    )
    assert shown["partner"] == "hotline-pl"
    assert shown["rule"] == "abroad.hotline"

    # The supervisor keeps the verdict: off the list, the dispute stays on record.
    kept = client.post(f"/api/v1/partner-disputes/{forwarded.id}/dismiss", headers=sue)
    assert kept.status_code == 200, kept.text
    assert kept.json()["state"] == "pending"
    assert kept.json()["disputed_at"] is not None
    assert client.get("/api/v1/partner-disputes", headers=sue).json() == []
    again = client.post(f"/api/v1/partner-disputes/{forwarded.id}/dismiss", headers=sue)
    assert (again.status_code, again.json()["code"]) == (409, "forwarding_not_disputed")


def test_a_partner_disputes_only_its_own_forwardings_and_not_a_retraction(client: Any) -> None:
    caller = Caller(client, "hotline-pl")
    other = Caller(client, "hotline-de", countries=["DE"])
    with session_scope() as session:
        target = confirmed_target(session, country="PL")
        (forwarded,) = routing.route_target(session, int(target.id or 0), now=utcnow(), policy=HOLD)
        retraction = Forwarding(
            target_id=forwarded.target_id,
            partner_id=caller.id,
            kind=ForwardingKind.retraction,
            rule="reversal",
            retracts_id=forwarded.id,
        )
        session.add(retraction)
        session.flush()
        retraction_id = retraction.id
    body = {"reason": "wrong_recipient"}
    assert other.post(f"/forwardings/{forwarded.id}/dispute", body).status_code == 404
    refused = caller.post(f"/forwardings/{retraction_id}/dispute", body)
    assert (refused.status_code, refused.json()["code"]) == (409, "not_disputable")
    bad = caller.post(f"/forwardings/{forwarded.id}/dispute", {"reason": "because"})
    assert bad.status_code == 422
    assert state(int(forwarded.id or 0)).state is ForwardingState.pending
