"""Signed deliveries to partner receivers on 127.0.0.1, verified with ``standardwebhooks``
as a partner would: the right receivers, the backoff schedule with time injected, one
webhook-id across attempts, 410, redirects, secret rotation, the dead-letter list."""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col
from standardwebhooks import Webhook, WebhookVerificationError
from typer.testing import CliRunner

from hotline.cli_partners import partners_app
from hotline.db import session_scope, utcnow
from hotline.models import AuditEvent
from partners import delivery, notices, registry, routing
from partners.models import (
    Delivery,
    DeliveryState,
    Forwarding,
    ForwardingState,
    Partner,
    SecretPurpose,
)
from tests.conftest import REPO
from tests.fixtures.receivers import SLOW, Receiver
from tests.partners.conftest import confirmed_target
from triage.fetcher import Fetcher, FetchPolicy

HOME = routing.RoutingPolicy(home_country="UA")
SCHEMA = json.loads((REPO / "docs" / "forwarding.schema.json").read_text(encoding="utf-8"))


@pytest.fixture
def fetcher(committed: Engine, configure: Callable[..., None]) -> Iterator[Any]:
    """The delivery client as the worker builds it, with a one-second deadline."""
    configure(delivery_timeout_seconds=1)
    delivery.delivery_fetcher.cache_clear()
    yield delivery.delivery_fetcher()
    delivery.delivery_fetcher.cache_clear()


def add_partner(name: str, kind: str, url: str, **fields: Any) -> tuple[int, str]:
    """Register a partner reached at ``url``; returns its id and signing secret."""
    data = {"name": name, "kind": kind, "webhook_url": url, **fields}
    with session_scope() as session:
        added = registry.add_partner(
            session, registry.parse_spec(data), now=utcnow(), cipher=registry.partner_cipher()
        )
        assert added.partner.id is not None
        return added.partner.id, added.secrets[SecretPurpose.outbound_signing]


def partner_with_receiver(
    receivers: Callable[..., Receiver], name: str, kind: str, **fields: Any
) -> tuple[int, Receiver]:
    receiver = receivers(secrets=[])
    partner_id, secret = add_partner(name, kind, receiver.url, **fields)
    receiver.secrets.append(secret)
    return partner_id, receiver


def confirm_and_route(country: str | None, **fields: Any) -> int:
    with session_scope() as session:
        target = confirmed_target(session, country=country, **fields)
        assert target.id is not None
        routing.route_target(session, target.id, now=utcnow(), policy=HOME)
        return target.id


def pending_ids() -> list[int]:
    with session_scope() as session:
        return list(
            session.execute(
                select(Delivery.id)
                .where(col(Delivery.state) == DeliveryState.pending)
                .order_by(col(Delivery.id))
            ).scalars()
        )


def run(delivery_id: int, fetcher: Any, *, now: dt.datetime | None = None, **kw: Any) -> Any:
    options: dict[str, Any] = {
        "policy": delivery.RetryPolicy(),
        "rng": random.Random(1),
        "fetcher": fetcher,
    }
    return delivery.attempt(delivery_id, now=now or utcnow(), **(options | kw))


def row(delivery_id: int) -> Delivery:
    with session_scope() as session:
        found = session.get(Delivery, delivery_id)
        assert found is not None
        return found


