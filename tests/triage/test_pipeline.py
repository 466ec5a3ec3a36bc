"""The triage pipeline end to end in the test process: synthetic pictures and pages served
from 127.0.0.1, processed by the service a worker task wraps, on the test database."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import io
import ipaddress
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from selectolax.lexbor import LexborHTMLParser
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from hotline.db import session_scope, utcnow
from hotline.models import Role
from hotline.web import create_app
from reporting import service as intake
from reporting.models import ReportCategory, ReportSource, Target, TargetStatus
from reporting.schemas import ReportCreate
from tests.conftest import REPO
from tests.fixtures import images
from tests.fixtures.asn import asn_database
from tests.fixtures.servers import LocalHTTPServer
from tests.fixtures.staff import enrol
from triage import service
from triage.assessment import own_list
from triage.fetcher import Fetcher, FetchPolicy
from triage.hashing import hash_media
from triage.hashlists import add_entries, import_list, remove_entries
from triage.hosting import Hosting, HostingLookup, get_hosting_lookup
from triage.matches import add_matches, match_row, match_seen_media
from triage.models import HashList, Media, MediaFrame, MediaKind, MediaMatch, Sighting, Site
from triage.neardup import NearDuplicates
from triage.rerank import facts_of as rerank_facts
from triage.rerank import rerank

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
JPEG = {"content-type": "image/jpeg"}
PAGE = {"content-type": "text/html"}


def report(url: str, *, max_url_length: int = 4096) -> int:
    with session_scope() as session:
        _, created = intake.submit_report(
            session,
            ReportCreate(url=url, category=ReportCategory.csam),
            source=ReportSource.api,
            now=utcnow(),
            max_url_length=max_url_length,
            allow_networks=LOOPBACK,
        )
        return created.target_id


@pytest.fixture
def process(committed: Engine) -> Callable[..., service.Outcome]:
    """Run the pipeline on a target as the task does, with a fetcher allowed onto loopback."""
    fetcher = Fetcher(FetchPolicy(allow_networks=LOOPBACK, ports=frozenset(range(1024, 65536))))
    near = NearDuplicates(phash_radius=8, pdq_radius=31, pdq_min_quality=50, refresh_seconds=0)

    def run(target_id: int, **overrides: Any) -> service.Outcome:
        options: dict[str, Any] = {
            "units": session_scope,
            "fetcher": fetcher,
            "near": near,
            "hosting": get_hosting_lookup(),
            "limits": service.Limits(),
            "lease": dt.timedelta(minutes=10),
            "max_attempts": 2,
            "retry_delay": 0,
            "now": utcnow,
        }
        return service.process_target(target_id, **(options | overrides))

    return run


def sweep(*, now: dt.datetime) -> list[int]:
    """The sweep as beat runs it: pending 5 minutes, or claimed past a 10-minute lease."""
    with session_scope() as session:
        return intake.sweep_pending(
            session,
            now=now,
            older_than=dt.timedelta(minutes=5),
            stale_after=dt.timedelta(minutes=10),
        )


def shown(target_id: int) -> dict[str, Any]:
    with session_scope() as session:
        target = session.get(Target, target_id)
        assert target is not None
        return service.describe_target(session, target)


def test_an_image_url_becomes_media_with_every_hash(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    picture = images.jpeg(1, (800, 600), marker=images.new_marker())
    target_id = report(http_server.route("/a.jpg", body=picture, headers=JPEG))

    assert process(target_id).status == TargetStatus.queued

    target = shown(target_id)
    assert (target["status"], target["reason"]) == ("queued", None)
    assert target["hosting"]["ip"] == "127.0.0.1"
    assert target["priority_reasons"] == ["new content"]
    [media] = target["media"]
    assert media["sha256"] == hashlib.sha256(picture).hexdigest()
    assert media["sha1"] == hashlib.sha1(picture).hexdigest()  # noqa: S324
    assert media["md5"] == hashlib.md5(picture).hexdigest()  # noqa: S324
    assert (len(media["phash"]), len(media["pdq"])) == (16, 64)
    assert media["pdq_quality"] >= 50
    assert (media["mime"], media["kind"], media["width"], media["height"]) == (
        "image/jpeg",
        "image",
        800,
        600,
    )
    assert media["matches"] == []


def test_a_page_whose_media_all_failed_says_so(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    html = {"content-type": "text/html"}
    gone = b'<html><body><img src="/gone/1.jpg"><img src="/gone/2.jpg"></body></html>'
    failed = report(http_server.route("/gone/", body=gone, headers=html))
    text = report(http_server.route("/text/", body=b"<html><p>words</p></html>", headers=html))
    for target_id in (failed, text):
        assert process(target_id).status == TargetStatus.queued
    assert (shown(failed)["reason"], shown(text)["reason"]) == (
        "media_unreachable",
        "no_media_found",
    )


class _Abroad(HostingLookup):
    """The hosting facts of a site abroad, for the local server standing in for it."""

    def __init__(self) -> None:  # no data file to load
        pass

    def lookup(self, ip: str) -> Hosting:
        return Hosting(ip=ip, country="PL", asn=None, org="EXAMPLE-NET")


def test_hosting_facts_are_on_the_target_and_on_each_sighting(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    page = b'<!doctype html><html><body><img src="/h/1.jpg"></body></html>'
    http_server.route("/h/1.jpg", body=images.jpeg(7, (320, 240)), headers=JPEG)
    target_id = report(http_server.route("/h/", body=page, headers={"content-type": "text/html"}))

    assert process(target_id, hosting=_Abroad()).status == TargetStatus.queued

    target = shown(target_id)
    facts = {"ip": "127.0.0.1", "country": "PL", "asn": None, "org": "EXAMPLE-NET"}
    assert target["hosting"] == facts
    assert [media["hosting"] for media in target["media"]] == [facts]


def test_an_asn_database_puts_the_as_number_on_the_target_and_its_sightings(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome], tmp_path: Path
) -> None:
    asn_file = asn_database(tmp_path / "asn.mmdb", {"127.0.0.0/8": (64500, "Example Transit")})
    target_id = report(http_server.route("/asn/1.jpg", body=images.jpeg(8, (64, 48)), headers=JPEG))

    assert process(target_id, hosting=HostingLookup(asn_file=asn_file)).status == (
        TargetStatus.queued
    )

    target = shown(target_id)
    facts = {"ip": "127.0.0.1", "country": None, "asn": 64500, "org": "Example Transit"}
    assert target["hosting"] == facts
    assert [media["hosting"] for media in target["media"]] == [facts]


def test_a_page_of_twelve_images_gives_ten_media(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome], committed: Engine
) -> None:
    tags, bodies = [], []
    for i in range(10):
        bodies.append(images.jpeg(100 + i, (320, 240), marker=images.new_marker()))
        http_server.route(f"/img/{i}.jpg", body=bodies[-1], headers=JPEG)
        tags.append(f'<img src="/img/{i}.jpg">')
    http_server.add("/copy/3.jpg", http_server.routes["/img/3.jpg"])  # same bytes, other URL
    tags += ['<img src="/copy/3.jpg">', '<img src="/missing.jpg">']
    page = f"<!doctype html><html><body>{''.join(tags)}</body></html>".encode()
    target_id = report(
        http_server.route("/gallery", body=page, headers={"content-type": "text/html"})
    )

    assert process(target_id).status == TargetStatus.queued

    target = shown(target_id)
    served = [hashlib.sha256(body).hexdigest() for body in bodies]
    assert sorted(m["sha256"] for m in target["media"]) == sorted(served)
    # The copy is one media item; its sighting keeps the last link to it on the page.
    urls = {m["sha256"]: m["url"] for m in target["media"]}
    assert urls == {
        sha256: http_server.url("/copy/3.jpg" if i == 3 else f"/img/{i}.jpg")
        for i, sha256 in enumerate(served)
    }
    assert target["broken_links"] == {"http_error_404": 1}
    assert target["reason"] is None
    with Session(committed) as session:
        sightings = (
            session.execute(select(Sighting).where(col(Sighting.target_id) == target_id))
            .scalars()
            .all()
        )
    assert len(sightings) == 10
    assert all(s.hosting_ip == "127.0.0.1" and s.online for s in sightings)


def loaded_near_duplicates() -> NearDuplicates:
    """A near-duplicate view with the hashes loaded now, and not again for an hour: no
    refresh of them among the statements a test counts."""
    near = NearDuplicates(phash_radius=8, pdq_radius=31, pdq_min_quality=50, refresh_seconds=3600)
    with session_scope() as session:
        near.refresh(session, force=True)
    return near


@contextmanager
def counting_statements(engine: Engine) -> Iterator[list[int]]:
    """Counts the statements sent through ``engine`` within the block (in ``[0]``)."""
    counted = [0]

    def count(*_: Any) -> None:
        counted[0] += 1

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield counted
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_a_page_is_recorded_in_as_many_statements_for_thirty_media_as_for_three(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome], committed: Engine
) -> None:
    """Recording a page costs the database a fixed number of statements, however many
    media it shows: each kind of fact (media, sightings, exact matches) is written or
    looked up for all media at once."""
    by_md5, by_sha1, earlier = (images.jpeg(200 + i, (160, 120)) for i in range(3))
    listing = (
        "sha1,md5,category\n"
        f",{hashlib.md5(by_md5).hexdigest()},1\n"  # noqa: S324 (what lists are keyed on)
        f"{hashlib.sha1(by_sha1).hexdigest()},,2\n"  # noqa: S324
    )
    with session_scope() as session:
        import_list(session, io.BytesIO(listing.encode()), list_name="vic")
    for name, body in (("md5", by_md5), ("sha1", by_sha1), ("earlier", earlier)):
        http_server.route(f"/{name}.jpg", body=body, headers=JPEG)
    process(report(http_server.url("/earlier.jpg")))

    def page(name: str, fresh: int) -> int:
        tags = ['<img src="/md5.jpg">', '<img src="/sha1.jpg">', '<img src="/earlier.jpg">']
        for i in range(fresh):
            path = f"/{name}/{i}.jpg"
            http_server.route(
                path, body=images.jpeg(300 + 100 * fresh + i, (160, 120)), headers=JPEG
            )
            tags.append(f'<img src="{path}">')
        # The first fresh picture again under another URL: the later link is kept.
        http_server.add(f"/{name}/again.jpg", http_server.routes[f"/{name}/0.jpg"])
        tags.append(f'<img src="/{name}/again.jpg">')
        body = f"<html><body>{''.join(tags)}</body></html>".encode()
        return report(http_server.route(f"/{name}.html", body=body))

    near = loaded_near_duplicates()
    statements = {}
    for name, fresh in (("small", 1), ("large", 28)):
        target_id = page(name, fresh)
        with counting_statements(committed) as counted:
            assert process(target_id, near=near).status == TargetStatus.queued
        statements[name] = counted[0]

        target = shown(target_id)
        assert len(target["media"]) == 3 + fresh
        assert target["priority_reasons"][0] == "exact match to known list: vic"
        matched = {
            m["sha256"]: {(x["source"], x["hash_type"]) for x in m["matches"]}
            for m in target["media"]
        }
        assert matched[hashlib.sha256(by_md5).hexdigest()] >= {("vic", "md5")}
        assert matched[hashlib.sha256(by_sha1).hexdigest()] >= {("vic", "sha1")}
        assert ("seen", "sha256") in matched[hashlib.sha256(earlier).hexdigest()]
        urls = {m["url"] for m in target["media"]}
        assert http_server.url(f"/{name}/again.jpg") in urls
        assert http_server.url(f"/{name}/0.jpg") not in urls
    assert statements["large"] == statements["small"], statements


def test_near_copies_on_a_page_are_checked_in_as_many_statements_for_thirty_as_for_one(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome], committed: Engine
) -> None:
    """A page of copies of pictures seen before (the most urgent kind: a gallery of
    known material, re-encoded) has every media item's near hits checked in the
    database together, not one statement per media item and hash type."""
    originals = [images.jpeg(500 + i, (160, 120)) for i in range(29)]
    tags = []
    for i, body in enumerate(originals):
        tags.append(
            f'<img src="{http_server.route(f"/original/{i}.jpg", body=body, headers=JPEG)}">'
        )
    process(report(http_server.route("/originals.html", body="".join(tags).encode())))

    def page(name: str, which: range) -> int:
        tags = []
        for i in which:
            copy = images.jpeg(500 + i, (160, 120), quality=60)  # the same picture re-encoded
            tags.append(
                f'<img src="{http_server.route(f"/{name}/{i}.jpg", body=copy, headers=JPEG)}">'
            )
        return report(http_server.route(f"/{name}.html", body="".join(tags).encode()))

    near = loaded_near_duplicates()
    statements = {}
    for name, which in (("one", range(1)), ("many", range(1, 29))):
        target_id = page(name, which)
        with counting_statements(committed) as counted:
            assert process(target_id, near=near).status == TargetStatus.queued
        statements[name] = counted[0]
        media = shown(target_id)["media"]
        assert len(media) == len(which)
        for item in media:
            assert {(m["source"], m["kind"]) for m in item["matches"]} == {("seen", "near")}
    assert statements["many"] == statements["one"], statements


def test_a_jpeg_served_as_html_is_hashed_as_an_image(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    picture = images.jpeg(7, marker=images.new_marker())
    target_id = report(
        http_server.route("/page.html", body=picture, headers={"content-type": "text/html"})
    )
    process(target_id)
    [media] = shown(target_id)["media"]
    assert (media["mime"], media["sha256"]) == ("image/jpeg", hashlib.sha256(picture).hexdigest())
    # Decoded as the picture it is: perceptual hashes, the picture's size.
    assert media["kind"] == "image"
    assert (media["width"], media["height"]) == (640, 480)
    expected = hash_media(picture)
    assert expected.phash is not None
    assert (media["phash"], media["pdq"]) == (expected.phash, expected.pdq)


def test_pages_that_browsers_show_their_pictures_in_are_read_as_such(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    """An SVG's <image> elements, a page that begins with an <svg>, a page whose charset
    only the Content-Type header names: each shows its pictures, which are fetched."""
    pictures = [images.jpeg(200 + i, (320, 240), marker=images.new_marker()) for i in range(3)]
    for i, picture in enumerate(pictures):  # requested as /фото/{i}.jpg in UTF-8
        http_server.route(f"/%D1%84%D0%BE%D1%82%D0%BE/{i}.jpg", body=picture, headers=JPEG)
    served = {hashlib.sha256(picture).hexdigest() for picture in pictures}
    svg = (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" '
        b'xmlns:xlink="http://www.w3.org/1999/xlink" width="320" height="240">'
        b'<image xlink:href="/%D1%84%D0%BE%D1%82%D0%BE/0.jpg" width="320" height="240"/>'
        b'<a href="/%D1%84%D0%BE%D1%82%D0%BE/1.jpg"><text>a link, not a picture</text></a>'
        b"</svg>"
    )
    wrapper = report(
        http_server.route("/wrapper.svg", body=svg, headers={"content-type": "image/svg+xml"})
    )
    svg_first = (
        b'<svg style="display:none"><symbol id="i"></symbol></svg><!doctype html><html><body>'
        + b"".join(f'<img src="/фото/{i}.jpg">'.encode() for i in range(3))
        + b"</body></html>"
    )
    hidden = report(http_server.route("/svg-first", body=svg_first, headers={}))
    cyrillic = "".join(f'<img src="/фото/{i}.jpg">' for i in range(3)).encode("cp1251")
    legacy = report(
        http_server.route(
            "/cp1251", body=cyrillic, headers={"content-type": "text/html; charset=windows-1251"}
        )
    )
    for target_id in (wrapper, hidden, legacy):
        assert process(target_id).status == TargetStatus.queued

    shown_wrapper = shown(wrapper)
    assert {m["mime"] for m in shown_wrapper["media"]} == {"image/svg+xml", "image/jpeg"}
    assert {m["sha256"] for m in shown_wrapper["media"] if m["mime"] == "image/jpeg"} == {
        hashlib.sha256(pictures[0]).hexdigest()
    }
    assert {m["sha256"] for m in shown(hidden)["media"] if m["mime"] == "image/jpeg"} == served
    assert {m["sha256"] for m in shown(legacy)["media"]} == served
    assert not shown(legacy)["broken_links"]


def test_a_gallery_naming_its_pictures_only_for_search_engines_and_in_css_is_hashed(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    """No <img> at all: the full picture named in JSON-LD, a preloaded one, one shown as
    a pseudo-element's CSS content. Each is fetched and hashed."""
    pictures = [images.jpeg(230 + i, (320, 240), marker=images.new_marker()) for i in range(3)]
    for i, picture in enumerate(pictures):
        http_server.route(f"/g/{i}.jpg", body=picture, headers=JPEG)
    html = (
        b'<html><head><script type="application/ld+json">'
        b'{"@context": "https://schema.org", "@type": "ImageObject",'
        b' "contentUrl": "/g/0.jpg", "name": "photo"}</script>'
        b'<link rel="preload" as="image" href="/g/1.jpg">'
        b"<style>.photo::after { content: url(/g/2.jpg) }</style></head>"
        b'<body><div class="photo"></div></body></html>'
    )
    gallery = report(http_server.route("/gallery", body=html, headers={}))

    assert process(gallery).status == TargetStatus.queued
    assert {m["sha256"] for m in shown(gallery)["media"]} == {
        hashlib.sha256(picture).hexdigest() for picture in pictures
    }


