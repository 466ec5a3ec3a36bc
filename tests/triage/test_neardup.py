"""Near duplicates: exact recall of the index against brute force, and the database view
shared by workers (refresh, out-of-order commits, disabled lists, PDQ quality)."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from hotline.db import session_scope
from tests.fixtures import images
from triage.hashing import hash_media
from triage.hashlists import create_list
from triage.models import HashList, HashType, KnownEntry, Media, MediaKind
from triage.neardup import (
    MIN_TABLE_ROWS,
    HammingIndex,
    KnownLoaded,
    NearDuplicates,
    NearMatch,
    _Cursor,
    code_to_pdq,
    code_to_phash,
    hex_to_codes,
    informative_phash,
    informative_phashes,
    pdq_to_code,
    phash_to_code,
)

Codes = npt.NDArray[np.uint64]


# -- which pHashes say something of their picture ------------------------------------------


def _phash_codes(pictures: list[bytes]) -> Codes:
    values = [hash_media(picture).phash or "" for picture in pictures]
    codes, valid = hex_to_codes(values, 64)
    assert valid.all()
    return codes


def test_every_picture_with_structure_has_an_informative_phash() -> None:
    textures = ("natural", "checker", "text", "noise")
    pictures = [
        images.jpeg(seed, (160, 120), texture=texture)
        for seed, texture in itertools.product(range(25), textures)
    ]
    # Darkened and washed-out copies too: their PDQ quality is near 0, their pHash is
    # what the original's is within a few bits, and it is matched.
    picture = images.make_image(7, (320, 240), images.UNMARKED)
    for change in (lambda v: v // 12, lambda v: 120 + v // 20):
        pictures.append(images.encode(Image.eval(picture, change), "JPEG"))
    quality = hash_media(pictures[-1]).pdq_quality
    assert quality is not None
    assert quality < 10
    assert informative_phash(_phash_codes(pictures)).all()


def test_pictures_without_structure_have_a_phash_that_is_not_matched() -> None:
    flat = images.featureless()
    assert not informative_phash(_phash_codes(list(flat.values()))).any()
    real = hash_media(images.jpeg(3)).phash or ""
    assert informative_phashes(real)
    assert not informative_phashes(real, hash_media(flat["spacer"]).phash or "")
    assert not informative_phashes("not a phash")


# -- helpers -----------------------------------------------------------------------------------


def flip(rng: np.random.Generator, code: Codes, count: int) -> Codes:
    """``code`` (words,) with exactly ``count`` distinct bits flipped."""
    out = code.copy()
    for bit in rng.choice(64 * len(code), size=count, replace=False):
        out[bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    return out


def brute_force(
    ids: npt.NDArray[np.int64], codes: Codes, query: Codes, radius: int
) -> list[tuple[int, int]]:
    distances = np.bitwise_count(codes.reshape(len(ids), -1) ^ query).sum(axis=1)
    near = np.flatnonzero(distances <= radius)
    return sorted(((int(ids[i]), int(distances[i])) for i in near), key=lambda p: (p[1], p[0]))


def flat(codes: Codes, bits: int) -> Codes:
    return codes[:, 0] if bits == 64 else codes


# -- codes -------------------------------------------------------------------------------------


def test_hex_codes_round_trip() -> None:
    assert phash_to_code("ffffffffffffffff") == np.uint64(2**64 - 1)
    assert code_to_phash(phash_to_code("00000000000000Af")) == "00000000000000af"
    pdq = "0123456789abcdef" * 4
    assert pdq_to_code(pdq).tolist() == [0x0123456789ABCDEF] * 4
    assert code_to_pdq(pdq_to_code(pdq)) == pdq
    for bad in ("", "123", "g" * 16, "0123456789abcde ", "0x23456789abcdef"):
        with pytest.raises(ValueError, match="pHash"):
            phash_to_code(bad)
    with pytest.raises(ValueError, match="PDQ"):
        pdq_to_code("ab" * 31)


def test_hex_to_codes_decodes_a_batch_and_flags_malformed_values() -> None:
    codes, valid = hex_to_codes(["0000000000000001", "ffffffffffffffff"], 64)
    assert codes.tolist() == [1, 2**64 - 1]
    assert valid.all()
    # Lengths that add up, and a value bytes.fromhex would accept with its space.
    mixed = ["0000000000000001", "000000000000002", "00000000000000003", "00 0000000000004"]
    codes, valid = hex_to_codes(mixed, 64)
    assert valid.tolist() == [True, False, False, False]
    assert codes[0] == 1
    codes, valid = hex_to_codes(["ab" * 32, "zz" * 32], 256)
    assert codes.shape == (2, 4)
    assert valid.tolist() == [True, False]


# -- the index against brute force -------------------------------------------------------------


@st.composite
def index_cases(draw: st.DrawFn, bits: int) -> dict[str, object]:
    words = bits // 64
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # Below MIN_TABLE_ROWS only the scan runs; above, the tables (and merges) do.
    n = draw(st.sampled_from([300, MIN_TABLE_ROWS + 3000, MIN_TABLE_ROWS + 9000]))
    radius = draw(st.integers(0, 12 if bits == 64 else 40))
    if draw(st.booleans()):
        codes = rng.integers(0, 2**64, size=(n, words), dtype=np.uint64)
    else:
        # Clustered: a few centres and codes a few bits away from them, so buckets are
        # crowded and many codes sit near the radius.
        centres = rng.integers(0, 2**64, size=(8, words), dtype=np.uint64)
        codes = centres[np.arange(n) % 8]
        spread = rng.integers(0, 16, size=n)
        for step in range(15):
            rows = np.flatnonzero(step < spread)
            bits_at = rng.integers(0, bits, size=len(rows))
            one = np.left_shift(np.uint64(1), (bits_at % 64).astype(np.uint64))
            np.bitwise_xor.at(codes, (rows, bits_at // 64), one)
    query = codes[int(rng.integers(0, n))].copy() if draw(st.booleans()) else None
    if query is None:
        query = rng.integers(0, 2**64, size=words, dtype=np.uint64)
    # A neighbour at every distance 0..radius+1, placed at random rows.
    planted = [flip(rng, query, d) for d in range(min(radius + 2, bits + 1))]
    codes[rng.choice(n, size=len(planted), replace=False)] = planted
    ids = rng.permutation(n).astype(np.int64) * 3  # ids unrelated to rows
    valid_parts = list(range(3, 9))
    return {
        "ids": ids,
        "codes": codes,
        "query": query,
        "radius": radius,
        "parts": draw(st.sampled_from([None, *valid_parts])),
        # Added in random batches (the delta, merges, rebuilds), or in three: one past
        # MIN_TABLE_ROWS, one small enough to be inserted into the tables in place, and a
        # few rows left in the delta.
        "cuts": sorted(
            draw(
                st.one_of(
                    st.lists(st.integers(1, n - 1), max_size=4),
                    st.just([n - 4200, n - 50] if n > MIN_TABLE_ROWS + 4200 else []),
                )
            )
        ),
    }


def check_against_brute_force(bits: int, case: dict[str, object]) -> None:
    ids, codes, query = case["ids"], case["codes"], case["query"]
    radius = case["radius"]
    assert isinstance(ids, np.ndarray)
    assert isinstance(codes, np.ndarray)
    assert isinstance(query, np.ndarray)
    assert isinstance(radius, int)
    assert isinstance(case["cuts"], list)
    index = HammingIndex(bits, radius=8 if bits == 64 else 31, parts=case["parts"])  # type: ignore[arg-type]
    for start, end in itertools.pairwise([0, *case["cuts"], len(ids)]):
        index.add(ids[start:end], flat(codes[start:end], bits))
    assert len(index) == len(ids)
    assert index.search(query, radius) == brute_force(ids, codes, query, radius)
    for limit in (0, 1, 3):  # the nearest, the lowest ids among equals
        expected = brute_force(ids, codes, query, radius)[:limit]
        assert index.search(query, radius, limit=limit) == expected
    # The radius the layout was chosen for, and one beyond it.
    for r in (8, 9) if bits == 64 else (31, 32):
        assert index.search(query, r) == brute_force(ids, codes, query, r)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index_cases(64))
def test_phash_index_finds_exactly_what_brute_force_finds(case: dict[str, object]) -> None:
    check_against_brute_force(64, case)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index_cases(256))
def test_pdq_index_finds_exactly_what_brute_force_finds(case: dict[str, object]) -> None:
    check_against_brute_force(256, case)


@pytest.mark.parametrize("bits", [64, 256])
def test_delta_merges_into_the_tables_and_removals_are_not_found(bits: int) -> None:
    rng = np.random.default_rng(bits)
    words = bits // 64
    radius = 8 if bits == 64 else 31
    n = MIN_TABLE_ROWS + 4000
    codes = rng.integers(0, 2**64, size=(n + 6000, words), dtype=np.uint64)
    query = codes[5].copy()
    codes[n + 10] = flip(rng, query, radius)  # lands in the delta, then in the tables
    codes[n + 5000] = flip(rng, query, 1)
    ids = np.arange(len(codes), dtype=np.int64)
    index = HammingIndex(bits)  # type: ignore[arg-type]
    index.add(ids[:n], flat(codes[:n], bits))
    layout = index.describe()
    assert "substrings" in layout
    tables = index.nbytes()
    for start in range(n, n + 6000, 500):
        index.add(ids[start : start + 500], flat(codes[start : start + 500], bits))
        expected = brute_force(ids[: start + 500], codes[: start + 500], query, radius)
        assert index.search(query, radius) == expected
    assert index.nbytes() > tables  # the delta was merged into the tables
    assert index.describe().split(",")[2] == layout.split(",")[2]  # in place, same layout

    assert index.remove([5, n + 10, 10**9]) == 2
    assert len(index) == len(ids) - 2
    alive = np.ones(len(ids), dtype=np.bool_)
    alive[[5, n + 10]] = False
    assert index.search(query, radius) == brute_force(ids[alive], codes[alive], query, radius)
    # Removing most rows rebuilds the tables without them.
    gone = ids[: len(ids) // 2]
    index.remove(gone)
    alive[gone] = False
    assert len(index) == int(alive.sum())
    assert index.search(query, 64) == brute_force(ids[alive], codes[alive], query, 64)
    index.add([ids[5]], flat(codes[5:6], bits))  # back again
    alive[5] = True
    assert index.search(query, radius) == brute_force(ids[alive], codes[alive], query, radius)


def test_a_limited_search_gives_each_id_once_at_its_nearest() -> None:
    """An animation's frames are rows of one id: the limit counts ids, not rows."""
    index = HammingIndex(64, radius=8)
    query = 0x8F373714ACFCF4D0
    rows = [(7, 5), (7, 1), (3, 2), (3, 2), (9, 1), (4, 8), (5, 9), (6, 0)]  # (id, distance)
    index.add(
        np.array([i for i, _ in rows], dtype=np.int64),
        np.array([query ^ ((1 << d) - 1) for _, d in rows], dtype=np.uint64),
    )
    assert index.search(query, 8, limit=3) == [(6, 0), (7, 1), (9, 1)]
    assert index.search(query, 8, limit=10) == [(6, 0), (7, 1), (9, 1), (3, 2), (4, 8)]
    assert len(index.search(query, 8)) == 7  # unlimited: every row


