"""Who reaches the safe view, what it audits and what may be cached (from a review):
synthetic media served from 127.0.0.1, looked at through
`GET /api/v1/targets/{id}/media/{id}/view` with every kind of credential."""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from hotline import auth, staff_pages
from hotline.auth import configured_staff_cipher, create_user, issue_token
from hotline.db import session_scope, utcnow
from hotline.models import Role
from hotline.web import create_app
from tests.fixtures import images
from tests.fixtures.servers import LocalHTTPServer
from tests.fixtures.staff import PASSWORD, code, enrol, make_user
from tests.partners.test_exports import add_partner
from tests.triage.test_api import bearer
from tests.triage.test_safeview import SAFE_HEADERS, Unblurs, seen, unblurs, view

__all__ = ["unblurs"]  # a fixture, imported for the tests below

PNG = "image/png"


def viewed(target: int | str, media: int | str, query: str = "") -> str:
    return f"/api/v1/targets/{target}/media/{media}/view" + (f"?{query}" if query else "")


def fetches(server: LocalHTTPServer, path: str) -> int:
    return sum(1 for r in server.requests if r.path == path)


def new_client() -> TestClient:
    """A second browser: its own cookie jar, on the same app and database."""
    return TestClient(create_app(), client=("127.0.0.1", 50001))


# -- what the review found (fixed)


def test_staff_json_with_urls_and_hashes_is_not_kept_in_caches(
    client: Any, http_server: LocalHTTPServer
) -> None:
    """The item as JSON holds the reported URL, the reporters' descriptions and every
    media hash; the queue holds URLs. Like the staff pages showing the same, the staff
    JSON API is sent ``no-store`` (asked for with a bearer token or, as ``authorize``
    accepts, the staff cookie: a browser's disk cache would keep it)."""
    target, [_media] = seen(http_server.route("/cache.png", body=images.png(41, (320, 240))))
    analyst = bearer(Role.analyst, "ana@hotline.example")

    item = client.get(f"/api/v1/targets/{target}", headers=analyst)
    queue = client.get("/api/v1/queue", headers=analyst)

    assert item.status_code == queue.status_code == 200
    assert item.json()["media"][0]["sha256"]  # hashes and the URL are in it
    for response in (item, queue):
        assert "no-store" in response.headers.get("cache-control", ""), response.url


def test_a_sign_in_link_cannot_unblur_media(
    client: Any, http_server: LocalHTTPServer, unblurs: Unblurs
) -> None:
    """A ``next`` with dot segments (``/staff/../api/v1/targets/T/media/M/view?unblur=
    true``) would have the browser resolve the 303 after signing in to the safe view:
    the picture shown unblurred (a same-site navigation: the Strict cookie goes with it)
    and an ``unblurred`` event written in the analyst's name that they never asked for.
    Such a ``next`` leads to the analyst's home instead."""
    target, [media] = seen(http_server.route("/next.png", body=images.png(42, (320, 240))))
    secret = enrol(client, "ana@hotline.example")
    client.cookies.clear()
    link = "/staff/../" + viewed(target, media, "unblur=true").lstrip("/")

    form = client.get("/staff/login", params={"next": link})
    carried = re.search(r'name="next" value="([^"]*)"', form.text)
    assert carried is not None
    signed_in = client.post(
        "/staff/login",
        data={
            "email": "ana@hotline.example",
            "password": PASSWORD,
            "totp": code(secret, 1),
            "next": html.unescape(carried.group(1)),
        },
        follow_redirects=False,
    )
    assert signed_in.status_code == 303
    landing = urljoin("http://testserver/staff/login", signed_in.headers["location"])
    shown = client.get(landing)

    assert unblurs(media) == [], "an unblur nobody asked for was audited"
    assert shown.headers.get("x-hotline-view") != "unblurred"
    assert urlsplit(landing).path.startswith("/staff/")


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("/staff/queue?site=a.example", True),
        ("/staff/targets/7", True),
        ("/staff", True),
        ("/staff/../api/v1/queue", False),
        ("/staff/%2e%2e/api/v1/queue", False),
        ("/staff/%2E./api/v1/queue", False),
        ("/staff/./queue", False),
        ("/staff\\..\\api", False),
        ("/staff/queue\\..\\..\\api", False),
        ("//evil.example/staff/", False),
        ("https://evil.example/staff/", False),
        ("/staffing", False),
        ("/staff/\tqueue", False),
        ("", False),
    ],
)
def test_only_paths_that_stay_on_the_staff_pages_are_followed(given: str, kept: bool) -> None:
    assert (staff_pages._staff_path(given) == given) is kept