def test_the_same_picture_altered_elsewhere_is_a_near_duplicate(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    versions = images.variants(21)
    first = report(http_server.route("/original.jpg", body=versions["original"], headers=JPEG))
    process(first)
    original_sha = shown(first)["media"][0]["sha256"]
    for name in ("reencoded", "resized", "cropped"):
        target_id = report(
            http_server.route(f"/elsewhere/{name}.jpg", body=versions[name], headers=JPEG)
        )
        process(target_id)
        target = shown(target_id)
        [media] = target["media"]
        near = [m for m in media["matches"] if m["kind"] == "near" and m["source"] == "seen"]
        assert near, f"{name} not recognised"
        # Earlier variants are near duplicates too; the original must be among them.
        assert original_sha in {m["media_sha256"] for m in near}
        assert "1 media item(s) near to media seen before" in target["priority_reasons"]


def seen_before(phashes: list[str], *, at: dt.datetime | None = None) -> list[str]:
    """Media seen here before (pHash only; first seen ``at``, or now), in this order of
    ids: their SHA-256s."""
    rows = []
    with session_scope() as session:
        for n, phash in enumerate(phashes):
            seed = f"seen-before-{n}-{phash}".encode()
            rows.append(
                Media(
                    sha256=hashlib.sha256(seed).hexdigest(),
                    sha1=hashlib.sha1(seed).hexdigest(),  # noqa: S324 - a list key, not security
                    md5=hashlib.md5(seed).hexdigest(),  # noqa: S324
                    phash=phash,
                    mime="image/jpeg",
                    kind=MediaKind.image,
                    size=1000,
                    width=64,
                    height=48,
                    **({"first_seen_at": at, "last_seen_at": at} if at else {}),
                )
            )
            session.add(rows[-1])
            session.flush()
        return [row.sha256 for row in rows]


def test_a_picture_seen_many_times_records_its_nearest_copies_only(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    """Each copy of a picture seen N times would add N rows: only the nearest are kept
    (HOTLINE_NEAR_MATCH_LIMIT, here 3), the earliest first among equals, and showing the
    picture again adds none unless a nearer copy came meanwhile."""
    picture = images.jpeg(31, (320, 240), marker=images.new_marker())
    phash = hash_media(picture).phash
    assert phash is not None
    copies = seen_before([_flip(phash, d) for d in (6, 2, 5, 2, 7, 1, 2)])
    near = NearDuplicates(
        phash_radius=8, pdq_radius=31, pdq_min_quality=50, refresh_seconds=0, near_limit=3
    )

    def seen_matches(target_id: int) -> list[tuple[int, str]]:
        [media] = shown(target_id)["media"]
        return sorted(
            (m["distance"], m["media_sha256"])
            for m in media["matches"]
            if (m["source"], m["kind"]) == ("seen", "near")
        )

    first = report(http_server.route("/popular/1.jpg", body=picture, headers=JPEG))
    process(first, near=near)
    # Distance 1, and the first two of the three at distance 2.
    nearest = [(1, copies[5]), (2, copies[1]), (2, copies[3])]
    assert seen_matches(first) == sorted(nearest)
    assert "1 media item(s) near to media seen before" in shown(first)["priority_reasons"]

    # Shown again elsewhere, with more copies, none nearer: nothing more is recorded.
    seen_before([_flip(phash, 2), _flip(phash, 4)])
    again = report(http_server.route("/popular/2.jpg", body=picture, headers=JPEG))
    process(again, near=near)
    assert seen_matches(again) == sorted(nearest)
    # A nearer copy is: it is among the nearest now.
    [exact_copy] = seen_before([phash])
    third = report(http_server.route("/popular/3.jpg", body=picture, headers=JPEG))
    process(third, near=near)
    assert seen_matches(third) == sorted([(0, exact_copy), *nearest])


def test_copies_new_on_one_page_leave_room_for_a_copy_seen_before(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    """Three re-encodings of a picture on one page are nearer to each other than to a
    copy seen before; they do not match each other (not seen before), and must not take
    the places (HOTLINE_NEAR_MATCH_LIMIT, here 2) of the one seen before either."""
    bodies = [
        images.jpeg(32, (320, 240), quality=70 + 10 * n, marker=images.new_marker())
        for n in range(3)
    ]
    phash = hash_media(bodies[0]).phash
    assert phash is not None
    [older] = seen_before([_flip(phash, 5)])
    tags = "".join(
        f'<img src="{http_server.route(f"/crowd/{n}.jpg", body=body, headers=JPEG)}">'
        for n, body in enumerate(bodies)
    )
    target_id = report(
        http_server.route(
            "/crowd/", body=f"<html><body>{tags}</body></html>".encode(), headers=PAGE
        )
    )
    near = NearDuplicates(
        phash_radius=8, pdq_radius=31, pdq_min_quality=50, refresh_seconds=0, near_limit=2
    )
    process(target_id, near=near)
    target = shown(target_id)
    assert len(target["media"]) == 3
    for media in target["media"]:
        seen = {m["media_sha256"] for m in media["matches"] if m["source"] == "seen"}
        assert seen == {older}
    assert "3 media item(s) near to media seen before" in target["priority_reasons"]


def test_a_list_with_many_entries_near_a_picture_gives_its_nearest(
    http_server: LocalHTTPServer,
    process: Callable[..., service.Outcome],
    backend_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A list (or the hotline's own, after many confirmations) holding many entries near
    one picture: a copy records the nearest of each list (HOTLINE_NEAR_MATCH_LIMIT,
    here 2), whether the list came first or the copy did; every list is still named."""
    seen, new = (images.jpeg(seed, (320, 240), marker=images.new_marker()) for seed in (33, 34))
    seen_phash, new_phash = hash_media(seen).phash, hash_media(new).phash
    assert seen_phash
    assert new_phash
    limited = {**backend_env, "HOTLINE_NEAR_MATCH_LIMIT": "2"}
    near = NearDuplicates(
        phash_radius=8, pdq_radius=31, pdq_min_quality=50, refresh_seconds=0, near_limit=2
    )
    seen_first = report(http_server.route("/dense/seen.jpg", body=seen, headers=JPEG))
    process(seen_first, near=near)

    def dense_list(name: str, phashes: list[str]) -> None:
        path = tmp_path / f"{name}.csv"
        path.write_text("phash\n" + "".join(f"{value}\n" for value in phashes))
        hashes_cli(limited, "import", str(path), "--list", name)

    # Four entries near each picture on one list, one on another.
    dense_list("dense", [_flip(p, bits) for p in (seen_phash, new_phash) for bits in (4, 1, 3, 2)])
    dense_list("sparse", [_flip(p, 6) for p in (seen_phash, new_phash)])
    new_later = report(http_server.route("/dense/new.jpg", body=new, headers=JPEG))
    process(new_later, near=near)

    for target_id in (seen_first, new_later):  # matched by the import, by the worker
        target = shown(target_id)
        [media] = target["media"]
        assert sorted((m["source"], m["distance"]) for m in media["matches"]) == [
            ("dense", 1),
            ("dense", 2),
            ("sparse", 6),
        ]
        assert any(
            "dense" in reason and "sparse" in reason for reason in target["priority_reasons"]
        )


class NearOwnEntries:
    """A picture reported after the own list got entries near it, at these distances
    (pHash bits), and processed with a near-match limit of 2."""

    def __init__(
        self, http_server: LocalHTTPServer, process: Callable[..., Any], bits: list[int]
    ) -> None:
        picture = images.jpeg(35, (320, 240), marker=images.new_marker())
        phash = hash_media(picture).phash
        assert phash
        self.keys = [hashlib.sha256(f"confirmed-{n}".encode()).hexdigest() for n in bits]
        with session_scope() as session:
            self.own = int(own_list(session, now=utcnow()).id or 0)
            entries = [
                {"sha256": key, "phash": _flip(phash, n), "category": "csam", "added_at": utcnow()}
                for key, n in zip(self.keys, bits, strict=True)
            ]
            add_entries(session, self.own, entries)
        self.near = NearDuplicates(
            phash_radius=8, pdq_radius=31, pdq_min_quality=50, refresh_seconds=0, near_limit=2
        )
        self.target_id = report(http_server.route("/own/a.jpg", body=picture, headers=JPEG))
        process(self.target_id, near=self.near)
        [self.media_id] = [m["id"] for m in shown(self.target_id)["media"]]

    def matched(self) -> list[int]:
        """The distances of the picture's matches to the own list, as the item shows."""
        [media] = shown(self.target_id)["media"]
        return sorted(m["distance"] for m in media["matches"] if m["source"] != "seen")

    def match_again(self, lost: list[tuple[int, str]], removed: list[int]) -> None:
        """What the task a reversal sends does."""
        with session_scope() as session:
            service.match_own_list_again(
                session, lost, near=self.near, now=utcnow(), removed=removed
            )


def test_the_own_list_gives_its_nearest_entries_and_the_next_ones_when_some_go(
    http_server: LocalHTTPServer,
    process: Callable[..., service.Outcome],
    configure: Callable[..., None],
) -> None:
    """The hotline's own list is cut to the nearest (here 2) as any list is; when entries
    go (a reversal), the media that lost a near match to them get the next nearest."""
    configure(near_match_limit=2)
    copy = NearOwnEntries(http_server, process, [1, 2, 4, 5])
    assert copy.matched() == [1, 2]
    with session_scope() as session:  # as a reversal of the nearest copy's verdict
        removed = remove_entries(session, copy.own, copy.keys[:1])
        assert removed[:3] == (1, [copy.media_id], [(copy.media_id, "phash")])
    copy.match_again(removed.near, removed.ids)
    assert copy.matched() == [2, 4]
    copy.match_again(removed.near, removed.ids)  # a message delivered twice: nothing more
    assert copy.matched() == [2, 4]

    # An id an entry holds again (SQLite hands out the newest rows' ids again): its
    # matches are no leftovers of the reversal.
    def rows() -> list[int]:
        with session_scope() as session:
            return sorted(
                session.execute(
                    select(col(MediaMatch.id)).where(col(MediaMatch.media_id) == copy.media_id)
                ).scalars()
            )

    with session_scope() as session:  # the entry at distance 2, still on the list
        held = session.execute(
            select(col(MediaMatch.known_entry_id)).where(
                col(MediaMatch.media_id) == copy.media_id, col(MediaMatch.distance) == 2
            )
        ).scalar_one()
    before = rows()
    copy.match_again([], [held])
    assert rows() == before  # (not dropped and found again: an exact match would not be)
    with session_scope() as session:  # an entry that no media item matched: no change
        assert remove_entries(session, copy.own, copy.keys[3:])[:3] == (1, [], [])


def test_a_match_recorded_while_a_reversal_committed_goes_with_the_entry(
    http_server: LocalHTTPServer,
    process: Callable[..., service.Outcome],
    configure: Callable[..., None],
) -> None:
    """A worker read the nearest entry before a reversal removed it, and recorded its
    match after the reversal had dropped the entry's matches: the task the reversal
    sends, a while later, drops that match too and gives the next nearest."""
    configure(near_match_limit=2)
    copy = NearOwnEntries(http_server, process, [1, 2, 4])
    with session_scope() as session:
        [entry_id] = remove_entries(session, copy.own, copy.keys[:1]).ids
    with session_scope() as session:  # the worker's match, committed after the reversal
        late = match_row(
            media_id=copy.media_id,
            kind="near",
            hash_type="phash",
            distance=1,
            list_id=copy.own,
            known_entry_id=entry_id,
            found_at=utcnow(),
        )
        add_matches(session, [late])
    assert copy.matched() == [1, 2]  # a reversed picture still named
    copy.match_again([], [entry_id])
    assert copy.matched() == [2, 4]


def test_a_list_near_a_picture_and_a_frame_of_it_alike_is_matched_once(
    committed: Engine,
) -> None:
    """An animation whose later frame has the item's own pHash, one entry near both at
    one distance: the import records one match, to the item's own hash."""
    phash = "8f373714acfcf4d0"
    with session_scope() as session:
        media = Media(
            sha256=hashlib.sha256(b"frames alike").hexdigest(),
            sha1=hashlib.sha1(b"frames alike").hexdigest(),  # noqa: S324 - a list key
            md5=hashlib.md5(b"frames alike").hexdigest(),  # noqa: S324
            phash=phash,
            mime="image/gif",
            kind=MediaKind.image,
            size=1,
        )
        session.add(media)
        session.flush()
        session.add(
            MediaFrame(media_id=media.id, frame=2, phash=phash, pdq="ab" * 32, pdq_quality=90)
        )
        import_list(session, io.BytesIO(f"phash\n{_flip(phash, 3)}\n".encode()), list_name="alike")
        seen = match_seen_media(session, _list_id(session, "alike"), now=utcnow())
        assert (seen.media, seen.near) == (1, 1)
        [match] = session.execute(select(MediaMatch)).scalars().all()
        assert (match.distance, match.frame) == (3, None)


def test_pages_without_pictures_are_queued_as_such_whatever_they_start_with(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    """A page is a page for the analyst (no_media_found), not not_media, when the server
    says text/html though its first tag tells nothing, or when it is UTF-16."""
    html = {"content-type": "text/html; charset=utf-8"}
    pages = [
        report(http_server.route("/h2", body=b"<h2>Gallery</h2><p>closed</p>", headers=html)),
        report(http_server.route("/center", body=b"<center>nothing here</center>", headers=html)),
        report(http_server.route("/plain", body=b"Only words, no markup.", headers=html)),
        report(http_server.route("/utf16", body="<div>слова</div>".encode("utf-16"), headers={})),
    ]
    for target_id in pages:
        assert process(target_id).status == TargetStatus.queued
        assert shown(target_id)["reason"] == "no_media_found"
    # Without the header, bytes that no browser takes for a page stay not_media.
    unknown = report(http_server.route("/unknown", body=b"<h2>x</h2>", headers={}))
    assert process(unknown).status == TargetStatus.unreachable
    assert shown(unknown)["reason"] == "not_media"


def test_a_page_padded_past_the_body_cap_is_read_as_far_as_the_cap(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    """30 MB of spaces after the pictures, 30 kB on the wire with gzip: the pictures are
    found and the analyst is told the page was read only in part."""
    pictures = [images.jpeg(210 + i, (320, 240), marker=images.new_marker()) for i in range(2)]
    for i, picture in enumerate(pictures):
        http_server.route(f"/padded/{i}.jpg", body=picture, headers=JPEG)
    page = b'<html><body><img src="/padded/0.jpg"><img src="/padded/1.jpg">'
    body = gzip.compress(page + b" " * 30_000_000, compresslevel=1)
    headers = {"content-type": "text/html", "content-encoding": "gzip"}
    target_id = report(http_server.route("/padded/", body=body, headers=headers))

    assert process(target_id).status == TargetStatus.queued

    target = shown(target_id)
    assert target["reason"] == "page_truncated"
    assert {m["sha256"] for m in target["media"]} == {
        hashlib.sha256(p).hexdigest() for p in pictures
    }
    analyst = TestClient(create_app(), client=("127.0.0.1", 50005))
    with analyst:
        enrol(analyst, "ana@padded.example", Role.analyst)
        page_view = LexborHTMLParser(analyst.get(f"/staff/targets/{target_id}").text)
    assert page_view.css_first("#page-truncated") is not None
    # Read in part and every link failed: the analyst is told the links failed.
    dead = b'<html><body><img src="/padded/gone.jpg">' + b" " * 30_000_000
    headers = {"content-type": "text/html", "content-encoding": "gzip"}
    failed = report(
        http_server.route("/dead/", body=gzip.compress(dead, compresslevel=1), headers=headers)
    )
    assert process(failed).status == TargetStatus.queued
    assert shown(failed)["broken_links"] == {"http_error_404": 1}
    with analyst:
        text = analyst.get(f"/staff/targets/{failed}").text
    assert "none of them could be fetched" in text


def test_pictures_a_page_carries_in_itself_are_hashed_and_not_kept(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    """data: pictures (base64, or percent-escaped) are hashed like fetched ones and
    recorded under the page's URL with their SHA-256, never their data; a 1x1 GIF
    placeholder and an inline SVG icon are left out."""
    photos = [images.jpeg(220 + i, (320, 240), marker=images.new_marker()) for i in range(2)]
    spacer = images.gif(1, (1, 1))
    inline = [
        "data:image/jpeg;base64," + base64.b64encode(photos[0]).decode(),
        "DATA:Image/JPEG," + urllib.parse.quote_from_bytes(photos[1]),
        "data:image/gif;base64," + base64.b64encode(spacer).decode(),
        "data:image/svg+xml,%3Csvg%20xmlns='http://www.w3.org/2000/svg'/%3E",
    ]
    page = "".join(f'<img src="{link}">' for link in inline).encode()
    url = http_server.route("/carried", body=page, headers={"content-type": "text/html"})
    target_id = report(url)

    assert process(target_id).status == TargetStatus.queued

    target = shown(target_id)
    digests = [hashlib.sha256(photo).hexdigest() for photo in photos]
    assert sorted((m["sha256"], m["url"]) for m in target["media"]) == sorted(
        (digest, f"{url}#hotline-inline-sha256={digest}") for digest in digests
    )
    assert all(m["phash"] and m["hosting"]["ip"] == "127.0.0.1" for m in target["media"])
    assert target["reason"] is None
    assert not target["broken_links"]


def test_near_copies_on_one_page_are_not_media_seen_before(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    versions = images.variants(22)
    for name in ("original", "reencoded", "resized"):
        http_server.route(f"/{name}.jpg", body=versions[name], headers=JPEG)
    body = b'<html><body><img src="/original.jpg"><img src="/reencoded.jpg"></body></html>'
    both = report(http_server.route("/both.html", body=body))
    process(both)
    target = shown(both)
    assert len(target["media"]) == 2
    assert all(m["matches"] == [] for m in target["media"])
    assert not any("seen before" in reason for reason in target["priority_reasons"])

    # Another target showing the picture again finds both as seen before.
    later = report(http_server.url("/resized.jpg"))
    process(later)
    [media] = shown(later)["media"]
    near = {m["media_sha256"] for m in media["matches"] if m["source"] == "seen"}
    assert near == {m["sha256"] for m in target["media"]}
    assert "1 media item(s) near to media seen before" in shown(later)["priority_reasons"]


def test_a_known_picture_shown_as_a_later_frame_of_an_animation_is_found(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome], client: Any
) -> None:
    """A GIF whose first frame is harmless and whose third frame is a picture on a
    partner's list, or seen here before: the near match is found through that frame,
    and the target ranks as a near match to confirmed media."""
    size = (200, 150)
    harmless, known, seen, other = images.frames(90, size, 4)
    known_alone = hash_media(images.encode(known, "PNG"))
    assert known_alone.phash
    assert known_alone.pdq
    with session_scope() as session:
        import_list(
            session,
            io.BytesIO(
                f"phash,pdq,category\n{_flip(known_alone.phash, 2)},"
                f"{_flip(known_alone.pdq, 10)},1\n".encode()
            ),
            list_name="partner-frames",
        )
    still = report(
        http_server.route("/frames/still.png", body=images.encode(seen, "PNG"), headers=JPEG)
    )
    process(still)
    [still_media] = shown(still)["media"]

    animation = images.encode(
        harmless, "GIF", save_all=True, append_images=[other, known, seen], duration=100
    )
    target_id = report(
        http_server.route(
            "/frames/animation.gif", body=animation, headers={"content-type": "image/gif"}
        )
    )
    assert process(target_id).status == TargetStatus.queued
    target = shown(target_id)
    [media] = target["media"]
    assert media["frames"] == 4
    assert [f["frame"] for f in media["frame_hashes"]] == [1, 2, 3]
    by_source = {(m["source"], m["hash_type"]): m for m in media["matches"]}
    assert by_source[("partner-frames", "phash")]["frame"] == 2
    assert by_source[("partner-frames", "phash")]["distance"] <= 6
    assert by_source[("partner-frames", "pdq")]["frame"] == 2
    assert by_source[("seen", "phash")]["frame"] == 3
    assert by_source[("seen", "phash")]["media_sha256"] == still_media["sha256"]
    assert target["priority_reasons"][0] == "near match to confirmed media: partner-frames"
    assert "1 media item(s) near to media seen before" in target["priority_reasons"]
    # The analyst's item page says which frame matched.
    analyst = TestClient(create_app(), client=("127.0.0.1", 50003))
    with analyst:
        enrol(analyst, "ana@frames.example", Role.analyst)
        page = LexborHTMLParser(analyst.get(f"/staff/targets/{target_id}").text)
        listed = [li.text(strip=True) for li in page.css("ul.matches li")]
        assert any("partner-frames" in text and "frame 2" in text for text in listed), listed
        suggestions = page.css_first("p.suggestion")
        assert suggestions is not None
        assert "(frame 3)" in suggestions.text()
        # Each links to the safe view of that frame.
        links = {a.attributes.get("href") for a in page.css("a.frame-view")}
        view = f"/api/v1/targets/{target_id}/media/{media['id']}/view"
        assert links == {f"{view}?frame=2", f"{view}?frame=3"}

    # The other way round: a still picture shown earlier as frame 1 of the animation is
    # media seen before, through the frame the index holds for the animation.
    later = report(
        http_server.route("/frames/later.png", body=images.encode(other, "PNG"), headers=JPEG)
    )
    process(later)
    [still_later] = shown(later)["media"]
    assert {(m["source"], m["media_sha256"]) for m in still_later["matches"]} == {
        ("seen", media["sha256"])
    }
    assert "1 media item(s) near to media seen before" in shown(later)["priority_reasons"]
    # ... and so it is for an index loaded afresh (PostgreSQL: by COPY).
    other_alone = hash_media(images.encode(other, "PNG"))
    fresh = NearDuplicates(phash_radius=8, pdq_radius=31, pdq_min_quality=50, refresh_seconds=0)
    with session_scope() as session:
        found = fresh.lookup(
            session,
            phash=other_alone.phash,
            pdq=other_alone.pdq,
            pdq_quality=other_alone.pdq_quality,
        )
    assert {(m.media_id, m.hash_type) for m in found} >= {
        (media["id"], "phash"),
        (media["id"], "pdq"),
    }

    # With the first frame hashed only, as before: only the first frame, which is the
    # earlier animation's, is recognised; the list's picture is not.
    plain = report(http_server.route("/frames/again.gif", body=animation + b"\0", headers=JPEG))
    process(plain, limits=service.Limits(hashed_frames=1))
    [media] = shown(plain)["media"]
    assert media["frame_hashes"] == []
    assert {(m["source"], m["media_sha256"], m["frame"]) for m in media["matches"]} == {
        ("seen", target["media"][0]["sha256"], None)
    }
    assert not any("partner-frames" in reason for reason in shown(plain)["priority_reasons"])


def test_a_list_imported_later_finds_a_picture_shown_as_a_later_frame(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    size = (200, 150)
    frames = images.frames(95, size, 3)
    animation = images.encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    target_id = report(
        http_server.route(
            "/frames-later/a.gif", body=animation, headers={"content-type": "image/gif"}
        )
    )
    process(target_id)
    assert shown(target_id)["priority_reasons"] == ["new content"]
    listed = hash_media(images.encode(frames[2], "PNG"))
    assert listed.phash
    assert listed.pdq
    with session_scope() as session:
        summary = import_list(
            session,
            io.BytesIO(
                f"phash,pdq,category\n{_flip(listed.phash, 1)},{_flip(listed.pdq, 5)},1\n".encode()
            ),
            list_name="later-frames",
        )
        assert summary.added == 1
        seen = match_seen_media(session, int(_list_id(session, "later-frames")), now=utcnow())
    assert seen.media == 1
    assert seen.raised == [target_id]
    [media] = shown(target_id)["media"]
    assert sorted((m["source"], m["hash_type"], m["frame"]) for m in media["matches"]) == [
        ("later-frames", "pdq", 2),
        ("later-frames", "phash", 2),
    ]
    assert shown(target_id)["priority_reasons"][0] == "near match to confirmed media: later-frames"


def _list_id(session: Session, name: str) -> int:
    return int(
        session.execute(select(col(HashList.id)).where(col(HashList.name) == name)).scalar_one()
    )


def test_pictures_without_structure_are_no_near_duplicates_of_each_other(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    flat = images.featureless()
    phashes = {name: hash_media(body).phash or "" for name, body in flat.items()}
    # What is at stake: their pHashes lie within the radius of each other.
    spacer = int(phashes["spacer"], 16)
    assert all((int(value, 16) ^ spacer).bit_count() <= 8 for value in phashes.values())
    targets = {
        name: report(http_server.route(f"/flat/{name}", body=body)) for name, body in flat.items()
    }
    with session_scope() as session:  # a list carrying a flat picture's pHash
        import_list(
            session, io.BytesIO(f"phash,category\n{phashes['grey']},1\n".encode()), list_name="flat"
        )
    for target_id in targets.values():
        process(target_id)
    for name, target_id in targets.items():
        target = shown(target_id)
        assert target["media"][0]["phash"] == phashes[name]  # kept, but not matched
        assert target["media"][0]["matches"] == [], name
        assert target["priority_reasons"] == ["new content"], name
    # The same spacer on another target is the same file, but says nothing: no "seen
    # before" tier (the workers' ranking and the ranking again from the database agree).
    again = report(http_server.route("/flat/spacer-again.gif", body=flat["spacer"]))
    process(again)
    assert shown(again)["priority_reasons"] == ["new content"]
    with session_scope() as session:
        target = session.get(Target, again)
        assert target is not None
        assert rerank_facts(session, target).seen_copies == set()
    # Nor does a list imported later find them.
    with session_scope() as session:
        import_list(
            session,
            io.BytesIO(f"phash,category\n{phashes['banner']},1\n".encode()),
            list_name="flat-later",
        )
        listed = session.execute(select(HashList).where(col(HashList.name) == "flat-later"))
        list_id = int(listed.scalar_one().id or 0)
        assert match_seen_media(session, list_id, now=utcnow()).media == 0

    # A picture with structure among them is recognised as ever.
    versions = images.variants(24)
    first = report(http_server.route("/flat/original.jpg", body=versions["original"]))
    copy = report(http_server.route("/flat/resized.jpg", body=versions["resized"]))
    process(first)
    process(copy)
    [media] = shown(copy)["media"]
    assert {(m["source"], m["hash_type"]) for m in media["matches"]} >= {("seen", "phash")}


def test_priority_counts_media_seen_before_and_reports_that_come_later(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    picture = images.jpeg(41, (320, 240), marker=images.new_marker())
    first = report(http_server.route("/first.jpg", body=picture, headers=JPEG))
    process(first)
    assert (shown(first)["priority"], shown(first)["priority_reasons"]) == (101, ["new content"])

    # The same bytes on another target: seen before, as a near duplicate would be.
    again = report(http_server.route("/again.jpg", body=picture, headers=JPEG))
    process(again)
    assert shown(again)["priority_reasons"] == ["1 media item(s) seen before on another target"]
    assert shown(again)["priority"] > shown(first)["priority"]

    # One page showing a new picture under two URLs has seen nothing before.
    twice = images.jpeg(42, (320, 240), marker=images.new_marker())
    http_server.route("/p/a.jpg", body=twice, headers=JPEG)
    http_server.route("/p/b.jpg", body=twice, headers=JPEG)
    page = b'<html><body><img src="/p/a.jpg"><img src="/p/b.jpg"></body></html>'
    paged = report(http_server.route("/p/", body=page, headers={"content-type": "text/html"}))
    process(paged)
    assert shown(paged)["priority_reasons"] == ["new content"]

    # Reports after processing still move the target up, one step each.
    for _ in range(5):
        assert report(http_server.url("/first.jpg")) == first
    assert shown(first)["priority"] == 106
    assert shown(first)["priority_reasons"] == ["new content", "reported 6 times"]
    with session_scope() as session:
        order = session.execute(
            select(col(Target.id))
            .where(col(Target.id).in_([first, again]))
            .order_by(col(Target.priority).desc())
        ).scalars()
        assert list(order) == [again, first]  # a tier is worth more than five reports


def test_ranking_again_from_the_database_gives_what_the_workers_gave(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    versions = images.variants(61)
    known = images.jpeg(62, marker=images.new_marker())
    with session_scope() as session:
        listing = f"md5\n{hashlib.md5(known).hexdigest()}\n"  # noqa: S324
        import_list(session, io.BytesIO(listing.encode()), list_name="rank-list")
    html = {"content-type": "text/html"}
    urls = [
        http_server.route("/r/original.jpg", body=versions["original"], headers=JPEG),
        http_server.route("/r/copy.jpg", body=versions["original"], headers=JPEG),
        http_server.route("/r/resized.jpg", body=versions["resized"], headers=JPEG),
        http_server.route("/r/known.jpg", body=known, headers=JPEG),
        http_server.route("/r/empty", body=b"<html><body><p>text</p></body></html>", headers=html),
    ]
    ids = []
    for url in urls:
        ids.append(report(url))
        process(ids[-1])
    report(urls[0])  # reported again after processing
    before = {i: (shown(i)["priority"], shown(i)["priority_reasons"]) for i in ids}
    assert len({tuple(reasons) for _, reasons in before.values()}) == 5  # five situations

    with session_scope() as session:
        assert rerank(session, ids) == []
    assert {i: (shown(i)["priority"], shown(i)["priority_reasons"]) for i in ids} == before


def test_an_exact_hash_from_a_known_list_ranks_first(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome], committed: Engine
) -> None:
    known = images.jpeg(31, marker=images.new_marker())
    listing = f"sha256,category\n{hashlib.sha256(known).hexdigest()},1\n{'ab' * 32},2\n"
    with session_scope() as session:
        summary = import_list(session, io.BytesIO(listing.encode()), list_name="national-list")
    assert summary.added == 2
    plain = report(http_server.route("/plain.jpg", body=images.jpeg(32), headers=JPEG))
    matched = report(http_server.route("/known.jpg", body=known, headers=JPEG))
    process(plain)
    process(matched)

    target = shown(matched)
    assert target["priority"] > shown(plain)["priority"]
    assert target["priority_reasons"][0] == "exact match to known list: national-list"
    assert {
        "source": "national-list",
        "kind": "exact",
        "hash_type": "sha256",
        "distance": 0,
        "media_sha256": None,
        "frame": None,
    } in target["media"][0]["matches"]
    with session_scope() as session:
        queue = (
            session.execute(select(col(Target.id)).order_by(col(Target.priority).desc()))
            .scalars()
            .all()
        )
    assert queue[0] == matched

    # A disabled list no longer counts.
    with session_scope() as session:
        session.execute(HashList.__table__.update().values(enabled=False))  # type: ignore[attr-defined]
    assert shown(matched)["media"][0]["matches"] == []


def hashes_cli(backend_env: dict[str, str], *args: str) -> str:
    """``hotline hashes ARGS`` as an operator runs it; its stdout (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-m", "hotline.cli_hashes", *args],
        env={**os.environ, **backend_env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_list_imported_later_finds_the_media_seen_before(
    http_server: LocalHTTPServer,
    process: Callable[..., service.Outcome],
    backend_env: dict[str, str],
    tmp_path: Path,
) -> None:
    on_list = images.jpeg(51, (320, 240), marker=images.new_marker())
    listed = report(http_server.route("/listed.jpg", body=on_list, headers=JPEG))
    other = report(http_server.route("/other.jpg", body=images.jpeg(52), headers=JPEG))
    process(listed)
    process(other)
    before = shown(other)
    with session_scope() as session:
        if session.execute(select(HashList).where(col(HashList.own))).first() is None:
            session.add(HashList(name="hotline", own=True))  # truncated by earlier tests

    # Keyed by SHA-1, as Project VIC and ICSE lists are.
    path = tmp_path / "late.csv"
    path.write_text(f"sha1,category\n{hashlib.sha1(on_list).hexdigest()},1\n")  # noqa: S324

    def run(*args: str) -> str:
        return hashes_cli(backend_env, *args)

    def run_import() -> str:
        return run("import", str(path), "--list", "late")

    assert "1 media item seen here before are on the list: 1 queued target moved up" in (
        run_import()
    )
    target = shown(listed)
    assert target["priority"] == 1001  # the exact-match tier, the same one-media bonus
    assert target["priority_reasons"] == ["exact match to known list: late"]
    [media] = target["media"]
    assert [(m["source"], m["kind"], m["hash_type"]) for m in media["matches"]] == [
        ("late", "exact", "sha1")
    ]
    assert shown(other) == before
    with session_scope() as session:
        order = session.execute(
            select(col(Target.id)).order_by(col(Target.priority).desc())
        ).scalars()
        assert next(iter(order)) == listed

    # The same list again: nothing found twice, nothing moved again.
    assert "seen here before" not in run_import()
    assert len(shown(listed)["media"][0]["matches"]) == 1
    assert shown(listed)["priority"] == 1001

    # Disabled, the list no longer ranks the target; enabled again, it does.
    assert "1 queued target ranked again" in run("disable", "late")
    assert (shown(listed)["priority"], shown(listed)["priority_reasons"]) == (101, ["new content"])
    assert "1 queued target ranked again" in run("enable", "late")
    assert shown(listed)["priority"] == 1001
    assert "1 queued target ranked again" in run("remove", "late", "--yes")
    assert shown(listed)["priority"] == 101


def _flip(value: str, bits: int) -> str:
    """The hex hash with its lowest ``bits`` bits inverted: at that Hamming distance."""
    return f"{int(value, 16) ^ ((1 << bits) - 1):0{len(value)}x}"


def test_a_list_imported_later_finds_near_duplicates_of_media_seen_before(
    http_server: LocalHTTPServer,
    process: Callable[..., service.Outcome],
    backend_env: dict[str, str],
    tmp_path: Path,
) -> None:

    pictures = [images.jpeg(71 + i, (320, 240), marker=images.new_marker()) for i in range(3)]
    first, second, third = (hash_media(picture) for picture in pictures)
    assert first.phash
    assert second.pdq
    assert third.phash
    assert (second.pdq_quality or 0) >= 50  # a PDQ hash good enough to be matched
    targets = [
        report(http_server.route(f"/near-later/{i}.jpg", body=picture, headers=JPEG))
        for i, picture in enumerate(pictures)
    ]
    process(targets[0])
    process(targets[1])
    assert shown(targets[0])["priority_reasons"] == ["new content"]
    with session_scope() as session:
        if session.execute(select(HashList).where(col(HashList.own))).first() is None:
            session.add(HashList(name="hotline", own=True))  # truncated by earlier tests

    # A perceptual list, as partners share them: no cryptographic hash at all.
    path = tmp_path / "perceptual.csv"
    path.write_text(
        "phash,pdq,category\n"
        f"{_flip(first.phash, 3)},,1\n"  # 3 of 64 bits from the first picture
        f",{_flip(second.pdq, 20)},1\n"  # 20 of 256 bits from the second
        f"{_flip(first.phash, 9)},,1\n"  # 9 bits: beyond the radius of 8
        f"{_flip(third.phash, 2)},,2\n"  # the third picture, not seen yet
    )

    def run(*args: str) -> str:
        return hashes_cli(backend_env, *args)

    assert (
        "2 media items seen here before are on the list (2 only as near duplicates): "
        "2 queued targets moved up"
    ) in run("import", str(path), "--list", "partner-pdq")

    def near(target_id: int) -> list[tuple[str, str, str, int]]:
        [media] = shown(target_id)["media"]
        return [(m["source"], m["kind"], m["hash_type"], m["distance"]) for m in media["matches"]]

    assert near(targets[0]) == [("partner-pdq", "near", "phash", 3)]
    assert near(targets[1]) == [("partner-pdq", "near", "pdq", 20)]
    for target_id in targets[:2]:
        assert shown(target_id)["priority_reasons"][0] == (
            "near match to confirmed media: partner-pdq"
        )

    # Media seen while the list is off are matched when it is on again.
    assert "2 queued targets ranked again" in run("disable", "partner-pdq")
    process(targets[2])
    assert near(targets[2]) == []
    assert "3 queued targets ranked again" in run("enable", "partner-pdq")
    assert near(targets[2]) == [("partner-pdq", "near", "phash", 2)]
    assert shown(targets[2])["priority_reasons"][0] == "near match to confirmed media: partner-pdq"
    assert near(targets[0]) == [("partner-pdq", "near", "phash", 3)]  # not found twice
    assert "ranked again" not in run("enable", "partner-pdq")  # enabled already: nothing


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ({"status": 404, "body": b"gone"}, "http_error_404"),
        (
            {
                "status": 200,
                "body": b"%PDF-1.7 not a picture",
                "headers": {"content-type": "application/pdf"},
            },
            "not_media",
        ),
    ],
)
def test_final_failures_make_the_target_unreachable_at_once(
    http_server: LocalHTTPServer,
    process: Callable[..., service.Outcome],
    route: dict[str, Any],
    reason: str,
) -> None:
    target_id = report(http_server.route("/x", **route))
    outcome = process(target_id, hosting=_Abroad())
    assert (outcome.status, outcome.retry_in) == (TargetStatus.unreachable, None)
    target = shown(target_id)
    assert (target["status"], target["reason"], target["attempts"]) == ("unreachable", reason, 1)
    with session_scope() as session:  # counted on its site as any reported address
        site = session.execute(
            select(Site).where(col(Site.registered_domain) == target["registered_domain"])
        ).scalar_one()
        assert (site.target_count, site.confirmed_count) == (1, 0)
    # A server answered: where it is, is known and kept.
    assert target["hosting"] == {
        "ip": "127.0.0.1",
        "country": "PL",
        "asn": None,
        "org": "EXAMPLE-NET",
    }


def test_a_body_over_the_cap_keeps_where_the_server_is(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    target_id = report(http_server.route("/big.jpg", body=images.jpeg(45), headers=JPEG))
    small = Fetcher(
        FetchPolicy(allow_networks=LOOPBACK, ports=frozenset(range(1024, 65536)), max_bytes=1000)
    )
    assert process(target_id, fetcher=small, hosting=_Abroad()).status == TargetStatus.unreachable
    target = shown(target_id)
    assert (target["reason"], target["hosting"]["ip"]) == ("too_large", "127.0.0.1")


def test_a_decompression_bomb_is_recorded_by_its_file_hashes_only(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    bomb = images.huge_png_header(60000, 60000, marker=images.new_marker())
    target_id = report(http_server.route("/bomb.png", body=bomb))
    assert process(target_id).status == TargetStatus.queued
    [media] = shown(target_id)["media"]
    assert media["sha256"] == hashlib.sha256(bomb).hexdigest()
    assert (media["kind"], media["phash"], media["pdq"]) == ("image", None, None)


def test_transient_failures_are_retried_then_given_up(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    target_id = report(http_server.route("/flaky", status=503, body=b"busy"))
    first = process(target_id)
    assert (first.status, first.retry_in) == (TargetStatus.pending, 0)
    assert shown(target_id)["reason"] == "http_error_503"
    second = process(target_id)
    assert (second.status, second.retry_in) == (TargetStatus.unreachable, None)
    assert shown(target_id)["attempts"] == 2


def test_a_second_message_waits_for_the_retry_instead_of_making_it_early(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    """The sweep re-sends a target waiting for its retry (workers behind), or a message is
    redelivered: the retry's delay still holds, and no attempt is spent early."""
    target_id = report(http_server.route("/busy", status=503, body=b"busy"))
    start = utcnow()
    first = process(target_id, retry_delay=20, max_attempts=3, now=lambda: start)
    assert (first.status, first.retry_in) == (TargetStatus.pending, 20)
    early = start + dt.timedelta(seconds=5)
    second = process(target_id, retry_delay=20, max_attempts=3, now=lambda: early)
    assert second.status is None
    assert second.retry_in == pytest.approx(15)  # the task comes back when it is due
    assert (len(http_server.requests), shown(target_id)["attempts"]) == (1, 1)
    due = start + dt.timedelta(seconds=20)
    third = process(target_id, retry_delay=20, max_attempts=3, now=lambda: due)
    assert (third.status, third.retry_in) == (TargetStatus.pending, 40)
    assert (len(http_server.requests), shown(target_id)["attempts"]) == (2, 2)
    # A message for a target that is finished or held by a worker is simply dropped.
    later = due + dt.timedelta(seconds=40)
    assert process(target_id, retry_delay=20, max_attempts=3, now=lambda: later).status == (
        TargetStatus.unreachable
    )
    assert process(target_id, now=lambda: later) == service.Outcome(None)


def test_a_target_processed_again_does_not_count_its_own_media_as_seen_before(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    """Closed as no longer available, then tried again (`targets retry`, Try again, a
    new report): its pictures of the first time are its own, not another target's."""
    from triage.assessment import Outcome, apply_outcome

    shared = images.jpeg(904, (320, 240), marker=images.new_marker())
    http_server.route("/shared.jpg", body=shared, headers=JPEG)
    http_server.route("/own.jpg", body=images.jpeg(905, (320, 240)), headers=JPEG)
    page = b'<img src="/own.jpg"><img src="/shared.jpg">'
    elsewhere = report(http_server.route("/elsewhere.jpg", body=shared, headers=JPEG))
    assert process(elsewhere).status == TargetStatus.queued
    target_id = report(http_server.route("/again", body=page, headers={}))
    assert process(target_id).status == TargetStatus.queued
    first = shown(target_id)
    with session_scope() as session:
        target = session.get(Target, target_id)
        assert target is not None
        apply_outcome(
            session,
            target,
            Outcome.no_longer_available,
            now=utcnow(),
            expect={TargetStatus.queued},
        )
    with session_scope() as session:
        assert intake.retry_unreachable(session, now=utcnow()) == [target_id]
    assert process(target_id).status == TargetStatus.queued

    again = shown(target_id)
    assert (again["priority"], again["priority_reasons"]) == (
        first["priority"],
        first["priority_reasons"],
    )
    assert "1 media item(s) seen before on another target" in again["priority_reasons"]
    with session_scope() as session:
        target = session.get(Target, target_id)
        assert target is not None
        rerank(session, [target_id])
    assert shown(target_id)["priority"] == first["priority"]


def test_a_page_processed_again_shows_what_it_shows_now(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    """Closed as no longer available, the page comes back with other pictures: the
    analyst assesses (and ranking counts) those, and sees the earlier ones apart."""
    from triage.assessment import Outcome, apply_outcome, target_media

    for n in (906, 907, 908):
        http_server.route(f"/p{n}.jpg", body=images.jpeg(n, (320, 240)), headers=JPEG)
    url = http_server.route("/changing", body=b'<img src="/p906.jpg"><img src="/p907.jpg">')
    target_id = report(url)
    assert process(target_id).status == TargetStatus.queued
    with session_scope() as session:
        target = session.get(Target, target_id)
        assert target is not None
        apply_outcome(
            session, target, Outcome.no_longer_available, now=utcnow(), expect={TargetStatus.queued}
        )
    http_server.route("/changing", body=b'<img src="/p907.jpg"><img src="/p908.jpg">')
    with session_scope() as session:
        assert intake.retry_unreachable(session, now=utcnow()) == [target_id]
    assert process(target_id).status == TargetStatus.queued

    again = shown(target_id)
    assert [m["url"].rsplit("/", 1)[1] for m in again["media"]] == ["p907.jpg", "p908.jpg"]
    [gone] = again["earlier_media"]
    assert gone["url"].endswith("/p906.jpg")
    assert gone["last_seen_at"] < again["media"][0]["last_seen_at"]
    with session_scope() as session:
        target = session.get(Target, target_id)
        assert target is not None
        assert sorted(target_media(session, target_id)) == sorted(m["id"] for m in again["media"])
        assert rerank_facts(session, target).media_count == 2
        rerank(session, [target_id])
    assert shown(target_id)["priority"] == again["priority"]
    analyst = TestClient(create_app(), client=("127.0.0.1", 50004))
    with analyst:
        enrol(analyst, "ana@changing.example", Role.analyst)
        page = LexborHTMLParser(analyst.get(f"/staff/targets/{target_id}").text)
    cards = [int(card.attributes["data-media"] or 0) for card in page.css("li.media-card")]
    assert cards == [m["id"] for m in again["media"]]
    earlier = [li.attributes["id"] for li in page.css("#earlier-media li")]
    assert earlier == [f"earlier-{gone['id']}"]
    from typer.testing import CliRunner

    from hotline.cli import targets_app

    printed = CliRunner().invoke(targets_app, ["show", str(target_id)])
    assert printed.exit_code == 0, printed.output
    listed, _, unlisted = printed.stdout.partition("no longer on the page")
    assert gone["sha256"] in unlisted
    assert gone["sha256"] not in listed

    # A link that fails this time says nothing of what the page shows: kept online.
    http_server.route("/p908.jpg", status=503, body=b"busy")
    with session_scope() as session:
        target = session.get(Target, target_id)
        assert target is not None
        apply_outcome(
            session, target, Outcome.no_longer_available, now=utcnow(), expect={TargetStatus.queued}
        )
    with session_scope() as session:
        assert intake.retry_unreachable(session, now=utcnow()) == [target_id]
    assert process(target_id).status == TargetStatus.queued
    third = shown(target_id)
    assert [m["url"].rsplit("/", 1)[1] for m in third["media"]] == ["p907.jpg", "p908.jpg"]
    assert third["broken_links"] == {"http_error_503": 1}


def test_processing_twice_does_nothing_twice(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome], committed: Engine
) -> None:
    target_id = report(http_server.route("/once.jpg", body=images.jpeg(41), headers=JPEG))
    assert process(target_id).status == TargetStatus.queued
    assert process(target_id).status is None
    requests_after_first = len(http_server.requests)
    assert requests_after_first == 1
    with Session(committed) as session:
        assert session.execute(select(func.count()).select_from(Media)).scalar_one() == 1


def test_a_claim_outliving_its_lease_is_taken_over(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    target_id = report(http_server.route("/slow.jpg", body=images.jpeg(42), headers=JPEG))
    with session_scope() as session:
        assert service.claim_target(
            session, target_id, now=utcnow(), lease=dt.timedelta(minutes=10)
        )
    # Another worker within the lease leaves it alone; after it, takes it over.
    assert process(target_id).status is None
    later = utcnow() + dt.timedelta(minutes=11)
    assert process(target_id, now=lambda: later).status == TargetStatus.queued
    swept = sweep(now=later)
    assert swept == []


def test_a_target_whose_attempts_ran_out_is_given_up_unfetched_and_counted_on_its_site(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    """A worker died on the target as often as attempts are allowed (the URL may be what
    kills them), or the limit was lowered while it waited: the sweep hands it over, and
    the next worker ends it without fetching it, as any target given up."""
    killer = report(http_server.route("/kills.jpg", body=images.jpeg(44), headers=JPEG))
    waited = report(http_server.route("/waited.jpg", body=images.jpeg(45), headers=JPEG))
    start = utcnow()
    with session_scope() as session:
        # One claimed by a worker that died; one that failed (a 503) and waits for a
        # retry the limit no longer allows.
        for target_id, status, reason, attempts, when in (
            (killer, TargetStatus.fetching, None, 1, start),
            (waited, TargetStatus.pending, "http_error_503", 2, start - dt.timedelta(minutes=6)),
        ):
            target = session.get(Target, target_id)
            assert target is not None
            target.status, target.status_reason = status, reason
            target.attempts, target.handed_over_at = attempts, when
    later = start + dt.timedelta(minutes=11)
    swept = sweep(now=later)
    assert sorted(swept) == sorted([killer, waited])

    for target_id in (killer, waited):
        outcome = process(target_id, max_attempts=1, now=lambda: later)
        assert outcome == service.Outcome(TargetStatus.unreachable)
        # A second message for it changes nothing more.
        assert process(target_id, max_attempts=1, now=lambda: later) == service.Outcome(None)
    assert http_server.requests == []
    assert [shown(t)["reason"] for t in (killer, waited)] == ["internal_error", "http_error_503"]
    with session_scope() as session:
        for target_id in (killer, waited):
            target = session.get(Target, target_id)
            assert target is not None
            assert (target.status, target.processed_at) == (TargetStatus.unreachable, later)
        site = session.execute(
            select(Site).where(col(Site.registered_domain) == shown(killer)["registered_domain"])
        ).scalar_one()
        assert site.target_count == 2


def test_targets_show_finds_a_target_by_any_spelling(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    url = http_server.route("/Spelled.jpg", body=images.jpeg(43), headers=JPEG)
    target_id = report(url)
    with session_scope() as session:
        found = service.find_target(session, url.replace("http://", "HTTP://") + "#frag")
        assert found is not None
        assert found.id == target_id
        assert service.find_target(session, str(target_id)) is not None
        assert service.find_target(session, "http://127.0.0.1:1/nothing") is None
    # A URL longer than the default intake limit, accepted under a larger one.
    long_url = http_server.url("/" + "x" * 5000 + ".jpg")
    long_id = report(long_url, max_url_length=8192)
    with session_scope() as session:
        found = service.find_target(session, long_url)
        assert found is not None
        assert found.id == long_id


def test_a_late_worker_cannot_overwrite_a_newer_claim(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    target_id = report(http_server.route("/contested.jpg", body=images.jpeg(44), headers=JPEG))
    lease = dt.timedelta(minutes=10)
    with session_scope() as session:
        stale = service.claim_target(session, target_id, now=utcnow(), lease=lease)
    assert stale is not None
    later = utcnow() + dt.timedelta(minutes=11)
    with session_scope() as session:
        fresh = service.claim_target(session, target_id, now=later, lease=lease)
    assert fresh is not None
    # The first worker comes back late with a failure: it must change nothing.
    with session_scope() as session:
        late = service.record_failure(
            session, stale, "timeout", now=later, max_attempts=3, retry_delay=0
        )
    assert late.status is None
    assert shown(target_id)["status"] == "fetching"


def test_claims_stop_after_the_last_attempt(
    http_server: LocalHTTPServer, committed: Engine
) -> None:
    target_id = report(http_server.route("/tries.jpg", body=images.jpeg(45), headers=JPEG))
    with session_scope() as session:
        target = session.get(Target, target_id)
        assert target is not None
        target.attempts = 3
    with session_scope() as session:
        assert (
            service.claim_target(
                session, target_id, now=utcnow(), lease=dt.timedelta(minutes=10), max_attempts=3
            )
            is None
        )


def test_a_site_flagged_as_dedicated_ranks_its_targets_in_the_site_tier(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    from typer.testing import CliRunner

    from hotline.cli_sites import sites_app

    def sites(*args: str) -> str:
        result = CliRunner().invoke(sites_app, list(args))
        assert result.exit_code == 0, result.output
        return result.stdout.strip()

    first = report(http_server.route("/dedicated/1.jpg", body=images.jpeg(81), headers=JPEG))
    process(first)
    assert (shown(first)["priority"], shown(first)["priority_reasons"]) == (101, ["new content"])
    domain = shown(first)["registered_domain"]

    said = sites("flag", http_server.url("/dedicated/"), "--dedicated", "--note", "a gallery")
    assert said == f"site {domain!r}: dedicated; note set; 1 queued target ranked again"
    flagged = "site flagged as dedicated to abuse material"
    assert (shown(first)["priority"], shown(first)["priority_reasons"]) == (301, [flagged])

    # A target processed on it later ranks there from the start.
    later = report(http_server.route("/dedicated/2.jpg", body=images.jpeg(82), headers=JPEG))
    process(later)
    assert shown(later)["priority_reasons"] == [flagged]
    stored = [(shown(t)["priority"], shown(t)["priority_reasons"]) for t in (first, later)]
    with session_scope() as session:
        rerank(session, [first, later])  # the workers and re-ranking agree, reasons too
    assert [(shown(t)["priority"], shown(t)["priority_reasons"]) for t in (first, later)] == stored

    assert sites("flag", domain, "--not-dedicated") == (
        f"site {domain!r}: not flagged; 2 queued targets ranked again"
    )
    assert [shown(t)["priority_reasons"] for t in (first, later)] == [["new content"]] * 2


def test_media_recorded_while_a_list_is_imported_are_matched_once_it_is_committed(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    # On PostgreSQL a worker can commit media while the import's transaction is open:
    # neither sees the other. The import then matches the media newer than its start.
    from triage.matches import match_seen_media, newest_media

    late = images.jpeg(91, (320, 240), marker=images.new_marker())
    listing = f"md5\n{hashlib.md5(late).hexdigest()}\n"  # noqa: S324
    with session_scope() as session:
        before = newest_media(session)
        import_list(session, io.BytesIO(listing.encode()), list_name="while-importing")
        list_id = session.execute(
            select(col(HashList.id)).where(col(HashList.name) == "while-importing")
        ).scalar_one()
        assert match_seen_media(session, list_id, now=utcnow()).media == 0
    target = report(http_server.route("/while-importing.jpg", body=late, headers=JPEG))
    with session_scope() as session:  # the list disabled: as if not committed yet
        session.execute(
            HashList.__table__.update().where(HashList.id == list_id).values(enabled=False)  # type: ignore[attr-defined]
        )
    process(target)
    with session_scope() as session:
        session.execute(
            HashList.__table__.update().where(HashList.id == list_id).values(enabled=True)  # type: ignore[attr-defined]
        )
    assert shown(target)["priority_reasons"] == ["new content"]

    with session_scope() as session:
        caught = match_seen_media(session, list_id, now=utcnow(), media_above=before)
    assert (caught.media, caught.raised) == (1, [target])
    assert shown(target)["priority_reasons"] == ["exact match to known list: while-importing"]