def test_search_takes_ints_and_rejects_bad_codes() -> None:
    index = HammingIndex(256)
    code = pdq_to_code("f0" * 32)
    index.add([7], code.reshape(1, 4))
    assert index.search(int("f0" * 32, 16), 0) == [(7, 0)]
    one_off = code.copy()
    one_off[3] ^= np.uint64(1)
    assert index.search(one_off, 1) == [(7, 1)]
    assert index.search(~code, 256) == [(7, 256)]  # a uint8 sum would wrap to 0
    with pytest.raises(ValueError, match="256-bit"):
        index.search(np.uint64(3), 8)
    with pytest.raises(ValueError, match="uint64"):
        index.add([1], np.zeros((1, 4), dtype=np.int64))
    small = HammingIndex(64)
    small.add(np.array([1, 2]), np.array([0, 2**64 - 1], dtype=np.uint64))
    assert small.search(0, 0) == [(1, 0)]
    assert small.search(np.uint64(1), 64) == [(1, 1), (2, 63)]


def test_the_tables_cost_under_32_bytes_per_phash() -> None:
    rng = np.random.default_rng(1)
    n = 400_000
    index = HammingIndex(64)
    index.add(np.arange(n), rng.integers(0, 2**64, size=n, dtype=np.uint64))
    assert index.nbytes() / n < 32


