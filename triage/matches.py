"""Matches of media seen here, as recorded rows: the workers' (``triage.service``) and
those of a hash list imported later, against the media seen before it.

Light on purpose: ``hotline hashes import`` uses it without loading the fetcher and
the hashing libraries.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import ColumnElement, Select, and_, case, func, select
from sqlmodel import Session

from hotline.db import dialect_insert
from hotline.settings import get_settings
from triage.hashlists import entry_key
from triage.models import (
    HashList,
    HashType,
    KnownEntry,
    MatchKind,
    Media,
    MediaFrame,
    MediaMatch,
)
from triage.rerank import rerank, showing_media

if TYPE_CHECKING:  # numpy is imported when a list has perceptual hashes, not before
    import numpy as np
    import numpy.typing as npt

log = logging.getLogger("hotline.triage")


def match_row(**values: Any) -> dict[str, Any]:
    """A ``media_match`` row; ``ref`` names what was matched (a list entry or media)."""
    known, media = values.get("known_entry_id"), values.get("matched_media_id")
    return {
        "known_entry_id": None,
        "matched_media_id": None,
        "list_id": None,
        "frame": None,
        **values,
        "ref": f"k{known}" if known else f"m{media}",
    }


# (media, hash type, what it matched: "seen", or a list's id) -> (distance, media or
# entry matched) of its near matches.
Recorded = dict[tuple[int, str, str], list[tuple[int, int]]]


def _near_group(row: dict[str, Any]) -> tuple[tuple[int, str, str], int] | None:
    """(group, reference) of a near match row: the media seen here it matched, or the
    entry of a list; None for an exact match."""
    if str(row["kind"]) != MatchKind.near.value:
        return None
    key = (int(row["media_id"]), str(row["hash_type"]))
    if row.get("matched_media_id") is not None:
        return (*key, "seen"), int(row["matched_media_id"])
    return (*key, f"list {row['list_id']}"), int(row["known_entry_id"])


def recorded_near(
    session: Session, media_ids: Iterable[int], *, lists: Collection[int] | None = None
) -> Recorded:
    """The near matches recorded for these media, grouped as ``nearest_near`` counts
    them; ``lists``: only those to these lists' entries."""
    found: Recorded = {}
    ids = sorted(set(media_ids))
    match = MediaMatch.__table__  # type: ignore[attr-defined]
    columns = (
        match.c.media_id,
        match.c.hash_type,
        match.c.distance,
        match.c.matched_media_id,
        match.c.known_entry_id,
        match.c.list_id,
    )
    for start in range(0, len(ids), 500):
        statement = select(*columns).where(
            match.c.media_id.in_(ids[start : start + 500]), match.c.kind == MatchKind.near
        )
        if lists is not None:
            statement = statement.where(match.c.list_id.in_(sorted(lists)))
        for row in session.execute(statement).mappings():
            grouped = _near_group({**row, "kind": MatchKind.near})
            if grouped is not None:
                found.setdefault(grouped[0], []).append((int(row["distance"]), grouped[1]))
    return found


def nearest_near(
    rows: list[dict[str, Any]], limit: int, recorded: Recorded | None = None
) -> list[dict[str, Any]]:
    """The rows, but of the near matches of a media item per hash type, to media seen
    here and to the entries of each list, only those among the ``limit`` nearest (the
    lowest id first among equals: the earliest seen, the first listed), counting those
    already recorded (``recorded_near``). A picture seen 10,000 times would otherwise
    add 10,000 rows for each further copy, and one confirmed 10,000 times as many rows
    to the own list."""
    kept: list[dict[str, Any]] = []
    groups: dict[tuple[int, str, str], dict[int, dict[str, Any]]] = {}
    for row in rows:
        grouped = _near_group(row)
        if grouped is None:
            kept.append(row)
            continue
        closest = groups.setdefault(grouped[0], {})
        reference = grouped[1]
        # (As add_matches chooses among the rows of several frames.)
        if reference not in closest or _closeness(row) < _closeness(closest[reference]):
            closest[reference] = row
    for key, closest in groups.items():
        candidates: list[tuple[int, int, dict[str, Any] | None]] = [
            (row["distance"], reference, row) for reference, row in closest.items()
        ]
        candidates += [
            (distance, reference, None)
            for distance, reference in (recorded or {}).get(key, ())
            if reference not in closest
        ]
        candidates.sort(key=lambda candidate: candidate[:2])
        kept += [row for _, _, row in candidates[:limit] if row is not None]
    return kept


