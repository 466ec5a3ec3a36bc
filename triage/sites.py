"""Sites: one row per registered domain, with its counts and what staff know of it.

The workers count targets (``triage.service.upsert_site``) and analysts' verdicts count
confirmed ones (``triage.assessment``). Staff flag a site as *dedicated* to abuse
material (a site that exists to spread it, not a platform abused by some of its users)
and leave a note for the analysts; a flagged site's queued targets rank in the
site tier (``triage.priority``) at once, and every target processed on it later does.
Nothing here commits.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session, col

from hotline.errors import HotlineError
from reporting.urls import canonicalise
from triage.models import Site
from triage.rerank import on_site, rerank

NOTE_MAX = 2000


class InvalidSite(HotlineError):
    status_code = 422
    code = "invalid_site"
    detail = "Give a domain (example.com), a host under it or a URL on it."


class UnknownSite(HotlineError):
    status_code = 404
    code = "unknown_site"
    detail = "No site with that registered domain has been seen."


class NoteTooLong(HotlineError):
    status_code = 422
    code = "note_too_long"
    detail = f"A site note has at most {NOTE_MAX} characters."


def site_domain(value: str) -> str:
    """The registered domain of a domain, host or URL as staff type it
    (``www.Example.com``, ``https://shop.example.co.uk/x``): the key of its site row."""
    try:
        canonical = canonicalise(value.strip(), max_length=2048, public_only=False)
    except HotlineError:
        raise InvalidSite() from None
    return canonical.registered_domain


def describe_site(site: Site) -> dict[str, Any]:
    return {
        "registered_domain": site.registered_domain,
        "target_count": site.target_count,
        "confirmed_count": site.confirmed_count,
        "dedicated": site.dedicated,
        "note": site.note,
        "first_seen_at": site.first_seen_at.isoformat(),
    }


def get_site(session: Session, value: str) -> Site:
    domain = site_domain(value)
    site: Site | None = session.execute(
        select(Site).where(col(Site.registered_domain) == domain)
    ).scalar_one_or_none()
    if site is None:
        raise UnknownSite()
    return site


def list_sites(
    session: Session, *, flagged: bool = False, confirmed: bool = False, limit: int = 50
) -> tuple[list[Site], int]:
    """Flagged sites first, then those with the most confirmed, then reported, targets;
    and how many match."""
    query = select(Site)
    if flagged:
        query = query.where(col(Site.dedicated))
    if confirmed:
        query = query.where(col(Site.confirmed_count) > 0)
    total = int(session.execute(select(func.count()).select_from(query.subquery())).scalar_one())
    rows = session.execute(
        query.order_by(
            col(Site.dedicated).desc(),
            col(Site.confirmed_count).desc(),
            col(Site.target_count).desc(),
            col(Site.registered_domain),
        ).limit(limit)
    ).scalars()
    return list(rows), total


@dataclass(frozen=True)
class Flagged:
    site: Site
    changed: dict[str, Any]  # what changed: field -> new value
    moved: list[int]  # queued targets ranked again


def flag_site(
    session: Session,
    value: str,
    *,
    dedicated: bool | None = None,
    note: str | None = None,
    now: dt.datetime,
) -> Flagged:
    """Set a site's flag and/or note (None: unchanged; an empty note clears it). A
    domain not seen yet gets its row now, so that its first report already ranks in the
    site tier. The site's queued targets are ranked again when the flag changes."""
    domain = site_domain(value)
    cleaned = None if note is None else note.strip()
    if cleaned is not None and len(cleaned) > NOTE_MAX:
        raise NoteTooLong()
    site = session.execute(
        select(Site).where(col(Site.registered_domain) == domain).with_for_update()
    ).scalar_one_or_none()
    if site is None:
        site = Site(registered_domain=domain, first_seen_at=now)
    changed: dict[str, Any] = {}
    if dedicated is not None and dedicated != site.dedicated:
        site.dedicated = dedicated
        changed["dedicated"] = dedicated
    if cleaned is not None and (cleaned or None) != site.note:
        site.note = cleaned or None
        changed["note"] = "set" if cleaned else "cleared"
    session.add(site)
    session.flush()
    moved = rerank(session, on_site(session, domain)) if "dedicated" in changed else []
    return Flagged(site, changed, moved)
