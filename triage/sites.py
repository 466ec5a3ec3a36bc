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
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session, col

from hotline.db import dialect_insert
from hotline.errors import HotlineError
from reporting.urls import site_of
from triage.models import Site
from triage.rerank import on_site, rerank

NOTE_MAX = 2000
# A note is shown on pages and printed in terminals: one paragraph of plain text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidSite(HotlineError):
    status_code = 422
    code = "invalid_site"
    detail = (
        "Give a registered domain (example.com), a host under it, a URL on it or an IP "
        "address; a name without a public suffix (localhost) or a suffix alone (co.uk) "
        "names no site."
    )


class UnknownSite(HotlineError):
    status_code = 404
    code = "unknown_site"
    detail = "No site with that registered domain has been reported or flagged."


class InvalidNote(HotlineError):
    status_code = 422
    code = "invalid_note"
    detail = (
        f"A site note is one line of at most {NOTE_MAX} characters, without control characters."
    )


def site_domain(value: str) -> str:
    """The key of the site staff mean (see ``reporting.urls.site_of``)."""
    domain = site_of(value)
    if domain is None:
        raise InvalidSite()
    return domain


def describe_site(site: Site) -> dict[str, Any]:
    return {
        "registered_domain": site.registered_domain,
        "target_count": site.target_count,
        "confirmed_count": site.confirmed_count,
        "dedicated": site.dedicated,
        "note": site.note,
        "first_seen_at": site.first_seen_at.isoformat(),
    }


def _find(session: Session, domain: str, *, lock: bool = False) -> Site | None:
    query = select(Site).where(col(Site.registered_domain) == domain)
    found: Site | None = session.execute(
        query.with_for_update() if lock else query
    ).scalar_one_or_none()
    return found


def get_site(session: Session, value: str) -> Site:
    site = _find(session, site_domain(value))
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
    domain: str
    site: Site | None  # None: not seen, and nothing to set
    changed: dict[str, Any]  # what changed: field -> new value ("set"/"cleared" for the note)
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
    domain not seen yet gets its row when there is something to set (its first report
    then already ranks in the site tier; ``target_count`` stays 0 until then). The
    site's queued targets are ranked again when the flag changes."""
    domain = site_domain(value)
    cleaned = None if note is None else note.strip()
    if cleaned is not None and (len(cleaned) > NOTE_MAX or _CONTROL.search(cleaned)):
        raise InvalidNote()
    site = _find(session, domain, lock=True)
    if site is None:
        if not dedicated and not cleaned:
            return Flagged(domain, None, {}, [])  # nothing to flag, nothing to clear
        # A worker counting the domain's first target may add the row meanwhile: added
        # if missing, then locked, whoever made it.
        table = Site.__table__  # type: ignore[attr-defined]
        session.execute(
            dialect_insert(session)(table)
            .values(
                registered_domain=domain,
                target_count=0,
                confirmed_count=0,
                dedicated=False,
                first_seen_at=now,
            )
            .on_conflict_do_nothing(index_elements=[table.c.registered_domain])
        )
        site = _find(session, domain, lock=True)
        if site is None:  # pragma: no cover - inserted or found just now
            raise UnknownSite()
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
    return Flagged(domain, site, changed, moved)
