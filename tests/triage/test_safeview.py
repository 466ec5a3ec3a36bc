"""The safe view as an analyst uses it: synthetic media served from 127.0.0.1, seen by the
real pipeline, then looked at through `GET /api/v1/targets/{id}/media/{id}/view`."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import ipaddress
import json
import subprocess
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFilter
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import col

from hotline.db import session_scope, utcnow
from hotline.models import AuditEvent, Role
from reporting import service as intake
from reporting.models import ReportCategory, ReportSource, TargetStatus
from reporting.schemas import ReportCreate
from tests.conftest import tables_with_marker
from tests.fixtures import images
from tests.fixtures.pipeline import process
from tests.fixtures.servers import LocalHTTPServer
from tests.reporting.test_anonymity import database_dump, redis_dump
from tests.triage.test_api import bearer
from tests.triage.test_hashing import audit_writes  # noqa: F401 - a fixture
from triage import safeview
from triage.fetcher import get_fetcher
from triage.models import Media, Sighting

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
SAFE_HEADERS = {
    "cache-control": "no-store",
    "pragma": "no-cache",
    "content-disposition": "inline",
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; sandbox",
}
Unblurs = Callable[[int], list[AuditEvent]]
JPEG_TYPE = {"content-type": "image/jpeg"}


def seen(url: str) -> tuple[int, list[int]]:
    """Report ``url`` and run the worker's pipeline on it: (target id, media ids)."""
    with session_scope() as session:
        _, created = intake.submit_report(
            session,
            ReportCreate(url=url, category=ReportCategory.csam),
            source=ReportSource.api,
            now=utcnow(),
            max_url_length=4096,
            allow_networks=LOOPBACK,
        )
    outcome = process(created.target_id)
    assert outcome.status == TargetStatus.queued
    with session_scope() as session:
        media = session.execute(
            select(col(Sighting.media_id))
            .where(col(Sighting.target_id) == created.target_id)
            .order_by(col(Sighting.id))
        ).scalars()
        return created.target_id, list(media)


def page(server: LocalHTTPServer, name: str, files: dict[str, bytes]) -> str:
    """A page on ``server`` showing ``files`` (path -> bytes), each served too."""
    tags = []
    for path, body in files.items():
        server.route(path, body=body)
        tags.append(f'<a href="{path}"><img src="{path}"></a>')
    html = f"<!doctype html><html><body>{''.join(tags)}</body></html>".encode()
    return server.route(f"/{name}", body=html, headers={"content-type": "text/html"})


def view(client: Any, headers: dict[str, str], target: int, media: int, **query: Any) -> Any:
    params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in query.items()}
    return client.get(
        f"/api/v1/targets/{target}/media/{media}/view", headers=headers, params=params
    )


def picture(response: Any) -> Image.Image:
    img = Image.open(io.BytesIO(response.content))
    img.load()
    return img


def edges(img: Image.Image) -> float:
    """Variance of the edge image of the luma: high-frequency content."""
    found = img.convert("L").filter(ImageFilter.FIND_EDGES)
    return float(np.asarray(found, dtype=np.float64)[1:-1, 1:-1].var())


@pytest.fixture
def unblurs(committed: Engine) -> Callable[[int], list[AuditEvent]]:
    """The unblur events of a media id recorded during this test (the audit log is never
    emptied between tests, and ids start again at 1)."""
    with session_scope() as session:
        before = session.execute(select(func.max(col(AuditEvent.id)))).scalar() or 0

    def events(media_id: int) -> list[AuditEvent]:
        with session_scope() as session:
            return list(
                session.execute(
                    select(AuditEvent)
                    .where(col(AuditEvent.id) > before, col(AuditEvent.action) == "unblurred")
                    .where(col(AuditEvent.object_id) == str(media_id))
                    .order_by(col(AuditEvent.id))
                ).scalars()
            )

    return events


