"""Triage services. For now only the hand-over placeholder: the fetch and hashing
pipeline (issue "Triage pipeline") replaces ``pick_up_target``.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlmodel import Session

from reporting.models import Target, TargetStatus

log = logging.getLogger("hotline.triage")


def pick_up_target(session: Session, target_id: int, *, now: dt.datetime) -> TargetStatus | None:
    """Move a pending target into the analyst queue; idempotent, returns the new status."""
    target = session.get(Target, target_id, with_for_update=True)
    if target is None:
        log.warning("target %s does not exist", target_id)
        return None
    if target.status == TargetStatus.pending:
        target.status = TargetStatus.queued
        target.status_changed_at = now
        session.add(target)
        log.info("target %s picked up and queued", target_id)
    return target.status
