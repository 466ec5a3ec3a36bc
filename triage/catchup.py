"""The catch-up of matches that workers recording at the same time miss, so that the end
state is the one they would have reached one after the other.

A worker looks each new media item up once: near duplicates in its own index, which
loads what others committed at most ``neardup_refresh_seconds`` late, and exact hashes
in the database as its transaction sees it. So two near copies recorded by two workers
within that interval, or in overlapping transactions, never match each other, and media
recorded while a list import, a list being enabled or a confirmation commits miss those
entries (the import's own catch-up, ``match_seen_media``, reads the media committed
before it). ``catch_up``, run by beat every quarter of ``neardup_catchup_seconds``,
matches the media first seen within that window again:

- Near copies among them: the later one (higher id) gets the ``seen`` match to the
  earlier one, as ``triage.service.match_media`` records it (of the earlier ones, with
  those recorded, the nearest: ``matches.nearest_near``), unless both were first
  recorded by one target in one record step (not seen before each other, as
  ``match_media(fresh=...)`` has it), or the earlier one records a match to the later
  one (its worker saw it: the two were recorded in the other order; a worker that saw
  it but kept only nearer ones leaves no trace, and the later one gets the match).
- Exact and near matches to the enabled lists (of each list's entries, with those
  recorded, the nearest), when this process's index read list rows within the window
  (``NearDuplicates.known_loaded``: a list imported, enabled or added to). An entry
  of the hotline's own list matches only media first seen after it was added: a
  confirmation does not match the media seen before it.

Each media item is compared through all its pictures: its own hashes and those of the
later frames of an animation (``MediaFrame``), as the workers' lookups do.

Matches are inserted as the workers insert them (kept if found before), so a run
repeats nothing. The queued targets showing media that got a match after they were first
seen (now, or within the last half window) are ranked again (``triage.rerank``: decided
targets keep their place). The comparison of the window's media grows with the square
of their number (about 0.1 s per hash type at 5,000). Nothing here commits.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sqlalchemy import Row, literal, select
from sqlmodel import Session, col

from hotline.settings import get_settings
from triage.hashlists import exact_matches
from triage.matches import (
    FRAME_KEY,
    _near_pairs,
    add_matches,
    match_row,
    nearest_near,
    recorded_near,
)
from triage.models import (
    HashList,
    HashType,
    KnownEntry,
    MatchKind,
    Media,
    MediaFrame,
    MediaMatch,
    Sighting,
)
from triage.neardup import KnownLoaded, NearDuplicates, matchable_codes
from triage.rerank import rerank, showing_media

log = logging.getLogger("hotline.triage")

Ids = npt.NDArray[np.int64]
Codes = npt.NDArray[np.uint64]

# Media read per statement, newest first, until a page is older than the window.
_PAGE = 2000
# Ids per IN list.
_CHUNK = 500
# Media compared with all earlier ones at once (a block of distances in memory; 64 rows
# keep the temporaries in cache: 5,000 media take about 0.1 s per hash type).
_BLOCK = 64
# Up to this many list rows read lately are compared with the media that way; beyond,
# they are indexed (``HammingIndex``) and searched.
_SCANNED = 65_536


@dataclass(frozen=True)
class CaughtUp:
    """What a catch-up run found."""

    media: int  # media first seen within the window
    matched: int  # of them, media with a match recorded now
    raised: list[int]  # queued targets whose priority changed


def catch_up(
    session: Session, *, near: NearDuplicates, now: dt.datetime, window: dt.timedelta
) -> CaughtUp:
    """Record the matches of the media first seen within ``window`` before ``now`` that
    their workers missed (see the module docstring), and rank again the queued targets
    showing media matched late. ``near``: the process's index, refreshed here."""
    near.refresh(session, force=True)
    recent = _recent_media(session, since=now - window)
    if not recent:
        return CaughtUp(0, 0, [])
    pictures = _pictures(session, recent)
    rows = _seen_rows(session, recent, pictures, now=now, limit=near.near_limit)
    loaded = near.known_loaded(window.total_seconds())
    if loaded.everything or loaded.rows:
        listed = _listed_rows(session, recent, pictures, near=near, loaded=loaded, now=now)
        # Of each list, the nearest entries, with those recorded.
        lists = {int(row["list_id"]) for row in listed}
        recorded = recorded_near(session, {row["media_id"] for row in listed}, lists=lists)
        rows += nearest_near(listed, near.near_limit, recorded)
    matched = add_matches(session, rows)
    # Also the media matched late within the last half window, by an earlier run (whose
    # rerank passes over a target another transaction holds) or by a worker showing
    # them again (which ranks only its own target): two runs' chances each.
    late = matched | _matched_late(session, recent, since=now - window / 2)
    raised = rerank(session, showing_media(session, sorted(late)))
    if matched:
        log.info(
            "catch-up: %d of %d recent media matched late, %d queued targets moved",
            len(matched),
            len(recent),
            len(raised),
        )
    return CaughtUp(len(recent), len(matched), sorted(raised))


