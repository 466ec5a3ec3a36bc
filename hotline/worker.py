"""The Celery application of the worker and beat processes (``celery -A hotline.worker``).

Wiring only: tasks are declared with ``@shared_task`` in each package's tasks module
and listed here; nothing imports this module.
"""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import setup_logging, task_postrun, worker_process_init

from hotline.db import relax_commits
from hotline.logging import configure_logging
from hotline.memory import FreedMemoryTrimmer, keep_freed_memory, seal_content
from hotline.queue import make_celery
from hotline.settings import get_settings

TASK_MODULES = ["reporting.tasks", "triage.tasks", "partners.tasks"]


@setup_logging.connect
def _configure_logging(**_: object) -> None:
    configure_logging(get_settings().log_level)


@worker_process_init.connect
def _load_indexes(**_: object) -> None:
    # Load the near-duplicate index, the hosting data and the fetcher's certificates
    # when a pool process starts, not on its first task.
    from hotline.db import session_scope
    from triage.fetcher import get_fetcher
    from triage.hosting import get_hosting_lookup
    from triage.neardup import get_near_duplicates

    try:
        get_hosting_lookup()
        get_fetcher()
        with session_scope() as session:
            get_near_duplicates().refresh(session, force=True)
    except Exception as exc:  # the first task loads it instead
        # At start no content has been fetched: the message names files and settings.
        logging.getLogger("hotline.worker").warning(
            "index not loaded at start: %s: %s", type(exc).__name__, exc
        )


_trimmer: FreedMemoryTrimmer | None = None


@worker_process_init.connect
def _start_trimming(**_: object) -> None:
    # After the indexes are loaded (connected after them): they are not freed memory.
    global _trimmer
    _trimmer = FreedMemoryTrimmer()


@task_postrun.connect
def _trim_freed_memory(**_: object) -> None:
    # A huge picture's buffers are not kept for ever in every pool process.
    if _trimmer is not None:
        _trimmer.after_task()


def create_worker_app() -> Celery:
    settings = get_settings()
    relax_commits()
    # Set before the pool processes are forked: they inherit it.
    keep_freed_memory()
    seal_content()
    app = make_celery(settings, main="hotline")
    app.conf.include = TASK_MODULES
    app.conf.beat_schedule = {
        "sweep-pending-targets": {
            "task": "reporting.sweep_pending",
            "schedule": settings.sweep_interval_seconds,
        },
        "purge-expired-contacts": {"task": "reporting.purge_contacts", "schedule": 3600.0},
        "purge-partner-answers": {"task": "partners.purge_answers", "schedule": 3600.0},
        "sweep-deliveries": {
            "task": "partners.sweep",
            "schedule": settings.sweep_interval_seconds,
        },
        "sweep-rechecks": {
            "task": "partners.sweep_rechecks",
            "schedule": settings.recheck_interval_seconds,
        },
        "sweep-notices": {
            "task": "partners.sweep_notices",
            "schedule": settings.sweep_interval_seconds,
        },
    }
    if settings.neardup_catchup_seconds:
        # Four runs within the window: a run that fails or comes late is made good.
        app.conf.beat_schedule["catch-up-matches"] = {
            "task": "triage.catch_up_matches",
            "schedule": settings.neardup_catchup_seconds / 4,
        }
    app.set_default()
    return app


app = create_worker_app()
