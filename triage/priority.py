"""Priority of a target in the analyst queue: an integer (higher is more urgent) and the
reasons, so an analyst can see why an item is where it is.

Order of the tiers, from the issue: exact match to a known list > near match to
confirmed media > a site with confirmed material (or flagged by staff as dedicated to
it) > new content. Within a tier,
more matching media rank higher, and more reports: that part is
``reporting.ranking``'s, kept up to date by the database as reports come in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from triage.neardup import informative_phashes

EXACT_KNOWN = 1000
NEAR_CONFIRMED = 500
SITE_CONFIRMED = 300
NEAR_SEEN = 150
NEW_CONTENT = 100
NO_MEDIA = 50


@dataclass
class PriorityInput:
    exact_lists: set[str] = field(default_factory=set)
    near_confirmed_lists: set[str] = field(default_factory=set)
    near_seen: set[int] = field(default_factory=set)  # our media near to media seen here
    # our media seen here before (but pictures without structure: tells_when_seen_again)
    seen_copies: set[int] = field(default_factory=set)
    site_confirmed: int = 0
    site_dedicated: bool = False  # flagged by staff (``hotline sites flag``)
    media_count: int = 0


def tells_when_seen_again(phash: str | None) -> bool:
    """Whether a media item seen on another target before is worth the "seen before"
    tier: not a picture whose pHash says nothing of it (a spacer GIF, a solid colour, a
    banner, shown by page after page), which near matching ignores too. Media without a
    pHash (video, undecodable files) count."""
    return phash is None or informative_phashes(phash)


def priority(facts: PriorityInput) -> tuple[int, list[str]]:
    """The queue priority but for the reports' part, and its reasons, most important
    first."""
    reasons: list[str] = []
    tier = NEW_CONTENT if facts.media_count else NO_MEDIA
    if facts.exact_lists:
        tier = EXACT_KNOWN
        reasons.append("exact match to known list: " + ", ".join(sorted(facts.exact_lists)))
    if facts.near_confirmed_lists:
        tier = max(tier, NEAR_CONFIRMED)
        reasons.append(
            "near match to confirmed media: " + ", ".join(sorted(facts.near_confirmed_lists))
        )
    if facts.site_dedicated:
        tier = max(tier, SITE_CONFIRMED)
        reasons.append("site flagged as dedicated to abuse material")
    if facts.site_confirmed:
        tier = max(tier, SITE_CONFIRMED)
        reasons.append(f"site has {facts.site_confirmed} confirmed target(s)")
    if facts.seen_copies:
        tier = max(tier, NEAR_SEEN)
        reasons.append(f"{len(facts.seen_copies)} media item(s) seen before on another target")
    if facts.near_seen:
        tier = max(tier, NEAR_SEEN)
        reasons.append(f"{len(facts.near_seen)} media item(s) near to media seen before")
    if tier == NEW_CONTENT:
        reasons.append("new content")
    elif tier == NO_MEDIA:
        reasons.append("no media found on the page")
    return tier + min(facts.media_count, 9), reasons