def _recent_media(session: Session, *, since: dt.datetime) -> list[Row[Any]]:
    """The media first seen at or after ``since``, newest first: pages by id down the
    primary key (ids follow first sight closely), until a page holds none of them."""
    media = Media.__table__  # type: ignore[attr-defined]
    columns = (
        media.c.id,
        media.c.sha256,
        media.c.sha1,
        media.c.md5,
        media.c.phash,
        media.c.pdq,
        media.c.pdq_quality,
        media.c.first_seen_at,
    )
    found: list[Row[Any]] = []
    below: int | None = None
    while True:
        statement = select(*columns).order_by(media.c.id.desc()).limit(_PAGE)
        if below is not None:
            statement = statement.where(media.c.id < below)
        page = session.execute(statement).all()
        recent = [row for row in page if row.first_seen_at >= since]
        found += recent
        if len(page) < _PAGE or not recent:
            return found
        below = int(page[-1].id)


# Picture key -> (pHash, PDQ, PDQ quality).
Pictures = dict[int, tuple[str | None, str | None, int | None]]


def _pictures(session: Session, recent: Sequence[Row[Any]]) -> Pictures:
    """The recent media's pictures: each item's own hashes, and those of the later
    frames of animations (``MediaFrame``), as the workers' lookups search them."""
    found: Pictures = {
        int(row.id) * FRAME_KEY: (row.phash, row.pdq, row.pdq_quality) for row in recent
    }
    ids = sorted(int(row.id) for row in recent)
    frame = MediaFrame.__table__  # type: ignore[attr-defined]
    for start in range(0, len(ids), _CHUNK):
        statement = select(
            frame.c.media_id, frame.c.frame, frame.c.phash, frame.c.pdq, frame.c.pdq_quality
        ).where(frame.c.media_id.in_(ids[start : start + _CHUNK]), frame.c.frame < FRAME_KEY)
        for media_id, number, phash, pdq, quality in session.execute(statement):
            found[int(media_id) * FRAME_KEY + int(number)] = (phash, pdq, quality)
    return found


