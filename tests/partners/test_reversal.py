"""Reversing a confirmed verdict: the hashes leave the own list (unless another confirmed
target holds them) so neither exact matching nor the near-duplicate index finds them
again, the verdicts stay as history, and a signed retraction reaches exactly the
partners that received the target, verified with ``standardwebhooks``."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from hotline import queue
from hotline.auth import configured_staff_cipher, create_user, issue_token
from hotline.db import session_scope, utcnow
from hotline.models import AuditEvent, Role
from partners import delivery, registry, retractions, routing
from partners.models import (
    Delivery,
    DeliveryState,
    Forwarding,
    ForwardingKind,
    ForwardingState,
    SecretPurpose,
)
from reporting.models import Target, TargetStatus
from tests.conftest import REPO
from tests.fixtures import images
from tests.fixtures.receivers import Receiver
from tests.partners.conftest import confirmed_target
from tests.triage.test_assessment import Case, arrives, assess, items, own_hashes, staff
from triage import assessment
from triage.assessment import NotReversible
from triage.hashing import hash_media
from triage.models import (
    Assessment,
    Classification,
    Decision,
    DecisionStage,
    HashList,
    Media,
    MediaMatch,
    Outcome,
)
from triage.neardup import NearDuplicates

SCHEMA = json.loads((REPO / "docs" / "forwarding.schema.json").read_text(encoding="utf-8"))
B = Classification.baseline


# -- the own list ----------------------------------------------------------------------------


class Arrivals:
    """Targets that arrive with a picture and go through the end of processing."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.near = NearDuplicates(
            phash_radius=8, pdq_radius=31, pdq_min_quality=50, refresh_seconds=0
        )

    def arrive(self, url: str, picture: bytes) -> Case:
        return arrives(self.session, url, picture, near=self.near)[0]

    def own_list_near(self, picture: bytes) -> list[Any]:
        """What the near-duplicate index finds of the picture on the own list."""
        hashes = hash_media(picture)
        found = self.near.lookup(
            self.session, phash=hashes.phash, pdq=hashes.pdq, pdq_quality=hashes.pdq_quality
        )
        return [m for m in found if m.source == "hotline"]


def list_matches(session: Session, media_id: int) -> set[str]:
    rows = session.execute(
        select(col(HashList.name))
        .join(MediaMatch, col(MediaMatch.list_id) == col(HashList.id))
        .where(col(MediaMatch.media_id) == media_id)
    ).scalars()
    return set(rows)


def values_of(session: Session, media_id: int) -> set[str]:
    media = session.get(Media, media_id)
    assert media is not None
    return {v for v in (media.sha256, media.sha1, media.md5, media.phash, media.pdq) if v}


def test_a_reversal_takes_the_hashes_off_the_own_list_and_keeps_the_history(
    session: Session,
) -> None:
    ana = staff(session, "ana@reverse.example")
    sue = staff(session, "sue@reverse.example", Role.supervisor)
    pictures = images.variants(7401)
    arrivals = Arrivals(session)
    first = arrivals.arrive("http://a.example.net/first", pictures["original"])
    [item] = assessment.target_media(session, first.id)
    assess(session, first, ana, items((item, B)), policy="none")
    assert first.target.status == TargetStatus.confirmed
    listed = {value for _, value, _ in own_hashes(session)}
    assert values_of(session, item) <= listed
    assert arrivals.own_list_near(pictures["reencoded"])  # the index has loaded the entry

    result = assessment.reverse(session, first.id, note="a doctor's photo", user=sue, now=utcnow())

    assert (result.status, result.status_reason) == ("not_illegal", "reversed")
    assert result.media_reversed == [item]
    assert result.media_kept_on_list == []
    assert result.entries_removed == 1  # the item's one entry, with all its hashes
    assert values_of(session, item).isdisjoint(v for _, v, _ in own_hashes(session))
    assert first.target.status == TargetStatus.not_illegal
    # Nothing is deleted: the illegal verdict stays as history, superseded.
    verdicts = session.execute(
        select(col(Assessment.classification), col(Assessment.current))
        .where(col(Assessment.target_id) == first.id)
        .order_by(col(Assessment.id))
    ).all()
    assert [(str(c), current) for c, current in verdicts] == [
        ("baseline", False),
        ("not_illegal", True),
    ]
    last = session.execute(
        select(Decision).where(col(Decision.target_id) == first.id).order_by(col(Decision.id))
    ).scalars()
    *_, reversal = list(last)
    assert (reversal.stage, reversal.outcome, reversal.staff_id, reversal.note) == (
        DecisionStage.supervisor,
        Outcome.not_illegal,
        sue.id,
        "a doctor's photo",
    )
    retract = [m for m in queue.buffered(session) if m.name == assessment.RETRACT_TASK]
    assert [m.kwargs for m in retract] == [{"target_id": first.id}]
    event = (
        session.execute(
            select(AuditEvent)
            .where(col(AuditEvent.action) == "reversed", col(AuditEvent.object_id) == str(first.id))
            .order_by(col(AuditEvent.id).desc())
        )
        .scalars()
        .first()
    )
    assert event is not None
    assert event.actor == sue.email

    # The same picture elsewhere no longer matches the list exactly, and is not confirmed.
    again = arrivals.arrive("http://b.example.net/again", pictures["original"])
    assert assessment.target_media(session, again.id) == {item: session.get(Media, item)}
    assert "hotline" not in list_matches(session, item)
    assert again.target.status != TargetStatus.confirmed
    # A re-encoded copy is no near duplicate of a list entry any more.
    assert arrivals.own_list_near(pictures["reencoded"]) == []
    copy = arrivals.arrive("http://c.example.net/copy", pictures["reencoded"])
    [other] = assessment.target_media(session, copy.id)
    assert "hotline" not in list_matches(session, other)
    assert copy.target.status == TargetStatus.queued


