"""Matches of media seen here, as recorded rows: the workers' (``triage.service``) and
those of a hash list imported later, against the media seen before it.

Light on purpose: ``hotline hashes import`` uses it without loading the fetcher and
the hashing libraries.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlmodel import Session

from hotline.db import dialect_insert
from hotline.settings import get_settings
from triage.hashlists import entry_key
from triage.models import HashList, HashType, KnownEntry, MatchKind, Media, MediaMatch
from triage.rerank import rerank, showing_media

log = logging.getLogger("hotline.triage")

_ROWS_PER_INSERT = 1000


def match_row(**values: Any) -> dict[str, Any]:
    """A ``media_match`` row; ``ref`` names what was matched (a list entry or media)."""
    known, media = values.get("known_entry_id"), values.get("matched_media_id")
    return {
        "known_entry_id": None,
        "matched_media_id": None,
        "list_id": None,
        **values,
        "ref": f"k{known}" if known else f"m{media}",
    }


def add_matches(session: Session, rows: list[dict[str, Any]]) -> None:
    """Record matches; one found before is kept as it was. In statements of at most
    ``_ROWS_PER_INSERT`` rows (a list matching thousands of media would pass the
    drivers' limit of bound parameters in one)."""
    insert = dialect_insert(session)
    table = MediaMatch.__table__  # type: ignore[attr-defined]
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        session.execute(
            insert(table)
            .values(rows[start : start + _ROWS_PER_INSERT])
            .on_conflict_do_nothing(
                index_elements=[table.c.media_id, table.c.hash_type, table.c.ref]
            )
        )


@dataclass(frozen=True)
class SeenOnList:
    """What matching a newly imported (or enabled) list against the media seen here found."""

    media: int  # media items on the list, exactly or near
    raised: list[int]  # queued targets ranked higher
    near: int = 0  # of ``media``, those on it only through a near match


# Rows of the side searched one by one per Python call; the other side is indexed.
_NEAR_BATCH = 50_000


def _near_pairs(
    seen: list[tuple[int, str]],
    listed: list[tuple[int, str]],
    hash_type: HashType,
    radius: int,
) -> Iterator[tuple[int, int, int]]:
    """(media id, entry id, distance) of every pair within ``radius``. The larger side
    goes into a ``HammingIndex`` (exact in recall, as the workers' lookups), the smaller
    side is searched in it one code at a time."""
    import numpy as np

    from triage.neardup import HammingIndex, hex_to_codes

    bits: Literal[64, 256] = 64 if hash_type == HashType.phash else 256
    media_first = len(seen) >= len(listed)
    indexed, searched = (seen, listed) if media_first else (listed, seen)
    index = HammingIndex(bits, radius=radius)
    for start in range(0, len(indexed), _NEAR_BATCH):
        chunk = indexed[start : start + _NEAR_BATCH]
        codes, valid = hex_to_codes([value for _, value in chunk], bits)
        index.add(np.array([i for i, _ in chunk], dtype=np.int64)[valid], codes[valid])
    for start in range(0, len(searched), _NEAR_BATCH):
        chunk = searched[start : start + _NEAR_BATCH]
        codes, valid = hex_to_codes([value for _, value in chunk], bits)
        for (row_id, _), code, ok in zip(chunk, codes, valid, strict=True):
            if not ok:
                continue
            for other, distance in index.search(code, radius):
                yield (other, row_id, distance) if media_first else (row_id, other, distance)


def near_seen_media(session: Session, list_id: int) -> list[tuple[HashType, int, int, int]]:
    """(hash type, media id, entry id, distance) of every media item seen here whose pHash
    or PDQ is within the configured radius of one of the list's entries, as the workers'
    near lookups would have found it: PDQ hashes of media below ``pdq_min_quality`` are
    not matched."""
    settings = get_settings()
    media, entry = Media.__table__, KnownEntry.__table__  # type: ignore[attr-defined]
    found: list[tuple[HashType, int, int, int]] = []
    for hash_type, radius in (
        (HashType.phash, settings.phash_radius),
        (HashType.pdq, settings.pdq_radius),
    ):
        statement = select(media.c.id, media.c[hash_type.value]).where(
            media.c[hash_type.value].is_not(None)
        )
        if hash_type == HashType.pdq:
            statement = statement.where(media.c.pdq_quality >= settings.pdq_min_quality)
        seen = [(int(i), str(v)) for i, v in session.execute(statement)]
        if not seen:
            continue  # (the list's entries are not read: a million-line list takes a scan)
        listed = [
            (int(i), str(v))
            for i, v in session.execute(
                select(entry.c.id, entry.c[hash_type.value]).where(
                    entry.c.list_id == list_id, entry.c[hash_type.value].is_not(None)
                )
            )
        ]
        if not listed:
            continue
        found += (
            (hash_type, media_id, entry_id, distance)
            for media_id, entry_id, distance in _near_pairs(seen, listed, hash_type, radius)
        )
    return found


def match_seen_media(session: Session, list_id: int, *, now: dt.datetime) -> SeenOnList:
    """Match the media seen here against one (enabled) list's entries, as the workers
    would have had the list been there: exact matches (SHA-256, SHA-1, MD5) and near
    ones (pHash, PDQ, within the configured radii) are recorded, and queued targets
    showing such media are ranked again (``triage.rerank``): up to the exact-match tier
    with the list named, or the near-match tier. Matches recorded before are kept as
    they were."""
    hash_list = session.get(HashList, list_id)
    if hash_list is None or not hash_list.enabled:
        return SeenOnList(0, [])
    media, entry = Media.__table__, KnownEntry.__table__  # type: ignore[attr-defined]
    key = entry_key()
    found: dict[tuple[int, str], int] = {}  # (media, hash type) -> entry
    for column in (media.c.sha256, media.c.sha1, media.c.md5):
        rows = session.execute(
            select(media.c.id, entry.c.id)
            .select_from(entry.join(media, key == column))
            .where(entry.c.list_id == list_id)
        )
        for media_id, entry_id in rows:
            found.setdefault((int(media_id), column.name), int(entry_id))
    near = near_seen_media(session, list_id)
    add_matches(
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
        + [
            match_row(
                media_id=media_id,
                kind=MatchKind.near,
                hash_type=hash_type,
                distance=distance,
                list_id=list_id,
                known_entry_id=entry_id,
                found_at=now,
            )
            for hash_type, media_id, entry_id, distance in sorted(near)
        ],
    )
    exact_ids = {media_id for media_id, _ in found}
    media_ids = sorted(exact_ids | {media_id for _, media_id, _, _ in near})
    raised = rerank(session, showing_media(session, media_ids))
    log.info(
        "list %s: %d media seen here (%d only near), %d queued targets moved",
        list_id,
        len(media_ids),
        len(media_ids) - len(exact_ids),
        len(raised),
    )
    return SeenOnList(len(media_ids), sorted(raised), near=len(media_ids) - len(exact_ids))
