"""The partner pages as each role uses them: the registry (add with secrets shown once,
disable, enable, rotate), the dead-letter list with redelivery, partners' disputes, a
target's forwardings, and the reversal button on the item page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from selectolax.lexbor import LexborHTMLParser
from sqlalchemy import select
from sqlmodel import col

from hotline.db import session_scope, utcnow
from hotline.models import Role
from hotline.web import create_app
from partners import registry, routing
from partners.models import (
    Delivery,
    DeliveryState,
    Forwarding,
    ForwardingState,
    PartnerAction,
    SecretPurpose,
)
from reporting.models import Target, TargetStatus
from tests.fixtures.staff import csrf, enrol
from tests.partners.conftest import confirmed_target

HOME = routing.RoutingPolicy(home_country="UA")


@pytest.fixture
def browsers(client: Any) -> Iterator[Any]:
    """Signed-in browsers, one per role: ``browsers(Role.admin)``."""
    opened: list[TestClient] = []

    def open_as(role: Role) -> TestClient:
        browser = TestClient(create_app(), client=("127.0.0.1", 50000))
        browser.__enter__()
        opened.append(browser)
        enrol(browser, f"{role.value}-{len(opened)}@pages.example", role)
        return browser

    yield open_as
    for browser in opened:
        browser.__exit__(None, None, None)


def form_post(browser: Any, page: str, action: str, **fields: str) -> Any:
    """Submit the form of ``page`` that posts to ``action``, as a browser would."""
    tree = LexborHTMLParser(page)
    for form in tree.css("form"):
        if form.attributes.get("action") == action:
            data = {
                node.attributes["name"]: node.attributes.get("value") or ""
                for node in form.css("input")
                if node.attributes.get("name") and node.attributes.get("type") != "checkbox"
            }
            return browser.post(action, data=data | fields, follow_redirects=False)
    raise AssertionError(f"no form posts to {action}")


def secrets_shown(html: str) -> dict[str, str]:
    return dict(re.findall(r'<code data-purpose="([a-z_]+)">([^<]+)</code>', html))


def test_an_admin_adds_a_partner_and_sees_its_secrets_once(browsers: Any) -> None:
    admin = browsers(Role.admin)
    page = admin.get("/staff/partners")
    assert page.status_code == 200
    assert 'href="/staff/partners"' in page.text  # in the navigation

    added = form_post(
        admin,
        page.text,
        "/staff/partners",
        name="Police of Ukraine",
        kind="law_enforcement",
        countries="UA",
        webhook_url="https://police.example.org/hook",
        languages="uk, en",
    )

    assert added.status_code == 201, added.text
    shown = secrets_shown(added.text)
    assert set(shown) == {"outbound_signing", "inbound_signing", "inbound_api_key"}
    assert shown["outbound_signing"].startswith("whsec_")
    with session_scope() as session:
        partner = registry.find_partner(session, "Police of Ukraine")
        assert partner.kind.value == "law_enforcement"
        partner_id = int(partner.id or 0)
        stored = registry.valid_secrets(
            session,
            partner_id,
            SecretPurpose.outbound_signing,
            now=utcnow(),
            cipher=registry.partner_cipher(),
        )
        assert stored == [shown["outbound_signing"]]
        assert (
            registry.partner_for_api_key(session, shown["inbound_api_key"], now=utcnow())
            is not None
        )
    again = admin.get("/staff/partners")
    assert "Police of Ukraine" in again.text
    assert secrets_shown(again.text) == {}
    assert shown["outbound_signing"] not in again.text

    # A name taken already: refused, nothing added.
    twice = form_post(
        admin,
        again.text,
        "/staff/partners",
        name="Police of Ukraine",
        kind="fallback",
        email="x@police.example",
    )
    assert twice.status_code == 409
    assert 'data-code="partner_exists"' in twice.text
    invalid = form_post(admin, again.text, "/staff/partners", name="No country", kind="hotline")
    assert invalid.status_code == 422
    assert 'data-code="invalid_partner"' in invalid.text

    rotated = form_post(
        admin,
        again.text,
        f"/staff/partners/{partner_id}/rotate-secret",
        purpose="outbound_signing",
    )
    assert rotated.status_code == 200
    new = secrets_shown(rotated.text)["outbound_signing"]
    assert new != shown["outbound_signing"]
    with session_scope() as session:
        both = registry.valid_secrets(
            session,
            partner_id,
            SecretPurpose.outbound_signing,
            now=utcnow(),
            cipher=registry.partner_cipher(),
        )
    assert both == [new, shown["outbound_signing"]]  # the old one during the overlap

    disabled = form_post(
        admin, rotated.text, f"/staff/partners/{partner_id}/disable", reason="moved"
    )
    assert disabled.status_code == 200
    row = LexborHTMLParser(disabled.text).css_first(f"#partner-{partner_id}")
    assert row is not None
    assert row.attributes["data-active"] == "no"
    enabled = form_post(admin, disabled.text, f"/staff/partners/{partner_id}/enable")
    row = LexborHTMLParser(enabled.text).css_first(f"#partner-{partner_id}")
    assert row is not None
    assert row.attributes["data-active"] == "yes"


def test_supervisors_see_the_registry_analysts_do_not(browsers: Any) -> None:
    supervisor = browsers(Role.supervisor)
    page = supervisor.get("/staff/partners")
    assert page.status_code == 200
    assert 'action="/staff/partners"' not in page.text  # no add form
    token = csrf(supervisor.get("/staff/queue").text)
    refused = supervisor.post(
        "/staff/partners", data={"csrf_token": token, "name": "x", "kind": "fallback"}
    )
    assert refused.status_code == 403
    analyst = browsers(Role.analyst)
    assert analyst.get("/staff/partners").status_code == 403
    assert 'href="/staff/partners"' not in analyst.get("/staff/queue").text
    # A form without the CSRF token is refused even for an admin.
    admin = browsers(Role.admin)
    forged = admin.post("/staff/partners", data={"name": "x", "kind": "fallback"})
    assert forged.status_code == 403


def test_an_admin_sends_a_dead_delivery_again(browsers: Any) -> None:
    with session_scope() as session:
        added = registry.add_partner(
            session,
            registry.parse_spec(
                {
                    "name": "hotline-pl",
                    "kind": "hotline",
                    "countries": ["PL"],
                    "webhook_url": "https://hotline.example.pl/hook",
                }
            ),
            now=utcnow(),
            cipher=registry.partner_cipher(),
        )
        target = confirmed_target(session, country="PL")
        routing.route_target(session, int(target.id or 0), now=utcnow(), policy=HOME)
        dead = session.execute(select(Delivery)).scalar_one()
        dead.state, dead.attempts, dead.last_error = DeliveryState.dead, 16, "http_500"
        dead_id = int(dead.id or 0)
        assert added.partner.id == dead.partner_id

    supervisor = browsers(Role.supervisor)
    listed = supervisor.get("/staff/partners/deliveries")
    assert listed.status_code == 200
    assert f'id="delivery-{dead_id}"' in listed.text
    assert "/redeliver" not in listed.text  # partners.manage only

    admin = browsers(Role.admin)
    page = admin.get("/staff/partners/deliveries")
    sent = form_post(admin, page.text, f"/staff/partners/deliveries/{dead_id}/redeliver")
    assert sent.status_code == 200
    assert 'id="redelivered"' in sent.text
    assert f'id="delivery-{dead_id}"' not in sent.text
    with session_scope() as session:
        row = session.get(Delivery, dead_id)
        assert row is not None
        assert (row.state, row.attempts) == (DeliveryState.pending, 0)
    twice = admin.post(
        f"/staff/partners/deliveries/{dead_id}/redeliver", data={"csrf_token": csrf(page.text)}
    )
    assert twice.status_code == 409


def routed_target(**forwarding: Any) -> tuple[int, int]:
    """A confirmed target hosted in PL, forwarded to a partner hotline; returns the
    target's and the forwarding's ids."""
    with session_scope() as session:
        registry.add_partner(
            session,
            registry.parse_spec(
                {
                    "name": "hotline-pl",
                    "kind": "hotline",
                    "countries": ["PL"],
                    "webhook_url": "https://hotline.example.pl/hook",
                }
            ),
            now=utcnow(),
            cipher=registry.partner_cipher(),
        )
        target = confirmed_target(session, country="PL")
        target_id = int(target.id or 0)
        (made,) = routing.route_target(session, target_id, now=utcnow(), policy=HOME)
        for name, value in forwarding.items():
            setattr(made, name, value)
        return target_id, int(made.id or 0)


def test_the_item_page_links_to_its_forwardings_and_their_answers(browsers: Any) -> None:
    target_id, forwarding_id = routed_target(
        state=ForwardingState.acknowledged,
        delivered_at=utcnow(),
        partner_status=PartnerAction.content_removed,
        partner_status_at=utcnow(),
    )
    analyst = browsers(Role.analyst)
    item = analyst.get(f"/staff/targets/{target_id}")
    assert f'href="/staff/targets/{target_id}/forwardings"' in item.text
    page = analyst.get(f"/staff/targets/{target_id}/forwardings")
    assert page.status_code == 200
    row = LexborHTMLParser(page.text).css_first(f"#forwarding-{forwarding_id}")
    assert row is not None
    text = row.text()
    assert "hotline-pl" in text
    assert "abroad.hotline" in text
    assert row.attributes["data-state"] == "acknowledged"
    assert "content removed" in text
    auditor = browsers(Role.auditor)
    assert auditor.get(f"/staff/targets/{target_id}/forwardings").status_code == 403


def test_supervisors_settle_disputes_on_their_page(browsers: Any) -> None:
    target_id, forwarding_id = routed_target(
        state=ForwardingState.disputed, disputed_at=utcnow(), dispute_reason="not_illegal\nadult"
    )
    supervisor = browsers(Role.supervisor)
    page = supervisor.get("/staff/disputes")
    assert page.status_code == 200
    row = LexborHTMLParser(page.text).css_first(f"#dispute-{forwarding_id}")
    assert row is not None
    assert "adult" in row.text()
    assert f'href="/staff/targets/{target_id}"' in row.html
    kept = form_post(supervisor, page.text, f"/staff/disputes/{forwarding_id}/dismiss")
    assert kept.status_code == 303
    assert 'id="no-disputes"' in supervisor.get("/staff/disputes").text
    analyst = browsers(Role.analyst)
    assert analyst.get("/staff/disputes").status_code == 403


def test_a_supervisor_reverses_a_verdict_from_the_item_page(browsers: Any) -> None:
    target_id, _ = routed_target()
    analyst = browsers(Role.analyst)
    assert 'id="reversal-form"' not in analyst.get(f"/staff/targets/{target_id}").text
    supervisor = browsers(Role.supervisor)
    page = supervisor.get(f"/staff/targets/{target_id}")
    assert 'id="reversal-form"' in page.text
    empty = form_post(supervisor, page.text, f"/staff/targets/{target_id}/reversal", note="")
    assert empty.status_code == 422

    done = form_post(
        supervisor, page.text, f"/staff/targets/{target_id}/reversal", note="a drawing"
    )

    assert (done.status_code, done.headers["location"]) == (303, f"/staff/targets/{target_id}")
    with session_scope() as session:
        target = session.get(Target, target_id)
        assert target is not None
        assert (target.status, target.status_reason) == (TargetStatus.not_illegal, "reversed")
        states = session.execute(
            select(col(Forwarding.state)).where(col(Forwarding.target_id) == target_id)
        ).scalars()
        assert list(states) == [ForwardingState.pending]  # retracted by the task, next
    after = supervisor.get(f"/staff/targets/{target_id}")
    assert 'id="reversal-form"' not in after.text
