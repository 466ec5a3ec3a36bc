"""The catch-up of matches that workers recording at the same time miss: two workers
recording near copies at once (a stale index, overlapping transactions), media recorded
while a list is committed, the hotline's own list, and what it must leave alone."""

from __future__ import annotations

import datetime as dt
import io
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlmodel import col

from hotline.db import session_scope, utcnow
from hotline.settings import Settings
from reporting.models import Target, TargetStatus
from tests.conftest import wait_for
from tests.fixtures import images
from tests.fixtures.servers import LocalHTTPServer
from tests.triage.test_pipeline import (
    JPEG,
    _flip,
    loaded_near_duplicates,
    report,
    seen_before,
    shown,
)
from tests.triage.test_pipeline import process as process  # the fixture
from triage import service
from triage.assessment import apply_outcome, own_list
from triage.catchup import CaughtUp, catch_up
from triage.hashing import hash_media
from triage.hashlists import add_entries, import_list
from triage.matches import add_matches, match_row
from triage.models import HashType, MatchKind, Media, MediaMatch, Outcome
from triage.neardup import NearDuplicates
from triage.priority import NEAR_SEEN, NEW_CONTENT

WINDOW = dt.timedelta(seconds=60)
Match = tuple[str, str, str, int, str | None]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def catch_up_index(clock: Clock | None = None, *, near_limit: int = 20) -> NearDuplicates:
    """The index of the process that runs the catch-up, remembering what it read as
    long as the window."""
    return NearDuplicates(
        phash_radius=8,
        pdq_radius=31,
        pdq_min_quality=50,
        refresh_seconds=3600,
        recent_seconds=WINDOW.total_seconds(),
        near_limit=near_limit,
        **({"clock": clock} if clock else {}),
    )


def run_catch_up(near: NearDuplicates | None = None, *, late: float = 0) -> CaughtUp:
    with session_scope() as session:
        return catch_up(
            session,
            near=catch_up_index() if near is None else near,
            now=utcnow() + dt.timedelta(seconds=late),
            window=WINDOW,
        )


def media_id(target_id: int, index: int = 0) -> int:
    sha256 = shown(target_id)["media"][index]["sha256"]
    with session_scope() as session:
        return int(
            session.execute(select(col(Media.id)).where(col(Media.sha256) == sha256)).scalar_one()
        )


def matches(target_id: int, index: int = 0) -> list[Match]:
    return sorted(
        (m["source"], m["kind"], m["hash_type"], m["distance"], m["media_sha256"])
        for m in shown(target_id)["media"][index]["matches"]
    )


def as_a_worker_finds_them_now(media: int) -> list[Match]:
    """The near matches ``match_media`` records for the media item, by a worker whose
    index holds everything committed (what a worker after the others finds)."""
    near = loaded_near_duplicates()
    with session_scope() as session:
        row = session.get(Media, media)
        assert row is not None
        found = near.lookup(
            session,
            phash=row.phash,
            pdq=row.pdq,
            pdq_quality=row.pdq_quality,
            exclude_media_id=media,
        )
        sha256 = {
            int(i): str(s) for i, s in session.execute(select(col(Media.id), col(Media.sha256)))
        }
    return sorted(
        (m.source, "near", m.hash_type, m.distance, sha256[m.media_id] if m.media_id else None)
        for m in found
    )


def ranked(target_id: int) -> tuple[int, list[str]]:
    target = shown(target_id)
    return target["priority"], target["priority_reasons"]


