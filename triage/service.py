"""Processing of a reported target: claim it, find out what is behind it, record what was
learned, and put it in the analyst queue (or mark it unreachable with a reason).

Three steps, so that no database transaction stays open across the network:
``claim_target`` (a unit of work), ``gather`` (fetch and hash in memory, no database)
and ``record_gathered`` / ``record_failure`` (a unit of work). ``process_target`` runs
them with a unit-of-work factory passed in. Fetched bytes never leave ``gather``:
only ``MediaHashes`` and addresses come out of it.

Idempotent: a target is claimed only when pending, or when a worker's claim has
outlived the lease (the worker died); the record step only writes while the claim
is still the one in force, so a second worker or a redelivered message does
nothing twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Final, cast

from sqlalchemy import Integer, and_, bindparam, case, func, or_, select, update
from sqlmodel import Session, col

from hotline.db import built
from hotline.errors import HotlineError
from hotline.settings import Settings
from reporting.models import Target, TargetStatus
from reporting.ranking import reasons_with_reports, report_bonus_sql
from reporting.urls import canonicalise
from triage import priority as ranking
from triage.assessment import adopt_earlier_verdicts
from triage.errors import FetchError
from triage.extract import inline_picture, inline_url, is_inline, media_links
from triage.fetcher import Fetcher
from triage.hashing import (
    HashingError,
    MediaHashes,
    declared_html,
    hash_media,
    is_media,
    is_page,
    sniff,
)
from triage.hashlists import drop_matches_through, exact_matches
from triage.hosting import Hosting, HostingLookup
from triage.matches import add_matches, match_row, nearest_near, recorded_near
from triage.models import (
    HashList,
    HashType,
    KnownEntry,
    MatchKind,
    Media,
    MediaFrame,
    MediaMatch,
    Sighting,
    Site,
)
from triage.neardup import NearDuplicates, NearMatch, NearQuery
from triage.rerank import rerank, showing_media

log = logging.getLogger("hotline.triage")

# Failures worth another attempt; everything else is final at once.
RETRYABLE = {"timeout", "connect_error", "dns_error", "internal_error", "http_error_429"}


@dataclass(frozen=True)
class Limits:
    max_pixels: int = 100_000_000
    max_frames: int = 20
    hashed_frames: int = 8
    page_media_limit: int = 50
    deadline_seconds: float = 240

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_pixels=settings.image_max_pixels,
            max_frames=settings.image_max_frames,
            hashed_frames=settings.image_hashed_frames,
            page_media_limit=settings.page_media_limit,
            deadline_seconds=settings.process_deadline_seconds,
        )


@dataclass(frozen=True)
class Found:
    """One media item found behind a target: its hashes and where it was fetched from."""

    url: str
    ip: str
    hashes: MediaHashes


@dataclass
class Gathered:
    final_url: str
    ip: str
    page: bool
    media: list[Found] = field(default_factory=list)
    broken: int = 0
    # Why each broken link failed (fetch reason codes, ``not_media``, ``timeout``...).
    broken_reasons: list[str] = field(default_factory=list)
    # The page ran past the body cap: its links were read from its first part only.
    truncated: bool = False


@dataclass(frozen=True)
class Failure:
    reason: str
    ip: str | None = None  # the address that answered, if one did


@dataclass(frozen=True)
class Outcome:
    status: TargetStatus | None
    retry_in: float | None = None


def is_retryable(reason: str) -> bool:
    return reason in RETRYABLE or reason.startswith("http_error_5")


@dataclass(frozen=True)
class Claim:
    """What the record step needs to know of a claimed target."""

    target_id: int
    url: str
    registered_domain: str
    report_count: int
    first_time: bool
    claimed_at: dt.datetime


def _claim(_: Any) -> Any:
    target = Target.__table__  # type: ignore[attr-defined]
    handed_over = target.c.handed_over_at
    claimable = or_(
        and_(
            target.c.status == TargetStatus.pending,
            # A target waiting for its retry (attempts made, handed over in the future)
            # is not taken before its time by a second message for it.
            or_(
                target.c.attempts == 0,
                handed_over.is_(None),
                handed_over <= bindparam("now"),
            ),
        ),
        and_(
            target.c.status == TargetStatus.fetching,
            or_(handed_over.is_(None), handed_over < bindparam("expired_before")),
        ),
    )
    return (
        update(target)
        .where(
            target.c.id == bindparam("target"),
            claimable,
            target.c.attempts < bindparam("max_attempts"),
        )
        .values(
            status=TargetStatus.fetching,
            status_changed_at=bindparam("now"),
            handed_over_at=bindparam("now"),
            attempts=target.c.attempts + 1,
        )
        .returning(
            target.c.canonical_url,
            target.c.registered_domain,
            target.c.report_count,
            target.c.processed_at,
        )
    )


def claim_target(
    session: Session,
    target_id: int,
    *,
    now: dt.datetime,
    lease: dt.timedelta,
    max_attempts: int = 1_000_000,
) -> Claim | None:
    """Mark the target as being fetched by this worker; None when there is nothing to do
    (finished, or another worker's claim is still in force).

    One conditional UPDATE: of two workers racing for the target, one gets the row.
    """
    row = session.execute(
        built(session, _claim),
        {
            "target": target_id,
            "expired_before": now - lease,
            "max_attempts": max_attempts,
            "now": now,
        },
    ).first()
    if row is None:
        return None
    url, domain, reports, processed_at = row
    return Claim(target_id, str(url), str(domain), int(reports), processed_at is None, now)


def _state(_: Any) -> Any:
    target = Target.__table__  # type: ignore[attr-defined]
    return select(target.c.status, target.c.attempts, target.c.handed_over_at).where(
        target.c.id == bindparam("target")
    )


@dataclass(frozen=True)
class Unclaimed:
    """Why a message found nothing to claim: the seconds until a target waiting for its
    retry may be claimed, or that its attempts ran out (else it is finished or held)."""

    retry_in: float | None = None
    exhausted: bool = False


def why_unclaimed(
    session: Session, target_id: int, *, now: dt.datetime, max_attempts: int
) -> Unclaimed:
    """After a claim that got nothing: is the target waiting for its retry, or out of
    attempts?"""
    row = session.execute(built(session, _state), {"target": target_id}).first()
    if row is None or row.status != TargetStatus.pending:
        return Unclaimed()
    if row.attempts >= max_attempts:
        return Unclaimed(exhausted=True)
    if row.attempts > 0 and row.handed_over_at is not None and row.handed_over_at > now:
        return Unclaimed(retry_in=max(float((row.handed_over_at - now).total_seconds()), 0.0))
    return Unclaimed()


def give_up_exhausted(
    session: Session, target_id: int, *, now: dt.datetime, max_attempts: int
) -> bool:
    """End as unreachable a pending target whose attempts ran out, without fetching it:
    the sweep hands over such a target when its worker died (it may be the URL that
    kills workers), or when the limit was lowered while it waited for its retry. It
    keeps the reason of its last attempt and counts on its site like any other target
    processed for the first time. Returns whether it was given up now."""
    # One conditional statement: of two messages racing for it, one ends it (also on
    # SQLite, which has no row locks). processed_at stays if it was set: the target was
    # processed before and is counted on its site already.
    row = session.execute(
        update(Target)
        .where(
            col(Target.id) == target_id,
            col(Target.status) == TargetStatus.pending,
            col(Target.attempts) >= max_attempts,
        )
        .values(
            status=TargetStatus.unreachable,
            status_reason=func.coalesce(col(Target.status_reason), "internal_error"),
            status_changed_at=now,
            processed_at=func.coalesce(col(Target.processed_at), now),
        )
        .returning(col(Target.registered_domain), col(Target.processed_at))
    ).first()
    if row is None:
        return False
    domain, processed_at = row
    if processed_at == now:  # first processed now
        upsert_site(session, domain, new_target=True, now=now)
    log.info("target %s unreachable (attempts used up)", target_id)
    return True


def _hash(data: bytes, limits: Limits) -> MediaHashes | Failure:
    try:
        return hash_media(
            data,
            max_pixels=limits.max_pixels,
            max_frames=limits.max_frames,
            hashed_frames=limits.hashed_frames,
        )
    except HashingError as exc:
        log.info("media not hashed in full: %s", exc.reason)
        # Too large to decode: the file hashes still match exact lists.
        return exc.partial if exc.partial is not None else Failure(exc.reason)


# Pictures a page may carry in itself and that are hashed: not SVG (icons, drawn
# shapes), whose file hashes alone would say little.
_INLINE_TYPES: Final = frozenset(
    {"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp"}
)


def gather(
    url: str, *, fetcher: Fetcher, limits: Limits, clock: Callable[[], float] = time.monotonic
) -> Gathered | Failure:
    """Fetch the target and, for a page, its media; hash every media item in memory.

    Returns hashes and addresses only; the bytes are dropped before returning.
    """
    deadline = clock() + limits.deadline_seconds
    try:
        first = fetcher.fetch(url, keep_head=is_page)
    except FetchError as exc:
        return Failure(exc.reason, exc.ip)
    mime = sniff(first.content)
    if mime is None and declared_html(first.content_type):
        # Markup that the bytes alone do not tell from text (a page that starts with
        # <h2> or <center>): the server's word for it, as browsers take it.
        mime = "text/html"
    links: list[str] = []
    if mime in ("text/html", None, "image/svg+xml"):
        # An SVG shows the pictures of its <image> elements (and a page that begins with
        # an <svg> is still a page): their links are fetched as a page's.
        links = media_links(
            first.content,
            first.url,
            limit=limits.page_media_limit,
            content_type=first.content_type,
            svg_document=mime == "image/svg+xml",
            inline=True,
        )
    if is_media(mime):
        hashes = _hash(first.content, limits)
        if isinstance(hashes, Failure):
            return hashes
        found = Found(first.url, first.ip, hashes)
        if not links:
            return Gathered(first.url, first.ip, page=False, media=[found])
        gathered = Gathered(first.url, first.ip, page=True, media=[found])
    elif mime not in ("text/html", None) or (mime is None and not links):
        return Failure("not_media", first.ip)
    else:
        gathered = Gathered(first.url, first.ip, page=True, truncated=first.truncated)
    del first
    for link in links:
        if clock() > deadline:
            gathered.broken += 1
            gathered.broken_reasons.append("timeout")
            continue
        if is_inline(link):
            _add_inline(gathered, link, fetcher=fetcher, limits=limits)
            continue
        try:
            fetched = fetcher.fetch(link)
        except FetchError as exc:
            log.info("media link skipped: %s", exc.reason)
            gathered.broken += 1
            gathered.broken_reasons.append(exc.reason)
            continue
        where = (fetched.url, fetched.ip)
        item = _hash(fetched.content, limits) if is_media(sniff(fetched.content)) else None
        del fetched
        if isinstance(item, MediaHashes):
            gathered.media.append(Found(*where, item))
        else:
            gathered.broken += 1
            gathered.broken_reasons.append(item.reason if item is not None else "not_media")
    return gathered


# A picture carried in the page smaller than this (in pixels) is a placeholder, a
# spacer or an icon: lazy loaders put a 1x1 GIF in every src.
_INLINE_MIN_PIXELS: Final = 32 * 32


def _add_inline(gathered: Gathered, link: str, *, fetcher: Fetcher, limits: Limits) -> None:
    """A picture the page carries in itself (a ``data:`` URL): hashed like a fetched one,
    recorded under the page's URL and its SHA-256 (never the data). One that is no
    picture, does not decode or is a placeholder is left out, not counted as broken."""
    data = inline_picture(link, max_bytes=fetcher.policy.max_bytes)
    if data is None or sniff(data) not in _INLINE_TYPES:
        return
    item = _hash(data, limits)
    del data
    if not isinstance(item, MediaHashes) or item.phash is None:
        return
    if (item.width or 0) * (item.height or 0) < _INLINE_MIN_PIXELS:
        return
    gathered.media.append(Found(inline_url(gathered.final_url, item.sha256), gathered.ip, item))


def _claimed(session: Session, claim: Claim) -> Target | None:
    """The target, locked, if this worker's claim is still the one in force."""
    target = session.get(Target, claim.target_id, with_for_update=True)
    if target is None or target.status != TargetStatus.fetching:
        return None  # finished by another worker meanwhile
    if target.handed_over_at != claim.claimed_at:
        return None  # the claim expired and another worker holds the target now
    return target


def record_failure(
    session: Session,
    claim: Claim,
    reason: str,
    *,
    now: dt.datetime,
    max_attempts: int,
    retry_delay: float,
    answered: Hosting | None = None,
) -> Outcome:
    """A failed attempt: back to pending for a later attempt, or unreachable for good.

    ``answered``: where the address that answered is (an HTTP error, a page without
    media): the target's hosting, so an analyst sees where a gone page was."""
    target = _claimed(session, claim)
    if target is None:
        return Outcome(None)
    target_id = claim.target_id
    target.status_reason = reason
    target.status_changed_at = now
    if answered is not None:
        target.hosting_ip, target.hosting_country = answered.ip, answered.country
        target.hosting_asn, target.hosting_org = answered.asn, answered.org
    if is_retryable(reason) and target.attempts < max_attempts:
        delay = retry_delay * 2 ** (target.attempts - 1)
        target.status = TargetStatus.pending
        # The sweep counts from here, so it leaves the scheduled retry alone.
        target.handed_over_at = now + dt.timedelta(seconds=delay)
        session.add(target)
        log.info(
            "target %s attempt %s failed (%s); retry in %.0fs",
            target_id,
            target.attempts,
            reason,
            delay,
        )
        return Outcome(TargetStatus.pending, retry_in=delay)
    target.status = TargetStatus.unreachable
    target.processed_at = now
    session.add(target)
    if claim.first_time:
        # A reported address counts on its site even when nothing could be fetched.
        upsert_site(session, claim.registered_domain, new_target=True, now=now)
    log.info("target %s unreachable: %s", target_id, reason)
    return Outcome(TargetStatus.unreachable)


def _add_media(insert: Any) -> Any:
    table = Media.__table__  # type: ignore[attr-defined]
    return (
        insert(table)
        .on_conflict_do_nothing(index_elements=[table.c.sha256])
        .returning(table.c.id, table.c.sha256)
    )


def _add_frames(insert: Any) -> Any:
    table = MediaFrame.__table__  # type: ignore[attr-defined]
    return insert(table).on_conflict_do_nothing(index_elements=[table.c.media_id, table.c.frame])


def _find_media(_: Any) -> Any:
    table = Media.__table__  # type: ignore[attr-defined]
    return select(table.c.id, table.c.sha256).where(
        table.c.sha256.in_(bindparam("wanted", expanding=True))
    )


def upsert_media(
    session: Session, items: Iterable[MediaHashes], *, now: dt.datetime
) -> dict[str, tuple[int, bool]]:
    """SHA-256 -> the media row's id, and whether this call inserted it.

    Two statements for any number of items (the driver sends the rows in pages of
    multi-row VALUES), in SHA-256 order: two targets sharing new media lock them in the
    same order, so they cannot deadlock."""
    unique = {hashes.sha256: hashes for hashes in items}
    ordered = sorted(unique)
    rows = [
        {
            "sha256": h.sha256,
            "sha1": h.sha1,
            "md5": h.md5,
            "phash": h.phash,
            "pdq": h.pdq,
            "pdq_quality": h.pdq_quality,
            "mime": h.mime,
            "kind": h.kind,
            "size": h.size,
            "width": h.width,
            "height": h.height,
            "frames": h.frames,
            "hash_note": h.note,
            "first_seen_at": now,
        }
        for h in (unique[sha256] for sha256 in ordered)
    ]
    if not rows:
        return {}
    ids = {
        str(sha256): (int(media_id), True)
        for media_id, sha256 in session.execute(built(session, _add_media), rows)
    }
    frames = [
        {
            "media_id": ids[sha256][0],
            "frame": f.frame,
            "phash": f.phash,
            "pdq": f.pdq,
            "pdq_quality": f.pdq_quality,
        }
        for sha256 in ordered
        if sha256 in ids
        for f in unique[sha256].frame_hashes
    ]
    if frames:  # (an animation first seen here: its later frames)
        session.execute(built(session, _add_frames), frames)
    seen = [sha256 for sha256 in ordered if sha256 not in ids]
    for start in range(0, len(seen), 1000):
        found = session.execute(built(session, _find_media), {"wanted": seen[start : start + 1000]})
        ids.update((str(sha256), (int(media_id), False)) for media_id, sha256 in found)
    return ids


_SIGHTING_UPDATES = (
    "media_url",
    "hosting_ip",
    "hosting_country",
    "hosting_asn",
    "hosting_org",
    "online",
    "last_seen_at",
)


def _add_sighting(insert: Any) -> Any:
    table = Sighting.__table__  # type: ignore[attr-defined]
    statement = insert(table)
    return statement.on_conflict_do_update(
        index_elements=[table.c.target_id, table.c.media_id],
        set_={name: statement.excluded[name] for name in _SIGHTING_UPDATES},
    )


def _seen_elsewhere(_: Any) -> Any:
    table = Sighting.__table__  # type: ignore[attr-defined]
    before, ours = table.alias("before"), table.alias("ours")
    our_first = (
        select(ours.c.first_seen_at)
        .where(ours.c.media_id == before.c.media_id, ours.c.target_id == bindparam("target"))
        .scalar_subquery()
    )
    return (
        select(before.c.media_id)
        .distinct()
        .where(
            before.c.media_id.in_(bindparam("media", expanding=True)),
            before.c.target_id != bindparam("target"),
            before.c.first_seen_at < func.coalesce(our_first, bindparam("now")),
        )
    )


def seen_elsewhere(
    session: Session, target_id: int, media_ids: Collection[int], *, now: dt.datetime
) -> set[int]:
    """Of these media, those another target showed before this one first did (as
    ``triage.rerank.facts_of`` counts them): a target processed again does not count
    its own media of the first time as seen before."""
    if not media_ids:
        return set()
    rows = session.execute(
        built(session, _seen_elsewhere),
        {"target": target_id, "media": sorted(media_ids), "now": now},
    )
    return {int(media_id) for (media_id,) in rows}


def _gone_sightings(_: Any) -> Any:
    table = Sighting.__table__  # type: ignore[attr-defined]
    return (
        update(table)
        .where(
            table.c.target_id == bindparam("target"),
            table.c.online.is_(True),
            table.c.media_id.not_in(bindparam("media", expanding=True)),
        )
        .values(online=False)
    )


def mark_gone_sightings(session: Session, target_id: int, media_ids: Collection[int]) -> None:
    """Of a target processed again, the media it showed before and does not show now
    (not among ``media_ids``): their sightings stay, with when they were last seen, but
    are no longer online, so the analyst assesses, and ranking counts, what it shows now."""
    session.execute(
        built(session, _gone_sightings), {"target": target_id, "media": sorted(media_ids)}
    )


def upsert_sightings(
    session: Session,
    target_id: int,
    seen: dict[int, tuple[Found, Hosting]],
    *,
    now: dt.datetime,
) -> None:
    """Where each media item (by id) was found on the target, one statement for all:
    the URL it was fetched from and where that server is."""
    if not seen:
        return
    session.execute(
        built(session, _add_sighting),
        [
            {
                "target_id": target_id,
                "media_id": media_id,
                "first_seen_at": now,
                "media_url": found.url,
                "hosting_ip": hosting.ip,
                "hosting_country": hosting.country,
                "hosting_asn": hosting.asn,
                "hosting_org": hosting.org,
                "online": True,
                "last_seen_at": now,
            }
            for media_id, (found, hosting) in sorted(seen.items())
        ],
    )


def _hash_type(hashes: MediaHashes, value: str) -> HashType:
    """Which of a media item's hashes an exact match's key is."""
    if value == hashes.sha256:
        return HashType.sha256
    return HashType.sha1 if value == hashes.sha1 else HashType.md5


def match_media(
    session: Session,
    media: dict[int, MediaHashes],
    *,
    near: NearDuplicates,
    now: dt.datetime,
    facts: ranking.PriorityInput,
    fresh: Collection[int] = (),
) -> None:
    """Record every exact (SHA-256, SHA-1, MD5) and near (pHash, PDQ) match of the media
    items (by id), and add them to the target's priority facts. The exact matches of all
    items are looked up at once; near ones in memory, and the hits of all items in the
    database together. The later frames of an animation (``MediaHashes.frame_hashes``)
    are looked up as well: a known picture shown as one frame of a GIF is found.

    ``fresh``: media first recorded by this target just now, not seen before it, so no
    near match to them is recorded (two near copies on one page do not match each
    other)."""
    holders: dict[str, list[int]] = {}
    for media_id, hashes in media.items():
        for value in (hashes.sha256, hashes.sha1, hashes.md5):
            if value:
                holders.setdefault(value, []).append(media_id)
    exact: dict[int, list[tuple[int, int, str, str]]] = {}
    for match in exact_matches(session, holders):
        for media_id in holders[match[2]]:
            exact.setdefault(media_id, []).append(match)
    # Near: each media item's hashes, and those of the later frames of an animation.
    asked, queries = _near_queries(
        picture
        for media_id, hashes in media.items()
        for picture in [
            (media_id, None, hashes.phash, hashes.pdq, hashes.pdq_quality),
            *((media_id, f.frame, f.phash, f.pdq, f.pdq_quality) for f in hashes.frame_hashes),
        ]
    )
    nearby = near.lookup_many(session, queries, skip=fresh)
    rows = []
    for media_id, hashes in media.items():
        for known_id, list_id, value, list_name in exact.get(media_id, ()):
            facts.exact_lists.add(list_name)
            rows.append(
                match_row(
                    media_id=media_id,
                    kind=MatchKind.exact,
                    hash_type=_hash_type(hashes, value),
                    distance=0,
                    list_id=list_id,
                    known_entry_id=known_id,
                    found_at=now,
                )
            )
    for (media_id, _), near_matches in zip(asked, nearby, strict=True):
        for found in near_matches:  # (none of the fresh media)
            if found.media_id is not None:
                facts.near_seen.add(media_id)
            else:
                facts.near_confirmed_lists.add(found.source)
    rows += near_rows(asked, nearby, now=now)
    # Of the media seen before and of each list's entries, the nearest; what media seen
    # before recorded before counts.
    again = [media_id for media_id in media if media_id not in fresh]
    recorded = recorded_near(session, again) if again else {}
    add_matches(session, nearest_near(rows, near.near_limit, recorded))


# A picture of a media item to look up: (media, frame: None for the item's own hashes,
# pHash, PDQ, PDQ quality).
Picture = tuple[int, int | None, str | None, str | None, int | None]


def _near_queries(
    pictures: Iterable[Picture],
) -> tuple[list[tuple[int, int | None]], list[NearQuery]]:
    """(media, frame) of each picture, and its near-duplicate lookup (not of itself)."""
    asked: list[tuple[int, int | None]] = []
    queries: list[NearQuery] = []
    for media_id, frame, phash, pdq, quality in pictures:
        asked.append((media_id, frame))
        queries.append(NearQuery(phash, pdq, quality, exclude_media_id=media_id))
    return asked, queries


def near_rows(
    asked: list[tuple[int, int | None]], nearby: list[list[NearMatch]], *, now: dt.datetime
) -> list[dict[str, Any]]:
    """Match rows of the near matches found for each (media, frame) asked. (Found through
    several frames: add_matches keeps the closest.)"""
    return [
        match_row(
            media_id=media_id,
            kind=MatchKind.near,
            hash_type=HashType(found.hash_type),
            distance=found.distance,
            list_id=found.list_id,
            known_entry_id=found.known_entry_id,
            matched_media_id=found.media_id,
            frame=frame,
            found_at=now,
        )
        for (media_id, frame), near_matches in zip(asked, nearby, strict=True)
        for found in near_matches
    ]


def match_own_list_again(
    session: Session,
    lost: Iterable[tuple[int, str]],
    *,
    near: NearDuplicates,
    now: dt.datetime,
    removed: Collection[int] = (),
) -> list[int]:
    """After a reversal took entries off the hotline's own list (their ids:
    ``removed``), with the matches found through them.

    First the matches a worker recorded through those entries while the reversal
    committed (it read an entry before, and recorded after) go too: they would keep a
    reversed picture's tier. (Ids no entry holds now only: SQLite hands the ids of the
    newest rows out again.) Then the media that lost near matches ((media, hash type),
    ``lost``, and those just found) get the next nearest entries: a media item records
    only the nearest (``near_limit``), so farther ones were left out. As a worker
    records matches for media that turn up again: of the list as it is now, the nearest,
    counting those still recorded, for the hash types that lost one. Ranks again the
    queued targets showing the media that lost or got a match now; returns those whose
    priority changed.

    Takes no lock: holding the own list for the time of the lookups made workers that
    confirm by earlier verdicts wait, and a lock order with the site rows they hold
    deadlocked. The task runs a while after the reversal (``assessment.MATCH_AGAIN_DELAY``), when
    the workers recording then have committed."""
    gone = sorted(set(removed) - _existing_entries(session, removed))
    stale_media, stale_near = drop_matches_through(session, gone) if gone else ([], [])
    types: dict[int, set[str]] = {}
    for media_id, hash_type in [*lost, *stale_near]:
        types.setdefault(int(media_id), set()).add(HashType(hash_type).value)
    if not (types or stale_media):
        return []
    media_ids = sorted(types)
    asked, queries = _near_queries(_pictures(session, media_ids))
    nearby = near.lookup_many(session, queries)
    own = near.own_lists  # (as the lookup's refresh read them)
    rows = [
        row
        for row in near_rows(asked, nearby, now=now)
        if row["list_id"] in own and str(row["hash_type"]) in types[row["media_id"]]
    ]
    recorded = recorded_near(session, media_ids, lists=own)
    matched = add_matches(session, nearest_near(rows, near.near_limit, recorded))
    return rerank(session, showing_media(session, sorted(matched | set(stale_media))))


def _existing_entries(session: Session, ids: Collection[int]) -> set[int]:
    found = session.execute(select(col(KnownEntry.id)).where(col(KnownEntry.id).in_(sorted(ids))))
    return {int(i) for i in found.scalars()}


def _pictures(session: Session, media_ids: list[int]) -> list[Picture]:
    """The media items' pictures as stored: each item's own hashes, then those of its
    later frames."""
    frames = frame_hashes(session, media_ids)
    found: list[Picture] = []
    own = select(col(Media.id), col(Media.phash), col(Media.pdq), col(Media.pdq_quality))
    for media_id, phash, pdq, quality in session.execute(own.where(col(Media.id).in_(media_ids))):
        found.append((int(media_id), None, phash, pdq, quality))
        found += [
            (int(media_id), f["frame"], f["phash"], f["pdq"], f["pdq_quality"])
            for f in frames.get(media_id, ())
        ]
    return found


def _count_site(insert: Any) -> Any:
    table = Site.__table__  # type: ignore[attr-defined]
    statement = insert(table)
    return statement.on_conflict_do_update(
        index_elements=[table.c.registered_domain],
        set_={
            "target_count": table.c.target_count + bindparam("added", type_=Integer),
            # A site flagged before its first report: first seen now, not when flagged.
            "first_seen_at": case(
                (table.c.target_count == 0, statement.excluded.first_seen_at),
                else_=table.c.first_seen_at,
            ),
        },
    ).returning(table.c.confirmed_count, table.c.dedicated)


def upsert_site(
    session: Session, domain: str, *, new_target: bool, now: dt.datetime
) -> tuple[int, bool]:
    """Count the target on its site (registered domain); returns the site's confirmed
    count and whether staff flagged it as dedicated to abuse material."""
    confirmed, dedicated = session.execute(
        built(session, _count_site),
        {
            "registered_domain": domain,
            "target_count": 1,
            "confirmed_count": 0,
            "dedicated": False,
            "first_seen_at": now,
            "added": 1 if new_target else 0,
        },
    ).one()
    return int(confirmed), bool(dedicated)


def _queue(_: Any) -> Any:
    target = Target.__table__  # type: ignore[attr-defined]
    return (
        update(target)
        .where(
            target.c.id == bindparam("target"),
            target.c.status == TargetStatus.fetching,
            target.c.handed_over_at == bindparam("claimed_at"),
        )
        .values(
            status=TargetStatus.queued,
            status_reason=bindparam("reason"),
            status_changed_at=bindparam("now"),
            processed_at=bindparam("now"),
            priority=bindparam("rank") + report_bonus_sql(target.c.report_count),
            priority_reasons=bindparam("reasons"),
            broken_links=bindparam("broken"),
            hosting_ip=bindparam("ip"),
            hosting_country=bindparam("country"),
            hosting_asn=bindparam("asn"),
            hosting_org=bindparam("org"),
        )
    )


def _queued_reason(gathered: Gathered) -> str | None:
    """Why a page is queued without media (none linked, or none of its links fetched)
    or read only in part (``page_truncated``); why a media URL's file is hashed only in
    part (``MediaHashes.note``)."""
    if not gathered.page:
        return gathered.media[0].hashes.note if gathered.media else None
    if gathered.truncated:
        return "page_truncated"
    if gathered.media:
        return None
    return "media_unreachable" if gathered.broken else "no_media_found"


def _broken_links(gathered: Gathered) -> str | None:
    """Why a page's media links failed, as JSON: {reason code: count}, most first."""
    if not gathered.broken_reasons:
        return None
    return json.dumps(dict(Counter(gathered.broken_reasons).most_common()))


def record_gathered(
    session: Session,
    claim: Claim,
    gathered: Gathered,
    *,
    now: dt.datetime,
    near: NearDuplicates,
    hosting: HostingLookup,
) -> Outcome:
    """Store media, sightings, matches, hosting and priority; the target joins the queue.

    Written only while this worker's claim is in force: if another worker finished the
    target meanwhile, nothing of this attempt is kept.
    """
    place = hosting.lookup(gathered.ip)
    facts = ranking.PriorityInput()
    ids = upsert_media(session, (found.hashes for found in gathered.media), now=now)
    known = {media_id for media_id, new in ids.values() if not new}
    if known and not claim.first_time:
        # Processed again (reported again, tried again): its own media of the first
        # time are not media seen before.
        known = seen_elsewhere(session, claim.target_id, known, now=now)
    media: dict[int, MediaHashes] = {}
    seen: dict[int, tuple[Found, Hosting]] = {}  # the last link to each media item wins
    seen_before = False
    for found in gathered.media:
        media_id, _ = ids[found.hashes.sha256]
        if media_id in known:  # shown by another target before this one
            seen_before = True
            if ranking.tells_when_seen_again(found.hashes.phash):
                facts.seen_copies.add(media_id)
        media[media_id] = found.hashes
        where = place if found.ip == gathered.ip else hosting.lookup(found.ip)
        seen[media_id] = (found, where)
    upsert_sightings(session, claim.target_id, seen, now=now)
    if not claim.first_time and not gathered.broken and not gathered.truncated:
        # Only a page read whole, every link fetched, tells what it no longer shows.
        mark_gone_sightings(session, claim.target_id, seen)
    by_sha256 = dict(sorted(media.items(), key=lambda item: item[1].sha256))
    fresh = {media_id for media_id, _ in ids.values() if media_id not in known}
    match_media(session, by_sha256, near=near, now=now, facts=facts, fresh=fresh)
    facts.media_count = len(media)
    facts.site_confirmed, facts.site_dedicated = upsert_site(
        session, claim.registered_domain, new_target=claim.first_time, now=now
    )
    priority, reasons = ranking.priority(facts)
    updated = session.execute(
        built(session, _queue),
        {
            "target": claim.target_id,
            "claimed_at": claim.claimed_at,
            "reason": _queued_reason(gathered),
            "now": now,
            "rank": priority,
            "reasons": json.dumps(reasons),
            "broken": _broken_links(gathered),
            "ip": place.ip,
            "country": place.country,
            "asn": place.asn,
            "org": place.org,
        },
    )
    if not updated.rowcount:  # type: ignore[attr-defined]
        session.rollback()
        return Outcome(None)
    log.info(
        "target %s queued: %d media, %d broken links, priority %d",
        claim.target_id,
        len(media),
        gathered.broken,
        priority,
    )
    # Media an analyst already assessed on another target carry that verdict (media
    # first seen just now cannot have one: no query then). A spacer too.
    if not seen_before:
        return Outcome(TargetStatus.queued)
    decided = adopt_earlier_verdicts(session, claim.target_id, now=now)
    if decided is not None:
        log.info("target %s decided from earlier verdicts: %s", claim.target_id, decided)
        return Outcome(decided)
    return Outcome(TargetStatus.queued)


UnitOfWork = Callable[[], AbstractContextManager[Session]]


def process_target(
    target_id: int,
    *,
    units: UnitOfWork,
    fetcher: Fetcher,
    near: NearDuplicates,
    hosting: HostingLookup,
    limits: Limits,
    lease: dt.timedelta,
    max_attempts: int,
    retry_delay: float,
    now: Callable[[], dt.datetime],
    claims: UnitOfWork | None = None,
) -> Outcome:
    """Claim, gather and record one target; returns where it ended and whether to retry.

    ``claims`` is the unit of work of the claim, a single statement (``units`` if not
    given): a worker runs it without a transaction of its own.
    """
    with (claims or units)() as session:
        started = now()
        claim = claim_target(
            session, target_id, now=started, lease=lease, max_attempts=max_attempts
        )
        if claim is None:
            unclaimed = why_unclaimed(session, target_id, now=started, max_attempts=max_attempts)
    if claim is None:
        # A second message for a target waiting for its retry (the sweep's, or one
        # redelivered) comes back when the retry is due, rather than making it early.
        if unclaimed.exhausted:
            with units() as session:
                if give_up_exhausted(session, target_id, now=started, max_attempts=max_attempts):
                    return Outcome(TargetStatus.unreachable)
        return Outcome(None, retry_in=unclaimed.retry_in)
    try:
        result = gather(claim.url, fetcher=fetcher, limits=limits)
    except Exception as exc:  # a bug must not leave the target claimed, nor leak content
        log.error("target %s: processing failed with %s", target_id, type(exc).__name__)
        result = Failure("internal_error")

    def fail(reason: str, ip: str | None = None) -> Outcome:
        with units() as session:
            return record_failure(
                session,
                claim,
                reason,
                now=now(),
                max_attempts=max_attempts,
                retry_delay=retry_delay,
                answered=hosting.lookup(ip) if ip else None,
            )

    if isinstance(result, Failure):
        return fail(result.reason, result.ip)
    try:
        with units() as session:
            return record_gathered(session, claim, result, now=now(), near=near, hosting=hosting)
    except Exception as exc:  # e.g. a deadlock or a lost connection: try again later
        log.error("target %s: recording failed with %s", target_id, type(exc).__name__)
        return fail("internal_error")


def find_target(session: Session, url_or_id: str) -> Target | None:
    """A target by id, or by any spelling of its URL."""
    if url_or_id.isascii() and url_or_id.isdigit():
        number = int(url_or_id)
        return session.get(Target, number) if number < 2**63 else None
    try:
        # Any target stored, whatever the intake's length limit was when it came in.
        canonical = canonicalise(url_or_id, public_only=False, max_length=1 << 24)
    except HotlineError:
        return None
    digest = hashlib.sha256(canonical.url.encode()).hexdigest()
    return session.execute(
        select(Target).where(col(Target.url_sha256) == digest)
    ).scalar_one_or_none()


def media_matches(session: Session, media: Media) -> list[dict[str, Any]]:
    """How a media item is recognised: list entries and media seen here, exact or near."""
    matched = Media.__table__.alias("matched")  # type: ignore[attr-defined]
    rows = session.execute(
        select(
            col(MediaMatch.kind),
            col(MediaMatch.hash_type),
            col(MediaMatch.distance),
            col(HashList.name),
            func.coalesce(matched.c.sha256, col(KnownEntry.sha256)),
            col(MediaMatch.frame),
        )
        .outerjoin(HashList, col(HashList.id) == col(MediaMatch.list_id))
        .outerjoin(matched, matched.c.id == col(MediaMatch.matched_media_id))
        # The hotline's own list holds its confirmed media: its entries name them.
        .outerjoin(
            KnownEntry,
            and_(
                col(HashList.own),
                col(KnownEntry.list_id) == col(MediaMatch.list_id),
                col(KnownEntry.id) == col(MediaMatch.known_entry_id),
            ),
        )
        .where(col(MediaMatch.media_id) == media.id)
        .where(or_(col(HashList.enabled), col(MediaMatch.list_id).is_(None)))
        .order_by(col(MediaMatch.distance), col(MediaMatch.id))
    ).all()
    found = [
        {
            "source": name or "seen",
            "kind": str(kind),
            "hash_type": str(hash_type),
            "distance": distance,
            "media_sha256": other,
            "frame": frame,
        }
        for kind, hash_type, distance, name, other, frame in rows
    ]
    elsewhere = session.execute(
        select(func.count()).select_from(Sighting).where(col(Sighting.media_id) == media.id)
    ).scalar_one()
    if elsewhere > 1:  # the same file on other targets
        found.insert(
            0,
            {
                "source": "seen",
                "kind": "exact",
                "hash_type": "sha256",
                "distance": 0,
                "media_sha256": media.sha256,
                "frame": None,
            },
        )
    return found


def frame_hashes(session: Session, media_ids: Collection[int]) -> dict[int, list[dict[str, Any]]]:
    """The hashed later frames of each media item that has any (``MediaFrame``)."""
    found: dict[int, list[dict[str, Any]]] = {}
    if not media_ids:
        return found
    rows = session.execute(
        select(MediaFrame)
        .where(col(MediaFrame.media_id).in_(sorted(media_ids)))
        .order_by(col(MediaFrame.media_id), col(MediaFrame.frame))
    ).scalars()
    for row in rows:
        found.setdefault(row.media_id, []).append(
            {"frame": row.frame, "phash": row.phash, "pdq": row.pdq, "pdq_quality": row.pdq_quality}
        )
    return found


def _media_view(
    session: Session, media: Media, sighting: Sighting, frames: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": media.id,
        "sha256": media.sha256,
        "sha1": media.sha1,
        "md5": media.md5,
        "phash": media.phash,
        "pdq": media.pdq,
        "pdq_quality": media.pdq_quality,
        "mime": media.mime,
        "kind": str(media.kind),
        "size": media.size,
        "width": media.width,
        "height": media.height,
        "frames": media.frames,
        "frame_hashes": frames,
        "hash_note": media.hash_note,
        "url": sighting.media_url,
        "hosting": {
            "ip": sighting.hosting_ip,
            "country": sighting.hosting_country,
            "asn": sighting.hosting_asn,
            "org": sighting.hosting_org,
        },
        "first_seen_at": sighting.first_seen_at.isoformat(),
        "last_seen_at": sighting.last_seen_at.isoformat(),
        "matches": media_matches(session, media),
    }


def describe_target(session: Session, target: Target) -> dict[str, Any]:
    """Everything the workers learned about a target, for operators and analysts."""
    rows = session.execute(
        select(Media, Sighting)
        .join(Sighting, col(Sighting.media_id) == col(Media.id))
        .where(col(Sighting.target_id) == target.id)
        .order_by(col(Sighting.id))
    ).all()
    frames = frame_hashes(session, [cast(int, m.id) for m, _ in rows])
    return {
        "id": target.id,
        "canonical_url": target.canonical_url,
        "registered_domain": target.registered_domain,
        "status": str(target.status),
        "reason": target.status_reason,
        "priority": target.priority,
        "priority_reasons": reasons_with_reports(target.priority_reasons, target.report_count),
        "hosting": {
            "ip": target.hosting_ip,
            "country": target.hosting_country,
            "asn": target.hosting_asn,
            "org": target.hosting_org,
        },
        "report_count": target.report_count,
        "broken_links": json.loads(target.broken_links) if target.broken_links else {},
        "attempts": target.attempts,
        "first_reported_at": target.first_reported_at.isoformat(),
        "last_reported_at": target.last_reported_at.isoformat(),
        "removed_at": target.removed_at.isoformat() if target.removed_at else None,
        # What the page shows now; what it showed when processed before but no longer
        # does (kept, with its verdicts, as history).
        "media": [
            _media_view(session, m, s, frames.get(cast(int, m.id), [])) for m, s in rows if s.online
        ],
        "earlier_media": [
            _media_view(session, m, s, frames.get(cast(int, m.id), []))
            for m, s in rows
            if not s.online
        ],
    }