@pytest.mark.parametrize("which", ["media", "target"])
def test_ids_beyond_64_bits_are_not_found_rather_than_a_server_error(
    client: Any, http_server: LocalHTTPServer, which: str
) -> None:
    """Path ids are unbounded Python ints: one above 2**63 - 1 names nothing (SQLite
    cannot even bind it), a 404 like any other id of nothing, never a 500."""
    target, [media] = seen(http_server.route("/big.png", body=images.png(43, (320, 240))))
    analyst = bearer(Role.analyst, "ana@hotline.example")
    with TestClient(create_app(), raise_server_exceptions=False) as tolerant:
        huge = 2**63
        path = viewed(huge, media) if which == "target" else viewed(target, huge)
        response = tolerant.get(path, headers=analyst)
        item = tolerant.get(f"/api/v1/targets/{huge}", headers=analyst)
    assert (response.status_code, response.json()["code"]) == (404, "not_found")
    assert item.status_code == 404


# -- what held: credentials ---------------------------------------------------------------


def partner_key() -> str:
    """A partner hotline's API key (the partners' own API is for it, not this view)."""
    key, _secret = add_partner("Partner hotline", may_export=True)
    return key


def token_for(email: str, role: Role, *, issued: dt.datetime) -> str:
    with session_scope() as session:
        user, _ = create_user(
            session, email, role, PASSWORD, now=utcnow(), cipher=configured_staff_cipher()
        )
        return issue_token(session, user, now=issued)


def test_no_credential_but_a_live_staff_one_reaches_the_view_and_nothing_is_fetched(
    client: Any, http_server: LocalHTTPServer, unblurs: Unblurs
) -> None:
    """Refused credentials are refused before the media is located or fetched: the
    site sees no request and nothing is audited."""
    target, [media] = seen(http_server.route("/who.png", body=images.png(44, (320, 240))))
    expired = token_for(
        "old@hotline.example", Role.analyst, issued=utcnow() - dt.timedelta(hours=1)
    )
    disabled = token_for("gone@hotline.example", Role.analyst, issued=utcnow())
    reset = token_for("lost@hotline.example", Role.supervisor, issued=utcnow())
    live = token_for("ana@hotline.example", Role.analyst, issued=utcnow())
    with session_scope() as session:
        auth.disable_user(session, "gone@hotline.example")
        auth.reset_2fa(session, "lost@hotline.example", cipher=configured_staff_cipher())
    key = partner_key()
    refused = {
        "nothing": {},
        "expired token": {"authorization": f"Bearer {expired}"},
        "disabled account": {"authorization": f"Bearer {disabled}"},
        "second factor reset": {"authorization": f"Bearer {reset}"},
        "partner API key": {"authorization": f"Bearer {key}"},
        "partner key as X-API-Key": {"x-api-key": key},
        "garbage": {"authorization": "Bearer " + "x" * 300},
        "basic": {"authorization": "Basic YW5hOnB3"},
        "token in the query": {},
    }
    before = fetches(http_server, "/who.png")
    for name, headers in refused.items():
        for unblur in ("false", "true"):
            query = f"unblur={unblur}" + (f"&access_token={live}" if "query" in name else "")
            response = client.get(viewed(target, media, query), headers=headers)
            assert (response.status_code, response.json()["code"]) == (
                401,
                "not_authenticated",
            ), name
            assert response.headers["www-authenticate"] == "Bearer"
    assert fetches(http_server, "/who.png") == before
    assert unblurs(media) == []
    ok = client.get(viewed(target, media), headers={"authorization": f"Bearer {live}"})
    assert ok.status_code == 200


