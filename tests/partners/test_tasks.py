"""The tasks in a real worker: a confirmed target handed to ``partners.route_target``
reaches its partner's receiver, and a failed attempt is retried by Celery."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
from sqlalchemy import select

from hotline.db import session_scope, utcnow
from hotline.queue import enqueue
from partners.models import Delivery, DeliveryState
from tests.conftest import wait_for
from tests.fixtures.receivers import Receiver
from tests.partners.conftest import confirmed_target
from tests.partners.test_delivery import partner_with_receiver


@pytest.mark.worker
def test_a_confirmed_target_reaches_its_partner_through_the_worker(
    start_worker: Callable[..., subprocess.Popen[bytes]], receivers: Callable[..., Receiver]
) -> None:
    _, poland = partner_with_receiver(receivers, "hotline-pl", "hotline", countries=["PL"])
    poland.script = [500]  # the first attempt fails; Celery's retry sends the second
    start_worker(
        concurrency=1,
        home_country="UA",
        delivery_retry_base_seconds="1",
        delivery_timeout_seconds="2",
    )
    with session_scope() as session:
        target = confirmed_target(session, country="PL")
        target_id = target.id
        # As the analyst workspace does on confirming: the message follows the commit.
        enqueue(session, "partners.route_target", target_id=target_id)

    wait_for(lambda: poland.processed, timeout=30)
    assert poland.target_ids == [target_id]

    def recorded() -> Delivery | None:
        # The receiver answers before the worker records the answer.
        with session_scope() as session:
            (delivery,) = session.execute(select(Delivery)).scalars()
            return delivery if delivery.state is DeliveryState.delivered else None

    delivery = wait_for(recorded, timeout=10)
    assert delivery.attempts == 2
    assert delivery.delivered_at is not None
    assert delivery.delivered_at <= utcnow()
    assert [r.answered for r in poland.received] == [500, 200]
    assert len({r.webhook_id for r in poland.received}) == 1
