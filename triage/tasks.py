"""Celery tasks of triage (thin wrappers around ``triage.service``)."""

from __future__ import annotations

from celery import shared_task

from hotline.db import session_scope, utcnow
from triage import service


@shared_task(
    name="triage.process_target",
    acks_late=True,
    ignore_result=True,
    autoretry_for=(ConnectionError, TimeoutError),
    retry_backoff=True,
    max_retries=5,
)
def process_target(target_id: int) -> str | None:
    """Process one reported target (placeholder: queue it for analysts)."""
    with session_scope() as session:
        status = service.pick_up_target(session, target_id, now=utcnow())
    return status.value if status else None
