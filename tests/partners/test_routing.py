"""Routing by hosting country: who gets a forwarding, by which rule, and the outbox."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from cryptography.fernet import Fernet, MultiFernet
from sqlalchemy import func, select
from sqlmodel import Session, col

from hotline.queue import buffered
from partners import notices, registry, routing
from partners.delivery import sweep
from partners.models import Delivery, Forwarding, ForwardingKind, ForwardingState, Partner
from reporting.models import TargetStatus
from tests.partners.conftest import confirmed_target

NOW = dt.datetime(2026, 5, 4, 12, 0, tzinfo=dt.UTC)
CIPHER = MultiFernet([Fernet(Fernet.generate_key())])
HOME = routing.RoutingPolicy(home_country="UA")


@pytest.fixture
def partners(session: Session) -> dict[str, Partner]:
    specs = [
        {"name": "police", "kind": "law_enforcement", "countries": ["UA"]},
        {"name": "hotline-pl", "kind": "hotline", "countries": ["PL"]},
        {"name": "hotline-de", "kind": "hotline", "countries": ["DE", "AT"]},
        {"name": "interpol", "kind": "fallback"},
        {"name": "host-asn", "kind": "hosting_provider", "asns": [64500]},
        {"name": "host-platform", "kind": "hosting_provider", "domains": ["platform.test"]},
        {"name": "by-mail", "kind": "hosting_provider", "asns": [64501], "email": "a@b.test"},
    ]
    made = {}
    for data in specs:
        if "email" not in data:
            data["webhook_url"] = f"https://{data['name']}.example.org/hook"
        spec = registry.parse_spec(data)
        made[spec.name] = registry.add_partner(session, spec, now=NOW, cipher=CIPHER).partner
    return made


def routed(session: Session, target_id: int) -> set[tuple[str, str, str]]:
    rows = session.execute(
        select(Partner.name, Forwarding.kind, Forwarding.rule)
        .join(Partner, col(Partner.id) == col(Forwarding.partner_id))
        .where(col(Forwarding.target_id) == target_id)
    ).all()
    return {(name, kind.value, rule) for name, kind, rule in rows}


def test_hosted_at_home_goes_to_police_and_the_hosting_provider(
    session: Session, partners: dict[str, Partner]
) -> None:
    target = confirmed_target(session, country="UA", asn=64500)
    assert target.id is not None
    made = routing.route_target(session, target.id, now=NOW, policy=HOME)
    assert routed(session, target.id) == {
        ("police", "report", "home.law_enforcement"),
        ("host-asn", "notice", "home.hosting_provider"),
    }
    assert target.status is TargetStatus.forwarded
    # The outbox: a delivery per report, and a message for each buffered until commit;
    # notices are grouped per abuse contact and sent by partners.notices.
    deliveries = session.execute(select(Delivery)).scalars().all()
    assert {d.forwarding_id for d in deliveries} == {
        f.id for f in made if f.kind is ForwardingKind.report
    }
    assert len({d.webhook_id for d in deliveries}) == 1
    messages = buffered(session)
    assert sorted(m.kwargs["delivery_id"] for m in messages) == sorted(d.id for d in deliveries)
    assert {m.name for m in messages} == {"partners.deliver"}


def test_a_platform_is_matched_by_its_domain_before_the_asn(
    session: Session, partners: dict[str, Partner]
) -> None:
    target = confirmed_target(session, country="UA", asn=64500, domain="platform.test")
    assert target.id is not None
    routing.route_target(session, target.id, now=NOW, policy=HOME)
    assert ("host-platform", "notice", "home.hosting_provider") in routed(session, target.id)
    assert not any(name == "host-asn" for name, _, _ in routed(session, target.id))


def test_the_hold_delays_the_notice_until_the_sweep_releases_it(
    session: Session, partners: dict[str, Partner]
) -> None:
    target = confirmed_target(session, country="UA", asn=64500)
    assert target.id is not None
    policy = routing.RoutingPolicy(home_country="UA", hold=dt.timedelta(minutes=30))
    routing.route_target(session, target.id, now=NOW, policy=policy)
    notice = session.execute(
        select(Forwarding).where(col(Forwarding.kind) == ForwardingKind.notice)
    ).scalar_one()
    assert notice.state is ForwardingState.held
    assert notice.hold_until == NOW + dt.timedelta(minutes=30)
    assert (
        session.execute(
            select(func.count())
            .select_from(Delivery)
            .where(col(Delivery.forwarding_id) == notice.id)
        ).scalar_one()
        == 0
    )

    sweep(session, now=NOW + dt.timedelta(minutes=29), overdue=dt.timedelta(minutes=5))
    assert notice.state is ForwardingState.held
    sweep(session, now=NOW + dt.timedelta(minutes=30), overdue=dt.timedelta(minutes=5))
    assert notice.state is ForwardingState.pending
    # Now due, it is collected into a notice to its contact (partners.notices).
    assert notices.collect(
        session, now=NOW + dt.timedelta(minutes=30), policy=notices.NoticePolicy()
    )


def test_hosted_abroad_goes_to_that_countrys_hotline(
    session: Session, partners: dict[str, Partner]
) -> None:
    target = confirmed_target(session, country="AT", asn=64500)
    assert target.id is not None
    routing.route_target(session, target.id, now=NOW, policy=HOME)
    assert routed(session, target.id) == {("hotline-de", "report", "abroad.hotline")}


def test_policy_can_tell_the_police_of_content_abroad_too(
    session: Session, partners: dict[str, Partner]
) -> None:
    target = confirmed_target(session, country="PL")
    assert target.id is not None
    policy = routing.RoutingPolicy(home_country="UA", law_enforcement_abroad=True)
    routing.route_target(session, target.id, now=NOW, policy=policy)
    assert routed(session, target.id) == {
        ("hotline-pl", "report", "abroad.hotline"),
        ("police", "report", "abroad.law_enforcement"),
    }


@pytest.mark.parametrize(
    ("country", "rule"), [("BR", "abroad.fallback"), (None, "unknown.fallback")]
)
def test_nobody_there_means_the_fallback(
    session: Session, partners: dict[str, Partner], country: str | None, rule: str
) -> None:
    target = confirmed_target(session, country=country)
    assert target.id is not None
    routing.route_target(session, target.id, now=NOW, policy=HOME)
    assert routed(session, target.id) == {("interpol", "report", rule)}


def test_a_disabled_partner_is_passed_over(session: Session, partners: dict[str, Partner]) -> None:
    registry.disable_partner(session, partners["hotline-pl"], reason="admin", now=NOW)
    target = confirmed_target(session, country="PL")
    assert target.id is not None
    routing.route_target(session, target.id, now=NOW, policy=HOME)
    assert routed(session, target.id) == {("interpol", "report", "abroad.fallback")}


def test_routing_twice_creates_nothing_new(session: Session, partners: dict[str, Partner]) -> None:
    target = confirmed_target(session, country="UA", asn=64500)
    assert target.id is not None
    assert len(routing.route_target(session, target.id, now=NOW, policy=HOME)) == 2
    messages = len(buffered(session))
    assert routing.route_target(session, target.id, now=NOW, policy=HOME) == []
    assert session.execute(select(func.count()).select_from(Forwarding)).scalar_one() == 2
    assert session.execute(select(func.count()).select_from(Delivery)).scalar_one() == 1
    assert len(buffered(session)) == messages


def test_an_email_only_contact_gets_a_forwarding_without_a_webhook_delivery(
    session: Session, partners: dict[str, Partner]
) -> None:
    target = confirmed_target(session, country="UA", asn=64501)
    assert target.id is not None
    routing.route_target(session, target.id, now=NOW, policy=HOME)
    assert ("by-mail", "notice", "home.hosting_provider") in routed(session, target.id)
    assert session.execute(select(func.count()).select_from(Delivery)).scalar_one() == 1


@pytest.mark.parametrize("status", [TargetStatus.in_review, TargetStatus.not_illegal])
def test_only_confirmed_targets_are_routed(
    session: Session, partners: dict[str, Partner], status: TargetStatus
) -> None:
    target = confirmed_target(session, country="UA", asn=64500, status=status)
    assert target.id is not None
    assert routing.route_target(session, target.id, now=NOW, policy=HOME) == []
    assert routed(session, target.id) == set()


def states(session: Session, target_id: int) -> set[tuple[str, str, str]]:
    rows = session.execute(
        select(Partner.name, Forwarding.kind, Forwarding.state)
        .join(Partner, col(Partner.id) == col(Forwarding.partner_id))
        .where(col(Forwarding.target_id) == target_id)
    ).all()
    return {(name, kind.value, state.value) for name, kind, state in rows}


def test_a_corrected_country_takes_back_what_its_partner_has_not_received(
    session: Session, partners: dict[str, Partner]
) -> None:
    target = confirmed_target(session, country="PL")
    assert target.id is not None
    [to_pl] = routing.route_target(session, target.id, now=NOW, policy=HOME)
    target.hosting_country = "AT"  # the analyst's correction: geolocation was wrong

    done = routing.reroute_target(session, target.id, now=NOW, policy=HOME)
    assert (done.superseded, done.kept) == ([to_pl.id], [])
    assert states(session, target.id) == {
        ("hotline-pl", "report", "superseded"),
        ("hotline-de", "report", "pending"),
    }
    deliveries = {
        d.forwarding_id: (d.state.value, d.last_error)
        for d in session.execute(select(Delivery)).scalars()
    }
    assert deliveries[to_pl.id] == ("cancelled", "hosting_corrected")
    assert deliveries[done.made[0].id] == ("pending", None)
    assert routing.reroute_target(session, target.id, now=NOW, policy=HOME).made == []

    # Corrected back: the first country's partner gets it again (the same forwarding, a
    # new delivery), the second's is taken back.
    target.hosting_country = "PL"
    again = routing.reroute_target(session, target.id, now=NOW, policy=HOME)
    assert [(f.id, f.rule) for f in again.made] == [(to_pl.id, "abroad.hotline")]
    assert states(session, target.id) == {
        ("hotline-pl", "report", "pending"),
        ("hotline-de", "report", "superseded"),
    }
    pending = session.execute(
        select(Delivery.forwarding_id).where(col(Delivery.state) == "pending")
    ).scalars()
    assert list(pending) == [to_pl.id]


def test_what_a_partner_received_is_kept_and_the_right_partner_told_too(
    session: Session, partners: dict[str, Partner]
) -> None:
    target = confirmed_target(session, country="UA", asn=64500)
    assert target.id is not None
    made = routing.route_target(session, target.id, now=NOW, policy=HOME)
    police = next(f for f in made if f.kind is ForwardingKind.report)
    police.state, police.delivered_at = ForwardingState.delivered, NOW
    target.hosting_country = "PL"

    done = routing.reroute_target(session, target.id, now=NOW, policy=HOME)
    assert done.kept == [police.id]
    assert states(session, target.id) == {
        ("police", "report", "delivered"),  # it cannot be unsent
        ("host-asn", "notice", "superseded"),  # not collected yet: the provider never saw it
        ("hotline-pl", "report", "pending"),
    }


def test_correcting_a_forwarded_target_routes_it_again(
    session: Session, partners: dict[str, Partner]
) -> None:
    from hotline.models import Role, StaffUser
    from triage import assessment

    target = confirmed_target(session, country="PL")
    assert target.id is not None
    routing.route_target(session, target.id, now=NOW, policy=HOME)
    assert target.status is TargetStatus.forwarded
    ana = StaffUser(email="ana@reroute.example", password_hash="x", role=Role.analyst)
    session.add(ana)
    session.flush()
    before = len(buffered(session))
    assessment.correct_hosting(session, target.id, "pl", user=ana, now=NOW)  # no change
    assessment.correct_hosting(session, target.id, "at", user=ana, now=NOW)
    sent = [(m.name, m.kwargs) for m in buffered(session)[before:]]
    assert sent == [("partners.reroute_target", {"target_id": target.id})]


def test_a_forwarding_its_partner_had_is_not_made_again_after_a_move_and_back(
    session: Session, partners: dict[str, Partner]
) -> None:
    # Noticed, then superseded when the site moved (partners.notices): the contact had
    # it, answers and all, so moving back does not send it as new.
    target = confirmed_target(session, country="UA", asn=64500)
    assert target.id is not None
    made = routing.route_target(session, target.id, now=NOW, policy=HOME)
    notice = next(f for f in made if f.kind is ForwardingKind.notice)
    notice.state, notice.delivered_at = ForwardingState.superseded, NOW
    session.flush()
    assert routing.route_target(session, target.id, now=NOW, policy=HOME) == []
    assert notice.state is ForwardingState.superseded


def test_back_online_is_not_told_to_a_partner_whose_forwarding_was_taken_back(
    session: Session, partners: dict[str, Partner]
) -> None:
    from partners.rechecks import notify_reopened

    target = confirmed_target(session, country="PL")
    assert target.id is not None
    routing.route_target(session, target.id, now=NOW, policy=HOME)
    target.hosting_country = "AT"
    routing.reroute_target(session, target.id, now=NOW, policy=HOME)
    told = [session.get(Forwarding, i) for i in notify_reopened(session, target.id, now=NOW)]
    assert [f.partner_id for f in told if f is not None] == [partners["hotline-de"].id]


def test_the_sweep_routes_a_confirmed_target_whose_wake_up_was_lost(
    session: Session, partners: dict[str, Partner]
) -> None:
    # Confirmed while the broker was down: no partners.route_target message ever came.
    target = confirmed_target(session, country="PL")
    assert target.id is not None
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    overdue = dt.timedelta(minutes=5)
    assert routing.sweep_unrouted(session, now=later, overdue=overdue, policy=HOME) == [target.id]
    assert routed(session, target.id) == {("hotline-pl", "report", "abroad.hotline")}
    assert target.status is TargetStatus.forwarded
    assert routing.sweep_unrouted(session, now=later, overdue=overdue, policy=HOME) == []
    # Not before it is overdue: the wake-up may still be on its way.
    fresh = confirmed_target(session, country="PL")
    now = dt.datetime.now(dt.UTC)
    assert routing.sweep_unrouted(session, now=now, overdue=overdue, policy=HOME) == []
    assert fresh.status is TargetStatus.confirmed


def test_targets_no_partner_serves_do_not_hold_up_a_lost_wake_up(
    session: Session, partners: dict[str, Partner], caplog: pytest.LogCaptureFixture
) -> None:
    # No fallback: a target hosted where no partner hotline serves waits for a partner.
    partners["interpol"].active = False
    session.flush()
    start = dt.datetime.now(dt.UTC)
    lost = confirmed_target(session, country="PL")  # its wake-up never came
    lost.status_changed_at = start
    unserved = []
    for minute in (1, 2, 3):
        target = confirmed_target(session, country="FR")
        target.status_changed_at = start + dt.timedelta(minutes=minute)
        unserved.append(target)
    session.flush()
    later = start + dt.timedelta(hours=1)
    overdue = dt.timedelta(minutes=5)

    def sweep(at: dt.datetime = later) -> list[int]:
        return routing.sweep_unrouted(session, now=at, overdue=overdue, policy=HOME, limit=2)

    with caplog.at_level(logging.DEBUG, logger="hotline.partners"):
        # Newest first among those never tried: two of the unserved, routed to nobody.
        assert sweep() == []
        assert [t.unrouted_at for t in unserved] == [None, later, later]
        # Then the rest never tried: the lost wake-up is routed (it used to wait behind
        # the newest unserved targets for ever).
        assert sweep() == [lost.id]
        assert lost.status is TargetStatus.forwarded
        # From then on the unserved take turns, longest untried first; each is warned of
        # once, not at every sweep.
        assert sweep() == []
        warned = [r.message for r in caplog.records if r.levelno == logging.WARNING]
        assert len([m for m in warned if "no partner" in m]) == 3
        assert all(t.status is TargetStatus.confirmed for t in unserved)
        # Reversed and confirmed again: a new confirmation, tried (and warned of) first.
        again = unserved[1]
        again.status_changed_at = later + dt.timedelta(minutes=1)
        session.flush()
        caplog.clear()
        afterwards = later + dt.timedelta(hours=1)
        assert (
            routing.sweep_unrouted(session, now=afterwards, overdue=overdue, policy=HOME, limit=1)
            == []
        )
        assert again.unrouted_at == afterwards
        assert [r.levelno for r in caplog.records if "no partner" in r.message] == [logging.WARNING]
    # A fallback added later: they are forwarded at the next sweeps.
    partners["interpol"].active = True
    session.flush()
    assert sorted(sweep(afterwards) + sweep(afterwards)) == sorted(t.id for t in unserved)


def test_the_sweep_retracts_for_a_reversal_whose_wake_up_was_lost(
    session: Session, partners: dict[str, Partner]
) -> None:
    from partners import retractions

    target = confirmed_target(session, country="PL")
    assert target.id is not None
    [report] = routing.route_target(session, target.id, now=NOW, policy=HOME)
    report.state, report.delivered_at = ForwardingState.delivered, NOW
    target.status = TargetStatus.not_illegal  # reversed; partners.retract_target lost
    target.status_reason = "reversed"
    session.flush()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    overdue = dt.timedelta(minutes=5)
    assert retractions.sweep_unretracted(session, now=later, overdue=overdue) == [target.id]
    assert states(session, target.id) == {
        ("hotline-pl", "report", "retracted"),
        ("hotline-pl", "retraction", "pending"),
    }
    assert retractions.sweep_unretracted(session, now=later, overdue=overdue) == []


def test_the_sweep_routes_again_a_target_whose_correction_wake_up_was_lost(
    session: Session, partners: dict[str, Partner]
) -> None:
    from hotline.models import Role, StaffUser
    from triage import assessment

    target = confirmed_target(session, country="PL")
    assert target.id is not None
    routing.route_target(session, target.id, now=NOW, policy=HOME)
    ana = StaffUser(email="ana@sweep.example", password_hash="x", role=Role.analyst)
    session.add(ana)
    session.flush()
    assessment.correct_hosting(session, target.id, "AT", user=ana, now=NOW)  # task lost
    overdue = dt.timedelta(minutes=5)
    soon = NOW + dt.timedelta(minutes=1)
    assert routing.sweep_corrected(session, now=soon, overdue=overdue, policy=HOME) == []
    later = NOW + dt.timedelta(minutes=10)
    assert routing.sweep_corrected(session, now=later, overdue=overdue, policy=HOME) == [target.id]
    assert states(session, target.id) == {
        ("hotline-pl", "report", "superseded"),
        ("hotline-de", "report", "pending"),
    }
    assert routing.sweep_corrected(session, now=later, overdue=overdue, policy=HOME) == []
