"""Task hand-over: messages are buffered on the session and sent after its commit.

The queue only carries wake-ups (a task name and ids); the database is the
source of truth, so a message that cannot be sent is logged by name and ids and
left for the sweeps. Domain packages wake each other by task name only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlmodel import Session

from hotline.settings import Settings, get_settings

if TYPE_CHECKING:
    from celery import Celery

# Celery and kombu are imported when an app is made, not by every unit of work: a
# command that sends no task (``hotline hashes import``) starts 70 ms sooner.

OUTBOX_KEY = "hotline.outbox"
log = logging.getLogger("hotline.queue")


@dataclass(frozen=True)
class Message:
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    countdown: float | None = None  # seconds the worker waits before running it


def enqueue(session: Session, name: str, *, countdown: float | None = None, **kwargs: Any) -> None:
    """Buffer a task message; it is sent only if the session's unit of work commits."""
    session.info.setdefault(OUTBOX_KEY, []).append(Message(name, kwargs, countdown))


def buffered(session: Session) -> list[Message]:
    return list(session.info.get(OUTBOX_KEY, []))


def celery_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "broker_url": settings.celery_broker_url,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A few messages in hand per pool process spare a round trip between tasks
        # (35 % -> 41 % of the pure hashing rate end to end); those of a killed worker
        # come back through the sweep.
        "worker_prefetch_multiplier": 4,
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": settings.broker_publish_timeout_seconds,
        "worker_hijack_root_logger": False,
        # A task stuck past most of the lease is stopped; its target is retried or
        # given up by the service, not left to another worker's duplicate.
        "task_soft_time_limit": settings.process_lease_seconds * 0.8,
        "task_time_limit": settings.process_lease_seconds * 0.9,
        "timezone": "UTC",
    }
    if not settings.broker_url:
        import hotline.queue_fs  # noqa: F401  (registers the transport's name)

        config["broker_url"] = "hotline-filesystem://"
        folder = settings.broker_dir
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    elif settings.broker_url.startswith(("redis://", "rediss://")):
        config["broker_transport_options"] = {
            # Longer than the longest retry countdown (with its jitter): Redis would
            # otherwise hand a waiting retry to another worker every timeout, piling up
            # copies. A dead worker's tasks come back through the sweeps meanwhile.
            "visibility_timeout": max(
                3600, int(settings.delivery_retry_max_delay_seconds * 1.25) + 600
            ),
            "socket_connect_timeout": settings.broker_publish_timeout_seconds,
            "socket_timeout": settings.broker_publish_timeout_seconds,
        }
    return config


def make_celery(settings: Settings, *, main: str = "hotline") -> Celery:
    from celery import Celery

    app = Celery(main, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


@lru_cache
def producer() -> Celery:
    return make_celery(get_settings(), main="hotline-producer")


def _loggable(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments as a log line shows them: a list by its length (a reversal sends up
    to 1,000 pairs of ids in one)."""
    return {k: f"<{len(v)} items>" if isinstance(v, list) else v for k, v in kwargs.items()}


def send_messages(messages: list[Message], app: Celery | None = None) -> int:
    """Publish messages without retrying; returns how many were sent."""
    if not messages:
        return 0
    sent = 0
    try:
        app = app or producer()
        # The producer pool keeps broker connections open across requests.
        with app.producer_or_acquire() as publisher:
            for message in messages:
                app.send_task(
                    message.name,
                    kwargs=message.kwargs,
                    countdown=message.countdown,
                    producer=publisher,
                    retry=False,
                )
                sent += 1
    except Exception as exc:  # the sweeps re-send whatever is still pending
        unsent = messages[sent:]
        log.warning(
            "broker unavailable, %d message(s) left for the sweep: %s (%s)",
            len(unsent),
            ", ".join(f"{m.name}{sorted(_loggable(m.kwargs).items())}" for m in unsent),
            type(exc).__name__,
        )
    return sent