def _closeness(row: dict[str, Any]) -> tuple[int, int]:
    return row["distance"], row["frame"] or 0


def add_matches(session: Session, rows: list[dict[str, Any]]) -> set[int]:
    """Record matches; one found before is kept as it was. Returns the media that got a
    match recorded now. One statement, executed for many rows: SQLAlchemy sends them in
    batches of multi-row INSERTs (its "insertmanyvalues"), within the drivers' limit of
    bound parameters, and compiles the statement once, not once per batch size (a list
    matching thousands of media spent a second compiling them).

    Of rows for one media item, hash type and reference (near matches found through
    several pictures of an animation), the closest is kept: the item's own hashes when
    as close as any frame, else the first of the closest frames.

    The rows go in one order (media, hash type, reference), whoever records them: two
    transactions recording some of the same matches (a worker, a list import, the
    catch-up) wait for each other instead of deadlocking."""
    if not rows:
        return set()
    closest: dict[tuple[int, str, str], dict[str, Any]] = {}
    for row in sorted(rows, key=_closeness):
        closest.setdefault((row["media_id"], str(row["hash_type"]), row["ref"]), row)
    rows = [closest[key] for key in sorted(closest)]
    insert = dialect_insert(session)
    table = MediaMatch.__table__  # type: ignore[attr-defined]
    statement = (
        insert(table)
        .on_conflict_do_nothing(index_elements=[table.c.media_id, table.c.hash_type, table.c.ref])
        .returning(table.c.media_id)
    )
    return set(session.execute(statement, rows).scalars())


@dataclass(frozen=True)
class ListHashes:
    """What a list's entries hold, as matching against media needs it: the types of
    their keys among SHA-256, SHA-1 and MD5 (an entry's key is its first hash, and exact
    matching joins on it), and the perceptual types among them."""

    keys: frozenset[HashType]
    perceptual: frozenset[HashType]


_EXACT_KEYS = (HashType.sha256, HashType.sha1, HashType.md5)
_PERCEPTUAL = (HashType.phash, HashType.pdq)


def list_hashes(session: Session, list_id: int) -> ListHashes:
    """The list's ``ListHashes``, in one reading of its entries: matching then runs the
    joins and reads the perceptual hashes only for the types the list has (each of
    which reads the whole list)."""
    entry = KnownEntry.__table__  # type: ignore[attr-defined]

    def present(condition: ColumnElement[bool]) -> Any:
        return func.coalesce(func.max(case((condition, 1), else_=0)), 0)

    earlier: list[ColumnElement[bool]] = []
    tests = []
    for hash_type in _EXACT_KEYS:
        column = entry.c[hash_type.value]
        tests.append(present(and_(*earlier, column.is_not(None))))
        earlier.append(column.is_(None))
    tests += [present(entry.c[hash_type.value].is_not(None)) for hash_type in _PERCEPTUAL]
    row = session.execute(select(*tests).where(entry.c.list_id == list_id)).one()
    flags = dict(zip((*_EXACT_KEYS, *_PERCEPTUAL), row, strict=True))
    return ListHashes(
        keys=frozenset(t for t in _EXACT_KEYS if flags[t]),
        perceptual=frozenset(t for t in _PERCEPTUAL if flags[t]),
    )


@dataclass(frozen=True)
class SeenOnList:
    """What matching a newly imported (or enabled) list against the media seen here
    found now (matches recorded before are not counted again)."""

    media: int  # media items with a match to the list recorded now
    raised: list[int]  # queued targets ranked higher
    near: int = 0  # of ``media``, those on it only through a near match
    # What the list holds, when it was read (not when there were no media to match):
    # a second matching of the same list, unchanged, can skip that reading.
    hashes: ListHashes | None = None


# Rows read and decoded per batch (the codes are kept, the rows are not).
_NEAR_BATCH = 50_000


