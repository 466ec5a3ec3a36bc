"""Matches of media seen here, as recorded rows: the workers' (``triage.service``) and
those of a hash list imported later, against the media seen before it.

Light on purpose: ``hotline hashes import`` uses it without loading the fetcher and
the hashing libraries.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from hotline.db import dialect_insert
from triage.hashlists import entry_key
from triage.models import HashList, HashType, KnownEntry, MatchKind, Media, MediaMatch
from triage.rerank import rerank, showing_media

log = logging.getLogger("hotline.triage")


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
    """Record matches; one found before is kept as it was."""
    if not rows:
        return
    insert = dialect_insert(session)
    table = MediaMatch.__table__  # type: ignore[attr-defined]
    session.execute(
        insert(table)
        .values(rows)
        .on_conflict_do_nothing(index_elements=[table.c.media_id, table.c.hash_type, table.c.ref])
    )


@dataclass(frozen=True)
class SeenOnList:
    """What matching a newly imported list against the media seen here found."""

    media: int  # media items on the list
    raised: list[int]  # queued targets moved up to the exact-match tier


def match_seen_media(session: Session, list_id: int, *, now: dt.datetime) -> SeenOnList:
    """Match the media seen here against one (enabled) list's entries, as the workers
    would have had the list been there: exact matches are recorded, and queued targets
    showing such media are ranked again (``triage.rerank``), so move up to the
    exact-match tier with the list named. Near
    matches of the list's pHash and PDQ to media seen before are not looked for."""
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
        ],
    )
    media_ids = sorted({media_id for media_id, _ in found})
    raised = rerank(session, showing_media(session, media_ids))
    log.info(
        "list %s: %d media seen here, %d queued targets moved", list_id, len(media_ids), len(raised)
    )
    return SeenOnList(len(media_ids), sorted(raised))
