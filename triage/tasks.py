"""Celery tasks of triage (thin wrappers around ``triage.service``)."""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Any

from celery import shared_task
from sqlalchemy.exc import OperationalError

from hotline.db import session_scope, utcnow
from hotline.settings import get_settings
from triage import service
from triage.catchup import catch_up
from triage.fetcher import get_fetcher
from triage.hosting import get_hosting_lookup
from triage.neardup import get_near_duplicates


@shared_task(
    bind=True, name="triage.process_target", acks_late=True, ignore_result=True, max_retries=None
)
def process_target(self: Any, target_id: int) -> str | None:
    """Fetch, hash, match and queue one reported target; retries transient failures."""
    settings = get_settings()
    outcome = service.process_target(
        target_id,
        units=session_scope,
        claims=partial(session_scope, autocommit=True),
        fetcher=get_fetcher(),
        near=get_near_duplicates(),
        hosting=get_hosting_lookup(),
        limits=service.Limits.from_settings(settings),
        lease=dt.timedelta(seconds=settings.process_lease_seconds),
        max_attempts=settings.process_max_attempts,
        retry_delay=settings.process_retry_delay_seconds,
        now=utcnow,
    )
    if outcome.retry_in is not None:
        # Celery's retry re-sends this message later; if it is lost, the sweep re-sends.
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status.value if outcome.status else None


@shared_task(name="triage.catch_up_matches", acks_late=True, ignore_result=True)
def catch_up_matches() -> int:
    """Record the matches workers recording at the same time missed, for the media first
    seen within the catch-up window; ranks again the queued targets showing them. A run
    that fails is made good by the next one (the window spans four runs)."""
    settings = get_settings()
    with session_scope() as session:
        caught = catch_up(
            session,
            near=get_near_duplicates(),
            now=utcnow(),
            window=dt.timedelta(seconds=settings.neardup_catchup_seconds),
        )
    return caught.matched


# Tasks that change rows other transactions may hold in another order: a deadlock (or
# a lost connection) the database breaks is tried again, by Celery.
contended_task = partial(
    shared_task,
    acks_late=True,
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    retry_jitter=True,
    max_retries=8,
)


@contended_task(name="triage.match_own_list_again")
def match_own_list_again(lost: list[tuple[int, str]], removed: list[int] | None = None) -> int:
    """After a reversal: drop the matches recorded meanwhile through the entries it
    removed, give the media that lost near matches to the own list the next nearest
    entries, and rank their queued targets again. Idempotent: matches recorded before
    are kept, and the nearest are counted with them."""
    with session_scope() as session:
        raised = service.match_own_list_again(
            session,
            [(int(m), str(t)) for m, t in lost],
            near=get_near_duplicates(),
            now=utcnow(),
            removed=[int(i) for i in removed or ()],
        )
    return len(raised)