def test_the_default_view_is_blurred_greyscale_and_never_cached(
    client: Any, http_server: LocalHTTPServer, unblurs: Unblurs
) -> None:
    original = images.png(11, (800, 600), texture="checker")
    target, [media] = seen(http_server.route("/a.png", body=original))
    analyst = bearer(Role.analyst, "ana@hotline.example")

    response = view(client, analyst, target, media)

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert {k: response.headers[k] for k in SAFE_HEADERS} == SAFE_HEADERS
    assert response.headers["x-hotline-content"] == "same"
    assert response.headers["x-hotline-view"] == "blurred"
    shown = picture(response)
    assert (shown.format, shown.mode, shown.size) == ("JPEG", "L", (800, 600))
    # The blur leaves a small fraction of the edges of the same picture in grey.
    sharp = Image.open(io.BytesIO(original))
    assert edges(shown) < edges(sharp) / 20
    assert unblurs(media) == []  # looking blurred is not an unblur


def test_unblur_shows_the_picture_in_colour_and_is_audited_each_time(
    client: Any, http_server: LocalHTTPServer, unblurs: Unblurs
) -> None:
    original = images.jpeg(12, (1600, 1200), quality=95, marker=images.new_marker())
    target, [media] = seen(http_server.route("/b.jpg", body=original))
    analyst = bearer(Role.analyst, "ana@hotline.example")

    first = view(client, analyst, target, media, unblur=True)
    second = view(client, analyst, target, media, unblur=True, size=400)

    assert first.status_code == second.status_code == 200
    assert first.headers["x-hotline-view"] == "unblurred"
    assert {k: first.headers[k] for k in SAFE_HEADERS} == SAFE_HEADERS
    shown = picture(first)
    assert (shown.mode, shown.size) == ("RGB", (1024, 768))  # fit to the default size
    expected = Image.open(io.BytesIO(original)).resize((1024, 768), Image.Resampling.LANCZOS)
    difference = np.abs(
        np.asarray(shown, dtype=np.int16) - np.asarray(expected, dtype=np.int16)
    ).mean()
    assert difference < 4
    channels = np.asarray(shown, dtype=np.int16)
    assert np.abs(channels[..., 0] - channels[..., 2]).mean() > 10  # colour, not grey
    assert edges(shown) > edges(expected) / 2  # not blurred
    assert picture(second).size == (400, 300)  # zoom
    # Re-encoded, never the file as served: its comment (and any other face) is gone.
    assert first.content != original
    assert images.MARKER_PREFIX not in first.content

    events = unblurs(media)
    assert len(events) == 2
    assert {(e.actor, e.object_type) for e in events} == {("ana@hotline.example", "media")}
    assert all(json.loads(e.details or "{}") == {"target_id": target} for e in events)
    assert "127.0.0.1" not in " ".join(f"{e.details} {e.object_id}" for e in events)


def test_a_later_frame_of_an_animation_is_shown_when_asked_for(
    client: Any, http_server: LocalHTTPServer, unblurs: Unblurs
) -> None:
    """The analyst can look at the frame a near match was found through: frame 2 of a
    GIF is shown, not the first, and a frame that is not there is a 404."""
    size = (320, 240)
    frames = images.frames(140, size, 3)
    gif = images.encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    target, [media] = seen(
        http_server.route("/anim.gif", body=gif, headers={"content-type": "image/gif"})
    )
    analyst = bearer(Role.analyst, "ana@hotline.example")

    def shown(**query: Any) -> np.ndarray[Any, np.dtype[np.int16]]:
        response = view(client, analyst, target, media, unblur=True, **query)
        assert response.status_code == 200, response.text
        return np.asarray(picture(response).convert("RGB"), dtype=np.int16)

    pictures = [np.asarray(f.convert("RGB"), dtype=np.int16) for f in frames]
    for number in (0, 2):
        got = shown(frame=number) if number else shown()
        differences = [float(np.abs(got - p).mean()) for p in pictures]
        assert min(range(3), key=differences.__getitem__) == number, differences
    events = unblurs(media)
    assert [json.loads(e.details or "{}") for e in events] == [
        {"target_id": target},
        {"target_id": target, "frame": 2},
    ]
    missing = view(client, analyst, target, media, frame=7)
    assert missing.status_code == 404
    assert missing.json()["code"] == "media_unavailable"
    assert "no_such_frame" in missing.json()["detail"]
    assert view(client, analyst, target, media, frame=-1).status_code == 422