def test_roles_without_the_permission_are_refused_before_any_fetch(
    client: Any, http_server: LocalHTTPServer, unblurs: Unblurs
) -> None:
    target, [media] = seen(http_server.route("/roles.png", body=images.png(45, (320, 240))))
    admin = bearer(Role.admin, "adam@hotline.example")
    auditor = bearer(Role.auditor, "audrey@hotline.example")
    before = fetches(http_server, "/roles.png")
    # Every spelling of "true" pydantic takes is an unblur, refused to an admin.
    for spelling in ("true", "1", "yes", "on", "TRUE", "t", "y", "false&unblur=true"):
        for headers in (admin, auditor):
            refused = client.get(viewed(target, media, f"unblur={spelling}"), headers=headers)
            assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    # Missing media: still 403, not 404 (no oracle for a role that may not look).
    assert client.get(viewed(target, 999_999), headers=auditor).status_code == 403
    assert client.get(viewed(999_999, media, "unblur=true"), headers=admin).status_code == 403
    assert fetches(http_server, "/roles.png") == before
    # The last of repeated values wins for both the check and what is shown.
    blurred = client.get(viewed(target, media, "unblur=true&unblur=false"), headers=admin)
    assert blurred.headers["x-hotline-view"] == "blurred"
    assert unblurs(media) == []


def test_a_video_stays_a_placeholder_for_an_admin(
    client: Any, http_server: LocalHTTPServer, unblurs: Unblurs
) -> None:
    video = images.fake_mp4()
    target, [media] = seen(http_server.route("/adm.mp4", body=video))
    admin = bearer(Role.admin, "adam@hotline.example")
    for query in ("", "frame=0", "size=2048"):
        shown = client.get(viewed(target, media, query), headers=admin)
        assert (shown.status_code, shown.headers["x-hotline-view"]) == (200, "placeholder")
        assert shown.headers["content-type"] == PNG
        assert video not in shown.content
    assert client.get(viewed(target, media, "unblur=1"), headers=admin).status_code == 403
    assert unblurs(media) == []


def test_every_spelling_of_unblur_is_audited_and_unblur_is_read_from_the_query_only(
    client: Any, http_server: LocalHTTPServer, unblurs: Unblurs
) -> None:
    target, [media] = seen(http_server.route("/spell.png", body=images.png(46, (320, 240))))
    analyst = bearer(Role.analyst, "ana@hotline.example")
    spellings = ("true", "1", "yes", "on", "True", "t", "y", "false&unblur=true")
    for spelling in spellings:
        shown = client.get(viewed(target, media, f"unblur={spelling}"), headers=analyst)
        assert shown.headers["x-hotline-view"] == "unblurred", spelling
    assert len(unblurs(media)) == len(spellings)
    # Elsewhere than the query it is no unblur: blurred and not audited.
    for headers in ({"unblur": "true"}, {"x-unblur": "true"}, {"cookie": "unblur=true"}):
        shown = client.get(viewed(target, media), headers=analyst | headers)
        assert shown.headers["x-hotline-view"] == "blurred"
    for bad in ("", "2", "maybe", "tru"):
        refused = client.get(viewed(target, media, f"unblur={bad}"), headers=analyst)
        assert refused.status_code == 422
    assert len(unblurs(media)) == len(spellings)


# -- what held: the browser's cookie ----------------------------------------------------------


def test_the_view_with_the_staff_cookie(
    client: Any, http_server: LocalHTTPServer, unblurs: Unblurs
) -> None:
    """A signed-in analyst's browser sees and unblurs (a GET needs no CSRF token; the
    event names the analyst); a session still enrolling its second factor, a disabled
    account's session, an admin's and an auditor's are refused."""
    target, [media] = seen(http_server.route("/cookie.png", body=images.png(47, (320, 240))))
    enrol(client, "ana@hotline.example")
    shown = client.get(viewed(target, media, "unblur=true"))
    assert (shown.status_code, shown.headers["x-hotline-view"]) == (200, "unblurred")
    assert [(e.actor, json.loads(e.details or "{}")) for e in unblurs(media)] == [
        ("ana@hotline.example", {"target_id": target})
    ]

    with new_client() as admin, new_client() as auditor, new_client() as pending:
        enrol(admin, "adam@hotline.example", Role.admin)
        enrol(auditor, "audrey@hotline.example", Role.auditor)
        assert admin.get(viewed(target, media)).status_code == 200
        assert admin.get(viewed(target, media, "unblur=true")).status_code == 403
        assert auditor.get(viewed(target, media)).status_code == 403
        make_user("eve@hotline.example", Role.supervisor)
        half = pending.post(
            "/staff/login",
            data={"email": "eve@hotline.example", "password": PASSWORD},
            follow_redirects=False,
        )
        assert half.headers["location"] == "/staff/enrol"  # a session, second factor pending
        for query in ("", "unblur=true"):
            assert pending.get(viewed(target, media, query)).status_code == 401

    with session_scope() as session:
        auth.disable_user(session, "ana@hotline.example")
    assert client.get(viewed(target, media, "unblur=true")).status_code == 401
    assert len(unblurs(media)) == 1


