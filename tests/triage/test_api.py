"""The staff queue API as an analyst uses it: token, queue, claim, item view; all audited."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlmodel import col

from hotline.auth import configured_staff_cipher, create_user, issue_token
from hotline.db import session_scope, utcnow
from hotline.models import AuditEvent, Role
from reporting import service as intake
from reporting.models import ReportCategory, ReportSource, Target, TargetStatus
from reporting.schemas import ReportCreate


def bearer(role: Role, email: str) -> dict[str, str]:
    with session_scope() as session:
        user, _ = create_user(
            session,
            email,
            role,
            "correct horse battery",
            now=utcnow(),
            cipher=configured_staff_cipher(),
        )
        token = issue_token(session, user, now=utcnow())
    return {"authorization": f"Bearer {token}"}


def queued(url: str, priority: int, description: str = "seen on page 2") -> int:
    with session_scope() as session:
        _, report = intake.submit_report(
            session,
            ReportCreate(url=url, category=ReportCategory.csam, description=description),
            source=ReportSource.api,
            now=utcnow(),
            max_url_length=4096,
        )
        target = session.get(Target, report.target_id)
        assert target is not None
        target.status, target.priority = TargetStatus.queued, priority
        return report.target_id


def test_an_analyst_takes_the_top_item_and_sees_everything_about_it(client: Any) -> None:
    # The audit log outlives tests: only this test's events count.
    with session_scope() as session:
        before = session.execute(select(func.max(col(AuditEvent.id)))).scalar() or 0
    analyst = bearer(Role.analyst, "ana@hotline.example")
    other = bearer(Role.analyst, "olek@hotline.example")
    urgent = queued("http://a.example.com/urgent", 1000)
    later = queued("http://b.example.com/later", 100)

    queue = client.get("/api/v1/queue", headers=analyst).json()
    assert [item["id"] for item in queue["items"]] == [urgent, later]
    assert queue["counts"]["open"] == 2

    claimed = client.post("/api/v1/queue/claim", headers=analyst)
    assert (claimed.status_code, claimed.json()["id"]) == (200, urgent)
    assert client.post("/api/v1/queue/claim", headers=other).json()["id"] == later
    empty = client.post(
        "/api/v1/queue/claim", headers=bearer(Role.supervisor, "sue@hotline.example")
    )
    assert (empty.status_code, empty.json()["code"]) == (404, "queue_empty")
    assert client.post(f"/api/v1/queue/{urgent}/renew", headers=analyst).status_code == 204
    assert (
        client.post(f"/api/v1/queue/{urgent}/renew", headers=other).json()["code"] == "claim_lost"
    )

    item = client.get(f"/api/v1/targets/{urgent}", headers=analyst).json()
    assert item["canonical_url"] == "http://a.example.com/urgent"
    assert [r["description"] for r in item["reports"]] == ["seen on page 2"]
    assert item["claim"]["expires_at"] is not None

    with session_scope() as session:
        events = session.execute(
            select(col(AuditEvent.action), col(AuditEvent.object_id))
            .where(col(AuditEvent.actor) == "ana@hotline.example")
            .where(col(AuditEvent.id) > before)
            .order_by(col(AuditEvent.id))
        ).all()
        texts = " ".join(str(e) for e in session.execute(select(AuditEvent)).scalars())
    assert events == [("claimed", str(urgent)), ("item_viewed", str(urgent))]
    assert "a.example.com" not in texts  # the audit log names ids, never URLs

    # Taking the next item gives the one held back, and the log says so.
    third = queued("http://c.example.com/third", 50)
    assert client.post("/api/v1/queue/claim", headers=other).json()["id"] == third
    with session_scope() as session:
        moves = session.execute(
            select(col(AuditEvent.action), col(AuditEvent.object_id))
            .where(col(AuditEvent.actor) == "olek@hotline.example")
            .where(col(AuditEvent.id) > before)
            .order_by(col(AuditEvent.id))
        ).all()
    assert moves == [("claimed", str(later)), ("released", str(later)), ("claimed", str(third))]


def test_staff_routes_refuse_the_wrong_people(client: Any) -> None:
    target = queued("http://a.example.com/x", 100)
    auditor = bearer(Role.auditor, "audrey@hotline.example")
    for method, path in (
        ("get", "/api/v1/queue"),
        ("post", "/api/v1/queue/claim"),
        ("get", f"/api/v1/targets/{target}"),
    ):
        anonymous = getattr(client, method)(path)
        assert (anonymous.status_code, anonymous.json()["code"]) == (401, "not_authenticated")
        partner = getattr(client, method)(path, headers={"x-api-key": "partner-key"})
        assert partner.status_code == 401
        forged = getattr(client, method)(path, headers={"authorization": "Bearer forged"})
        assert forged.status_code == 401
        denied = getattr(client, method)(path, headers=auditor)
        assert (denied.status_code, denied.json()["code"]) == (403, "forbidden")