def test_near_copies_recorded_at_once_by_two_workers_are_matched_later(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    versions = images.variants(81)
    stale = loaded_near_duplicates()  # the second worker's index, loaded before the first
    first = report(http_server.route("/race/original.jpg", body=versions["original"], headers=JPEG))
    copy = report(http_server.route("/race/resized.jpg", body=versions["resized"], headers=JPEG))
    process(first)
    process(copy, near=stale)
    # The bug: neither knows the other, and nothing would ever tell them.
    assert matches(first) == matches(copy) == []
    assert ranked(first) == ranked(copy) == (NEW_CONTENT + 1, ["new content"])

    # Media first seen before the window are not looked at again.
    assert run_catch_up(late=2 * WINDOW.total_seconds()) == CaughtUp(0, 0, [])
    assert matches(copy) == []

    expected = as_a_worker_finds_them_now(media_id(copy))
    original = shown(first)["media"][0]["sha256"]
    assert {m[4] for m in expected} == {original}
    assert run_catch_up() == CaughtUp(media=2, matched=1, raised=[copy])
    # The later one is matched as its worker would have matched it after the first...
    assert matches(copy) == expected
    assert ranked(copy) == (NEAR_SEEN + 1, ["1 media item(s) near to media seen before"])
    # ...and the earlier one stays as it was.
    assert matches(first) == []
    assert ranked(first) == (NEW_CONTENT + 1, ["new content"])

    # A second run finds it all done.
    assert run_catch_up() == CaughtUp(media=2, matched=0, raised=[])
    assert matches(copy) == expected


def test_pictures_without_structure_recorded_at_once_stay_unmatched(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    flat = images.featureless()
    stale = loaded_near_duplicates()
    first = report(http_server.route("/race/grey.png", body=flat["grey"]))
    other = report(http_server.route("/race/banner.png", body=flat["banner"]))
    process(first)
    process(other, near=stale)
    # Their pHashes are 1 bit apart, but say nothing of either picture.
    assert run_catch_up() == CaughtUp(media=2, matched=0, raised=[])
    assert matches(first) == matches(other) == []


@pytest.mark.postgres
def test_many_copies_recorded_at_once_get_their_nearest_earlier_copies_only(
    committed: Engine,
) -> None:
    """Six copies of a picture recorded by workers that missed each other: each gets
    matches to the nearest earlier copies, at most the limit (here 2) with those its
    worker recorded, the earliest first among equals."""
    base = "8f373714acfcf4d0"
    copies = seen_before([_flip(base, bits) for bits in (0, 1, 2, 3, 4, 1)])
    with session_scope() as session:
        ids = {
            sha256: int(media_id)
            for media_id, sha256 in session.execute(select(col(Media.id), col(Media.sha256)))
        }
        m = [ids[sha256] for sha256 in copies]
        # The last copy's worker saw the second one.
        add_matches(
            session,
            [
                match_row(
                    media_id=m[5],
                    kind=MatchKind.near,
                    hash_type=HashType.phash,
                    distance=0,
                    matched_media_id=m[1],
                    found_at=utcnow(),
                )
            ],
        )

    assert run_catch_up(catch_up_index(near_limit=2)).matched == 5

    with session_scope() as session:
        recorded = session.execute(
            select(col(MediaMatch.media_id), col(MediaMatch.matched_media_id))
        ).all()
    earlier = {media: sorted(m.index(b) for a, b in recorded if a == media) for media in m}
    assert [earlier[media] for media in m] == [
        [],
        [0],
        [0, 1],  # distances 2 and 1
        [1, 2],  # 3, 2, 1: the two nearest
        [2, 3],
        [0, 1],  # distance 1 to both the first and the third: the first; 0 to the second
    ]
    # Nothing more on a second run.
    assert run_catch_up(catch_up_index(near_limit=2)).matched == 0


def test_the_catch_up_counts_the_nearer_copies_a_worker_recorded_before_the_window(
    committed: Engine,
) -> None:
    """A copy whose worker recorded the limit (2) of nearer copies seen long before gets
    no match to a farther one it missed within the window."""
    base = "8f373714acfcf4d0"
    old = seen_before([_flip(base, 1), _flip(base, 1)], at=utcnow() - 3 * WINDOW)
    farther, copy = seen_before([_flip(base, 3), base])
    with session_scope() as session:
        ids = {sha256: int(i) for sha256, i in session.execute(select(Media.sha256, Media.id))}
        add_matches(
            session,
            [
                match_row(
                    media_id=ids[copy],
                    kind=MatchKind.near,
                    hash_type=HashType.phash,
                    distance=1,
                    matched_media_id=ids[sha256],
                    found_at=utcnow(),
                )
                for sha256 in old
            ],
        )

    def matched() -> list[int]:
        with session_scope() as session:
            found = session.execute(select(col(MediaMatch.matched_media_id))).scalars()
            return sorted(int(i) for i in found)

    assert run_catch_up(catch_up_index(near_limit=2)) == CaughtUp(media=2, matched=0, raised=[])
    assert matched() == sorted(ids[sha256] for sha256 in old)
    # With room for a third, the farther one is added.
    assert run_catch_up(catch_up_index(near_limit=3)).matched == 1
    assert matched() == sorted(ids[sha256] for sha256 in [*old, farther])


def test_near_copies_recorded_in_overlapping_transactions_are_matched_later(
    http_server: LocalHTTPServer,
    process: Callable[..., service.Outcome],
    committed: Engine,
) -> None:
    if committed.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: record steps cannot overlap")
    versions = images.variants(82)
    first = report(http_server.route("/tx/original.jpg", body=versions["original"], headers=JPEG))
    copy = report(http_server.route("/tx/reencoded.jpg", body=versions["reencoded"], headers=JPEG))
    outcomes: dict[str, service.Outcome] = {}

    def second_worker() -> None:
        # An index refreshed at every lookup: it still cannot see an uncommitted row.
        fresh = NearDuplicates(phash_radius=8, pdq_radius=31, pdq_min_quality=50, refresh_seconds=0)
        outcomes["copy"] = process(copy, near=fresh)

    def waiting_for_a_lock() -> bool:
        with committed.connect() as connection:
            waiting = connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        return bool(waiting) or "copy" in outcomes

    @contextmanager
    def held_open() -> Iterator[Any]:
        with session_scope() as session:
            yield session
            # The original is recorded, not committed: the copy is recorded meanwhile,
            # and waits on the site row this transaction counted the original on.
            worker = threading.Thread(target=second_worker)
            worker.start()
            wait_for(waiting_for_a_lock)
        worker.join(timeout=60)

    process(first, units=held_open, claims=session_scope)
    assert outcomes["copy"].status == TargetStatus.queued
    assert media_id(first) < media_id(copy)
    assert matches(first) == matches(copy) == []

    expected = as_a_worker_finds_them_now(media_id(copy))
    assert expected
    assert run_catch_up() == CaughtUp(media=2, matched=1, raised=[copy])
    assert matches(copy) == expected
    assert matches(first) == []
    assert ranked(copy)[1] == ["1 media item(s) near to media seen before"]
    assert run_catch_up().matched == 0


def test_near_copies_first_seen_on_one_page_stay_unmatched(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    versions = images.variants(83)
    for name in ("original", "reencoded", "resized"):
        http_server.route(f"/page/{name}.jpg", body=versions[name], headers=JPEG)
    stale = loaded_near_duplicates()
    body = (
        b'<html><body><img src="/page/original.jpg"><img src="/page/reencoded.jpg"></body></html>'
    )
    page = report(http_server.route("/page/both.html", body=body))
    copy = report(http_server.url("/page/resized.jpg"))  # by another worker, at once
    process(page)
    process(copy, near=stale)
    assert matches(page, 0) == matches(page, 1) == matches(copy) == []

    assert run_catch_up() == CaughtUp(media=3, matched=1, raised=[copy])
    # Not seen before each other: one record step first recorded both.
    assert matches(page, 0) == matches(page, 1) == []
    assert not any("seen before" in reason for reason in ranked(page)[1])
    # The copy recorded apart from them was seen after both.
    assert {m[4] for m in matches(copy)} == {m["sha256"] for m in shown(page)["media"]}
    assert matches(copy) == as_a_worker_finds_them_now(media_id(copy))
    assert ranked(copy)[1] == ["1 media item(s) near to media seen before"]


def test_a_decided_target_keeps_its_place_while_its_media_get_the_match(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    versions = images.variants(84)
    stale = loaded_near_duplicates()
    first = report(http_server.route("/done/original.jpg", body=versions["original"], headers=JPEG))
    copy = report(http_server.route("/done/cropped.jpg", body=versions["cropped"], headers=JPEG))
    process(first)
    process(copy, near=stale)
    with session_scope() as session:  # an analyst decided it before the catch-up ran
        target = session.get(Target, copy)
        assert target is not None
        apply_outcome(
            session, target, Outcome.not_illegal, now=utcnow(), expect=[TargetStatus.queued]
        )
    before = ranked(copy)

    caught = run_catch_up()
    assert (caught.matched, caught.raised) == (1, [])
    assert matches(copy) == as_a_worker_finds_them_now(media_id(copy))
    assert shown(copy)["status"] == "not_illegal"
    assert ranked(copy) == before  # rerank moves queued targets only


def test_a_list_committed_while_a_worker_recorded_is_matched_later(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    pictures = [images.jpeg(85 + i, (320, 240), marker=images.new_marker()) for i in range(2)]
    near_one, exact_one = (hash_media(picture) for picture in pictures)
    assert near_one.phash
    clock = Clock()
    index = catch_up_index(clock)
    with session_scope() as session:
        index.refresh(session, force=True)  # the catch-up's process, running for a while
    clock.now = 1000.0
    stale = loaded_near_duplicates()
    targets = [
        report(http_server.route(f"/listed/{i}.jpg", body=picture, headers=JPEG))
        for i, picture in enumerate(pictures)
    ]
    for target_id in targets:
        process(target_id, near=stale)
    # Committed while the workers recorded: their exact lookups ran before the commit,
    # their near lookups in an index loaded before it, and the import's own catch-up
    # read the media before their commit (here: it does not run at all).
    listing = f"phash,md5,category\n{_flip(near_one.phash, 3)},,1\n,{exact_one.md5},1\n"
    with session_scope() as session:
        import_list(session, io.BytesIO(listing.encode()), list_name="committed-meanwhile")
    assert matches(targets[0]) == matches(targets[1]) == []

    caught = run_catch_up(index)
    loaded = index.known_loaded(WINDOW.total_seconds())
    assert (loaded.everything, loaded.rows) == (False, 2)  # only the new rows were searched
    assert (caught.matched, sorted(caught.raised)) == (2, sorted(targets))
    assert matches(targets[0]) == [("committed-meanwhile", "near", "phash", 3, None)]
    assert matches(targets[0]) == as_a_worker_finds_them_now(media_id(targets[0]))
    assert matches(targets[1]) == [("committed-meanwhile", "exact", "md5", 0, None)]
    assert ranked(targets[0])[1][0] == "near match to confirmed media: committed-meanwhile"
    assert ranked(targets[1])[1][0] == "exact match to known list: committed-meanwhile"
    assert run_catch_up(index).matched == 0


def test_a_dense_list_committed_meanwhile_gives_its_nearest_entries(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    """Four entries near one picture, committed while its worker recorded it: the
    catch-up records the nearest two (the limit), as the worker would have."""
    picture = images.jpeg(87, (320, 240), marker=images.new_marker())
    phash = hash_media(picture).phash
    assert phash
    clock = Clock()
    index = catch_up_index(clock, near_limit=2)
    with session_scope() as session:
        index.refresh(session, force=True)
    clock.now = 1000.0
    stale = loaded_near_duplicates()
    target_id = report(http_server.route("/dense-meanwhile.jpg", body=picture, headers=JPEG))
    process(target_id, near=stale)
    listing = "phash\n" + "".join(f"{_flip(phash, bits)}\n" for bits in (4, 1, 3, 2))
    with session_scope() as session:
        import_list(session, io.BytesIO(listing.encode()), list_name="dense-meanwhile")

    assert run_catch_up(index).matched == 1
    assert [m[3] for m in matches(target_id)] == [1, 2]
    assert run_catch_up(index).matched == 0


def test_the_later_frames_of_animations_are_caught_up_too(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    """Two workers record at once a still picture and a GIF showing it as frame 2; a
    list committed meanwhile holds another of the GIF's frames. The catch-up records
    both matches through the frames, as a worker after the others would have."""
    size = (200, 150)
    title, shown_alone, listed = images.frames(87, size, 3)
    animation = images.encode(title, "GIF", save_all=True, append_images=[listed, shown_alone])
    gif = {"content-type": "image/gif"}
    clock = Clock()
    index = catch_up_index(clock)
    with session_scope() as session:
        index.refresh(session, force=True)
    clock.now = 1000.0
    stale = loaded_near_duplicates()
    still = report(
        http_server.route("/frames-race/still.png", body=images.encode(shown_alone, "PNG"))
    )
    anim = report(http_server.route("/frames-race/anim.gif", body=animation, headers=gif))
    process(still)
    process(anim, near=stale)
    on_list = hash_media(images.encode(listed, "PNG"))
    assert on_list.phash
    with session_scope() as session:
        import_list(
            session,
            io.BytesIO(f"phash,category\n{_flip(on_list.phash, 2)},1\n".encode()),
            list_name="frames-meanwhile",
        )
    assert matches(anim) == []

    caught = run_catch_up(index)
    assert caught.matched == 1
    assert caught.raised == [anim]
    found = {
        (m["source"], m["kind"], m["hash_type"], m["frame"])
        for m in shown(anim)["media"][0]["matches"]
    }
    assert ("frames-meanwhile", "near", "phash", 1) in found
    assert ("seen", "near", "phash", 2) in found
    assert {m[4] for m in matches(anim) if m[0] == "seen"} == {shown(still)["media"][0]["sha256"]}
    assert ranked(anim)[1][0] == "near match to confirmed media: frames-meanwhile"
    assert matches(still) == []  # the earlier one stays as it was
    assert run_catch_up(index).matched == 0


def test_the_own_list_matches_only_media_seen_after_the_confirmation(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    pictures = [images.jpeg(87 + i, (320, 240), marker=images.new_marker()) for i in range(2)]
    before_it, after_it = (hash_media(picture) for picture in pictures)
    assert before_it.phash
    assert after_it.phash
    seen_before = report(http_server.route("/own/0.jpg", body=pictures[0], headers=JPEG))
    process(seen_before)
    stale = loaded_near_duplicates()
    with session_scope() as session:  # a confirmation adds near copies of both
        own = own_list(session, now=utcnow())
        add_entries(
            session,
            int(own.id or 0),
            [
                {"sha256": f"{n:064x}", "phash": _flip(hashes.phash or "", 2), "added_at": utcnow()}
                for n, hashes in enumerate((before_it, after_it), start=1)
            ],
        )
    seen_after = report(http_server.route("/own/1.jpg", body=pictures[1], headers=JPEG))
    process(seen_after, near=stale)
    assert matches(seen_before) == matches(seen_after) == []

    caught = run_catch_up()
    assert (caught.matched, caught.raised) == (1, [seen_after])
    assert matches(seen_before) == []  # seen before the entry was added: as a worker left it
    # (The own list's entries name the confirmed media they came from.)
    assert matches(seen_after) == [(own.name, "near", "phash", 2, f"{2:064x}")]
    worker = as_a_worker_finds_them_now(media_id(seen_after))
    assert [m[:4] for m in matches(seen_after)] == [m[:4] for m in worker]
    assert ranked(seen_after)[1][0] == f"near match to confirmed media: {own.name}"


def test_the_catch_up_window_is_checked() -> None:
    assert Settings(neardup_catchup_seconds=0).neardup_catchup_seconds == 0
    assert Settings(neardup_catchup_seconds=20, neardup_refresh_seconds=5)
    for window, refresh in ((5, 1), (19, 5)):
        with pytest.raises(ValueError, match="HOTLINE_NEARDUP_CATCHUP_SECONDS"):
            Settings(neardup_catchup_seconds=window, neardup_refresh_seconds=refresh)


def test_the_task_runs_the_catch_up_with_the_settings(
    http_server: LocalHTTPServer, process: Callable[..., service.Outcome]
) -> None:
    from triage.tasks import catch_up_matches

    versions = images.variants(89)
    stale = loaded_near_duplicates()
    first = report(http_server.route("/task/original.jpg", body=versions["original"], headers=JPEG))
    copy = report(
        http_server.route(
            "/task/png.png", body=versions["png"], headers={"content-type": "image/png"}
        )
    )
    process(first)
    process(copy, near=stale)
    assert catch_up_matches() == 1
    assert ranked(copy)[1] == ["1 media item(s) near to media seen before"]
    assert catch_up_matches() == 0


@pytest.mark.parametrize(("words", "radius"), [(1, 8), (4, 31)])
def test_pairs_are_what_brute_force_finds(words: int, radius: int) -> None:
    from triage.catchup import _earlier_within, _within

    rng = np.random.default_rng(words)
    top = np.iinfo(np.uint64).max

    def codes(rows: int) -> npt.NDArray[np.uint64]:
        return rng.integers(0, top, size=(rows, words), dtype=np.uint64, endpoint=True)

    def distance(a: npt.NDArray[np.uint64], b: npt.NDArray[np.uint64]) -> int:
        return int(np.bitwise_count(a ^ b).sum())

    recent, listed = codes(300), codes(200)  # more than a block of rows, not a multiple
    for n, flips in enumerate([0, 1, radius, radius + 1]):  # planted at the edges
        recent[2 * n + 1] = recent[2 * n]
        recent[2 * n + 1, -1] ^= np.uint64((1 << flips) - 1)
        listed[n] = recent[100 + n]
        listed[n, 0] ^= np.uint64((1 << flips) - 1)
    ids = rng.permutation(np.arange(1000, 1300, dtype=np.int64))  # not in id order
    listed_ids = np.arange(1, 201, dtype=np.int64)

    among = sorted(_earlier_within(ids, recent, radius))
    assert among == sorted(
        (int(max(ids[i], ids[j])), int(min(ids[i], ids[j])), distance(recent[i], recent[j]))
        for i in range(300)
        for j in range(i + 1, 300)
        if distance(recent[i], recent[j]) <= radius
    )
    assert len(among) >= 3
    across = sorted(_within(ids, recent, listed_ids, listed, radius, earlier=False))
    assert across == sorted(
        (int(ids[i]), int(listed_ids[j]), distance(recent[i], listed[j]))
        for i in range(300)
        for j in range(200)
        if distance(recent[i], listed[j]) <= radius
    )
    assert len(across) >= 3