def test_each_target_reaches_exactly_the_right_receivers(
    receivers: Callable[..., Receiver], fetcher: Any
) -> None:
    _, police = partner_with_receiver(receivers, "police", "law_enforcement", countries=["UA"])
    host_id, host = partner_with_receiver(receivers, "host", "hosting_provider", asns=[64500])
    _, poland = partner_with_receiver(receivers, "hotline-pl", "hotline", countries=["PL"])
    _, interpol = partner_with_receiver(receivers, "interpol", "fallback")

    domestic = confirm_and_route("UA", asn=64500)
    foreign = confirm_and_route("PL", asn=64999)
    nobody = confirm_and_route("BR")
    # The notice to the hosting provider goes out grouped, once its window closes.
    with session_scope() as session:
        notices.sweep(
            session,
            now=utcnow(),
            policy=notices.NoticePolicy(window=dt.timedelta(0)),
            lookup=lambda host: None,
            routing_policy=HOME,
        )
    for delivery_id in pending_ids():
        assert run(delivery_id, fetcher).state is DeliveryState.delivered

    assert police.target_ids == [domestic]
    assert poland.target_ids == [foreign]
    assert interpol.target_ids == [nobody]
    for receiver in (police, host, poland, interpol):
        assert receiver.rejected == 0
    for receiver in (police, poland, interpol):
        for payload in receiver.processed.values():
            jsonschema.validate(payload, SCHEMA)
    # The document: hashes and the ICCAM classification of the illegal media only.
    (document,) = poland.processed.values()
    assert document["type"] == "forwarding.report"
    assert document["forwarding"]["rule"] == "abroad.hotline"
    assert document["target"]["hosting"]["country"] == "PL"
    assert document["target"]["report_count"] == 2
    (media,) = document["media"]
    assert media["classification"]["classification"] == "baseline"
    assert len(media["sha256"]) == 64
    (notice,) = host.processed.values()
    assert notice["type"] == "notice"
    with session_scope() as session:
        noticed = session.execute(
            select(Forwarding.id, Forwarding.target_id).where(col(Forwarding.partner_id) == host_id)
        ).one()
    assert tuple(noticed) == (notice["items"][0]["forwarding_id"], domestic)
    assert len(notice["items"]) == 1
    with session_scope() as session:
        states = session.execute(select(Forwarding.state)).scalars().all()
    assert set(states) == {ForwardingState.delivered}


def test_500_then_timeout_then_200_follows_the_schedule_with_one_id(
    receivers: Callable[..., Receiver], fetcher: Any
) -> None:
    _, poland = partner_with_receiver(receivers, "hotline-pl", "hotline", countries=["PL"])
    poland.script = [500, SLOW, 200]
    confirm_and_route("PL")
    (delivery_id,) = pending_ids()
    policy = delivery.RetryPolicy(base=60, max_delay=21600, max_attempts=16, jitter=0.25)
    expected = random.Random(42)
    rng = random.Random(42)
    t0 = utcnow()

    first = run(delivery_id, fetcher, now=t0, policy=policy, rng=rng)
    wait = policy.delay(1, expected)
    assert first.state is DeliveryState.pending
    assert first.retry_in == pytest.approx(wait)
    assert 45 <= wait <= 75
    assert row(delivery_id).next_attempt_at == t0 + dt.timedelta(seconds=wait)
    assert row(delivery_id).last_error == "http_500"

    # A duplicate message arriving before the due time does nothing.
    early = run(delivery_id, fetcher, now=t0 + dt.timedelta(seconds=wait - 10), rng=rng)
    assert early.state is None
    assert len(poland.received) == 1

    t1 = t0 + dt.timedelta(seconds=wait)
    second = run(delivery_id, fetcher, now=t1, policy=policy, rng=rng)
    wait2 = policy.delay(2, expected)
    assert second.retry_in == pytest.approx(wait2)
    assert 90 <= wait2 <= 150
    assert row(delivery_id).last_error == "timeout"

    t2 = t1 + dt.timedelta(seconds=wait2)
    third = run(delivery_id, fetcher, now=t2, policy=policy, rng=rng)
    assert third.state is DeliveryState.delivered
    done = row(delivery_id)
    assert (done.attempts, done.delivered_at) == (3, t2)

    assert [r.answered for r in poland.received] == [500, SLOW, 200]
    assert len({r.webhook_id for r in poland.received}) == 1
    assert {r.webhook_id for r in poland.received} == {done.webhook_id}
    assert len(poland.processed) == 1  # the slow attempt processed it; the retry did not


def test_the_default_schedule_spans_more_than_a_day() -> None:
    from hotline.settings import Settings

    policy = delivery.RetryPolicy.from_settings(Settings())
    assert policy.shortest_span() >= 24 * 3600
    delays = [policy.delay(n, random.Random(n)) for n in range(1, policy.max_attempts)]
    assert delays[0] < 120
    assert max(delays) <= policy.max_delay * (1 + policy.jitter)