# -- the database view -------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def near(clock: FakeClock, **overrides: float) -> NearDuplicates:
    options: dict[str, float] = {
        "phash_radius": 8,
        "pdq_radius": 31,
        "pdq_min_quality": 50,
        "refresh_seconds": 2,
        **overrides,
    }
    return NearDuplicates(
        phash_radius=int(options["phash_radius"]),
        pdq_radius=int(options["pdq_radius"]),
        pdq_min_quality=int(options["pdq_min_quality"]),
        refresh_seconds=options["refresh_seconds"],
        settle_seconds=options.get("settle_seconds", 600.0),
        recent_seconds=options.get("recent_seconds", 0.0),
        clock=clock,
    )


def media(
    seed: str,
    *,
    phash: str | None = None,
    pdq: str | None = None,
    quality: int | None = None,
    id: int | None = None,
) -> Media:
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return Media(
        id=id,
        sha256=digest,
        sha1=digest[:40],
        md5=digest[:32],
        phash=phash,
        pdq=pdq,
        pdq_quality=quality,
        mime="image/png",
        kind=MediaKind.image,
        size=100,
    )


def add_media(engine: Engine, row: Media) -> int:
    with session_scope(engine) as session:
        session.add(row)
        session.flush()
        assert row.id is not None
        return row.id


