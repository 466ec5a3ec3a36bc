"""The near-duplicate index and its use (triage/neardup.py, triage/matches.py,
triage/catchup.py), from a review: every hash within the radius is found, none beyond
it, and what one process or an import commits reaches every worker, also when a
refresh fails half-way or SQLite gives an id out again. PostgreSQL-only tests skip on
SQLite; run them with HOTLINE_TEST_DATABASE_URL pointing at a PostgreSQL database.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from hotline.db import session_scope, utcnow
from tests.triage.test_neardup import lookup
from triage.hashlists import add_entries, create_list, import_list, remove_entries
from triage.matches import match_seen_media
from triage.models import HashList, KnownEntry, Media, MediaFrame, MediaKind
from triage.neardup import (
    MIN_TABLE_ROWS,
    HammingIndex,
    NearDuplicates,
    NearQuery,
    _KnownTable,
    code_to_pdq,
    code_to_phash,
    informative_phash,
    pdq_to_code,
)

Codes = npt.NDArray[np.uint64]


# -- helpers -----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def view(clock: FakeClock | None = None, **options: float) -> NearDuplicates:
    """A process's index as ``get_near_duplicates`` builds it from the default settings."""
    return NearDuplicates(
        phash_radius=int(options.get("phash_radius", 8)),
        pdq_radius=int(options.get("pdq_radius", 31)),
        pdq_min_quality=int(options.get("pdq_min_quality", 50)),
        refresh_seconds=options.get("refresh_seconds", 0),
        settled_ids=int(options.get("settled_ids", 100_000)),
        settle_seconds=options.get("settle_seconds", 600.0),
        near_limit=int(options.get("near_limit", 20)),
        **({"clock": clock} if clock else {}),
    )


def media_row(seed: str, **values: object) -> Media:
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return Media(
        sha256=digest,
        sha1=digest[:40],
        md5=digest[:32],
        mime="image/gif",
        kind=MediaKind.image,
        size=100,
        **values,  # type: ignore[arg-type]
    )


def add_media(engine: Engine, row: Media, frames: list[MediaFrame] | None = None) -> int:
    with session_scope(engine) as session:
        session.add(row)
        session.flush()
        assert row.id is not None
        for frame in frames or []:
            frame.media_id = row.id
            session.add(frame)
        return row.id


def random_phashes(rng: np.random.Generator, count: int) -> list[str]:
    """Informative pHash values (16 to 48 bits set)."""
    codes = rng.integers(0, 2**64, size=count * 2, dtype=np.uint64)
    codes = codes[informative_phash(codes)][:count]
    assert len(codes) == count
    return [code_to_phash(code) for code in codes]


def phash_flip(value: str, bits: int) -> str:
    """``value`` with its lowest ``bits`` bits flipped."""
    return code_to_phash(int(value, 16) ^ ((1 << bits) - 1))