def test_hashes_another_confirmed_target_holds_stay_on_the_list(session: Session) -> None:
    ana = staff(session, "ana@reverse.example")
    sue = staff(session, "sue@reverse.example", Role.supervisor)
    pictures = images.variants(7402)
    arrivals = Arrivals(session)
    first = arrivals.arrive("http://a.example.net/one", pictures["original"])
    [item] = assessment.target_media(session, first.id)
    assess(session, first, ana, items((item, B)), policy="none")
    second = arrivals.arrive("http://b.example.net/two", pictures["original"])
    assert second.target.status == TargetStatus.confirmed  # the same file, the same verdict
    before = own_hashes(session)

    kept = assessment.reverse(session, first.id, note="wrong", user=sue, now=utcnow())
    assert kept.media_kept_on_list == [item]
    assert kept.entries_removed == 0
    assert own_hashes(session) == before
    assert arrivals.own_list_near(pictures["reencoded"])

    gone = assessment.reverse(session, second.id, note="wrong too", user=sue, now=utcnow())
    assert gone.media_kept_on_list == []
    assert values_of(session, item).isdisjoint(v for _, v, _ in own_hashes(session))
    assert arrivals.own_list_near(pictures["reencoded"]) == []


def test_only_a_confirmed_verdict_can_be_reversed(session: Session) -> None:
    sue = staff(session, "sue@reverse.example", Role.supervisor)
    queued = Case(session, "http://a.example.net/queued")
    with pytest.raises(NotReversible):
        assessment.reverse(session, queued.id, note="?", user=sue, now=utcnow())
    assert queued.target.status == TargetStatus.queued


# -- retractions -----------------------------------------------------------------------------


@pytest.fixture
def fetcher(committed: Engine, configure: Callable[..., None]) -> Iterator[Any]:
    configure(delivery_timeout_seconds=1)
    delivery.delivery_fetcher.cache_clear()
    yield delivery.delivery_fetcher()
    delivery.delivery_fetcher.cache_clear()


def partner_with_receiver(
    receivers: Callable[..., Receiver], name: str, kind: str, **fields: Any
) -> tuple[int, Receiver]:
    receiver = receivers(secrets=[])
    data = {"name": name, "kind": kind, "webhook_url": receiver.url, **fields}
    with session_scope() as session:
        added = registry.add_partner(
            session, registry.parse_spec(data), now=utcnow(), cipher=registry.partner_cipher()
        )
        assert added.partner.id is not None
        receiver.secrets.append(added.secrets[SecretPurpose.outbound_signing])
        return added.partner.id, receiver


def send(delivery_id: int, fetcher: Any, now: dt.datetime | None = None) -> Any:
    return delivery.attempt(
        delivery_id,
        now=now or utcnow(),
        fetcher=fetcher,
        policy=delivery.RetryPolicy(),
        rng=random.Random(1),
    )


def deliveries_of(partner_id: int) -> list[Delivery]:
    with session_scope() as session:
        rows = session.execute(
            select(Delivery)
            .where(col(Delivery.partner_id) == partner_id)
            .order_by(col(Delivery.id))
        ).scalars()
        return list(rows)


def supervisor_token() -> str:
    with session_scope() as session:
        user, _ = create_user(
            session,
            "sue@retract.example",
            Role.supervisor,
            "correct horse battery",
            now=utcnow(),
            cipher=configured_staff_cipher(),
        )
        return issue_token(session, user, now=utcnow())