def phash_near(value: str, bits: int) -> str:
    """``value`` with its lowest ``bits`` bits flipped."""
    return code_to_phash(int(value, 16) ^ ((1 << bits) - 1))


def lookup(
    view: NearDuplicates, engine: Engine, *, exclude: int | None = None, **hashes: object
) -> list[NearMatch]:
    with Session(engine) as session:
        return view.lookup(
            session,
            phash=hashes.get("phash"),  # type: ignore[arg-type]
            pdq=hashes.get("pdq"),  # type: ignore[arg-type]
            pdq_quality=hashes.get("pdq_quality"),  # type: ignore[arg-type]
            exclude_media_id=exclude,
        )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_worker_sees_media_another_worker_committed_after_its_refresh_interval(
    committed: Engine, clock: FakeClock
) -> None:
    worker_a, worker_b = near(clock), near(clock)
    seen = "8f3c5a1e9b2d4c67"
    assert lookup(worker_a, committed, phash=seen) == []
    assert lookup(worker_b, committed, phash=seen) == []

    media_id = add_media(committed, media("a", phash=seen))  # worker A's unit of work
    # Worker A, looking up the media it is processing, does not match it to itself.
    with Session(committed) as session:
        worker_a.refresh(session, force=True)
    assert lookup(worker_a, committed, phash=seen, exclude=media_id) == []

    query = phash_near(seen, 5)
    clock.now = 1.0  # within worker B's refresh interval: not loaded yet
    assert lookup(worker_b, committed, phash=query) == []
    clock.now = 2.5
    assert lookup(worker_b, committed, phash=query) == [
        NearMatch("seen", "phash", 5, media_id, None, None)
    ]
    assert lookup(worker_b, committed, phash=phash_near(seen, 9)) == []  # beyond radius 8


