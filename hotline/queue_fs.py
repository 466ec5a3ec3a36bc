"""The embedded runtime's broker: kombu's filesystem transport with atomic writes.

Imported when a Celery app is configured for it (``hotline.queue.celery_config``), not
by commands that send no task. Importing it registers the URL scheme
``hotline-filesystem://``.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import dumps

POLL = 0.25  # seconds between looks into the folder


class AtomicFilesystemChannel(filesystem.Channel):
    """kombu's filesystem channel creates a message file and then writes it, so a
    consumer listing the folder in between takes an empty or half-written file and the
    worker dies on half a JSON document. Here every message is written under a name no
    queue reads (a leading dot, a ``.part`` suffix) and renamed into place, which is
    atomic: consumers only ever see whole messages."""

    # kombu declares two signatures for _put (filesystem and virtual base); this is the former.
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        folder = self.data_folder_out
        staging = os.path.join(folder, f".{name}.part")
        try:
            with open(staging, "wb") as file:
                file.write(dumps(payload).encode("utf-8"))
            os.replace(staging, os.path.join(folder, name))
        except OSError as exc:
            raise ChannelError(f"Cannot add a message to {folder!r}") from exc


class AtomicFilesystemTransport(filesystem.Transport):
    Channel = AtomicFilesystemChannel

    # kombu declares two signatures (transport base and virtual base); this is the latter.
    def drain_events(self, connection: Any, timeout: float | None = None) -> None:  # type: ignore[override]
        # Celery's loop for polled transports waits up to 2 s here before it looks at
        # its shutdown flag again, and kombu polls the folder once a second: a stop
        # took 5 s and a new message waited up to a second. A quarter of a second
        # costs a directory listing four times a second.
        super().drain_events(connection, timeout=min(timeout or POLL, POLL))


TRANSPORT_ALIASES["hotline-filesystem"] = "hotline.queue_fs:AtomicFilesystemTransport"