def test_a_later_frame_is_shown_only_within_the_decoding_budget(
    client: Any, http_server: LocalHTTPServer, configure: Callable[..., None]
) -> None:
    """Reaching frame N decodes the frames before it, each at its own size: a GIF whose
    first frame says 1x1 and whose later frames are 1000x1000 reaches frame 1 within
    1.5 million pixels, not frame 2; a crafted frame claiming 65535 x 65535 pixels is
    too large; the pictures of an MPO file are no frames."""
    configure(image_max_pixels=1_500_000)
    analyst = bearer(Role.analyst, "ana@hotline.example")
    gif = {"content-type": "image/gif"}
    growing, [media] = seen(
        http_server.route("/grow.gif", body=images.gif_growing(150, 1000, 3), headers=gif)
    )
    assert view(client, analyst, growing, media, frame=1).status_code == 200
    too_far = view(client, analyst, growing, media, frame=2)
    assert too_far.status_code == 502
    assert "image_too_large" in too_far.json()["detail"]

    crafted = images.with_bomb_frame(images.animated_gif(152, (160, 120), count=2))
    target, [media] = seen(http_server.route("/crafted.gif", body=crafted, headers=gif))
    assert view(client, analyst, target, media, frame=1).status_code == 200
    bomb = view(client, analyst, target, media, frame=2)
    assert bomb.status_code == 502
    assert "image_too_large" in bomb.json()["detail"]

    first, second = images.frames(154, (320, 240), 2)
    mpo = images.encode(first, "MPO", save_all=True, append_images=[second], quality=95)
    target, [media] = seen(http_server.route("/pair.jpg", body=mpo, headers=JPEG_TYPE))
    assert view(client, analyst, target, media).status_code == 200
    pair = view(client, analyst, target, media, frame=1)
    assert pair.status_code == 404
    assert "no_such_frame" in pair.json()["detail"]


def test_pictures_hashed_despite_a_flaw_browsers_skip_are_shown_too(
    client: Any, http_server: LocalHTTPServer
) -> None:
    """A PNG with a broken optional chunk, a JPEG with a short JFIF segment or without
    its end marker: hashing reads them as browsers show them, and so does the view."""
    png = images.png(12, (400, 300), texture="checker")
    jpeg = images.jpeg(13, (400, 300))
    files = {
        "/gama.png": images.with_png_chunk(png, b"gAMA", b""),
        "/jfif.jpg": images.with_jpeg_segment(
            jpeg, 0xE0, b"JFIF\x00\x01\x01", instead_of_jfif=True
        ),
        "/cut.jpg": jpeg[:-2],
    }
    target, media = seen(page(http_server, "flawed", files))
    assert len(media) == 3
    analyst = bearer(Role.analyst, "ana@hotline.example")
    for media_id in media:
        response = view(client, analyst, target, media_id)
        assert response.status_code == 200, response.json()
        assert picture(response).size == (400, 300)


def test_pictures_are_shown_turned_by_their_exif_orientation_only(
    client: Any, http_server: LocalHTTPServer
) -> None:
    """A phone's photo, stored landscape and turned by its EXIF orientation, is shown
    portrait, as browsers show it and as its size and hashes are recorded; an
    orientation in XMP alone, which browsers ignore, turns nothing."""
    from tests.triage.test_hashing import XMP_TURNED

    exif = Image.Exif()
    exif[0x0112] = 6
    stored = images.make_image(35, (400, 300))
    files = {
        "/phone.jpg": images.encode(stored, "JPEG", exif=exif.tobytes()),
        "/xmp.jpg": images.with_jpeg_segment(
            images.jpeg(36, (400, 300)), 0xE1, XMP_TURNED, instead_of_jfif=False
        ),
    }
    target, media = seen(page(http_server, "turned", files))
    analyst = bearer(Role.analyst, "ana@hotline.example")
    with session_scope() as session:
        sizes = {
            m.id: (m.width, m.height)
            for m in session.execute(select(Media).where(col(Media.id).in_(media))).scalars()
        }
    shown = {
        media_id: picture(view(client, analyst, target, media_id, unblur=True)).size
        for media_id in media
    }
    assert sorted(shown.values()) == [(300, 400), (400, 300)]
    assert shown == sizes