def test_rows_committed_out_of_id_order_are_found(committed: Engine, clock: FakeClock) -> None:
    """A transaction that took id 5 may commit after one that took id 10 was read."""
    view = near(clock, refresh_seconds=0, settle_seconds=60)
    first = "0123456789abcdef"
    late = "fedcba9876543210"
    add_media(committed, media("ten", phash=first, id=10))
    assert lookup(view, committed, phash=late) == []
    add_media(committed, media("five", phash=late, id=5))
    clock.now = 1
    assert [m.media_id for m in lookup(view, committed, phash=late)] == [5]
    add_media(committed, media("seven", phash=late, id=7))
    clock.now = 2
    assert [m.media_id for m in lookup(view, committed, phash=late)] == [5, 7]


def test_gaps_are_forgotten_once_no_transaction_can_fill_them() -> None:
    cursor = _Cursor()
    cursor.advance(np.array([3, 10, 4]), now=0.0, horizon=None)  # SQLite: by time
    cursor.advance(np.array([20]), now=1.0, horizon=500)  # PostgreSQL: by transaction id
    assert [(g.low, g.high) for g in cursor.gaps] == [(1, 2), (5, 9), (11, 19)]
    cursor.fill(np.array([7, 12]))
    assert [(g.low, g.high) for g in cursor.gaps] == [(1, 2), (5, 6), (8, 9), (11, 11), (13, 19)]
    # A transaction older than the gap's horizon still runs: kept, however long.
    cursor.settle(1000.0, oldest_running=499, settle_seconds=600)
    assert [(g.low, g.high) for g in cursor.gaps] == [(11, 11), (13, 19)]
    # Every transaction that could fill it has ended, and the grace period is over.
    cursor.settle(1000.0, oldest_running=500, settle_seconds=600)
    assert cursor.gaps == []
    cursor.advance(np.array([25]), now=1000.0, horizon=900)
    cursor.settle(1001.0, oldest_running=950, settle_seconds=600)
    assert [(g.low, g.high) for g in cursor.gaps] == [(21, 24)]  # within the grace period


@pytest.mark.postgres
def test_a_transaction_committing_after_a_later_one_is_found(
    committed: Engine, clock: FakeClock
) -> None:
    if committed.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers, so ids are committed in order")
    view = near(clock, refresh_seconds=0)
    slow_value, fast_value = "1111111111111111", "2222222222222222"
    with Session(committed) as slow:
        slow_row = media("slow", phash=slow_value)
        slow.add(slow_row)
        slow.flush()  # takes its id now, commits later
        fast_id = add_media(committed, media("fast", phash=fast_value))
        assert slow_row.id is not None
        assert slow_row.id < fast_id
        assert [m.media_id for m in lookup(view, committed, phash=fast_value)] == [fast_id]
        assert lookup(view, committed, phash=slow_value) == []
        # However long it stays open (an import of millions of rows), its ids are watched.
        clock.now = 10_000
        assert lookup(view, committed, phash=slow_value) == []
        slow.commit()
        slow_id = slow_row.id
    clock.now = 10_001
    assert [m.media_id for m in lookup(view, committed, phash=slow_value)] == [slow_id]