def _codes(
    session: Session, statement: Select[Any], bits: Literal[64, 256]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64]]:
    """(ids, codes) of ``statement``'s (id, hex hash) rows, read in batches: a few bytes
    per row in memory (8 for the id, 8 or 32 for the code), not Python objects. pHash
    codes that say nothing of their picture are left out, as the lookups leave them."""
    import numpy as np

    from triage.neardup import matchable_codes

    ids, codes = [np.zeros(0, dtype=np.int64)], [np.zeros((0, bits // 64), dtype=np.uint64)]
    result = session.execute(statement.execution_options(yield_per=_NEAR_BATCH))
    for rows in result.partitions():
        decoded, valid = matchable_codes([str(value) for _, value in rows], bits)
        ids.append(np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))[valid])
        codes.append(decoded.reshape(len(rows), -1)[valid])
    return np.concatenate(ids), np.concatenate(codes)


def _near_pairs(
    seen: tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64]],
    listed: tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64]],
    bits: Literal[64, 256],
    radius: int,
) -> Iterator[tuple[int, int, int]]:
    """(media id, entry id, distance) of every pair within ``radius``. The larger side
    goes into a ``HammingIndex`` (exact in recall, as the workers' lookups), the smaller
    side is searched in it one code at a time."""
    from triage.neardup import HammingIndex

    media_first = len(seen[0]) >= len(listed[0])
    (indexed_ids, indexed_codes), (searched_ids, searched_codes) = (
        (seen, listed) if media_first else (listed, seen)
    )
    index = HammingIndex(bits, radius=radius)
    index.add(indexed_ids, indexed_codes)
    for row_id, code in zip(searched_ids.tolist(), searched_codes, strict=True):
        for other, distance in index.search(code, radius):
            yield (other, row_id, distance) if media_first else (row_id, other, distance)


# A picture of a media item in near matching (its own hashes, frame 0, or a later
# frame's) as one number: media id * FRAME_KEY + frame, which keeps the media's id order.
FRAME_KEY = 1 << 20