def test_a_picture_the_page_carries_is_shown_from_the_page_again(
    client: Any, http_server: LocalHTTPServer
) -> None:
    """A data: picture is found again on the page by its SHA-256; gone from the page, it
    is a 404 that says so."""
    photo = images.jpeg(14, (400, 300))
    carried = "data:image/jpeg;base64," + base64.b64encode(photo).decode()
    url = http_server.route(
        "/carries", body=f'<img src="{carried}">'.encode(), headers={"content-type": "text/html"}
    )
    target, [media] = seen(url)
    analyst = bearer(Role.analyst, "ana@hotline.example")

    response = view(client, analyst, target, media)
    assert response.status_code == 200, response.json()
    assert response.headers["x-hotline-content"] == "same"
    assert picture(response).size == (400, 300)

    # On a page past the body cap, read in part as the worker read it.
    padded = f'<img src="{carried}">'.encode() + b" " * 30_000_000
    http_server.route(
        "/carries",
        body=gzip.compress(padded, compresslevel=1),
        headers={"content-type": "text/html", "content-encoding": "gzip"},
    )
    assert view(client, analyst, target, media).status_code == 200

    http_server.route("/carries", body=b"<p>gone</p>", headers={"content-type": "text/html"})
    gone = view(client, analyst, target, media)
    assert gone.status_code == 404
    assert gone.json()["code"] == "media_unavailable"
    assert "inline_gone" in gone.json()["detail"]


def test_who_may_look_and_who_may_unblur(
    client: Any, http_server: LocalHTTPServer, unblurs: Unblurs
) -> None:
    target, [media] = seen(http_server.route("/c.png", body=images.png(13, (320, 240))))
    admin = bearer(Role.admin, "adam@hotline.example")
    auditor = bearer(Role.auditor, "audrey@hotline.example")
    supervisor = bearer(Role.supervisor, "sue@hotline.example")

    assert view(client, admin, target, media).status_code == 200  # target.view only
    for role in (admin, auditor):
        refused = view(client, role, target, media, unblur=True)
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    assert view(client, auditor, target, media).status_code == 403  # no target.view
    assert view(client, {}, target, media).status_code == 401
    assert view(client, supervisor, target, media, unblur=True).status_code == 200
    assert [e.actor for e in unblurs(media)] == ["sue@hotline.example"]
    for size in (10, 5000):
        assert view(client, supervisor, target, media, size=size).status_code == 422


def test_media_of_another_target_is_not_found(
    client: Any, http_server: LocalHTTPServer, unblurs: Unblurs
) -> None:
    one, [mine] = seen(http_server.route("/d.png", body=images.png(14, (320, 240))))
    other, [theirs] = seen(http_server.route("/e.png", body=images.png(15, (320, 240))))
    analyst = bearer(Role.analyst, "ana@hotline.example")

    for target, media in ((one, theirs), (other, mine), (one, 999_999), (999_999, mine)):
        for unblur in (False, True):
            missing = view(client, analyst, target, media, unblur=unblur)
            assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert unblurs(mine) == unblurs(theirs) == []


def test_a_changed_file_is_shown_and_flagged(client: Any, http_server: LocalHTTPServer) -> None:
    url = http_server.route("/f.png", body=images.png(16, (320, 240)))
    target, [media] = seen(url)
    analyst = bearer(Role.analyst, "ana@hotline.example")
    assert view(client, analyst, target, media).headers["x-hotline-content"] == "same"

    http_server.route("/f.png", body=images.png(17, (200, 100)))

    changed = view(client, analyst, target, media, unblur=True)
    assert changed.status_code == 200
    assert changed.headers["x-hotline-content"] == "changed"
    assert picture(changed).size == (200, 100)  # what is there now


