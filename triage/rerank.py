"""Priority of queued targets worked out again from what is stored, when a fact behind it
changed after processing: a hash list imported, disabled, enabled or removed, a site's
material confirmed, a site flagged as dedicated to abuse material or no longer.

The workers rank a target from what they found (``triage.service.record_gathered``);
this reads the same facts back from the database (the matches recorded for its media,
against the lists enabled now; media seen before it; its site's confirmed count now)
and gives the same priority and reasons for the same facts. Only ``queued`` targets
move: one in an analyst's hands, or decided, keeps its place. Nothing here commits.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, and_, select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from reporting.models import Target, TargetStatus
from reporting.ranking import report_bonus
from triage import priority as ranking
from triage.models import HashList, MatchKind, Media, MediaMatch, Sighting, Site

_CHUNK = 500


def facts_of(session: Session, target: Target) -> ranking.PriorityInput:
    """The priority facts of a processed target, as stored now."""
    facts = ranking.PriorityInput()
    ours, before = aliased(Sighting), aliased(Sighting)
    # Media seen on another target before this target's sighting of it.
    earlier = (
        select(col(before.id))
        .where(
            col(before.media_id) == col(ours.media_id),
            col(before.target_id) != col(ours.target_id),
            col(before.first_seen_at) < col(ours.first_seen_at),
        )
        .exists()
    )
    sightings = session.execute(
        select(col(ours.media_id), earlier, col(Media.phash))
        .join(Media, col(Media.id) == col(ours.media_id))
        .where(col(ours.target_id) == target.id, col(ours.online).is_(True))
    ).all()
    media_ids = sorted({int(media_id) for media_id, _, _ in sightings})
    facts.media_count = len(media_ids)
    facts.seen_copies = {
        int(media_id)
        for media_id, seen, phash in sightings
        if seen and ranking.tells_when_seen_again(phash)
    }
    for start in range(0, len(media_ids), _CHUNK):
        rows = session.execute(
            select(
                col(MediaMatch.media_id),
                col(MediaMatch.kind),
                col(MediaMatch.matched_media_id),
                col(HashList.name),
            )
            .outerjoin(
                HashList,
                and_(col(HashList.id) == col(MediaMatch.list_id), col(HashList.enabled)),
            )
            .where(col(MediaMatch.media_id).in_(media_ids[start : start + _CHUNK]))
        )
        for media_id, kind, matched_media_id, list_name in rows:
            if matched_media_id is not None:
                facts.near_seen.add(int(media_id))
            elif list_name is None:
                continue  # a disabled list's match
            elif kind == MatchKind.exact:
                facts.exact_lists.add(str(list_name))
            else:
                facts.near_confirmed_lists.add(str(list_name))
    site = session.execute(
        select(col(Site.confirmed_count), col(Site.dedicated)).where(
            col(Site.registered_domain) == target.registered_domain
        )
    ).first()
    if site is not None:
        facts.site_confirmed, facts.site_dedicated = int(site[0] or 0), bool(site[1])
    return facts


def rerank(session: Session, target_ids: Iterable[int]) -> list[int]:
    """Rank these targets again, those still queued; returns the ids whose priority
    changed. A target another transaction holds (being claimed, decided) is passed
    over rather than waited for: this runs inside others' decisions, and waiting
    could deadlock with a decision on a target of the same site."""
    ids = sorted(set(target_ids))
    changed: list[int] = []
    for start in range(0, len(ids), _CHUNK):
        queued = session.execute(
            select(Target)
            .where(
                col(Target.id).in_(ids[start : start + _CHUNK]),
                col(Target.status) == TargetStatus.queued,
            )
            .order_by(col(Target.id))
            .with_for_update(skip_locked=True)
        ).scalars()
        for target in queued:
            rank, reasons = ranking.priority(facts_of(session, target))
            rank += report_bonus(target.report_count)
            stored = json.dumps(reasons)
            if (target.priority, target.priority_reasons) == (rank, stored):
                continue
            if target.priority != rank:
                changed.append(int(target.id or 0))
            target.priority, target.priority_reasons = rank, stored
            session.add(target)
    session.flush()
    return changed


def showing_list(session: Session, list_id: int) -> list[int]:
    """The queued targets with media matched through a list."""
    media = select(col(MediaMatch.media_id)).where(col(MediaMatch.list_id) == list_id)
    return _queued_showing(session, media)


def on_site(session: Session, registered_domain: str) -> list[int]:
    """The queued targets of a site."""
    return list(
        session.execute(
            select(col(Target.id)).where(
                col(Target.registered_domain) == registered_domain,
                col(Target.status) == TargetStatus.queued,
            )
        ).scalars()
    )


def showing_media(session: Session, media_ids: list[int]) -> list[int]:
    """The queued targets showing any of these media."""
    found: list[int] = []
    for start in range(0, len(media_ids), _CHUNK):
        found += _queued_showing(session, media_ids[start : start + _CHUNK])
    return found


def _queued_showing(session: Session, media: Select[Any] | list[int]) -> list[int]:
    return list(
        session.execute(
            select(col(Target.id))
            .where(
                col(Target.status) == TargetStatus.queued,
                col(Target.id).in_(
                    select(col(Sighting.target_id)).where(col(Sighting.media_id).in_(media))
                ),
            )
            .distinct()
        ).scalars()
    )