def test_no_other_origin_may_read_the_view(client: Any, http_server: LocalHTTPServer) -> None:
    """No CORS: neither a preflight nor a simple request from another origin gets an
    Access-Control-Allow-* header; HEAD and OPTIONS are no ways around GET."""
    target, [media] = seen(http_server.route("/cors.png", body=images.png(48, (320, 240))))
    analyst = bearer(Role.analyst, "ana@hotline.example")
    before = fetches(http_server, "/cors.png")
    origin = {"origin": "https://elsewhere.example"}
    preflight = client.options(
        viewed(target, media),
        headers=origin
        | {
            "access-control-request-method": "GET",
            "access-control-request-headers": "authorization",
        },
    )
    head = client.head(viewed(target, media, "unblur=true"), headers=analyst)
    assert preflight.status_code == head.status_code == 405
    assert head.content == b""
    assert fetches(http_server, "/cors.png") == before
    simple = client.get(viewed(target, media), headers=analyst | origin)
    assert simple.status_code == 200
    for response in (preflight, simple):
        assert not [h for h in response.headers if h.startswith("access-control-")]


# -- what held: headers, bounds, audit order ---------------------------------------------------


def test_every_rendering_kind_is_sent_uncacheable_without_validators(
    client: Any, http_server: LocalHTTPServer
) -> None:
    files = {
        "/h.jpg": images.jpeg(49, (640, 480)),
        "/h.svg": images.svg(),
        "/h.mp4": images.fake_mp4(),
        "/h.gif": images.animated_gif(50),
    }
    tags = []
    for path, body in files.items():
        http_server.route(path, body=body)
        tags.append(f'<img src="{path}">')
    document = f"<!doctype html><html><body>{''.join(tags)}</body></html>".encode()
    url = http_server.route("/h", body=document, headers={"content-type": "text/html"})
    target, media = seen(url)
    analyst = bearer(Role.analyst, "ana@hotline.example")
    assert len(media) == len(files)
    for item in media:
        for query in ("", "unblur=true", "size=64", "size=2048&unblur=true"):
            shown = client.get(viewed(target, item, query), headers=analyst)
            assert shown.status_code == 200
            assert {k: shown.headers[k] for k in SAFE_HEADERS} == SAFE_HEADERS
            assert shown.headers["referrer-policy"] == "no-referrer"
            assert shown.headers["x-frame-options"] == "DENY"
            for absent in ("etag", "last-modified", "expires", "set-cookie", "vary", "age"):
                assert absent not in shown.headers, absent
    page = client.get(f"/staff/targets/{target}", headers=analyst)
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    # The page asks for no unblurred rendering by itself: only the button's attribute.
    in_attribute = re.findall(r'data-unblurred="[^"]*\?unblur=true"', page.text)
    assert len(in_attribute) == page.text.count("unblur=true") == len(media)


def test_bounds_are_checked_before_the_fetch(client: Any, http_server: LocalHTTPServer) -> None:
    target, [media] = seen(http_server.route("/b.png", body=images.png(51, (320, 240))))
    analyst = bearer(Role.analyst, "ana@hotline.example")
    before = fetches(http_server, "/b.png")
    for query in (
        "size=0",
        "size=-1",
        "size=63",
        "size=2049",
        f"size={2**40}",
        "size=abc",
        "frame=-1",
        "frame=100001",
        f"frame={2**70}",
        "frame=1.5",
        "frame=x",
    ):
        refused = client.get(viewed(target, media, query), headers=analyst)
        assert (refused.status_code, refused.json()["code"]) == (422, "validation_error"), query
    assert fetches(http_server, "/b.png") == before
    for bad_id in ("-1", "0"):
        assert client.get(viewed(target, bad_id), headers=analyst).status_code == 404
    for bad_id in ("1e3", "0x1", "%20", "one"):
        assert client.get(viewed(target, bad_id), headers=analyst).status_code == 422
    # A frame at and beyond the frames hashing counts: no frame, nothing decoded.
    for frame in (1, 19, 20, 100_000):
        missing = client.get(viewed(target, media, f"frame={frame}&unblur=true"), headers=analyst)
        assert (missing.status_code, missing.json()["code"]) == (404, "media_unavailable")