def _codes(pictures: Pictures, hash_type: HashType, min_quality: int) -> tuple[Ids, Codes]:
    """(picture keys, codes) of the (informative) pHash or (good enough) PDQ hashes, as
    a lookup would search and index them."""
    if hash_type == HashType.phash:
        chosen = [(key, phash) for key, (phash, _, _) in pictures.items() if phash is not None]
    else:
        chosen = [
            (key, pdq)
            for key, (_, pdq, quality) in pictures.items()
            if pdq is not None and (quality or 0) >= min_quality
        ]
    bits: Literal[64, 256] = 64 if hash_type == HashType.phash else 256
    codes, valid = matchable_codes([value for _, value in chosen], bits)
    ids = np.fromiter((key for key, _ in chosen), dtype=np.int64, count=len(chosen))
    return ids[valid], codes.reshape(len(chosen), bits // 64)[valid]


def _earlier_within(ids: Ids, codes: Codes, radius: int) -> Iterator[tuple[int, int, int]]:
    """(later id, earlier id, distance) of every pair of these codes within ``radius``."""
    order = np.argsort(ids, kind="stable")
    return _within(ids[order], codes[order], ids[order], codes[order], radius, earlier=True)


def _within(
    ids: Ids, codes: Codes, other_ids: Ids, other_codes: Codes, radius: int, *, earlier: bool
) -> Iterator[tuple[int, int, int]]:
    """(id, other id, distance) of every pair of a code and an other code within
    ``radius``, a block of rows at a time, over word planes (contiguous). ``earlier``:
    the two are the same codes, in id order; only pairs with a lower other id."""
    planes = np.ascontiguousarray(codes.T)
    other_planes = np.ascontiguousarray(other_codes.T)
    for start in range(0, len(ids), _BLOCK):
        end = min(start + _BLOCK, len(ids))
        width = end if earlier else len(other_ids)
        distances = np.zeros((end - start, width), dtype=np.uint16)
        for plane, other in zip(planes, other_planes, strict=True):
            distances += np.bitwise_count(plane[start:end, None] ^ other[None, :width])
        rows, columns = np.nonzero(distances <= radius)
        for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
            if not earlier or column < start + row:
                yield int(ids[start + row]), int(other_ids[column]), int(distances[row, column])


def _seen_rows(
    session: Session,
    recent: Sequence[Row[Any]],
    pictures: Pictures,
    *,
    now: dt.datetime,
    limit: int,
) -> list[dict[str, Any]]:
    """The ``seen`` near matches among the recent media: later to earlier, through any
    of their pictures (the closest; the later item's frame is recorded); of each item's,
    those among the ``limit`` nearest, with those recorded (``nearest_near``)."""
    settings = get_settings()
    radii = {HashType.phash: settings.phash_radius, HashType.pdq: settings.pdq_radius}
    pairs: dict[tuple[int, int, HashType], tuple[int, int]] = {}
    for hash_type, radius in radii.items():
        keys, codes = _codes(pictures, hash_type, settings.pdq_min_quality)
        for later_key, earlier_key, distance in _earlier_within(keys, codes, radius):
            later, earlier = later_key // FRAME_KEY, earlier_key // FRAME_KEY
            if later == earlier:
                continue  # two pictures of one animation
            found = (distance, later_key % FRAME_KEY)
            pairs[(later, earlier, hash_type)] = min(
                pairs.get((later, earlier, hash_type), found), found
            )
    if not pairs:
        return []
    involved = sorted({m for later, earlier, _ in pairs for m in (later, earlier)})
    recorded = recorded_near(session, involved)
    reverse = {
        (media, matched)
        for (media, _, group), found in recorded.items()
        if group == "seen"
        for _, matched in found
    }
    first_seen = {int(row.id): row.first_seen_at for row in recent}
    together = {
        (later, earlier) for later, earlier, _ in pairs if first_seen[later] == first_seen[earlier]
    }
    steps = _first_sightings(session, sorted({m for pair in together for m in pair}))
    rows = []
    for (later, earlier, hash_type), (distance, frame) in sorted(pairs.items()):
        if (earlier, later) in reverse:
            continue
        # First recorded by one target in one record step: neither was seen before.
        when = first_seen[later]
        if (later, earlier) in together and {
            target for target, at in steps.get(later, ()) if at == when
        } & {target for target, at in steps.get(earlier, ()) if at == when}:
            continue
        rows.append(
            match_row(
                media_id=later,
                kind=MatchKind.near,
                hash_type=hash_type,
                distance=distance,
                matched_media_id=earlier,
                frame=frame or None,
                found_at=now,
            )
        )
    return nearest_near(rows, limit, recorded)


def _first_sightings(
    session: Session, media_ids: list[int]
) -> dict[int, list[tuple[int, dt.datetime]]]:
    """Media id -> (target, first seen there) of each of its sightings."""
    found: dict[int, list[tuple[int, dt.datetime]]] = {}
    for start in range(0, len(media_ids), _CHUNK):
        statement = select(
            col(Sighting.media_id), col(Sighting.target_id), col(Sighting.first_seen_at)
        ).where(col(Sighting.media_id).in_(media_ids[start : start + _CHUNK]))
        for media_id, target_id, at in session.execute(statement):
            found.setdefault(int(media_id), []).append((int(target_id), at))
    return found


@dataclass(frozen=True)
class _Entry:
    list_id: int
    value: str | None
    own: bool
    added_at: dt.datetime


def _entries(session: Session, ids: list[int], hash_type: HashType | None) -> dict[int, _Entry]:
    """The known entries among ``ids`` whose list is enabled, as they are now, with their
    value of ``hash_type`` (a perceptual one), if given."""
    entry, lists = KnownEntry.__table__, HashList.__table__  # type: ignore[attr-defined]
    value = entry.c[hash_type.value] if hash_type else literal(None)
    found: dict[int, _Entry] = {}
    for start in range(0, len(ids), _CHUNK):
        statement = (
            select(entry.c.id, entry.c.list_id, value, lists.c.own, entry.c.added_at)
            .join(lists, lists.c.id == entry.c.list_id)
            .where(entry.c.id.in_(ids[start : start + _CHUNK]), lists.c.enabled)
        )
        for entry_id, list_id, held, own, added_at in session.execute(statement):
            found[int(entry_id)] = _Entry(int(list_id), held, bool(own), added_at)
    return found


def _listed_rows(
    session: Session,
    recent: Sequence[Row[Any]],
    pictures: Pictures,
    *,
    near: NearDuplicates,
    loaded: KnownLoaded,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """Exact and near matches of the recent media to the enabled lists: near ones to
    the rows the index read within the window (or to all, when it cannot tell)."""
    settings = get_settings()
    first_seen = {int(row.id): row.first_seen_at for row in recent}
    rows: list[dict[str, Any]] = []

    def add(media_id: int, entry: _Entry, **match: Any) -> None:
        # The own list grows by confirmation: media seen before one do not match it.
        if entry.own and entry.added_at > first_seen[media_id]:
            return
        rows.append(match_row(media_id=media_id, list_id=entry.list_id, found_at=now, **match))

    # Exact: not for rows of the own list alone, keyed by SHA-256 of media seen before.
    exact_too = loaded.everything or bool(loaded.lists - near.own_lists)
    holders: dict[str, list[tuple[int, HashType]]] = {}
    for row in recent if exact_too else ():
        for hash_type in (HashType.sha256, HashType.sha1, HashType.md5):
            value = getattr(row, hash_type.value)
            if value:
                holders.setdefault(value, []).append((int(row.id), hash_type))
    exact = exact_matches(session, holders)
    entries = _entries(session, sorted({entry_id for entry_id, *_ in exact}), None)
    for entry_id, _, value, _ in exact:
        if entry_id in entries:
            for media_id, hash_type in holders[value]:
                add(
                    media_id,
                    entries[entry_id],
                    kind=MatchKind.exact,
                    hash_type=hash_type,
                    distance=0,
                    known_entry_id=entry_id,
                )

    radii = {HashType.phash: settings.phash_radius, HashType.pdq: settings.pdq_radius}
    for hash_type, radius in radii.items():
        found = _near_listed(near, loaded, pictures, hash_type, radius, settings.pdq_min_quality)
        entries = _entries(session, sorted({entry_id for _, entry_id in found}), hash_type)
        for key, entry_id in sorted(found):
            entry = entries.get(entry_id)
            # Checked as a lookup checks its hits: the row is there, with that value.
            phash, pdq, _ = pictures[key]
            value = phash if hash_type == HashType.phash else pdq
            distance = _distance(value, entry.value if entry else None)
            if entry is not None and distance is not None and distance <= radius:
                add(
                    key // FRAME_KEY,
                    entry,
                    kind=MatchKind.near,
                    hash_type=hash_type,
                    distance=distance,
                    known_entry_id=entry_id,
                    frame=key % FRAME_KEY or None,  # (add_matches keeps the closest frame)
                )
    return rows


def _near_listed(
    near: NearDuplicates,
    loaded: KnownLoaded,
    pictures: Pictures,
    hash_type: HashType,
    radius: int,
    min_quality: int,
) -> set[tuple[int, int]]:
    """(picture key, entry id) of the candidates within ``radius``: among the list rows
    the index read lately, or in the whole index when it cannot tell which those are."""
    ids, codes = _codes(pictures, hash_type, min_quality)
    if loaded.everything:
        return {
            (media_id, entry_id)
            for media_id, code in zip(ids.tolist(), codes, strict=True)
            for entry_id, _ in near.search_known(hash_type, code, radius)
        }
    listed = loaded.codes.get(hash_type)
    if listed is None or not len(ids):
        return set()
    if len(listed[0]) > _SCANNED:
        bits: Literal[64, 256] = 64 if hash_type == HashType.phash else 256
        pairs = _near_pairs((ids, codes), listed, bits, radius)
    else:
        pairs = _within(ids, codes, *listed, radius, earlier=False)
    return {(media_id, entry_id) for media_id, entry_id, _ in pairs}


def _distance(a: str | None, b: str | None) -> int | None:
    if a is None or b is None:
        return None
    try:
        return (int(a, 16) ^ int(b, 16)).bit_count()
    except ValueError:
        return None


def _matched_late(session: Session, recent: Sequence[Row[Any]], *, since: dt.datetime) -> set[int]:
    """The recent media with a match recorded after they were first seen (a worker
    records its matches at the moment it first records the media), at or after
    ``since``."""
    media, match = Media.__table__, MediaMatch.__table__  # type: ignore[attr-defined]
    lowest = min(int(row.id) for row in recent)
    earliest = min(row.first_seen_at for row in recent)
    statement = (
        select(match.c.media_id)
        .join(media, media.c.id == match.c.media_id)
        .where(
            media.c.id >= lowest,
            media.c.first_seen_at >= earliest,
            match.c.found_at > media.c.first_seen_at,
            match.c.found_at >= since,
        )
        .distinct()
    )
    return {int(media_id) for media_id in session.execute(statement).scalars()}
