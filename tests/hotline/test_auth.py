"""Staff accounts, sign-in (argon2id, TOTP with replay protection, lockout), tokens, and
the role matrix walked against a running app."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from cryptography.fernet import Fernet, MultiFernet
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from hotline import auth
from hotline.authz import PERMISSIONS, Forbidden, NotAuthenticated, authorize
from hotline.db import session_scope, utcnow
from hotline.models import AuditEvent, Role, StaffUser
from tests.conftest import REPO

NOW = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
PASSWORD = "correct horse battery"


@pytest.fixture
def cipher() -> MultiFernet:
    return auth.staff_cipher(Fernet.generate_key().decode())


def code(uri: str, at: dt.datetime) -> str:
    return auth.totp_code(pyotp.parse_uri(uri).secret, auth.totp_step(at))


def make_user(
    session: Session, cipher: MultiFernet, email: str = "a@hotline.example", role: str = "analyst"
) -> tuple[StaffUser, str]:
    return auth.create_user(session, email, role, PASSWORD, now=NOW, cipher=cipher)


def login(session: Session, cipher: MultiFernet, uri: str, at: dt.datetime, **kw: str) -> StaffUser:
    args = {"email": "a@hotline.example", "password": PASSWORD, "totp": code(uri, at), **kw}
    return auth.authenticate(session, now=at, cipher=cipher, **args)


# Passwords and accounts ---------------------------------------------------------------


def test_password_hash_is_argon2id_and_verifies() -> None:
    hashed = auth.hash_password(PASSWORD)
    assert hashed.startswith("$argon2id$")
    assert PASSWORD not in hashed
    assert auth.verify_password(hashed, PASSWORD)
    assert not auth.verify_password(hashed, PASSWORD + "x")
    assert not auth.verify_password("not a hash", PASSWORD)


def test_create_user_stores_no_secret_in_clear(session: Session, cipher: MultiFernet) -> None:
    user, uri = make_user(session, cipher, email="  A@Hotline.Example ")
    assert user.email == "a@hotline.example"
    assert user.role is Role.analyst
    assert uri.startswith("otpauth://totp/")
    assert "issuer=Hotline" in uri
    secret = pyotp.parse_uri(uri).secret
    assert user.totp_secret_encrypted
    assert secret not in user.totp_secret_encrypted
    assert cipher.decrypt(user.totp_secret_encrypted.encode()).decode() == secret
    assert user.totp_enrolled_at is None


@pytest.mark.parametrize(
    ("email", "role", "password", "error"),
    [
        ("a@hotline.example", "analyst", "short", auth.WeakPassword),
        ("not-an-email", "analyst", PASSWORD, auth.InvalidEmail),
        ("b@hotline.example", "superuser", PASSWORD, auth.InvalidRole),
        ("A@HOTLINE.EXAMPLE", "admin", PASSWORD, auth.StaffExists),
    ],
)
def test_create_user_refuses(
    session: Session, cipher: MultiFernet, email: str, role: str, password: str, error: type
) -> None:
    make_user(session, cipher)
    with pytest.raises(error):
        auth.create_user(session, email, role, password, now=NOW, cipher=cipher)
    assert auth.StaffExists.status_code == 409
    assert auth.WeakPassword.status_code == 422


# Sign-in ------------------------------------------------------------------------------


def test_login_succeeds_and_enrols(session: Session, cipher: MultiFernet) -> None:
    user, uri = make_user(session, cipher)
    assert login(session, cipher, uri, NOW) is user
    assert user.totp_enrolled_at == NOW
    assert user.totp_last_step == auth.totp_step(NOW)


def test_totp_code_cannot_be_replayed(session: Session, cipher: MultiFernet) -> None:
    user, uri = make_user(session, cipher)
    first = code(uri, NOW)
    login(session, cipher, uri, NOW, totp=first)
    with pytest.raises(auth.InvalidCredentials):
        login(session, cipher, uri, NOW + dt.timedelta(seconds=5), totp=first)
    # Nor an older code still inside the window after a newer one was used.
    with pytest.raises(auth.InvalidCredentials):
        login(session, cipher, uri, NOW, totp=code(uri, NOW - dt.timedelta(seconds=30)))
    later = NOW + dt.timedelta(seconds=30)
    assert login(session, cipher, uri, later) is user
    assert user.failed_logins == 0  # the success reset the two failures


def test_totp_window_is_one_step_either_side(session: Session, cipher: MultiFernet) -> None:
    user, uri = make_user(session, cipher)
    step = dt.timedelta(seconds=30)
    with pytest.raises(auth.InvalidCredentials):
        login(session, cipher, uri, NOW, totp=code(uri, NOW - 2 * step))
    with pytest.raises(auth.InvalidCredentials):
        login(session, cipher, uri, NOW, totp=code(uri, NOW + 2 * step))
    assert login(session, cipher, uri, NOW, totp=code(uri, NOW - step)) is user
    assert login(session, cipher, uri, NOW, totp=code(uri, NOW + step)) is user


@pytest.mark.parametrize(
    "change",
    [
        {"password": "wrong password!"},
        {"totp": "000000x"},
        {"totp": ""},
        {"email": "nobody@hotline.example"},
    ],
)
def test_wrong_credentials_are_one_error(
    session: Session, cipher: MultiFernet, change: dict[str, str]
) -> None:
    make_user(session, cipher)
    _, uri = make_user(session, cipher, email="b@hotline.example")
    with pytest.raises(auth.InvalidCredentials) as caught:
        login(session, cipher, uri, NOW, **change)
    assert caught.value.code == "invalid_credentials"
    assert caught.value.status_code == 401


def test_disabled_account_gets_the_wrong_password_error(
    session: Session, cipher: MultiFernet
) -> None:
    user, uri = make_user(session, cipher)
    token = auth.issue_token(session, user, now=NOW)
    auth.disable_user(session, "a@hotline.example")
    with pytest.raises(auth.InvalidCredentials):
        login(session, cipher, uri, NOW)
    assert auth.user_for_token(session, token, now=NOW) is None


def test_lockout_after_five_failures_for_fifteen_minutes(
    session: Session, cipher: MultiFernet
) -> None:
    user, uri = make_user(session, cipher)
    for _ in range(auth.MAX_FAILED_LOGINS):
        with pytest.raises(auth.InvalidCredentials):
            login(session, cipher, uri, NOW, password="wrong password!")
    assert user.locked_until == NOW + dt.timedelta(minutes=15)
    # Even right credentials are refused while locked.
    with pytest.raises(auth.AccountLocked) as caught:
        login(session, cipher, uri, NOW + dt.timedelta(minutes=1))
    assert caught.value.code == "account_locked"
    assert caught.value.status_code == 429
    assert caught.value.retry_after == 14 * 60 + 1
    assert user.totp_last_step == 0  # the refused code was not consumed
    unlocked = NOW + dt.timedelta(minutes=15, seconds=1)
    assert login(session, cipher, uri, unlocked) is user
    assert user.failed_logins == 0
    assert user.locked_until is None


def test_password_is_rehashed_when_parameters_change(session: Session, cipher: MultiFernet) -> None:
    from argon2 import PasswordHasher

    user, uri = make_user(session, cipher)
    user.password_hash = PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORD)
    login(session, cipher, uri, NOW)
    assert not auth.password_needs_rehash(user.password_hash)
    assert auth.verify_password(user.password_hash, PASSWORD)


def test_unknown_user_costs_an_argon2_verification(session: Session, cipher: MultiFernet) -> None:
    make_user(session, cipher)
    auth.verify_password(auth._dummy_hash(), "warm up")

    def timed(email: str) -> float:
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            with pytest.raises(auth.InvalidCredentials):
                auth.authenticate(
                    session, email=email, password="wrong password!", totp="123456", now=NOW,
                    cipher=cipher,
                )  # fmt: skip
            best = min(best, time.perf_counter() - start)
        return best

    known, unknown = timed("a@hotline.example"), timed("nobody@hotline.example")
    assert unknown >= 0.5 * known, (unknown, known)


# Tokens -------------------------------------------------------------------------------


def test_token_issue_expiry_and_revocation(session: Session, cipher: MultiFernet) -> None:
    user, _ = make_user(session, cipher)
    token = auth.issue_token(session, user, now=NOW)
    assert len(token) >= 43
    assert auth.user_for_token(session, token, now=NOW + dt.timedelta(minutes=14)) is user
    assert auth.user_for_token(session, token, now=NOW + dt.timedelta(minutes=15)) is None
    assert auth.user_for_token(session, token + "x", now=NOW) is None
    assert auth.user_for_token(session, "", now=NOW) is None
    assert user.id is not None
    assert auth.revoke_tokens(session, user.id) == 1
    assert auth.user_for_token(session, token, now=NOW) is None


def test_reset_2fa_replaces_the_secret_and_revokes_tokens(
    session: Session, cipher: MultiFernet
) -> None:
    user, old_uri = make_user(session, cipher)
    login(session, cipher, old_uri, NOW)
    token = auth.issue_token(session, user, now=NOW)
    _, new_uri = auth.reset_2fa(session, "a@hotline.example", cipher=cipher)
    assert pyotp.parse_uri(new_uri).secret != pyotp.parse_uri(old_uri).secret
    assert user.totp_enrolled_at is None
    assert user.totp_last_step == 0
    assert auth.user_for_token(session, token, now=NOW) is None
    later = NOW + dt.timedelta(minutes=1)
    with pytest.raises(auth.InvalidCredentials):
        login(session, cipher, old_uri, later)
    assert login(session, cipher, new_uri, later) is user
    with pytest.raises(auth.StaffNotFound):
        auth.reset_2fa(session, "nobody@hotline.example", cipher=cipher)


def test_development_key_is_created_once_private(tmp_path: Path) -> None:
    first = auth.staff_cipher("", tmp_path)
    key = tmp_path / "staff.key"
    assert key.stat().st_mode & 0o777 == 0o600
    secret = first.encrypt(b"x")
    auth._cipher.cache_clear()
    assert auth.staff_cipher("", tmp_path).decrypt(secret) == b"x"


# The API ------------------------------------------------------------------------------


def _route_paths(app: FastAPI) -> set[str]:
    return {getattr(route, "path", "") for route in app.routes}


@pytest.fixture
def app(committed: Engine, configure: Any) -> FastAPI:
    from hotline import auth_api
    from hotline.web import create_app

    configure()
    app = create_app()
    if "/api/v1/auth/token" not in _route_paths(app):  # until hotline.web includes it
        app.include_router(auth_api.router)
    for permission in PERMISSIONS:
        app.add_api_route(
            f"/api/v1/test-authz/{permission}",
            lambda: {"ok": True},
            methods=["GET"],
            dependencies=[Depends(authorize(permission))],
        )
    return app


@pytest.fixture
def api(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, client=("127.0.0.1", 50000)) as client:
        yield client


def create(email: str, role: str) -> str:
    with session_scope() as session:
        _, uri = auth.create_user(
            session, email, role, PASSWORD, now=NOW, cipher=auth.configured_staff_cipher()
        )
    return uri


def token_request(email: str, uri: str, **change: str) -> dict[str, str]:
    return {"email": email, "password": PASSWORD, "totp": code(uri, utcnow()), **change}


def test_token_endpoint_signs_in(api: TestClient) -> None:
    uri = create("a@hotline.example", "supervisor")
    request = token_request("a@hotline.example", uri)
    response = api.post("/api/v1/auth/token", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    me = api.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json() == {"email": "a@hotline.example", "role": "supervisor"}
    # The same code again: replay (the same request, not a fresh code of a later step).
    again = api.post("/api/v1/auth/token", json=request)
    assert again.status_code == 401
    assert again.json()["code"] == "invalid_credentials"
    # Both sign-ins are in the audit log, the second as a failure.
    with session_scope() as session:
        actions = (
            session.execute(
                select(col(AuditEvent.action))
                .where(col(AuditEvent.actor) == "a@hotline.example")
                .order_by(col(AuditEvent.id))
            )
            .scalars()
            .all()
        )
    assert actions[-2:] == ["login", "login_failed"]


@pytest.mark.parametrize(
    "body",
    [
        {"email": "a@hotline.example", "password": "wrong password!", "totp": "123456"},
        {"email": "nobody@hotline.example", "password": PASSWORD, "totp": "123456"},
        {"email": "a@hotline.example", "password": PASSWORD, "totp": "12"},
        {"email": "x" * 300, "password": PASSWORD, "totp": "123456"},
        {"email": "a@hotline.example", "password": PASSWORD},
        {},
    ],
)
def test_token_endpoint_refuses_without_500(api: TestClient, body: dict[str, str]) -> None:
    create("a@hotline.example", "analyst")
    response = api.post("/api/v1/auth/token", json=body)
    assert response.status_code in (401, 422), response.text
    assert set(response.json()) >= {"code", "detail"}
    if response.status_code == 401:
        assert response.json()["code"] == "invalid_credentials"


def test_failures_persist_across_requests_until_lockout(api: TestClient) -> None:
    uri = create("a@hotline.example", "analyst")
    wrong = token_request("a@hotline.example", uri, password="wrong password!")
    for attempt in range(1, 6):
        response = api.post("/api/v1/auth/token", json=wrong)
        assert response.status_code == 401, response.text
        with session_scope() as session:
            user = auth.get_user(session, "a@hotline.example")
            assert user is not None
            assert user.failed_logins == attempt
    locked = api.post("/api/v1/auth/token", json=token_request("a@hotline.example", uri))
    assert locked.status_code == 429
    assert locked.json()["code"] == "account_locked"
    assert 0 < int(locked.headers["retry-after"]) <= 15 * 60 + 1


def test_not_authenticated_asks_for_a_bearer_token(api: TestClient) -> None:
    response = api.get("/api/v1/auth/me")
    assert response.headers["www-authenticate"] == "Bearer"


def test_role_matrix_walk(api: TestClient) -> None:
    tokens = {}
    with session_scope() as session:
        for role in Role:
            user, _ = auth.create_user(
                session, f"{role.value}@hotline.example", role, PASSWORD, now=NOW,
                cipher=auth.configured_staff_cipher(),
            )  # fmt: skip
            tokens[role] = auth.issue_token(session, user, now=utcnow())
    for permission, roles in PERMISSIONS.items():
        path = f"/api/v1/test-authz/{permission}"
        for role in Role:
            response = api.get(path, headers={"Authorization": f"Bearer {tokens[role]}"})
            expected = 200 if role in roles else 403
            assert response.status_code == expected, (permission, role, response.text)
            if expected == 403:
                assert response.json()["code"] == Forbidden.code
        for headers in (
            {},
            {"Authorization": "Bearer bogus-token"},
            {"Authorization": f"Basic {tokens[Role.admin]}"},
            {"X-Api-Key": tokens[Role.admin]},
            {"X-Api-Key": "partner-key"},
        ):
            response = api.get(path, headers=headers)
            assert response.status_code == 401, (permission, headers, response.text)
            assert response.json()["code"] == NotAuthenticated.code


def test_disabled_user_token_stops_working(api: TestClient) -> None:
    with session_scope() as session:
        user, _ = auth.create_user(
            session, "a@hotline.example", "admin", PASSWORD, now=NOW,
            cipher=auth.configured_staff_cipher(),
        )  # fmt: skip
        token = auth.issue_token(session, user, now=utcnow())
    headers = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/v1/auth/me", headers=headers).status_code == 200
    with session_scope() as session:
        auth.disable_user(session, "a@hotline.example")
    assert api.get("/api/v1/auth/me", headers=headers).status_code == 401


def test_unknown_permission_is_refused_at_import_time() -> None:
    with pytest.raises(ValueError, match="unknown permission"):
        authorize("queue.delete")


def test_docs_matrix_matches_the_code() -> None:
    text = (REPO / "docs" / "access.md").read_text()
    roles = [r.value for r in Role]
    header = "| Permission | " + " | ".join(roles) + " |"
    assert header in text
    rows = text.split(header, 1)[1].split("\n\n", 1)[0].strip().splitlines()[1:]
    documented = {}
    for line in rows:
        found = re.fullmatch(r"\| `([a-z._]+)` \|(.*)\|", line)
        assert found, line
        cells = [c.strip() for c in found[2].split("|")]
        documented[found[1]] = frozenset(
            Role(r) for r, c in zip(roles, cells, strict=True) if c == "✓"
        )
    assert documented == PERMISSIONS