def test_known_lists_match_until_disabled_or_removed(committed: Engine, clock: FakeClock) -> None:
    view = near(clock, refresh_seconds=0)
    phash, pdq = "a5a5a5a5a5a5a5a5", "3c" * 32
    with session_scope(committed) as session:
        listed = create_list(session, "partner-list")
        other = create_list(session, "other-list")
        assert listed.id is not None
        assert other.id is not None
        rows = [
            KnownEntry(list_id=listed.id, phash=phash),
            KnownEntry(list_id=listed.id, pdq=pdq.upper()),
            KnownEntry(list_id=other.id, phash=phash),
            KnownEntry(list_id=other.id, md5="0" * 32),
            KnownEntry(list_id=other.id, phash="not a phash"),
        ]
        session.add_all(rows)
        session.flush()
        known = [row.id for row in rows]
        list_ids = listed.id, other.id

    pdq_code = pdq_to_code(pdq)
    pdq_code[0] ^= np.uint64(0b111)
    pdq_query = code_to_pdq(pdq_code)  # 3 bits away
    matches = lookup(view, committed, phash=phash_near(phash, 2), pdq=pdq_query, pdq_quality=90)
    assert matches == [
        NearMatch("partner-list", "phash", 2, None, known[0], list_ids[0]),
        NearMatch("other-list", "phash", 2, None, known[2], list_ids[1]),
        NearMatch("partner-list", "pdq", 3, None, known[1], list_ids[0]),
    ]

    with session_scope(committed) as session:
        session.execute(
            update(HashList).where(col(HashList.id) == list_ids[0]).values(enabled=False)
        )
    # Checked against the database on every hit, so no refresh interval applies.
    clock.now = 0.5
    view.refresh_seconds = 60
    matches = lookup(view, committed, phash=phash, pdq=pdq, pdq_quality=90)
    assert [(m.source, m.hash_type) for m in matches] == [("other-list", "phash")]

    with session_scope(committed) as session:
        session.execute(delete(HashList).where(col(HashList.id) == list_ids[1]))
    assert lookup(view, committed, phash=phash, pdq=pdq, pdq_quality=90) == []


def test_low_quality_pdq_is_neither_indexed_nor_matched(
    committed: Engine, clock: FakeClock
) -> None:
    view = near(clock, refresh_seconds=0, pdq_min_quality=50)
    pdq = "5a" * 32
    weak = add_media(committed, media("weak", pdq=pdq, quality=49))
    strong = add_media(committed, media("strong", pdq=pdq, quality=50))
    unknown = add_media(committed, media("unknown", pdq=pdq))
    assert unknown
    assert weak
    matches = lookup(view, committed, pdq=pdq, pdq_quality=80)
    assert matches == [NearMatch("seen", "pdq", 0, strong, None, None)]
    assert lookup(view, committed, pdq=pdq, pdq_quality=49) == []
    assert lookup(view, committed, pdq=pdq, pdq_quality=None) == []


def test_a_hit_whose_row_changed_or_went_is_not_returned(
    committed: Engine, clock: FakeClock
) -> None:
    view = near(clock, refresh_seconds=60)
    value = "00ff00ff00ff00ff"
    kept = add_media(committed, media("kept", phash=value))
    changed = add_media(committed, media("changed", phash=value))
    gone = add_media(committed, media("gone", phash=value))
    assert [m.media_id for m in lookup(view, committed, phash=value)] == [kept, changed, gone]
    with session_scope(committed) as session:
        session.execute(
            update(Media).where(col(Media.id) == changed).values(phash="ff00ff00ff00ff00")
        )
        session.execute(delete(Media).where(col(Media.id) == gone))
    assert [m.media_id for m in lookup(view, committed, phash=value)] == [kept]


def test_lookup_inside_the_workers_transaction(session: Session, clock: FakeClock) -> None:
    """The worker looks up with the session that just added the media (not committed)."""
    view = near(clock, refresh_seconds=0)
    value = "123456789abcdef0"
    first = media("first", phash=value)
    session.add(first)
    session.flush()
    second = media("second", phash=phash_near(value, 1))
    session.add(second)
    session.flush()
    matches = view.lookup(
        session, phash=second.phash, pdq=None, pdq_quality=None, exclude_media_id=second.id
    )
    assert matches == [NearMatch("seen", "phash", 1, first.id, None, None)]