def test_after_the_last_attempt_the_delivery_is_dead_and_can_be_redelivered(
    receivers: Callable[..., Receiver], fetcher: Any
) -> None:
    _, poland = partner_with_receiver(receivers, "hotline-pl", "hotline", countries=["PL"])
    poland.script = [503, 503, 503]
    target_id = confirm_and_route("PL")
    (delivery_id,) = pending_ids()
    policy = delivery.RetryPolicy(base=1, max_delay=10, max_attempts=3)
    now = utcnow()
    for _ in range(3):
        verdict = run(delivery_id, fetcher, now=now, policy=policy)
        now += dt.timedelta(seconds=verdict.retry_in or 0)
    assert verdict.state is DeliveryState.dead
    assert poland.processed == {}

    runner = CliRunner()
    listed = runner.invoke(partners_app, ["deliveries", "--dead", "--json"])
    assert listed.exit_code == 0, listed.output
    (shown,) = [json.loads(line) for line in listed.output.splitlines() if line.startswith("{")]
    assert shown["id"] == delivery_id
    assert shown["target_id"] == target_id
    assert (shown["state"], shown["attempts"], shown["last_error"]) == ("dead", 3, "http_503")
    assert "127.0.0.1" not in listed.output  # the list names partners, not endpoints

    again = runner.invoke(partners_app, ["redeliver", str(delivery_id)])
    assert again.exit_code == 0, again.output
    assert run(delivery_id, fetcher).state is DeliveryState.delivered
    assert len(poland.processed) == 1
    assert {r.webhook_id for r in poland.received} == {row(delivery_id).webhook_id}
    with session_scope() as session:
        actions = session.execute(
            select(AuditEvent.action).where(
                col(AuditEvent.object_type) == "delivery",
                col(AuditEvent.object_id) == str(delivery_id),
            )
        ).scalars()
        assert list(actions) == ["delivery_redelivered"]
    refused = runner.invoke(partners_app, ["redeliver", str(delivery_id)])
    assert refused.exit_code == 1
    assert "failed or dead" in refused.output


def test_410_disables_the_partner_and_alerts_admins(
    receivers: Callable[..., Receiver], fetcher: Any, caplog: pytest.LogCaptureFixture
) -> None:
    partner_id, poland = partner_with_receiver(receivers, "hotline-pl", "hotline", countries=["PL"])
    poland.script = [410]
    confirm_and_route("PL")
    confirm_and_route("PL")
    first, second = pending_ids()
    with caplog.at_level(logging.WARNING, logger="hotline.partners"):
        assert run(first, fetcher).state is DeliveryState.failed
    assert row(first).last_error == "gone"
    with session_scope() as session:
        partner = session.get(Partner, partner_id)
        assert partner is not None
        assert not partner.active
        assert partner.disabled_reason == "endpoint gone (HTTP 410)"
        events = session.execute(
            select(AuditEvent).where(col(AuditEvent.action) == "partner_endpoint_gone")
        ).scalars()
        (event,) = events
        assert event.object_id == str(partner_id)
    alert = [r.getMessage() for r in caplog.records if "410" in r.getMessage()]
    assert alert
    assert not any("127.0.0.1" in line or "/hook" in line for line in caplog.messages)
    # Nothing more goes to a disabled endpoint.
    assert run(second, fetcher).state is DeliveryState.failed
    assert row(second).last_error == "partner_disabled"
    assert len(poland.received) == 1


def test_a_redirect_is_a_failure_and_not_followed(
    receivers: Callable[..., Receiver], fetcher: Any
) -> None:
    elsewhere = receivers(secrets=[])
    _, poland = partner_with_receiver(receivers, "hotline-pl", "hotline", countries=["PL"])
    poland.script = [301]
    poland.location = elsewhere.url
    confirm_and_route("PL")
    (delivery_id,) = pending_ids()
    verdict = run(delivery_id, fetcher)
    assert verdict.state is DeliveryState.failed
    assert verdict.retry_in is None
    assert (row(delivery_id).last_status, row(delivery_id).last_error) == (301, "redirect")
    assert elsewhere.received == []
    assert elsewhere.rejected == 0


