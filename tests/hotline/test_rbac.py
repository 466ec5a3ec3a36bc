"""Every staff API route and staff page, for every role, anonymous and a partner
credential: 401 or 403 where denied (a page sends the anonymous to the sign-in page),
never 500. Every route of the routers below that is guarded by
``authorize`` is walked, so a new route is walked without touching this test."""

from __future__ import annotations

import re
from typing import Any

from fastapi.routing import APIRoute

from hotline import auth_api, staff_pages
from hotline.auth import configured_staff_cipher, create_user, issue_token
from hotline.authz import PERMISSIONS, allowed
from hotline.db import session_scope, utcnow
from hotline.models import Role
from partners import api as partners_api
from partners import pages as partners_pages
from triage import api as triage_api
from triage import pages as triage_pages

STAFF_ROUTERS = [
    auth_api.router,
    triage_api.router,
    staff_pages.router,
    triage_pages.router,
    partners_api.staff_router,
    partners_pages.router,
]


def denied_anonymously(response: Any, path: str) -> bool:
    if path.startswith("/staff"):
        return response.status_code == 303 and response.headers["location"].startswith(
            "/staff/login"
        )
    return response.status_code == 401


def staff_routes() -> list[tuple[str, str, str]]:
    """(method, path, permission) of every route guarded by ``authorize``."""
    found = []
    for route in (r for router in STAFF_ROUTERS for r in router.routes):
        if not isinstance(route, APIRoute):
            continue
        names = [d.call.__name__ for d in route.dependant.dependencies if d.call is not None]
        for name in names:
            match = re.fullmatch(r"authorize_(.+)", name)
            if match is None:
                continue
            permission = next(p for p in PERMISSIONS if p.replace(".", "_") == match.group(1))
            for method in route.methods:
                found.append((method, route.path, permission))
    return sorted(found)


def test_every_staff_route_answers_by_the_matrix(client: Any) -> None:
    routes = staff_routes()
    assert {path for _, path, _ in routes} >= {
        "/api/v1/queue",
        "/api/v1/queue/claim",
        "/api/v1/targets/{target_id}",
        "/staff/queue",
        "/staff/targets/{target_id}",
        "/staff/users",
        "/staff/audit",
    }
    tokens = {}
    with session_scope() as session:
        for role in Role:
            user, _ = create_user(
                session,
                f"{role.value}@rbac.example",
                role,
                "correct horse battery",
                now=utcnow(),
                cipher=configured_staff_cipher(),
            )
            tokens[role] = issue_token(session, user, now=utcnow())
    for method, template, permission in routes:
        path = re.sub(r"\{[^}]+\}", "987654", template)  # no such object: nothing changes
        call = getattr(client, method.lower())
        anonymous = call(path, follow_redirects=False)
        assert denied_anonymously(anonymous, path), (method, path)
        partner = call(
            path,
            headers={"x-api-key": "partner", "authorization": "Basic cDpw"},
            follow_redirects=False,
        )
        assert denied_anonymously(partner, path), (method, path)
        for role, token in tokens.items():
            response = call(
                path, headers={"authorization": f"Bearer {token}"}, follow_redirects=False
            )
            assert response.status_code < 500, (method, path, role, response.text)
            if allowed(role, permission):
                assert response.status_code != 403, (method, path, role)
            else:
                assert response.status_code == 403, (method, path, role)
                if path.startswith("/api/"):
                    assert response.json()["code"] == "forbidden"
                else:
                    assert 'data-code="forbidden"' in response.text