def test_the_first_load_reads_settled_rows_in_bulk(committed: Engine, clock: FakeClock) -> None:
    """With settled_ids=0 every row is read by the bulk path (COPY on PostgreSQL)."""
    phash, pdq = "0f0f0f0f0f0f0f0f", "c3" * 32
    strong = add_media(committed, media("strong", phash=phash.upper(), pdq=pdq, quality=90))
    weak = add_media(committed, media("weak", pdq=pdq, quality=10))
    # 12 bits set: a picture without structure, 4 bits from an informative query.
    flat, query = "0000000000000fff", "000000000000ffff"
    add_media(committed, media("flat", phash=flat))
    with session_scope(committed) as session:
        listed = create_list(session, "bulk-list")
        assert listed.id is not None
        rows = [
            KnownEntry(list_id=listed.id, phash=phash),
            KnownEntry(list_id=listed.id, phash="z" * 16),
            KnownEntry(list_id=listed.id, phash="é" * 16),
            KnownEntry(list_id=listed.id, pdq=pdq),
            KnownEntry(list_id=listed.id, phash=flat),
        ]
        session.add_all(rows)
        session.flush()
        known_phash, known_pdq = rows[0].id, rows[3].id
    view = NearDuplicates(
        phash_radius=8,
        pdq_radius=31,
        pdq_min_quality=50,
        refresh_seconds=60,
        clock=clock,
        settled_ids=0,
    )
    matches = lookup(view, committed, phash=phash_near(phash, 3), pdq=pdq, pdq_quality=90)
    assert weak not in {m.media_id for m in matches}
    assert matches == [
        NearMatch("bulk-list", "phash", 3, None, known_phash, listed.id),
        NearMatch("seen", "phash", 3, strong, None, None),
        NearMatch("bulk-list", "pdq", 0, None, known_pdq, listed.id),
        NearMatch("seen", "pdq", 0, strong, None, None),
    ]
    assert lookup(view, committed, phash=query) == []  # the flat pHash was not indexed
    # Rows added after the bulk load come through the watermark as usual.
    later = add_media(committed, media("later", phash=phash))
    add_media(committed, media("flat later", phash=flat))
    view.refresh_seconds = 0
    assert later in {m.media_id for m in lookup(view, committed, phash=phash)}
    assert lookup(view, committed, phash=query) == []


def test_a_list_imported_again_after_removal_is_matched(
    committed: Engine, clock: FakeClock
) -> None:
    """Removing a list reloads the known hashes: on SQLite the next list's rows may take
    the removed rows' ids (max(id) + 1), which a watermark alone would never read."""
    view = near(clock, refresh_seconds=0)
    old_value, new_value = "1212121212121212", "3434343434343434"

    def import_list(name: str, value: str) -> int:
        with session_scope(committed) as session:
            hash_list = create_list(session, name)
            assert hash_list.id is not None
            row = KnownEntry(list_id=hash_list.id, phash=value)
            session.add(row)
            session.flush()
            assert row.id is not None
            return row.id

    first = import_list("first", old_value)
    assert [m.known_entry_id for m in lookup(view, committed, phash=old_value)] == [first]
    with session_scope(committed) as session:
        session.execute(delete(HashList).where(col(HashList.name) == "first"))
    second = import_list("second", new_value)
    assert lookup(view, committed, phash=old_value) == []
    assert [m.known_entry_id for m in lookup(view, committed, phash=new_value)] == [second]


