"""The hotline's figures for supervisors and admins: reports received, how many
decided targets were confirmed, where confirmed material was hosted, and how soon it
was removed (INHOPE's headline figure: the share removed within three days).

Plain counts over the existing tables; nothing is stored. Targets are counted once
however many reports they had; no URL or anything of a reporter appears.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlmodel import Session, col

from partners.rechecks import THREE_DAYS, WATCHED, removal_statistics
from partners.schemas import CountryCount, RemovalFigures, Statistics
from reporting.models import Report, ReportSource, Target, TargetStatus

CONFIRMED = frozenset(WATCHED)
# A target has its verdict when it is confirmed (and maybe forwarded, removed) or found
# not illegal; pending, queued, in review, unreachable ones are not counted.
DECIDED = CONFIRMED | {TargetStatus.not_illegal}


def statistics(
    session: Session, *, since: dt.datetime | None = None, within: dt.timedelta = THREE_DAYS
) -> Statistics:
    """The figures over reports received, and targets first reported, since ``since``
    (all time when None); removal over the targets confirmed since then."""
    reports = select(col(Report.source), func.count()).group_by(col(Report.source))
    if since is not None:
        reports = reports.where(col(Report.created_at) >= since)
    by_source = {ReportSource(source).value: int(n) for source, n in session.execute(reports)}

    statuses = select(col(Target.status), func.count()).group_by(col(Target.status))
    countries = (
        select(col(Target.hosting_country), func.count())
        .where(col(Target.status).in_([s.value for s in CONFIRMED]))
        .group_by(col(Target.hosting_country))
    )
    if since is not None:
        statuses = statuses.where(col(Target.first_reported_at) >= since)
        countries = countries.where(col(Target.first_reported_at) >= since)
    by_status = {TargetStatus(status): int(n) for status, n in session.execute(statuses)}
    decided = sum(n for status, n in by_status.items() if status in DECIDED)
    confirmed = sum(n for status, n in by_status.items() if status in CONFIRMED)
    hosting = sorted(
        (CountryCount(country=c, targets=int(n)) for c, n in session.execute(countries)),
        key=lambda c: (-c.targets, c.country or "~"),
    )

    removal = removal_statistics(session, confirmed_from=since, within=within)
    median = removal.median_time_to_removal
    return Statistics(
        since=since,
        reports=sum(by_source.values()),
        reports_by_source={s.value: by_source.get(s.value, 0) for s in ReportSource},
        targets_reported=sum(by_status.values()),
        decided=decided,
        confirmed=confirmed,
        confirmation_rate=confirmed / decided if decided else None,
        hosting_countries=hosting,
        removal=RemovalFigures(
            confirmed=removal.confirmed,
            removed=removal.removed,
            removed_within=removal.removed_within,
            within_seconds=int(within.total_seconds()),
            share_removed_within=removal.share_removed_within,
            median_time_to_removal_seconds=int(median.total_seconds())
            if median is not None
            else None,
        ),
    )