def test_during_a_rotation_both_secrets_verify_then_only_the_new(
    receivers: Callable[..., Receiver], fetcher: Any
) -> None:
    partner_id, poland = partner_with_receiver(receivers, "hotline-pl", "hotline", countries=["PL"])
    (old,) = poland.secrets
    now = utcnow()
    with session_scope() as session:
        partner = session.get(Partner, partner_id)
        assert partner is not None
        new = registry.rotate_secret(
            session,
            partner,
            now=now,
            overlap=dt.timedelta(hours=24),
            cipher=registry.partner_cipher(),
        )
    poland.secrets.append(new)  # the receiver holds both during the rotation

    confirm_and_route("PL")
    confirm_and_route("PL")
    during, after = pending_ids()
    assert run(during, fetcher, now=now).state is DeliveryState.delivered
    # Past the overlap the old secret no longer signs (time injected into the claim).
    later = now + dt.timedelta(hours=25)
    with session_scope() as session:
        session.execute(
            Delivery.__table__.update()  # type: ignore[attr-defined]
            .where(Delivery.__table__.c.id == after)  # type: ignore[attr-defined]
            .values(next_attempt_at=later)
        )
    assert run(after, fetcher, now=later).state is DeliveryState.delivered
    assert poland.rejected == 0

    first, second = poland.received
    for secret in (old, new):
        Webhook(secret).verify(first.body, first.headers)
    Webhook(new).verify(second.body, second.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(second.body, second.headers)


def test_a_receiver_with_the_wrong_secret_refuses_and_the_delivery_retries(
    receivers: Callable[..., Receiver], fetcher: Any
) -> None:
    _, poland = partner_with_receiver(receivers, "hotline-pl", "hotline", countries=["PL"])
    poland.secrets[:] = [registry.new_signing_secret()]
    confirm_and_route("PL")
    (delivery_id,) = pending_ids()
    verdict = run(delivery_id, fetcher)
    assert verdict.state is DeliveryState.pending
    assert poland.rejected == 1
    assert row(delivery_id).last_error == "http_401"


def test_the_sweep_hands_over_a_delivery_whose_message_was_lost(
    receivers: Callable[..., Receiver], fetcher: Any
) -> None:
    _, poland = partner_with_receiver(receivers, "hotline-pl", "hotline", countries=["PL"])
    confirm_and_route("PL")
    (delivery_id,) = pending_ids()
    assert poland.received == []
    later = utcnow() + dt.timedelta(minutes=10)
    with session_scope() as session:
        assert delivery.sweep(session, now=utcnow(), overdue=dt.timedelta(minutes=5)) == 0
    with session_scope() as session:
        assert delivery.sweep(session, now=later, overdue=dt.timedelta(minutes=5)) == 1
        from hotline.queue import buffered

        assert [m.kwargs for m in buffered(session)] == [{"delivery_id": delivery_id}]
    assert row(delivery_id).next_attempt_at == later
    assert run(delivery_id, fetcher, now=later).state is DeliveryState.delivered
    assert len(poland.processed) == 1


def test_an_endpoint_the_guard_refuses_is_a_failure_without_a_connection(
    fetcher: Any, counting_listener: Any
) -> None:
    # A guard as in production: loopback is not public and not allowed.
    guarded = Fetcher(FetchPolicy(ports=frozenset(range(1024, 65536)), total_timeout=1))
    url = f"http://{counting_listener.host}:{counting_listener.port}/hook"
    add_partner("hotline-pl", "hotline", url, countries=["PL"])
    confirm_and_route("PL")
    (delivery_id,) = pending_ids()
    verdict = run(delivery_id, guarded)
    assert verdict.state is DeliveryState.failed
    assert row(delivery_id).last_error == "blocked_address"
    assert counting_listener.count == 0
