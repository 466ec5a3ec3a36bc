"""Deliveries under load: a real worker and beat deliver many forwardings to a partner
receiver that is down (503) for the first half of the run and up (200) for the second.

Every forwarding must be delivered, none processed twice by the receiver (which
de-duplicates by webhook-id, as docs/forwarding.md asks a partner to), none left pending.
A tenth of the deliveries have their message lost, as when the broker drops it: only
beat's sweep (``partners.sweep``) can bring those.

The same 500 run on PostgreSQL and Redis (CI) and on SQLite and the filesystem broker
(a laptop); each takes about 30 to 40 s on two cores, and prints its timing (``-s``).
"""

from __future__ import annotations

import collections
import datetime as dt
import subprocess
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from hotline.db import session_scope, utcnow
from hotline.queue import OUTBOX_KEY
from partners import delivery, registry, routing
from partners.models import Delivery, DeliveryState, Forwarding, ForwardingState
from tests.conftest import wait_for
from tests.fixtures.receivers import Receiver
from tests.partners.conftest import confirmed_target
from tests.partners.test_delivery import confirm_and_route, partner_with_receiver, pending_ids

COUNT = 500
LOST_EVERY = 10  # every tenth delivery's message is lost
# Short delays, so that the run takes seconds: retries 1, 2, 4, 4, ... s apart (with
# jitter), a lost message handed over again once 10 s overdue, the sweep every second.
# (A shorter sweep delay than the worker's backlog would hand over again, every few
# seconds, deliveries whose retry is merely late, and each copy costs a claim.)
SETTINGS = {
    "home_country": "UA",
    "delivery_retry_base_seconds": "1",
    "delivery_retry_max_delay_seconds": "4",
    "delivery_max_attempts": "100",
    "delivery_timeout_seconds": "10",
    "delivery_sweep_after_seconds": "10",
    "sweep_interval_seconds": "1",
    "recheck_interval_seconds": "3600",
}
POLICY = routing.RoutingPolicy(home_country="UA")


def make_forwardings(count: int) -> list[int]:
    """``count`` confirmed targets hosted in Poland, routed in one unit of work each
    batch; the messages of every ``LOST_EVERY``-th batch of ten are dropped unsent."""
    target_ids: list[int] = []
    for start in range(0, count, 10):
        with session_scope() as session:
            for _ in range(start, min(start + 10, count)):
                target = confirmed_target(session, country="PL")
                assert target.id is not None
                routing.route_target(session, target.id, now=utcnow(), policy=POLICY)
                target_ids.append(target.id)
            if (start // 10) % LOST_EVERY == LOST_EVERY - 1:
                # The broker lost these messages: the rows are committed, nothing is sent.
                session.info.pop(OUTBOX_KEY, None)
    return target_ids


@pytest.mark.worker
@pytest.mark.timeout(300)  # about 35 s on two idle cores; more while other tests run
def test_every_forwarding_is_delivered_once_through_an_outage(
    start_worker: Callable[..., subprocess.Popen[bytes]],
    start_beat: Callable[..., subprocess.Popen[bytes]],
    receivers: Callable[..., Receiver],
) -> None:
    _, partner = partner_with_receiver(receivers, "hotline-pl", "hotline", countries=["PL"])
    # Down: 503 to everything until every delivery has been tried once, then 200.
    partner.script = [503] * (COUNT * 1000)

    t0 = time.monotonic()
    target_ids = make_forwardings(COUNT)
    made = time.monotonic() - t0
    start_worker(concurrency=2, **SETTINGS)
    start_beat(**SETTINGS)

    def tried() -> set[str]:
        with partner.lock:
            return {r.webhook_id for r in partner.received}

    wait_for(lambda: len(tried()) == COUNT, timeout=150, interval=0.2)
    with partner.lock:
        partner.script.clear()  # up again
        failed_attempts = len(partner.received)
    down = time.monotonic() - t0

    wait_for(lambda: len(partner.processed) == COUNT, timeout=100, interval=0.2)
    up = time.monotonic() - t0 - down

    def settled() -> bool:
        with session_scope() as session:
            return not session.execute(
                select(func.count())
                .select_from(Delivery)
                .where(col(Delivery.state) == DeliveryState.pending)
            ).scalar_one()

    wait_for(settled, timeout=20)
    # Retry messages and swept duplicates still on their way must change nothing.
    time.sleep(float(SETTINGS["delivery_retry_max_delay_seconds"]) * 1.25 + 1)
    total = time.monotonic() - t0

    with partner.lock:
        received = list(partner.received)
    per_id: dict[str, list[int | str]] = collections.defaultdict(list)
    for request in received:
        per_id[request.webhook_id].append(request.answered)
    # After its 200, an id arriving again would be a duplicate send (answered 200 and not
    # processed by the receiver). Every answer came well within the deadline, so the
    # hotline has no reason to send a delivered message again: there must be none.
    duplicates = {
        webhook_id: answers[answers.index(200) + 1 :]
        for webhook_id, answers in per_id.items()
        if 200 in answers and answers[answers.index(200) + 1 :]
    }
    print(
        f"\n{COUNT} forwardings: made in {made:.1f} s, receiver down {down:.1f} s "
        f"({failed_attempts} attempts answered 503), up {up:.1f} s until all processed, "
        f"{total:.1f} s in all; {len(received)} requests, {len(duplicates)} duplicate ids"
    )

    assert partner.rejected == 0
    assert len(partner.processed) == COUNT
    assert partner.target_ids == sorted(target_ids)
    assert not duplicates
    assert all(answers.count(200) == 1 for answers in per_id.values())
    with session_scope() as session:
        deliveries = list(session.execute(select(Delivery)).scalars())
        forwardings = list(session.execute(select(Forwarding)).scalars())
    assert len(deliveries) == COUNT
    assert {d.state for d in deliveries} == {DeliveryState.delivered}
    assert {d.webhook_id for d in deliveries} == set(partner.processed)
    # Every delivery failed at least once (the outage) and then landed.
    assert min(d.attempts for d in deliveries) >= 2
    # Every attempt the hotline counted reached the receiver, and nothing else did.
    assert sum(d.attempts for d in deliveries) == len(received)
    assert {f.state for f in forwardings} == {ForwardingState.delivered}


def test_two_workers_taking_the_same_delivery_at_once_send_it_once(
    committed: Engine, receivers: Callable[..., Receiver]
) -> None:
    """Two copies of one message (a swept duplicate) in two pool processes at once: the
    second waits for the first's claim and then skips, on SQLite as on PostgreSQL."""
    partner_with_receiver(receivers, "hotline-pl", "hotline", countries=["PL"])
    confirm_and_route("PL")
    (delivery_id,) = pending_ids()
    now, cipher = utcnow(), registry.partner_cipher()
    sender = {"name": "Hotline", "country": "UA"}

    def claim(session: Session) -> delivery.Prepared | delivery.Verdict:
        return delivery.claim(
            session,
            delivery_id,
            now=now,
            lease=dt.timedelta(minutes=1),
            cipher=cipher,
            sender=sender,
        )

    second: list[delivery.Prepared | delivery.Verdict] = []

    def other_worker() -> None:
        with session_scope() as session:
            second.append(claim(session))

    with session_scope() as session:
        first = claim(session)
        assert isinstance(first, delivery.Prepared)
        thread = threading.Thread(target=other_worker)
        thread.start()
        time.sleep(0.5)  # the other worker is at the delivery's row now, waiting
    thread.join(40)
    assert second == [delivery.SKIPPED]
    with session_scope() as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        assert row.attempts == 1