def test_media_that_cannot_be_fetched_again_is_unavailable_without_its_address(
    client: Any, configure: Any, http_server: LocalHTTPServer, unblurs: Unblurs
) -> None:
    url = http_server.route("/g.png", body=images.png(18, (320, 240)))
    target, [media] = seen(url)
    analyst = bearer(Role.analyst, "ana@hotline.example")
    answers = []

    http_server.route("/g.png", status=404, body=b"gone")
    answers.append((view(client, analyst, target, media, unblur=True), 404, "http_error_404"))
    http_server.route("/g.png", body=images.html())
    answers.append((view(client, analyst, target, media), 502, "not_media"))
    http_server.route("/g.png", body=images.png(18, (320, 240)))
    configure(fetch_allow_networks="")  # 127.0.0.1 is no public address
    answers.append((view(client, analyst, target, media), 502, "blocked_address"))
    configure(fetch_allow_networks="127.0.0.0/8")
    http_server.stop()
    answers.append((view(client, analyst, target, media), 502, "connect_error"))

    for response, status, reason in answers:
        body = response.json()
        assert (response.status_code, body["code"]) == (status, "media_unavailable")
        assert f"({reason})" in body["detail"]
        assert response.headers["x-hotline-reason"] == reason  # for the item page to say
        for part in (url, "127.0.0.1", str(http_server.port), "/g.png"):
            assert part not in response.text
        assert response.headers["content-type"] == "application/json"  # an error only
    assert unblurs(media) == []  # nothing was shown, nothing to audit


def test_a_frame_opened_in_a_tab_of_its_own_says_why_it_cannot_be_shown(
    client: Any, http_server: LocalHTTPServer
) -> None:
    """The item page's links to a frame open the view in a new tab: a browser there gets
    a page saying why, not the JSON a script reads; a script still gets the JSON."""
    url = http_server.route("/frames.gif", body=images.animated_gif(19, marker=images.new_marker()))
    target, [media] = seen(url)
    analyst = bearer(Role.analyst, "ana@hotline.example")
    tab = {**analyst, "sec-fetch-dest": "document"}
    http_server.route("/frames.gif", status=404, body=b"gone")
    for headers, frame in ((tab, 2), (tab, 0)):
        opened = view(client, headers, target, media, frame=frame)
        assert opened.status_code == 404
        assert opened.headers["content-type"].startswith("text/html")
        assert opened.headers["x-hotline-reason"] == "http_error_404"
        assert "The site no longer serves this file" in opened.text
        assert "(http_error_404)" in opened.text
        assert url not in opened.text
    http_server.route("/frames.gif", status=503, body=b"busy")
    opened = view(client, tab, target, media, frame=2)
    assert opened.status_code == 502
    assert "The site did not answer" in opened.text
    fetched = view(client, {**analyst, "sec-fetch-dest": "empty"}, target, media, frame=2)
    assert fetched.json()["code"] == "media_unavailable"
    missing = view(client, tab, target, media + 1000)
    assert (missing.status_code, "Nothing is here." in missing.text) == (404, True)
    # Signed out (the session ended since the item page was opened): the sign-in page.
    address = f"/api/v1/targets/{target}/media/{media}/view"
    opened = client.get(
        address, params={"frame": 2}, headers={"sec-fetch-dest": "document"}, follow_redirects=False
    )
    assert (opened.status_code, opened.headers["location"]) == (
        303,
        "/staff/login?next=" + urllib.parse.quote(address),
    )
    assert client.get(address, params={"frame": 2}).json()["code"] == "not_authenticated"


def test_vector_images_are_never_decoded(client: Any, http_server: LocalHTTPServer) -> None:
    files = {
        "/h.svg": images.svg(images.new_marker()),
        "/i.svg": images.svg(images.new_marker(), prolog=False),
        "/j.eps": images.eps(images.new_marker()),
    }
    target, media = seen(page(http_server, "vectors", files))
    analyst = bearer(Role.analyst, "ana@hotline.example")
    assert len(media) == 3

    shown = {}
    for item in media:
        for unblur in (False, True):
            response = view(client, analyst, target, item, unblur=unblur)
            assert response.status_code == 200
            assert response.headers["x-hotline-view"] == "placeholder"
            assert response.headers["content-type"] == "image/png"
            shown.setdefault(item, set()).add(response.content)
    # One generated picture per type, the same whatever the file holds: nothing of the
    # file went into it.
    assert len({frozenset(bodies) for bodies in shown.values()}) == 2
    assert all(len(bodies) == 1 for bodies in shown.values())