def test_retractions_reach_exactly_the_partners_that_received_the_target(
    client: Any, receivers: Callable[..., Receiver], fetcher: Any
) -> None:
    police, police_hook = partner_with_receiver(
        receivers, "police", "law_enforcement", countries=["UA"]
    )
    late, late_hook = partner_with_receiver(
        receivers, "police-2", "law_enforcement", countries=["UA"]
    )
    host, host_hook = partner_with_receiver(receivers, "host", "hosting_provider", asns=[64500])
    _, poland_hook = partner_with_receiver(receivers, "hotline-pl", "hotline", countries=["PL"])
    with session_scope() as session:
        target = confirmed_target(session, country="UA", asn=64500)
        target_id = int(target.id or 0)
        made = routing.route_target(
            session,
            target_id,
            now=utcnow(),
            policy=routing.RoutingPolicy(home_country="UA", hold=dt.timedelta(hours=1)),
        )
        assert {(f.partner_id, f.kind, f.state) for f in made} == {
            (police, ForwardingKind.report, ForwardingState.pending),
            (late, ForwardingKind.report, ForwardingState.pending),
            (host, ForwardingKind.notice, ForwardingState.held),
        }
        report = next(f for f in made if f.partner_id == police)
    # The police got the report; the second police's delivery was never attempted; the
    # notice to the host is still held.
    (to_police,) = deliveries_of(police)
    assert send(int(to_police.id or 0), fetcher).state is DeliveryState.delivered
    (original,) = police_hook.processed.values()

    answer = client.post(
        f"/api/v1/targets/{target_id}/reversal",
        json={"note": "not what it seemed"},
        headers={"authorization": f"Bearer {supervisor_token()}"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "not_illegal"
    with session_scope() as session:
        made_now = retractions.retract_target(session, target_id, now=utcnow())
    assert len(made_now) == 1
    for row in deliveries_of(police) + deliveries_of(late):
        if row.state is DeliveryState.pending:
            send(int(row.id or 0), fetcher)

    # Exactly the police hear of it, once more: the retraction, signed, to the schema.
    assert len(police_hook.processed) == 2
    retraction = next(
        p for p in police_hook.processed.values() if p["type"] == "forwarding.retraction"
    )
    jsonschema.validate(retraction, SCHEMA)
    assert police_hook.rejected == 0
    assert retraction["forwarding"]["retracts"] == report.id
    assert retraction["retraction"]["forwardings"] == [report.id]
    assert retraction["retraction"]["reason"] == "verdict_reversed"
    assert [m["sha256"] for m in retraction["media"]] == [m["sha256"] for m in original["media"]]
    assert late_hook.received == []
    assert host_hook.received == []
    assert poland_hook.received == []
    # What was never sent never will be: the cancelled delivery, the held notice.
    (cancelled,) = deliveries_of(late)
    assert cancelled.state is DeliveryState.cancelled
    assert send(int(cancelled.id or 0), fetcher).state is None
    with session_scope() as session:
        delivery.sweep(session, now=utcnow() + dt.timedelta(hours=2), overdue=dt.timedelta(0))
        states = {
            (f.partner_id, f.kind): f.state
            for f in session.execute(
                select(Forwarding).where(col(Forwarding.target_id) == target_id)
            ).scalars()
        }
    assert states == {
        (police, ForwardingKind.report): ForwardingState.retracted,
        (police, ForwardingKind.retraction): ForwardingState.delivered,
        (late, ForwardingKind.report): ForwardingState.retracted,
        (host, ForwardingKind.notice): ForwardingState.retracted,
    }
    assert late_hook.received == []
    assert host_hook.received == []
    # Run again (a duplicate message): nothing new.
    with session_scope() as session:
        assert retractions.retract_target(session, target_id, now=utcnow()) == []
        target_row = session.get(Target, target_id)
        assert target_row is not None
        assert target_row.status is TargetStatus.not_illegal


def test_a_reversal_through_the_api_needs_a_confirmed_target(client: Any) -> None:
    with session_scope() as session:
        target = confirmed_target(session, country="UA", status=TargetStatus.queued)
        target_id = target.id
    token = supervisor_token()
    refused = client.post(
        f"/api/v1/targets/{target_id}/reversal",
        json={"note": "?"},
        headers={"authorization": f"Bearer {token}"},
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "not_reversible")
    empty = client.post(
        f"/api/v1/targets/{target_id}/reversal",
        json={"note": ""},
        headers={"authorization": f"Bearer {token}"},
    )
    assert empty.status_code == 422
