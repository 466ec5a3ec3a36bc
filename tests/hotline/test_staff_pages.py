"""Staff pages as a browser sees them: sign-in, enrolment with a QR code, cookies,
CSRF, idle expiry, sign-out, staff accounts and the audit log; all in both languages."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from hotline import auth
from hotline.db import session_scope, utcnow
from hotline.models import AuditEvent, Role, StaffSession, StaffUser
from tests.fixtures.staff import PASSWORD, code, csrf, enrol, make_user


def test_first_sign_in_enrols_the_second_factor_with_a_qr_code(client: Any) -> None:
    assert client.get("/staff/queue", follow_redirects=False).headers["location"] == (
        "/staff/login?next=/staff/queue"
    )
    enrol(client, "ana@hotline.example")
    queue = client.get("/staff/queue")
    assert queue.status_code == 200
    assert "ana@hotline.example" in queue.text
    assert queue.headers["cache-control"] == "no-store"
    with session_scope() as session:
        user = session.scalars(select(StaffUser)).one()
        assert user.totp_enrolled_at is not None
        actions = session.scalars(
            select(AuditEvent.action).where(col(AuditEvent.actor_id) == user.id)
        ).all()
    assert list(actions)[-2:] == ["enrolment_started", "enrolled"]


def test_the_session_cookie_is_http_only_strict_and_secure_when_configured(
    client: Any, configure: Any
) -> None:
    make_user("ana@hotline.example")
    response = client.post(
        "/staff/login",
        data={"email": "ana@hotline.example", "password": PASSWORD},
        follow_redirects=False,
    )
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Secure" not in cookie
    configure(secure_cookies="true")
    from fastapi.testclient import TestClient

    from hotline.web import create_app

    with TestClient(create_app(), base_url="https://testserver") as secure:
        response = secure.post(
            "/staff/login",
            data={"email": "ana@hotline.example", "password": PASSWORD},
            follow_redirects=False,
        )
    assert "Secure" in response.headers["set-cookie"]


def test_an_enrolled_account_needs_its_code_and_a_code_works_once(client: Any) -> None:
    secret = enrol(client, "ana@hotline.example")
    client.post("/staff/logout")
    assert client.get("/staff/queue", follow_redirects=False).status_code == 303
    no_code = client.post(
        "/staff/login", data={"email": "ana@hotline.example", "password": PASSWORD}
    )
    assert no_code.status_code == 401
    assert 'id="login-error"' in no_code.text
    used = code(secret, 1)
    form = {"email": "ana@hotline.example", "password": PASSWORD, "totp": used}
    assert client.post("/staff/login", data=form, follow_redirects=False).status_code == 303
    client.post("/staff/logout")
    # The same code again (not a fresh one, which would belong to a later time step once
    # the clock crosses a 30-second boundary between the two sign-ins).
    replay = client.post("/staff/login", data=form, follow_redirects=False)
    assert replay.status_code == 401


def test_unknown_accounts_and_wrong_passwords_get_the_same_answer(client: Any) -> None:
    make_user("ana@hotline.example")
    unknown = client.post(
        "/staff/login", data={"email": "nobody@hotline.example", "password": PASSWORD}
    )
    wrong = client.post(
        "/staff/login", data={"email": "ana@hotline.example", "password": "wrong password!"}
    )
    assert unknown.status_code == wrong.status_code == 401
    strip = re.compile(r'value="[^"]*"')
    assert strip.sub("", unknown.text) == strip.sub("", wrong.text)


def test_repeated_failures_lock_the_account(client: Any) -> None:
    make_user("ana@hotline.example")
    for _ in range(auth.MAX_FAILED_LOGINS):
        client.post("/staff/login", data={"email": "ana@hotline.example", "password": "nope" * 4})
    locked = client.post(
        "/staff/login", data={"email": "ana@hotline.example", "password": PASSWORD}
    )
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0


def test_forms_without_the_csrf_token_are_refused(client: Any) -> None:
    enrol(client, "ana@hotline.example")
    refused = client.post("/staff/queue/next", data={})
    assert refused.status_code == 403
    assert 'data-code="csrf_failed"' in refused.text
    foreign = client.post("/staff/queue/next", data={"csrf_token": "0" * 64})
    assert foreign.status_code == 403
    page = client.get("/staff/queue")
    accepted = client.post("/staff/queue/next", data={"csrf_token": csrf(page.text)})
    assert accepted.status_code == 200
    assert 'id="queue-empty"' in accepted.text
    # JSON calls made with the cookie need it too, as a header.
    assert client.post("/api/v1/queue/claim").status_code == 403
    with_header = client.post("/api/v1/queue/claim", headers={"x-csrf-token": csrf(page.text)})
    assert with_header.json()["code"] == "queue_empty"


def test_an_idle_session_ends(client: Any, configure: Any) -> None:
    enrol(client, "ana@hotline.example")
    assert client.get("/staff/queue").status_code == 200
    with session_scope() as session:
        for row in session.scalars(select(StaffSession)):
            row.last_seen_at = utcnow() - dt.timedelta(minutes=31)
    assert client.get("/staff/queue", follow_redirects=False).status_code == 303
    with session_scope() as session:
        assert session.scalars(select(StaffSession)).all() == []


def test_an_admin_creates_and_disables_accounts_which_signs_them_out(client: Any) -> None:
    from fastapi.testclient import TestClient

    from hotline.web import create_app

    make_user("admin@hotline.example", Role.admin)
    with TestClient(create_app()) as admin, TestClient(create_app()) as analyst:
        first = admin.post(
            "/staff/login",
            data={"email": "admin@hotline.example", "password": PASSWORD},
            follow_redirects=False,
        )
        assert first.headers["location"] == "/staff/enrol"
        page = admin.get("/staff/enrol")
        secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
        assert secret
        admin.post(
            "/staff/enrol", data={"totp": code(secret.group(1)), "csrf_token": csrf(page.text)}
        )
        users = admin.get("/staff/users")
        created = admin.post(
            "/staff/users",
            data={
                "email": "olek@hotline.example",
                "role": "analyst",
                "password": PASSWORD,
                "csrf_token": csrf(users.text),
            },
        )
        assert created.status_code == 201
        assert 'id="user-created"' in created.text
        weak = admin.post(
            "/staff/users",
            data={
                "email": "x@hotline.example",
                "role": "analyst",
                "password": "short",
                "csrf_token": csrf(users.text),
            },
        )
        assert weak.status_code == 422
        enrolled = analyst.post(
            "/staff/login",
            data={"email": "olek@hotline.example", "password": PASSWORD},
            follow_redirects=False,
        )
        assert enrolled.headers["location"] == "/staff/enrol"
        with session_scope() as session:
            olek = session.scalars(
                select(StaffUser).where(col(StaffUser.email) == "olek@hotline.example")
            ).one()
            olek_id = olek.id
        admin.post(f"/staff/users/{olek_id}/disable", data={"csrf_token": csrf(users.text)})
        assert analyst.get("/staff/enrol", follow_redirects=False).headers["location"] == (
            "/staff/login"
        )
        # An analyst may not manage accounts.
        assert analyst.get("/staff/users", follow_redirects=False).status_code == 303
    with session_scope() as session:
        changes = session.scalars(
            select(AuditEvent.details).where(col(AuditEvent.action) == "admin_change")
        ).all()
    assert any("user_created" in (c or "") for c in changes)
    assert any("disabled" in (c or "") for c in changes)


def test_pages_speak_ukrainian(client: Any) -> None:
    page = client.get("/staff/login?lang=uk")
    assert page.headers["content-language"] == "uk"
    assert "Увійти" in page.text
    chosen = client.get("/staff/language?lang=uk&next=/staff/login", follow_redirects=False)
    assert chosen.status_code == 303
    assert client.get("/staff/login").headers["content-language"] == "uk"


def test_the_audit_page_shows_and_verifies_the_chain(client: Any) -> None:
    from fastapi.testclient import TestClient

    from hotline.web import create_app

    make_user("audit@hotline.example", Role.auditor)
    with TestClient(create_app()) as auditor:
        auditor.post("/staff/login", data={"email": "audit@hotline.example", "password": PASSWORD})
        page = auditor.get("/staff/enrol")
        secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
        assert secret
        done = auditor.post(
            "/staff/enrol",
            data={"totp": code(secret.group(1)), "csrf_token": csrf(page.text)},
            follow_redirects=False,
        )
        assert done.headers["location"] == "/staff/audit"
        shown = auditor.get("/staff/audit?verify=true")
        assert 'id="verify-result"' in shown.text
        assert "enrolled" in shown.text
        assert auditor.get("/staff/queue").status_code == 403


def test_enrolment_ends_in_a_new_session(client: Any) -> None:
    make_user("ana@hotline.example")
    client.post(
        "/staff/login",
        data={"email": "ana@hotline.example", "password": PASSWORD},
        follow_redirects=False,
    )
    half_way = client.cookies.get("hotline_staff")
    page = client.get("/staff/enrol")
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
    assert secret
    assert half_way
    client.post("/staff/enrol", data={"totp": code(secret.group(1)), "csrf_token": csrf(page.text)})
    signed_in = client.cookies.get("hotline_staff")
    assert signed_in
    assert signed_in != half_way
    client.cookies.set("hotline_staff", half_way)
    assert client.get("/staff/queue", follow_redirects=False).status_code == 303