def near_seen_media(
    session: Session,
    list_id: int,
    *,
    media_above: int = 0,
    types: Iterable[HashType] = _PERCEPTUAL,
) -> list[tuple[HashType, int, int, int, int | None]]:
    """(hash type, media id, entry id, distance, frame) of every media item seen here
    (with an id above ``media_above``) whose pHash or PDQ, or that of one of its later
    frames (``frame``; None for the item's own), is within the configured radius of one
    of the list's entries, as the workers' near lookups would have found it: PDQ hashes
    below ``pdq_min_quality`` are not matched (a missing quality counts as 0).
    ``types``: the perceptual types to look at (those the list has, when known)."""
    settings = get_settings()
    media, entry = Media.__table__, KnownEntry.__table__  # type: ignore[attr-defined]
    frame = MediaFrame.__table__  # type: ignore[attr-defined]
    found: list[tuple[HashType, int, int, int, int | None]] = []
    radii = {HashType.phash: settings.phash_radius, HashType.pdq: settings.pdq_radius}
    for hash_type in _PERCEPTUAL:
        if hash_type not in types:
            continue
        radius = radii[hash_type]
        bits: Literal[64, 256] = 64 if hash_type == HashType.phash else 256
        seen_here = select(media.c.id, media.c[hash_type.value]).where(
            media.c[hash_type.value].is_not(None), media.c.id > media_above
        )
        # Later frames of animations, keyed by media id and frame in one number.
        frames_here = select(
            frame.c.media_id * FRAME_KEY + frame.c.frame, frame.c[hash_type.value]
        ).where(frame.c.media_id > media_above, frame.c.frame < FRAME_KEY)
        if hash_type == HashType.pdq:
            seen_here = seen_here.where(
                func.coalesce(media.c.pdq_quality, 0) >= settings.pdq_min_quality
            )
            frames_here = frames_here.where(frame.c.pdq_quality >= settings.pdq_min_quality)
        on_list = select(entry.c.id, entry.c[hash_type.value]).where(
            entry.c.list_id == list_id, entry.c[hash_type.value].is_not(None)
        )
        # The cheap tests first: most media have both hashes, while a list without the
        # type is read to its end to find it has none (match_seen_media passes only
        # the types the list has). Frames are looked at even when no item has a usable
        # hash of its own (an animation fading in from black: its own PDQ is flat).
        own = session.execute(seen_here.limit(1)).first() is not None
        framed_any = session.execute(frames_here.limit(1)).first() is not None
        if not (own or framed_any):
            continue
        if session.execute(on_list.limit(1)).first() is None:
            continue
        listed = _codes(session, on_list, bits)
        if own:
            seen = _codes(session, seen_here, bits)
            found += (
                (hash_type, media_id, entry_id, distance, None)
                for media_id, entry_id, distance in _near_pairs(seen, listed, bits, radius)
            )
        if not framed_any:
            continue
        framed = _codes(session, frames_here, bits)
        found += (
            (hash_type, key // FRAME_KEY, entry_id, distance, key % FRAME_KEY)
            for key, entry_id, distance in _near_pairs(framed, listed, bits, radius)
        )
    return found


def newest_media(session: Session) -> int:
    """The highest media id now (0 if none): where a later catch-up starts."""
    media = Media.__table__  # type: ignore[attr-defined]
    return int(session.execute(select(func.max(media.c.id))).scalar() or 0)


def match_seen_media(
    session: Session,
    list_id: int,
    *,
    now: dt.datetime,
    media_above: int = 0,
    hashes: ListHashes | None = None,
) -> SeenOnList:
    """Match the media seen here (with an id above ``media_above``) against one (enabled)
    list's entries, as the workers would have had the list been there: exact matches
    (SHA-256, SHA-1, MD5) and near ones (pHash, PDQ, within the configured radii) are
    recorded, and queued targets showing such media are ranked again
    (``triage.rerank``): up to the exact-match tier with the list named, or the
    near-match tier. Matches recorded before are kept as they were. ``hashes``: what
    the list holds, from an earlier matching of the list as it is now (read if not
    given)."""
    hash_list = session.get(HashList, list_id)
    if hash_list is None or not hash_list.enabled:
        return SeenOnList(0, [])
    media, entry = Media.__table__, KnownEntry.__table__  # type: ignore[attr-defined]
    if session.execute(select(media.c.id).where(media.c.id > media_above).limit(1)).first() is None:
        # No media (since): the joins below would still read a million-entry list whole.
        return SeenOnList(0, [])
    if hashes is None:
        hashes = list_hashes(session, list_id)
    key = entry_key()
    found: dict[tuple[int, str], int] = {}  # (media, hash type) -> entry
    for hash_type in _EXACT_KEYS:
        if hash_type not in hashes.keys:
            continue
        column = media.c[hash_type.value]
        statement = (
            select(media.c.id, entry.c.id)
            .select_from(entry.join(media, key == column))
            .where(entry.c.list_id == list_id, media.c.id > media_above)
        )
        for media_id, entry_id in session.execute(statement):
            found.setdefault((int(media_id), column.name), int(entry_id))
    near = near_seen_media(session, list_id, media_above=media_above, types=hashes.perceptual)
    # Of the list's entries, the nearest to each media item, with those it recorded
    # before (the list enabled before).
    near_media = {media_id for _, media_id, _, _, _ in near}
    recorded_before = recorded_near(session, near_media, lists=[list_id]) if near_media else None
    recorded = add_matches(
        session,
        [
            match_row(
                media_id=media_id,
                kind=MatchKind.exact,
                hash_type=HashType(hash_type),
                distance=0,
                list_id=list_id,
                known_entry_id=entry_id,
                found_at=now,
            )
            for (media_id, hash_type), entry_id in sorted(found.items())
        ]
        + nearest_near(
            [
                match_row(
                    media_id=media_id,
                    kind=MatchKind.near,
                    hash_type=hash_type,
                    distance=distance,
                    list_id=list_id,
                    known_entry_id=entry_id,
                    frame=frame,
                    found_at=now,
                )
                for hash_type, media_id, entry_id, distance, frame in near
            ],
            get_settings().near_match_limit,
            recorded_before,
        ),
    )
    exact_ids = {media_id for media_id, _ in found}
    only_near = len(recorded - exact_ids)
    raised = rerank(session, showing_media(session, sorted(recorded)))
    log.info(
        "list %s: %d media seen here matched now (%d only near), %d queued targets moved",
        list_id,
        len(recorded),
        only_near,
        len(raised),
    )
    return SeenOnList(len(recorded), sorted(raised), near=only_near, hashes=hashes)