def test_an_unblur_whose_audit_event_is_not_committed_sends_nothing(
    client: Any, http_server: LocalHTTPServer, monkeypatch: pytest.MonkeyPatch, unblurs: Unblurs
) -> None:
    """The route's unit of work commits before the response goes out (scope="function"):
    if the commit of the ``unblurred`` event fails, the picture is not sent."""
    body = images.png(52, (320, 240))
    target, [media] = seen(http_server.route("/commit.png", body=body))
    analyst = bearer(Role.analyst, "ana@hotline.example")
    real_scope = session_scope

    @contextlib.contextmanager
    def failing_commit() -> Iterator[Session]:
        with real_scope() as session:
            yield session
            raise RuntimeError("the database went away at commit")

    monkeypatch.setattr("hotline.deps.session_scope", failing_commit)
    with TestClient(create_app(), raise_server_exceptions=False) as tolerant:
        response = tolerant.get(viewed(target, media, "unblur=true"), headers=analyst)
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert response.headers["content-type"] == "application/json"
    assert unblurs(media) == []


def test_a_later_frame_unblurred_is_audited_with_its_frame_and_a_failed_one_is_not(
    client: Any, http_server: LocalHTTPServer, unblurs: Unblurs
) -> None:
    frames = images.frames(53, (160, 120), 3)
    gif = images.encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    target, [media] = seen(
        http_server.route("/f.gif", body=gif, headers={"content-type": "image/gif"})
    )
    supervisor = bearer(Role.supervisor, "sue@hotline.example")
    assert view(client, supervisor, target, media, unblur=True, frame=2).status_code == 200
    assert view(client, supervisor, target, media, unblur=True, frame=3).status_code == 404
    http_server.route("/f.gif", status=410, body=b"gone")
    assert view(client, supervisor, target, media, unblur=True, frame=1).status_code == 404
    events = unblurs(media)
    assert [(e.actor, e.object_type, json.loads(e.details or "{}")) for e in events] == [
        ("sue@hotline.example", "media", {"target_id": target, "frame": 2})
    ]


# -- how many views an account may ask for


def test_views_are_limited_per_account_before_anything_is_fetched(
    client: Any, http_server: LocalHTTPServer, configure: Any, unblurs: Unblurs
) -> None:
    """Each view fetches the media afresh and decodes it in the API process: a runaway
    script or a stolen session is stopped per account, and the refused view costs no
    fetch. Other accounts go on; ``off`` lifts the limit."""
    configure(safe_view_rate_limit="3/minute")
    target, [media] = seen(http_server.route("/many.png", body=images.png(55, (320, 240))))
    ana = bearer(Role.analyst, "ana@hotline.example")
    bob = bearer(Role.analyst, "bob@hotline.example")
    before = fetches(http_server, "/many.png")
    for _ in range(3):
        assert client.get(viewed(target, media), headers=ana).status_code == 200
    limited = client.get(viewed(target, media, "unblur=true"), headers=ana)
    assert (limited.status_code, limited.json()["code"]) == (429, "rate_limited")
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert fetches(http_server, "/many.png") == before + 3
    assert unblurs(media) == []
    assert client.get(viewed(target, media), headers=bob).status_code == 200

    configure(safe_view_rate_limit="off")
    for _ in range(5):
        assert client.get(viewed(target, media), headers=ana).status_code == 200


def test_a_rate_limit_that_does_not_parse_stops_the_api_at_start(configure: Any) -> None:
    configure(safe_view_rate_limit="lots")
    with pytest.raises(ValueError, match="HOTLINE_SAFE_VIEW_RATE_LIMIT: expected limits"):
        create_app()
