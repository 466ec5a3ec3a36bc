"""The embedded broker: messages written by one process and taken by another are whole."""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

import hotline.queue_fs  # noqa: F401  (a spawned consumer needs the transport's name)
from hotline.queue import Message, celery_config, make_celery, send_messages
from hotline.settings import Settings

COUNT = 300


def consume(url: str, options: dict[str, Any], results: Any) -> None:
    received, error = 0, ""
    with Connection(url, transport_options=options) as connection:
        queue = connection.SimpleQueue("race")
        try:
            while received < COUNT:
                message = queue.get(timeout=30)
                assert message.payload["n"] >= 0
                message.ack()
                received += 1
        except Exception as exc:  # a half-written file raises here
            error = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            queue.close()
    results.put((received, error))


def race(url: str, options: dict[str, Any]) -> tuple[int, str]:
    # Large bodies widen the window in which a plain write is half done.
    body = {"padding": "x" * 1_000_000}
    results: Any = multiprocessing.get_context("spawn").Queue()
    consumer = multiprocessing.get_context("spawn").Process(
        target=consume, args=(url, options, results)
    )
    consumer.start()
    with Connection(url, transport_options=options) as connection:
        queue = connection.SimpleQueue("race")
        for n in range(COUNT):
            queue.put({"n": n, **body})
        queue.close()
    outcome: tuple[int, str] = results.get(timeout=120)
    consumer.join(timeout=30)
    return outcome


@pytest.mark.parametrize("transport", ["hotline-filesystem"])
def test_a_consumer_racing_the_producer_only_ever_sees_whole_messages(
    tmp_path: Path, transport: str
) -> None:
    config = celery_config(Settings(data_dir=tmp_path, broker_url=""))
    assert config["broker_url"] == "hotline-filesystem://"
    options = config["broker_transport_options"]
    assert race(f"{transport}://", options) == (COUNT, "")
    assert [p.name for p in Path(options["data_folder_in"]).iterdir()] == []


def test_redis_never_hands_a_waiting_retry_to_a_second_worker(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/0")
    timeout = celery_config(settings)["broker_transport_options"]["visibility_timeout"]
    # The longest countdown a delivery retry can get, jitter included, fits inside it.
    assert timeout > settings.delivery_retry_max_delay_seconds * 1.25  # jitter is +-25 %


def test_messages_left_for_the_sweep_are_logged_without_their_id_lists(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reversal sends up to 1,000 (media, hash type) pairs in one message: with the
    broker down, the log line names the message and counts the pairs."""
    settings = Settings(
        data_dir=tmp_path,
        broker_url="redis://127.0.0.1:9/0",  # nothing listens on port 9
        broker_publish_timeout_seconds=1,
    )
    lost = [[media_id, "phash"] for media_id in range(1000)]
    with caplog.at_level(logging.WARNING, logger="hotline.queue"):
        sent = send_messages(
            [Message("triage.match_own_list_again", {"lost": lost})], make_celery(settings)
        )
    assert sent == 0
    [record] = [r for r in caplog.records if "left for the sweep" in r.getMessage()]
    assert "triage.match_own_list_again[('lost', '<1000 items>')]" in record.getMessage()
    assert "phash" not in record.getMessage()
