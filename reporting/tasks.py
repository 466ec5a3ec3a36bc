"""Periodic jobs of public intake (thin wrappers; the logic is in ``reporting.service``)."""

from __future__ import annotations

import datetime as dt

from celery import shared_task

from hotline.db import session_scope, utcnow
from hotline.settings import get_settings
from reporting import service


@shared_task(name="reporting.sweep_pending", acks_late=True, ignore_result=True)
def sweep_pending() -> int:
    """Hand over again every target still pending after the configured delay."""
    settings = get_settings()
    with session_scope() as session:
        swept = service.sweep_pending(
            session,
            now=utcnow(),
            older_than=dt.timedelta(seconds=settings.pending_requeue_after_seconds),
            stale_after=dt.timedelta(seconds=settings.process_lease_seconds),
        )
    return len(swept)


@shared_task(name="reporting.purge_contacts", acks_late=True, ignore_result=True)
def purge_contacts() -> int:
    """Erase reporters' contact details older than the retention period."""
    retention = dt.timedelta(days=get_settings().contact_retention_days)
    with session_scope() as session:
        return service.purge_expired_contacts(session, now=utcnow(), retention=retention)