def pdq_flip(value: str, bits: int) -> str:
    """``value`` with ``bits`` bits flipped, spread over its four words."""
    code = pdq_to_code(value)
    for bit in range(bits):
        code[bit % 4] ^= np.uint64(1) << np.uint64(bit // 4)
    return code_to_pdq(code)


def postgres_only(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: set HOTLINE_TEST_DATABASE_URL")


def sqlite_only(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite only: PostgreSQL sequences never hand an id out twice")


# -- what the review found (fixed)


@pytest.mark.postgres
def test_a_worker_starting_during_a_large_import_loads_all_of_it_once_committed(
    committed: Engine, tmp_path: Path
) -> None:
    """PostgreSQL. ``hotline hashes import`` of a new list reserves an id for every line
    at once (``_reserve_ids``: setval, committed on a side connection) and commits its
    rows at the end. A worker process whose first refresh falls within the import (a
    start, a restart, a prefork child replaced) takes ``top`` from the sequence, treats
    every id more than ``settled_ids`` (100,000) below it as settled (read by COPY now,
    when none is committed) and watches only the ids above. When the import commits,
    its first ``lines - 100,000`` entries were never read by that process. Now the ids
    at or below the settled point that no committed row holds are gaps, read again
    while a transaction running at the load may fill them."""
    postgres_only(committed)
    # The table of a list of an earlier test under the id this list takes (a test
    # database's rows go, its tables and ids start again) would be dropped by the
    # import, which locks the list table until it commits: the worker, in this thread,
    # would wait for it forever.
    with committed.begin() as connection:
        for (name,) in connection.exec_driver_sql(
            "SELECT relname FROM pg_class WHERE relname ~ '^known_entry_[0-9]+$'"
            " AND relnamespace = current_schema()::regnamespace AND relkind = 'r'"
            " AND substring(relname from 13)::bigint NOT IN (SELECT id FROM hash_list)"
        ).all():
            connection.exec_driver_sql(f'DROP TABLE "{name}"')
    values = random_phashes(np.random.default_rng(7), 100_050)
    path = tmp_path / "big.csv"
    path.write_text("phash\n" + "\n".join(values) + "\n")
    worker = view()  # the defaults: settled_ids=100_000

    def worker_starts(done: int, total: int) -> None:
        # While the import is reading its file, a worker process starts.
        if worker._refreshed_at is None:
            with Session(committed) as session:
                worker.refresh(session, force=True)

    with session_scope(committed) as importing:
        import_list(importing, path, list_name="large-partner-list", on_progress=worker_starts)
    assert worker._refreshed_at is not None
    # Every entry is there: a process started now finds the first and the last.
    fresh = view()
    for value in (values[0], values[-1]):
        assert [m.source for m in lookup(fresh, committed, phash=value)] == ["large-partner-list"]
    # The worker finds the newest entries, not the first 50.
    assert [m.source for m in lookup(worker, committed, phash=values[-1])] == ["large-partner-list"]
    missed = [v for v in values[:60] if not lookup(worker, committed, phash=v)]
    assert missed == []


class ConnectionLost(Exception):
    """What a refresh may meet half way: a dropped connection, a statement timeout,
    Celery's SoftTimeLimitExceeded."""


def fail_once_reading_the_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next refresh fails after the media table was read, at the known lists."""
    calls = {"n": 0}
    original = _KnownTable.top

    def top(self: _KnownTable, session: Session) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionLost("server closed the connection unexpectedly")
        return original(self, session)

    monkeypatch.setattr(_KnownTable, "top", top)


def test_a_first_load_that_fails_half_way_is_done_again_whole(
    committed: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first refresh (``worker_process_init``: "the first task loads it instead")
    marks the media cursor started at ``settled`` before the refresh has finished; the
    rows it read wait in ``_pending`` and are dropped when the refresh fails later (here
    reading the known lists). The next refresh is no first load any more: every media
    row up to ``settled`` (all but the newest 100,000 with the defaults; all of them
    with ``settled_ids=0`` here) was never indexed by this process. Now a refresh is
    all or nothing."""
    value = random_phashes(np.random.default_rng(12), 1)[0]
    item = add_media(committed, media_row("seen long ago", phash=value))
    near = view(settled_ids=0)
    fail_once_reading_the_lists(monkeypatch)
    with Session(committed) as session, pytest.raises(ConnectionLost):
        near.refresh(session, force=True)  # at the worker's start: logged, ignored
    # The first task's lookup loads "instead".
    assert [m.media_id for m in lookup(near, committed, phash=value)] == [item]


def test_rows_of_a_gap_read_in_a_failed_refresh_are_read_again(
    committed: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh re-reads the id gaps and takes the ids it found out of them
    (``_Cursor.fill``) at once, while the rows only reach the index at the end
    (``flush``). If the refresh fails in between, the rows are dropped and the gap is
    gone: a row committed out of id order is never read. (On SQLite an explicit id
    stands in for a PostgreSQL transaction committing after a later one.)"""
    near = view(settle_seconds=600)
    add_media(committed, media_row("ten", phash="0f0f0f0f0f0f0f0f", id=10))
    with Session(committed) as session:
        near.refresh(session, force=True)  # ids 1-9: a gap, re-read on every refresh
    late = random_phashes(np.random.default_rng(13), 1)[0]
    add_media(committed, media_row("five", phash=late, id=5))  # commits late
    fail_once_reading_the_lists(monkeypatch)
    with Session(committed) as session, pytest.raises(ConnectionLost):
        near.refresh(session, force=True)
    assert [m.media_id for m in lookup(near, committed, phash=late)] == [5]


def test_ids_a_rolled_back_record_gave_back_are_read_when_taken_again(
    committed: Engine,
) -> None:
    """SQLite (the embedded runtime). A worker looks up inside its record transaction,
    so the refresh reads that transaction's own uncommitted media and moves the
    watermark past them. If the transaction rolls back, SQLite hands the same ids to
    the next rows (max(id) + 1): media committed under them are never read by this
    process, and its index keeps the rolled-back codes under their ids."""
    sqlite_only(committed)
    near = view()
    first = add_media(committed, media_row("first", phash="0f0f0f0f0f0f0f0f"))
    rolled_back, kept = random_phashes(np.random.default_rng(3), 2)
    with Session(committed) as record:
        row = media_row("rolled back", phash=rolled_back)
        record.add(row)
        record.flush()
        assert row.id == first + 1
        # The worker's lookup in its transaction (service.match_media does this).
        near.lookup(record, phash=rolled_back, pdq=None, pdq_quality=None, exclude_media_id=row.id)
        record.rollback()
    # Another worker records a different picture, which takes the same id.
    later = add_media(committed, media_row("later", phash=kept))
    assert later == first + 1
    assert [m.media_id for m in lookup(near, committed, phash=phash_flip(kept, 2))] == [later]


def test_own_list_entries_under_reused_ids_are_read(committed: Engine) -> None:
    """SQLite (the embedded runtime). A reversal takes the newest own-list entries off
    (``remove_entries``) and the next confirmation adds entries under the same ids
    (max(id) + 1). A process that did not refresh in between (an idle worker process)
    finds ``top`` back at its watermark and never reads them; no list was removed, so
    nothing reloads."""
    sqlite_only(committed)
    near = view()
    reversed_value, confirmed_value = random_phashes(np.random.default_rng(4), 2)
    with session_scope(committed) as session:
        own = create_list(session, "hotline-own", own=True)
        own_id = int(own.id or 0)
        add_entries(
            session, own_id, [{"sha256": "a" * 64, "phash": reversed_value, "added_at": utcnow()}]
        )
    assert [m.source for m in lookup(near, committed, phash=reversed_value)] == ["hotline-own"]
    # While this process is idle: a supervisor reverses, an analyst confirms another.
    with session_scope(committed) as session:
        assert remove_entries(session, own_id, ["a" * 64]).entries == 1
    with session_scope(committed) as session:
        add_entries(
            session, own_id, [{"sha256": "b" * 64, "phash": confirmed_value, "added_at": utcnow()}]
        )
    assert lookup(near, committed, phash=reversed_value) == []
    assert [m.source for m in lookup(near, committed, phash=confirmed_value)] == ["hotline-own"]


def test_a_list_import_matches_frames_when_no_own_pdq_is_good_enough(
    committed: Engine,
) -> None:
    """``near_seen_media`` (the matching of a list imported or enabled later against
    the media seen before, and the import's own catch-up with ``media_above``) tests
    "is there any media item with a matchable hash" on the items' own hashes and skips
    the later frames too when there is none. An animation fading in from black has an
    own PDQ of quality near 0 and good later frames: when the media range holds only
    such items, the frame that is on the list is not matched."""
    listed = "3c" * 32
    frame = MediaFrame(frame=5, phash="0f0f0f0f0f0f0f0f", pdq=pdq_flip(listed, 4), pdq_quality=90)
    animation = add_media(
        committed, media_row("fade-in", pdq="00" * 32, pdq_quality=0), frames=[frame]
    )
    with session_scope(committed) as session:
        hash_list = create_list(session, "partner-pdq")
        list_id = int(hash_list.id or 0)
        session.add(KnownEntry(list_id=list_id, pdq=listed))
    # The workers' lookup finds it through the frame...
    found = lookup(view(), committed, pdq=pdq_flip(listed, 4), pdq_quality=90)
    assert [(m.source, m.media_id) for m in found] == [("seen", animation), ("partner-pdq", None)]
    # ... the list's matching of the media seen before does not.
    with session_scope(committed) as session:
        seen = match_seen_media(session, list_id, now=utcnow())
    assert seen.media == 1


# == what held: coverage the existing tests lack ===============================================


def brute_force(
    ids: npt.NDArray[np.int64], codes: Codes, query: Codes, radius: int
) -> list[tuple[int, int]]:
    distances = np.bitwise_count(codes.reshape(len(ids), -1) ^ query).astype(np.int64)
    total = distances.sum(axis=1)
    near = np.flatnonzero(total <= radius)
    return sorted(((int(ids[i]), int(total[i])) for i in near), key=lambda p: (p[1], p[0]))


def flip_bits(code: Codes, positions: Iterator[int] | list[int]) -> Codes:
    out = code.copy()
    for bit in positions:
        out[bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    return out


@st.composite
def hard_cases(draw: st.DrawFn) -> dict[str, object]:
    """Index cases the existing property test does not draw: any substring count the
    constructor takes (3 to 64 per word), radii far above the layout's, ids repeated
    (frames share their media item's id), a huge bucket (most bytes zero), and planted
    neighbours whose differing bits all fall in one substring, at r and r + 1."""
    bits = draw(st.sampled_from([64, 256]))
    words = bits // 64
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.sampled_from([500, MIN_TABLE_ROWS + 700]))
    codes = rng.integers(0, 2**64, size=(n, words), dtype=np.uint64)
    if draw(st.booleans()):
        codes &= np.uint64(0xFF000000000000FF)  # one huge bucket per middle substring
    query = codes[int(rng.integers(0, n))].copy()
    radius = draw(st.sampled_from([0, 1, 2, 7, 8, 9, 15, 16, 31, 32, 40, 63, 64]))
    radius = min(radius, bits)
    # Differing bits packed at the low end of one word: inside one substring when it
    # is wide enough, else over the fewest.
    word = int(rng.integers(0, words))
    planted = [
        flip_bits(query, [64 * word + b for b in range(d)]) for d in (radius, radius + 1) if d <= 64
    ]
    rows = rng.choice(n, size=len(planted), replace=False)
    codes[rows] = planted
    ids = rng.integers(0, n // 3, size=n).astype(np.int64)  # repeated ids
    return {
        "bits": bits,
        "codes": codes,
        "ids": ids,
        "query": query,
        "radius": radius,
        "parts": draw(st.sampled_from([None, 3, 5, 9, 13, 21, 32, 64])),
        "cut": draw(st.integers(1, n - 1)),
        "removed": draw(st.integers(0, n // 3)),
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hard_cases())
def test_the_index_matches_brute_force_on_hard_cases(case: dict[str, object]) -> None:
    bits, codes, ids = case["bits"], case["codes"], case["ids"]
    query, radius, removed = case["query"], case["radius"], case["removed"]
    assert isinstance(bits, int)
    assert isinstance(codes, np.ndarray)
    assert isinstance(ids, np.ndarray)
    assert isinstance(query, np.ndarray)
    assert isinstance(radius, int)
    assert isinstance(removed, int)
    assert isinstance(case["cut"], int)
    parts = case["parts"]
    index = HammingIndex(bits, parts=parts)  # type: ignore[arg-type]
    flat = codes[:, 0] if bits == 64 else codes
    index.add(ids[: case["cut"]], flat[: case["cut"]])
    index.add(ids[case["cut"] :], flat[case["cut"] :])
    assert index.search(query, radius) == brute_force(ids, codes, query, radius)
    # Removed ids are not found; re-added ones are.
    gone = np.unique(ids[:removed])
    index.remove(gone)
    alive = ~np.isin(ids, gone)
    assert index.search(query, radius) == brute_force(ids[alive], codes[alive], query, radius)
    back = np.isin(ids, gone[:5])
    index.add(ids[back], flat[back])
    alive |= back
    assert index.search(query, radius) == brute_force(ids[alive], codes[alive], query, radius)


def test_radius_zero_and_one_on_a_crowded_single_value() -> None:
    """Ten thousand copies of one code (a flat picture's pHash is the same everywhere)
    and one neighbour at each distance: radius 0 finds the copies only."""
    index = HammingIndex(64)
    value = np.uint64(0x8000000000000000)
    n = MIN_TABLE_ROWS + 10
    codes = np.full(n, value, dtype=np.uint64)
    for d in range(1, 10):
        codes[d] = value ^ np.uint64((1 << d) - 1)
    index.add(np.arange(n), codes)
    assert "substrings" in index.describe()
    assert len(index.search(value, 0)) == n - 9
    assert len(index.search(value, 1)) == n - 8
    assert len(index.search(value, 9)) == n


@pytest.mark.parametrize("quality", [49, 50])
def test_pdq_quality_at_the_minimum_for_frames_and_queries(committed: Engine, quality: int) -> None:
    """A later frame at exactly the minimum quality is indexed and matched, one below
    is not; a query at exactly the minimum is looked up, one below is not."""
    value = "5a" * 32
    item = add_media(
        committed,
        media_row("animation", pdq="00" * 32, pdq_quality=0),
        frames=[MediaFrame(frame=2, phash="0f0f0f0f0f0f0f0f", pdq=value, pdq_quality=quality)],
    )
    found = lookup(view(), committed, pdq=pdq_flip(value, 31), pdq_quality=50)
    assert [m.media_id for m in found] == ([item] if quality >= 50 else [])
    assert lookup(view(), committed, pdq=value, pdq_quality=49) == []
    assert lookup(view(), committed, pdq=pdq_flip(value, 32), pdq_quality=90) == []


def test_frames_of_media_without_hashes_of_their_own_are_found(committed: Engine) -> None:
    """A media item whose own pHash and PDQ are missing, with hashed later frames: the
    refresh reads its frames under its id, the check reads them again, and the query
    that excludes the item itself finds nothing."""
    phash = random_phashes(np.random.default_rng(5), 1)[0]
    pdq = "a5" * 32
    item = add_media(
        committed,
        media_row("no own hashes"),
        frames=[MediaFrame(frame=3, phash=phash, pdq=pdq, pdq_quality=80)],
    )
    near = view()
    found = lookup(near, committed, phash=phash_flip(phash, 8), pdq=pdq, pdq_quality=80)
    assert [(m.hash_type, m.distance, m.media_id) for m in found] == [
        ("phash", 8, item),
        ("pdq", 0, item),
    ]
    assert lookup(near, committed, phash=phash_flip(phash, 9)) == []
    assert lookup(near, committed, phash=phash, pdq=pdq, pdq_quality=80, exclude=item) == []


def test_uppercase_and_leading_zero_hex_match_across_lists_and_media(committed: Engine) -> None:
    phash = "00000000ffff00ff"  # 24 bits set: informative, leading zeros
    with session_scope(committed) as session:
        listed = create_list(session, "upper")
        session.add(KnownEntry(list_id=listed.id, phash=phash.upper(), pdq=("0F" * 32)))
    item = add_media(committed, media_row("upper", phash=phash.upper()))
    found = lookup(view(), committed, phash=phash, pdq="0f" * 32, pdq_quality=90)
    assert [(m.source, m.hash_type, m.distance) for m in found] == [
        ("upper", "phash", 0),
        ("seen", "phash", 0),
        ("upper", "pdq", 0),
    ]
    assert found[1].media_id == item


def test_a_list_disabled_then_enabled_matches_again_without_reload(committed: Engine) -> None:
    value = random_phashes(np.random.default_rng(6), 1)[0]
    with session_scope(committed) as session:
        listed = create_list(session, "toggled")
        list_id = listed.id
        session.add(KnownEntry(list_id=list_id, phash=value))
    near = view()
    assert len(lookup(near, committed, phash=value)) == 1

    def set_enabled(enabled: bool) -> None:
        with session_scope(committed) as session:
            session.execute(
                update(HashList).where(col(HashList.id) == list_id).values(enabled=enabled)
            )

    set_enabled(False)
    assert lookup(near, committed, phash=value) == []
    set_enabled(True)
    assert len(lookup(near, committed, phash=value)) == 1


def test_lookups_while_another_thread_refreshes_stay_exact(committed: Engine) -> None:
    """Lookups in several threads while media are being added: each finds every row
    committed before it started (a forced refresh per lookup), never one beyond the
    radius."""
    rng = np.random.default_rng(9)
    base = random_phashes(rng, 1)[0]
    near = view(near_limit=30)  # every one of them, not the nearest 20
    added: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            before = list(added)
            with Session(committed) as session:
                found = near.lookup_many(
                    session,
                    [NearQuery(base, None, None), NearQuery(phash_flip(base, 9), None, None)],
                )
            ids = {m.media_id for m in found[0]}
            if not set(before) <= ids:
                errors.append(f"missed {set(before) - ids}")
            if any(m.distance > 8 for matches in found for m in matches):
                errors.append("beyond the radius")

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for n in range(30):
            added.append(add_media(committed, media_row(f"t{n}", phash=phash_flip(base, n % 9))))
            near.refresh_seconds = 0
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert errors == []


def test_the_catch_up_pairs_at_the_radius_and_one_beyond() -> None:
    from triage.catchup import _earlier_within

    rng = np.random.default_rng(10)
    for words, radius in ((1, 8), (4, 31)):
        codes = rng.integers(0, 2**64, size=(300, words), dtype=np.uint64)
        codes[100] = flip_bits(codes[5], list(range(radius)))
        codes[200] = flip_bits(codes[6], list(range(radius + 1)))
        ids = np.arange(300, dtype=np.int64)[::-1].copy()  # ids against row order
        found = set(_earlier_within(ids, codes, radius))
        expected = set()
        for a, b in itertools.combinations(range(300), 2):
            distance = int(np.bitwise_count(codes[a] ^ codes[b]).astype(np.int64).sum())
            if distance <= radius:
                later, earlier = max(ids[a], ids[b]), min(ids[a], ids[b])
                expected.add((int(later), int(earlier), distance))
        assert found == expected
        assert (int(ids[5]), int(ids[100]), radius) in found or (
            int(ids[100]),
            int(ids[5]),
            radius,
        ) in found


def test_a_list_imported_before_a_process_starts_is_loaded_in_bulk(
    committed: Engine, tmp_path: Path
) -> None:
    """Sanity: a list imported through import_list is matched by a process started
    after it (the bulk first load, SQLite or COPY)."""
    values = random_phashes(np.random.default_rng(11), 50)
    path = tmp_path / "small.csv"
    path.write_text("phash\n" + "\n".join(values) + "\n")
    with session_scope(committed) as session:
        import_list(session, path, list_name="small")
    near = view(settled_ids=0)
    for value in (values[0], values[-1]):
        assert [m.source for m in lookup(near, committed, phash=phash_flip(value, 8))] == ["small"]


def test_the_frame_is_matched_when_another_item_has_a_good_own_pdq(
    committed: Engine,
) -> None:
    """The same animation as in the test above, plus one unrelated item with a good
    own PDQ: now the frame is matched (so the miss comes from the early ``continue``)."""
    listed = "3c" * 32
    frame = MediaFrame(frame=5, phash="0f0f0f0f0f0f0f0f", pdq=pdq_flip(listed, 4), pdq_quality=90)
    add_media(committed, media_row("fade-in", pdq="00" * 32, pdq_quality=0), frames=[frame])
    add_media(committed, media_row("unrelated", pdq="c3" * 32, pdq_quality=90))
    with session_scope(committed) as session:
        hash_list = create_list(session, "partner-pdq")
        list_id = int(hash_list.id or 0)
        session.add(KnownEntry(list_id=list_id, pdq=listed))
    with session_scope(committed) as session:
        seen = match_seen_media(session, list_id, now=utcnow())
    assert seen.media == 1