def test_the_list_rows_read_lately_are_remembered_for_the_catch_up(
    committed: Engine, clock: FakeClock
) -> None:
    view = near(clock, refresh_seconds=0, recent_seconds=60)
    assert view.known_loaded(60).everything  # never loaded: cannot tell

    def refresh(at: float) -> None:
        clock.now = at
        with session_scope(committed) as session:
            view.refresh(session, force=True)

    with session_scope(committed) as session:
        listed = create_list(session, "lately")
        assert listed.id is not None
        list_id = listed.id
        session.add(KnownEntry(list_id=list_id, phash="a5" * 8))
    refresh(0)
    assert view.known_loaded(60).everything  # the first load: all of it, at once
    refresh(100)
    assert view.known_loaded(60) == KnownLoaded(everything=False)

    rows = [
        KnownEntry(list_id=list_id, phash="5a" * 8),
        KnownEntry(list_id=list_id, pdq="3c" * 32),
        KnownEntry(list_id=list_id, md5="0" * 32),
    ]
    with session_scope(committed) as session:
        session.add_all(rows)
        session.flush()
        ids = [row.id for row in rows]
    refresh(110)
    clock.now = 120
    loaded = view.known_loaded(60)
    assert (loaded.everything, loaded.rows, loaded.lists) == (False, 3, {list_id})
    assert {t: found.tolist() for t, (found, _) in loaded.codes.items()} == {
        "phash": [ids[0]],
        "pdq": [ids[1]],
    }
    assert code_to_phash(loaded.codes[HashType.phash][1][0, 0]) == "5a" * 8
    assert code_to_pdq(loaded.codes[HashType.pdq][1][0]) == "3c" * 32
    assert view.known_loaded(5).rows == 0  # read 10 s ago
    assert view.known_loaded(61).everything  # longer than it remembers
    clock.now = 171
    assert view.known_loaded(60).rows == 0

    # A list enabled again matches rows read long ago: the index cannot tell which.
    for enabled, at in ((False, 200), (True, 300)):
        with session_scope(committed) as session:
            session.execute(
                update(HashList).where(col(HashList.id) == list_id).values(enabled=enabled)
            )
        refresh(at)
        assert view.known_loaded(60).everything is enabled


@pytest.mark.parametrize(("bits", "radius"), [(64, 8), (256, 31)])
@pytest.mark.parametrize(("seen_rows", "listed_rows"), [(20_000, 60), (60, 20_000)])
def test_pairs_of_a_later_list_are_what_brute_force_finds(
    bits: int, radius: int, seen_rows: int, listed_rows: int
) -> None:
    # Whichever side is indexed (the larger: past MIN_TABLE_ROWS, so through the
    # index's tables), every pair within the radius is found, and nothing else.
    from triage.matches import _near_pairs

    assert max(seen_rows, listed_rows) > MIN_TABLE_ROWS
    rng = np.random.default_rng(bits + seen_rows)
    words = bits // 64
    top = np.iinfo(np.uint64).max

    def codes(rows: int) -> npt.NDArray[np.uint64]:
        return rng.integers(0, top, size=(rows, words), dtype=np.uint64, endpoint=True)

    seen_codes, listed_codes = codes(seen_rows), codes(listed_rows)
    # Plant neighbours at the edge of the radius and inside it, and one just beyond.
    for n, flips in enumerate([0, 1, radius, radius + 1, radius // 2, 63]):
        listed_codes[n] = seen_codes[n * 7]
        listed_codes[n, -1] ^= np.uint64((1 << flips) - 1)
    seen_ids = np.arange(1, seen_rows + 1, dtype=np.int64)
    listed_ids = np.arange(100_001, 100_001 + listed_rows, dtype=np.int64)
    found = sorted(
        _near_pairs(
            (seen_ids, seen_codes),
            (listed_ids, listed_codes),
            bits,
            radius,  # type: ignore[arg-type]
        )
    )

    expected = []
    for listed_id, code in zip(listed_ids.tolist(), listed_codes, strict=True):
        distances = np.bitwise_count(seen_codes ^ code).sum(axis=1)
        for row in np.flatnonzero(distances <= radius).tolist():
            expected.append((int(seen_ids[row]), listed_id, int(distances[row])))
    assert found == sorted(expected)
    assert {(1, 100_001, 0), (8, 100_002, 1), (15, 100_003, radius)} <= set(found)
    assert not any(pair[:2] == (22, 100_004) for pair in found)  # radius + 1: beyond