def test_video_is_a_placeholder_until_unblurred(
    client: Any, http_server: LocalHTTPServer, unblurs: Unblurs
) -> None:
    video = images.fake_mp4()
    target, [media] = seen(http_server.route("/k.mp4", body=video))
    analyst = bearer(Role.analyst, "ana@hotline.example")

    blurred = view(client, analyst, target, media)
    assert blurred.headers["x-hotline-view"] == "placeholder"
    assert picture(blurred).format == "PNG"
    assert video not in blurred.content
    played = view(client, analyst, target, media, unblur=True)
    assert (played.headers["content-type"], played.content) == ("video/mp4", video)
    assert played.headers["x-hotline-view"] == "unblurred"
    assert {k: played.headers[k] for k in SAFE_HEADERS} == SAFE_HEADERS
    assert len(unblurs(media)) == 1


def test_rendering_writes_no_file(
    http_server: LocalHTTPServer,
    audit_writes: list[tuple[str, tuple[Any, ...]]],  # noqa: F811 - the fixture
) -> None:
    fetcher = get_fetcher.__wrapped__()  # type: ignore[attr-defined]
    files = [
        images.jpeg(19, (1200, 900)),
        images.png(20),
        images.animated_gif(21),
        images.animated_webp(22),
        images.bmp(23),
        images.svg(),
        images.eps(),
        images.fake_mp4(),
    ]
    for number, data in enumerate(files):
        url = http_server.route(f"/{number}", body=data)
        source = safeview.Source(1, number, url, hashlib.sha256(data).hexdigest())
        for unblur in (False, True):
            options = safeview.Options(unblur=unblur)
            assert safeview.render(source, fetcher=fetcher, options=options).content == "same"
    assert audit_writes == []


def read_elsewhere(path: Path) -> bytes:
    """The bytes of ``path``, read by another process. Closing a file drops every POSIX
    lock this process holds on it: reading the run's SQLite database or its -shm here
    would drop SQLite's, and the next process to open the database (a worker, a
    command) would think itself alone and start the shared memory afresh under this
    one's connections (a corrupt database, or SIGBUS)."""
    return subprocess.run(["cat", str(path)], capture_output=True, check=True).stdout


def test_no_trace_of_the_media_after_viewing_it(
    client: Any,
    http_server: LocalHTTPServer,
    committed: Engine,
    backend_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level("DEBUG")
    marker = images.new_marker()
    files = {
        "/m.jpg": images.jpeg(24, (900, 700), marker=marker),
        "/m.png": images.png(25, marker=marker),
        "/m.gif": images.animated_gif(26, marker=marker),
        "/m.webp": images.webp(27, marker=marker),
        "/m.bmp": images.bmp(28, marker=marker),
        "/m.svg": images.svg(marker),
        "/m.mp4": images.fake_mp4(marker),
    }
    target, media = seen(page(http_server, "all", files))
    analyst = bearer(Role.analyst, "ana@hotline.example")
    assert len(media) == len(files)

    for item in media:
        for unblur in (False, True):
            assert view(client, analyst, target, item, unblur=unblur).status_code == 200

    forms = (marker, marker.hex().encode())
    assert tables_with_marker(committed) == []
    dump = database_dump(committed)
    assert not any(form in dump for form in forms)
    data_files = [p for p in Path(backend_env["HOTLINE_DATA_DIR"]).rglob("*") if p.is_file()]
    assert not [p for p in data_files if any(form in read_elsewhere(p) for form in forms)]
    assert not any(form in redis_dump() for form in forms)
    captured = capfd.readouterr()
    logs = (caplog.text + captured.out + captured.err).encode()
    assert not any(form in logs for form in forms)
