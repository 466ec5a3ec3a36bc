"""Notice and takedown: e-mails received by an aiosmtpd server on 127.0.0.1, webhook
notices verified with ``standardwebhooks``, grouping within the window, the hold, a site
that moved, re-notices while online, SMTP retries; the partner API's larger body cap."""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import email.policy
import json
import random
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import jsonschema
import pytest
from aiosmtpd.controller import Controller
from cryptography.fernet import Fernet, MultiFernet
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col
from typer.testing import CliRunner

from hotline.cli_partners import partners_app
from hotline.db import session_scope, utcnow
from hotline.models import AuditEvent
from hotline.queue import buffered, enqueue
from partners import delivery, notices, registry, routing
from partners.errors import InvalidNoticeTemplate
from partners.models import (
    Delivery,
    Forwarding,
    ForwardingKind,
    ForwardingState,
    Notice,
    NoticeChannel,
    NoticeItem,
    NoticeState,
    Partner,
    SecretPurpose,
)
from reporting.models import Target, TargetStatus
from tests.conftest import REPO, free_port, wait_for
from tests.fixtures.receivers import Receiver
from tests.partners.conftest import confirmed_target
from triage.hosting import Hosting

NOW = dt.datetime(2026, 5, 4, 12, 0, tzinfo=dt.UTC)
CIPHER = MultiFernet([Fernet(Fernet.generate_key())])
HOME = routing.RoutingPolicy(home_country="UA")
POLICY = notices.NoticePolicy(hotline_name="Hotline UA", home_country="UA")
NOTICE_SCHEMA = json.loads((REPO / "docs" / "notice.schema.json").read_text(encoding="utf-8"))


# An SMTP server on 127.0.0.1 ---------------------------------------------------------------


@dataclass
class Inbox:
    """What the SMTP server saw: every message offered (``offered``) and those it
    accepted (``accepted``, with their envelope recipients). ``script`` holds the
    answers to the next DATA commands, then 250."""

    script: list[str] = field(default_factory=list)
    offered: list[EmailMessage] = field(default_factory=list)
    accepted: list[tuple[list[str], EmailMessage]] = field(default_factory=list)

    async def handle_DATA(  # noqa: N802 - the hook name aiosmtpd calls
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.offered.append(message)
        answer = self.script.pop(0) if self.script else "250 OK"
        if answer.startswith("250"):
            self.accepted.append((list(envelope.rcpt_tos), message))
        return answer


@dataclass
class SmtpServer:
    port: int
    inbox: Inbox
    controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def config(self) -> notices.SmtpConfig:
        return notices.SmtpConfig(
            host="127.0.0.1", port=self.port, security="none", sender="notices@hotline.test"
        )


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer(port=free_port(), inbox=Inbox())
    server.start()
    yield server
    server.stop()


def text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


# Partners and targets ----------------------------------------------------------------------


def add(session: Session, **data: Any) -> Partner:
    return registry.add_partner(session, registry.parse_spec(data), now=NOW, cipher=CIPHER).partner


@pytest.fixture
def contacts(session: Session) -> dict[str, Partner]:
    return {
        "police": add(session, name="police", kind="law_enforcement", countries=["UA"],
                      webhook_url="https://police.example.org/hook"),
        "hotline-pl": add(session, name="hotline-pl", kind="hotline", countries=["PL"],
                          webhook_url="https://hotline-pl.example.org/hook"),
        "host-a": add(session, name="Host A", kind="hosting_provider", asns=[64500],
                      email="abuse@host-a.test", languages=["uk", "en"]),
        "host-b": add(session, name="Host B", kind="hosting_provider", asns=[64501],
                      email="abuse@host-b.test", languages=["de", "en"]),
    }  # fmt: skip


def confirm(
    session: Session, at: dt.datetime, *, asn: int = 64500, policy: routing.RoutingPolicy = HOME
) -> Target:
    target = confirmed_target(session, country="UA", asn=asn, domain=f"site{asn}.test")
    assert target.id is not None
    routing.route_target(session, target.id, now=at, policy=policy)
    return target


def unchanged(host: str) -> Hosting | None:
    """The hosting lookup of a site that did not move: DNS gives no new answer."""
    return None


def sweep(
    session: Session,
    at: dt.datetime,
    *,
    lookup: notices.HostLookup = unchanged,
    policy: notices.NoticePolicy = POLICY,
    routing_policy: routing.RoutingPolicy = HOME,
) -> notices.Swept:
    return notices.sweep(
        session, now=at, policy=policy, lookup=lookup, routing_policy=routing_policy
    )


def send_mail(
    session: Session, notice_id: int, server: SmtpServer, at: dt.datetime, attempt: int = 1
) -> notices.MailVerdict:
    """One attempt of the e-mail task, in the test's (rolled-back) session."""
    return notices.attempt_email(
        notice_id,
        now=at,
        policy=POLICY,
        smtp=server.config,
        attempt=attempt,
        max_attempts=5,
        delay=lambda n: 60.0 * 2 ** (n - 1),
        units=lambda: contextlib.nullcontext(session),
    )


def queued_notices(session: Session) -> list[int]:
    return [m.kwargs["notice_id"] for m in buffered(session) if m.name == "partners.send_notice"]


# Grouping, language, what a notice says ----------------------------------------------------


def test_three_urls_confirmed_within_the_window_go_out_in_one_email(
    session: Session, contacts: dict[str, Partner], smtp: SmtpServer
) -> None:
    targets = [confirm(session, NOW + dt.timedelta(minutes=m)) for m in (0, 4, 9)]
    assert sweep(session, NOW).collected  # the first one opens a notice for the window
    assert sweep(session, NOW + dt.timedelta(minutes=10)).sent == []
    late = confirm(session, NOW + dt.timedelta(minutes=16))  # after the window: the next

    swept = sweep(session, NOW + dt.timedelta(minutes=16))
    (notice_id,) = swept.sent
    assert queued_notices(session) == [notice_id]
    assert send_mail(session, notice_id, smtp, NOW + dt.timedelta(minutes=16)).state is (
        NoticeState.sent
    )

    ((recipients, message),) = smtp.inbox.accepted
    assert recipients == ["abuse@host-a.test"]
    assert message["To"] == "abuse@host-a.test"
    assert message["From"] == "notices@hotline.test"
    # Host A reads Ukrainian first.
    assert "Матеріали сексуального насильства над дітьми" in message["Subject"]
    assert f"UA-N{notice_id}" in message["Subject"]
    body = text(message)
    assert "Шановна службо реагування на зловживання Host A" in body
    for target in targets:
        assert target.canonical_url in body
    assert late.canonical_url not in body
    assert body.count("класифікація (ICCAM): baseline") == 3
    forwardings = session.execute(
        select(Forwarding).where(
            col(Forwarding.kind) == ForwardingKind.notice,
            col(Forwarding.target_id).in_([t.id for t in targets]),
        )
    ).scalars()
    references = [f"UA-F{f.id}" for f in forwardings]
    assert len(references) == 3
    assert all(reference in body for reference in references)
    # Never content: no hash of any media, nothing of the reporters.
    assert not re.search(r"\b[0-9a-f]{32,64}\b", body)

    notice = session.get(Notice, notice_id)
    assert notice is not None
    assert (notice.state, notice.channel, notice.language) == (
        NoticeState.sent,
        NoticeChannel.email,
        "uk",
    )
    assert notice.sent_at == NOW + dt.timedelta(minutes=16)
    items = session.execute(
        select(func.count()).select_from(NoticeItem).where(col(NoticeItem.notice_id) == notice_id)
    ).scalar_one()
    assert items == 3
    for target in targets:
        (forwarding,) = session.execute(
            select(Forwarding).where(
                col(Forwarding.target_id) == target.id,
                col(Forwarding.kind) == ForwardingKind.notice,
            )
        ).scalars()
        assert forwarding.state is ForwardingState.delivered

    # The fourth URL has a notice of its own, sent when its window closes.
    assert sweep(session, NOW + dt.timedelta(minutes=30)).sent == []
    (second,) = sweep(session, NOW + dt.timedelta(minutes=31)).sent
    send_mail(session, second, smtp, NOW + dt.timedelta(minutes=31))
    assert len(smtp.inbox.accepted) == 2
    assert late.canonical_url in text(smtp.inbox.accepted[1][1])


@pytest.mark.parametrize(
    ("asn", "address", "subject", "line"),
    [
        (64500, "abuse@host-a.test", "Відкликання нашого повідомлення", "у нашому повідомленні"),  # noqa: RUF001
        (64501, "abuse@host-b.test", "Withdrawn: our notice", "in our notice"),  # de: none
    ],
)
def test_a_reversed_verdict_is_withdrawn_by_email_from_a_contact_that_got_the_notice(
    session: Session,
    contacts: dict[str, Partner],
    smtp: SmtpServer,
    asn: int,
    address: str,
    subject: str,
    line: str,
) -> None:
    from partners import retractions

    noticed = confirm(session, NOW, asn=asn)
    sweep(session, NOW)
    (notice_id,) = sweep(session, NOW + dt.timedelta(minutes=16)).sent
    send_mail(session, notice_id, smtp, NOW + dt.timedelta(minutes=16))
    assert len(smtp.inbox.accepted) == 1
    held_back = confirm(session, NOW + dt.timedelta(minutes=20), asn=asn)  # in no notice yet

    # A supervisor reverses both verdicts (triage.assessment.reverse) a day later.
    later = NOW + dt.timedelta(days=1)
    for target in (noticed, held_back):
        target.status = TargetStatus.not_illegal
        session.add(target)
    session.flush()
    made = retractions.retract_target(session, noticed.id or 0, now=later)
    assert retractions.retract_target(session, held_back.id or 0, now=later) == []
    (retraction_notice,) = [n for n in queued_notices(session) if n != notice_id]
    assert send_mail(session, retraction_notice, smtp, later).state is NoticeState.sent

    ((recipients, message),) = smtp.inbox.accepted[1:]
    assert recipients == [address]
    # Naming the notice the contact received, in its language.
    assert f"{subject} UA-N{notice_id} (" in message["Subject"]
    assert f"UA-N{retraction_notice}" in text(message)  # the withdrawal's own reference
    body = text(message)
    assert noticed.canonical_url in body
    assert held_back.canonical_url not in body
    original = session.execute(
        select(Forwarding).where(
            col(Forwarding.target_id) == noticed.id, col(Forwarding.kind) == ForwardingKind.notice
        )
    ).scalar_one()
    assert f"UA-F{original.id}, {line} UA-N{notice_id}" in body
    assert message["Message-ID"] != smtp.inbox.accepted[0][1]["Message-ID"]
    (retraction,) = [session.get(Forwarding, i) for i in made]
    assert retraction is not None
    assert (retraction.state, retraction.retracts_id) == (ForwardingState.delivered, original.id)
    assert original.state is ForwardingState.retracted
    # Never repeated, never collected into a notice again.
    assert sweep(session, later + dt.timedelta(days=3)).sent == []
    assert len(smtp.inbox.accepted) == 2
    # Staff see which notice withdraws which.
    listed = notices.notices_of(session, target_id=noticed.id)
    assert [(n.id, n.retraction) for n in listed] == [
        (notice_id, False),
        (retraction_notice, True),
    ]


def test_a_notice_retried_after_a_reversal_no_longer_names_the_reversed_url(
    session: Session, contacts: dict[str, Partner], smtp: SmtpServer
) -> None:
    from partners import retractions

    reversed_, still = confirm(session, NOW), confirm(session, NOW + dt.timedelta(minutes=1))
    sweep(session, NOW)
    at = NOW + dt.timedelta(minutes=16)
    (notice_id,) = sweep(session, at).sent
    smtp.inbox.script = ["451 4.3.0 Try again later"]
    assert send_mail(session, notice_id, smtp, at).state is NoticeState.sending  # to retry

    # Reversed while the retry waits: the contact may have the first attempt, so it is
    # told; the retry names only the URL still confirmed.
    reversed_.status = TargetStatus.not_illegal
    session.add(reversed_)
    session.flush()
    assert retractions.retract_target(session, reversed_.id or 0, now=at)
    assert send_mail(session, notice_id, smtp, at + dt.timedelta(minutes=2), attempt=2).state is (
        NoticeState.sent
    )
    sent = text(smtp.inbox.accepted[-1][1])
    assert still.canonical_url in sent
    assert reversed_.canonical_url not in sent

    # A notice whose only URL was reversed before it went out is not sent at all.
    alone = confirm(session, NOW + dt.timedelta(hours=1))
    sweep(session, NOW + dt.timedelta(hours=1))
    later = NOW + dt.timedelta(hours=1, minutes=16)
    (second,) = sweep(session, later).sent
    smtp.inbox.script = ["451 4.3.0 Try again later"]
    send_mail(session, second, smtp, later)
    alone.status = TargetStatus.not_illegal
    session.add(alone)
    session.flush()
    retractions.retract_target(session, alone.id or 0, now=later)
    offered = len(smtp.inbox.offered)
    verdict = send_mail(session, second, smtp, later + dt.timedelta(minutes=2), attempt=2)
    assert verdict.state is NoticeState.failed
    assert session.get(Notice, second).last_error == "withdrawn"  # type: ignore[union-attr]
    assert len(smtp.inbox.offered) == offered  # the notice was not offered again


def test_a_retraction_to_a_partner_with_no_way_in_shows_failed(
    session: Session, contacts: dict[str, Partner]
) -> None:
    from partners import retractions

    target = confirmed_target(session, country="PL")
    assert target.id is not None
    [report] = routing.route_target(session, target.id, now=NOW, policy=HOME)
    report.state, report.delivered_at = ForwardingState.delivered, NOW
    partner = session.get(Partner, report.partner_id)
    assert partner is not None
    partner.webhook_url, partner.email = None, "desk@hotline-pl.test"  # e-mail only now
    target.status = TargetStatus.not_illegal
    session.flush()
    [made] = retractions.retract_target(session, target.id, now=NOW)
    retraction = session.get(Forwarding, made)
    assert retraction is not None
    # Not an abuse contact: no notice mail to it; staff see the retraction failed.
    assert retraction.state is ForwardingState.failed
    assert queued_notices(session) == []


def test_a_contacts_own_template_in_its_language_wins_then_english(
    session: Session, contacts: dict[str, Partner], smtp: SmtpServer
) -> None:
    own = (
        "Subject: Takedown {{ notice.reference }}\n\n"
        "{% for i in items %}* {{ i.url }}\n{% endfor %}"
    )
    notices.set_template(session, contacts["host-a"], "uk", own, now=NOW, policy=POLICY)
    a = confirm(session, NOW, asn=64500)
    b = confirm(session, NOW, asn=64501)  # Host B reads German, then English
    sweep(session, NOW)
    sent = sweep(session, NOW + dt.timedelta(minutes=15)).sent
    assert len(sent) == 2
    for notice_id in sent:
        send_mail(session, notice_id, smtp, NOW + dt.timedelta(minutes=15))
    by_recipient = {r[0]: m for r, m in smtp.inbox.accepted}
    mine = by_recipient["abuse@host-a.test"]
    assert mine["Subject"].startswith("Takedown UA-N")
    assert text(mine).strip() == f"* {a.canonical_url}"
    english = by_recipient["abuse@host-b.test"]
    assert "Child sexual abuse material on your network" in english["Subject"]
    assert "Dear Host B abuse team" in text(english)
    assert b.canonical_url in text(english)


def test_a_template_that_does_not_render_is_refused(
    session: Session, contacts: dict[str, Partner]
) -> None:
    with pytest.raises(InvalidNoticeTemplate):
        notices.set_template(
            session, contacts["host-a"], "uk", "Subject: {{ nope.x }}\n\nbody", now=NOW,
            policy=POLICY,
        )  # fmt: skip
    with pytest.raises(InvalidNoticeTemplate):
        notices.set_template(
            session, None, "en", "Subject: x\n\n{{ ''.__class__.__mro__ }}", now=NOW,
            policy=POLICY,
        )  # fmt: skip
    with pytest.raises(InvalidNoticeTemplate):
        notices.set_template(session, None, "en", "no subject line", now=NOW, policy=POLICY)


# The law-enforcement hold ------------------------------------------------------------------


def test_no_notice_before_the_hold_ends(
    session: Session, contacts: dict[str, Partner], smtp: SmtpServer
) -> None:
    held = routing.RoutingPolicy(home_country="UA", hold=dt.timedelta(minutes=60))
    target = confirm(session, NOW, policy=held)
    for minutes in (0, 30, 59):
        swept = sweep(session, NOW + dt.timedelta(minutes=minutes), routing_policy=held)
        assert (swept.collected, swept.sent) == ([], [])
    assert session.execute(select(func.count()).select_from(Notice)).scalar_one() == 0

    assert sweep(session, NOW + dt.timedelta(minutes=60), routing_policy=held).collected
    assert sweep(session, NOW + dt.timedelta(minutes=74), routing_policy=held).sent == []
    (notice_id,) = sweep(session, NOW + dt.timedelta(minutes=75), routing_policy=held).sent
    send_mail(session, notice_id, smtp, NOW + dt.timedelta(minutes=75))
    ((_, message),) = smtp.inbox.accepted
    assert target.canonical_url in text(message)


# A site that moved -------------------------------------------------------------------------


def test_the_sweep_does_not_undo_a_country_staff_corrected(
    session: Session, contacts: dict[str, Partner], smtp: SmtpServer
) -> None:
    from hotline.models import Role, StaffUser
    from triage import assessment

    # Geolocated to PL; the analyst knows the server is at home (UA) and says so.
    target = confirmed_target(session, country="PL", asn=64500, domain="corrected.test")
    assert target.id is not None
    routing.route_target(session, target.id, now=NOW, policy=HOME)
    ana = StaffUser(email="ana@notices.example", password_hash="x", role=Role.analyst)
    session.add(ana)
    session.flush()
    assessment.correct_hosting(session, target.id, "UA", user=ana, now=NOW)
    routing.reroute_target(session, target.id, now=NOW, policy=HOME)
    sweep(session, NOW)

    def geolocation(host: str) -> Hosting:  # the database's answer, unchanged
        return Hosting(ip=target.hosting_ip or "", country="PL", asn=64500, org="Example")

    (notice_id,) = sweep(session, NOW + dt.timedelta(minutes=15), lookup=geolocation).sent
    assert target.hosting_country == "UA"
    send_mail(session, notice_id, smtp, NOW + dt.timedelta(minutes=15))
    assert target.canonical_url in text(smtp.inbox.accepted[-1][1])

    # A new address is a move all the same, corrected or not.
    def moved(host: str) -> Hosting:
        return Hosting(ip="198.51.100.9", country="PL", asn=64999, org="Elsewhere")

    later = confirmed_target(session, country="PL", asn=64500, domain="corrected.test")
    assert later.id is not None
    assessment.correct_hosting(session, later.id, "UA", user=ana, now=NOW)
    routing.reroute_target(session, later.id, now=NOW, policy=HOME)
    sweep(session, NOW + dt.timedelta(hours=1))
    sweep(session, NOW + dt.timedelta(hours=1, minutes=15), lookup=moved)
    assert later.hosting_country == "PL"


def test_a_site_that_moved_abroad_is_routed_anew_and_the_old_provider_hears_nothing(
    session: Session, contacts: dict[str, Partner], smtp: SmtpServer
) -> None:
    target = confirm(session, NOW)
    sweep(session, NOW)
    looked_up: list[str] = []

    def moved(host: str) -> Hosting:
        looked_up.append(host)
        return Hosting(ip="198.51.100.7", country="PL", asn=64999, org="Elsewhere")

    swept = sweep(session, NOW + dt.timedelta(minutes=15), lookup=moved)
    assert looked_up == [target.host]
    assert swept.sent == []
    assert queued_notices(session) == []
    assert session.execute(select(func.count()).select_from(Notice)).scalar_one() == 0
    rows = {
        (f.partner_id, f.kind, f.rule): f
        for f in session.execute(
            select(Forwarding).where(col(Forwarding.target_id) == target.id)
        ).scalars()
    }
    old = rows[(contacts["host-a"].id, ForwardingKind.notice, "home.hosting_provider")]
    assert old.state is ForwardingState.superseded
    new = rows[(contacts["hotline-pl"].id, ForwardingKind.report, "abroad.hotline")]
    assert session.execute(
        select(Delivery).where(col(Delivery.forwarding_id) == new.id)
    ).scalar_one()
    assert (target.hosting_country, target.hosting_asn) == ("PL", 64999)
    event = session.execute(
        select(AuditEvent).where(
            col(AuditEvent.action) == "forwarding_superseded",
            col(AuditEvent.object_id) == str(old.id),
        )
    ).scalar_one()
    assert target.canonical_url not in json.dumps(event.details)
    # Later sweeps send nothing to Host A either.
    sweep(session, NOW + dt.timedelta(hours=30), lookup=moved)
    assert queued_notices(session) == []
    assert smtp.inbox.offered == []


def test_a_site_that_moved_to_another_provider_at_home_is_noticed_there(
    session: Session, contacts: dict[str, Partner], smtp: SmtpServer
) -> None:
    target = confirm(session, NOW)
    sweep(session, NOW)

    def moved(host: str) -> Hosting:
        return Hosting(ip="203.0.113.9", country="UA", asn=64501, org="Host B Networks")

    assert sweep(session, NOW + dt.timedelta(minutes=15), lookup=moved).sent == []
    assert sweep(session, NOW + dt.timedelta(minutes=15), lookup=moved).collected
    (notice_id,) = sweep(session, NOW + dt.timedelta(minutes=30), lookup=moved).sent
    send_mail(session, notice_id, smtp, NOW + dt.timedelta(minutes=30))
    ((recipients, message),) = smtp.inbox.accepted
    assert recipients == ["abuse@host-b.test"]
    assert target.canonical_url in text(message)


def test_another_address_of_the_same_provider_is_still_noticed(
    session: Session, contacts: dict[str, Partner], smtp: SmtpServer
) -> None:
    confirm(session, NOW)
    sweep(session, NOW)

    def renumbered(host: str) -> Hosting:
        return Hosting(ip="192.0.2.99", country="UA", asn=64500, org="Example Hosting")

    (notice_id,) = sweep(session, NOW + dt.timedelta(minutes=15), lookup=renumbered).sent
    send_mail(session, notice_id, smtp, NOW + dt.timedelta(minutes=15))
    assert [r for r, _ in smtp.inbox.accepted] == [["abuse@host-a.test"]]


def test_the_lookup_before_sending_asks_dns_now() -> None:
    asked: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["8.8.8.8"]

    def failing(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    where = notices.dns_lookup(resolver)("www.example.test")
    assert asked == [("www.example.test", 443)]
    assert where is not None
    assert (where.ip, where.country) == ("8.8.8.8", "US")
    assert notices.dns_lookup(failing)("www.example.test") is None  # unknown: not moved


# Re-notices --------------------------------------------------------------------------------


def test_a_renotice_every_24_hours_while_online_and_none_after_removal(
    session: Session, contacts: dict[str, Partner], smtp: SmtpServer
) -> None:
    target = confirm(session, NOW)
    sweep(session, NOW)
    sent_at = NOW + dt.timedelta(minutes=15)
    (first,) = sweep(session, sent_at).sent
    send_mail(session, first, smtp, sent_at)

    assert sweep(session, sent_at + dt.timedelta(hours=23, minutes=59)).repeated == []
    day = sent_at + dt.timedelta(hours=24)
    swept = sweep(session, day)
    (repeat,) = swept.repeated
    assert swept.sent == [repeat]  # a re-notice does not wait for a window
    send_mail(session, repeat, smtp, day)
    renotice = session.get(Notice, repeat)
    assert renotice is not None
    assert (renotice.repeats_id, renotice.state, renotice.sent_at) == (first, NoticeState.sent, day)
    message = smtp.inbox.accepted[1][1]
    assert message["Subject"].startswith("Нагадування 1:")
    assert target.canonical_url in text(message)
    assert message["Message-ID"] != smtp.inbox.accepted[0][1]["Message-ID"]
    assert sweep(session, day + dt.timedelta(hours=12)).repeated == []

    target.removed_at = day + dt.timedelta(hours=2)
    target.status = TargetStatus.removed
    session.add(target)
    session.flush()
    assert sweep(session, day + dt.timedelta(hours=48)).repeated == []
    assert len(smtp.inbox.accepted) == 2


def test_renotices_stop_at_the_maximum(
    session: Session, contacts: dict[str, Partner], smtp: SmtpServer
) -> None:
    policy = notices.NoticePolicy(home_country="UA", max_repeats=2)
    confirm(session, NOW)
    sweep(session, NOW, policy=policy)
    at = NOW + dt.timedelta(minutes=15)
    for _ in range(5):
        for notice_id in sweep(session, at, policy=policy).sent:
            send_mail(session, notice_id, smtp, at)
        at += dt.timedelta(hours=24)
    assert len(smtp.inbox.accepted) == 3  # the notice and two re-notices
    notices_sent = session.execute(select(Notice).order_by(col(Notice.id))).scalars().all()
    assert [n.repeats_id is None for n in notices_sent] == [True, False, False]
    assert all(n.state is NoticeState.sent for n in notices_sent)


# SMTP failures -----------------------------------------------------------------------------


def test_smtp_down_is_retried_then_the_notice_is_sent_once(
    session: Session, contacts: dict[str, Partner]
) -> None:
    server = SmtpServer(port=free_port(), inbox=Inbox())  # not started: nothing listens
    confirm(session, NOW)
    sweep(session, NOW)
    at = NOW + dt.timedelta(minutes=15)
    (notice_id,) = sweep(session, at).sent

    down = send_mail(session, notice_id, server, at, attempt=1)
    assert (down.state, down.retry_in) == (NoticeState.sending, 60.0)
    notice = session.get(Notice, notice_id)
    assert notice is not None
    assert (notice.state, notice.last_error) == (NoticeState.sending, "smtp_unavailable")
    # The retry is not due before its time.
    assert send_mail(session, notice_id, server, at + dt.timedelta(seconds=30), attempt=2) == (
        notices.MAIL_SKIPPED
    )

    server.inbox.script = ["451 4.3.0 Try again later"]
    server.start()
    try:
        at += dt.timedelta(seconds=60)
        busy = send_mail(session, notice_id, server, at, attempt=2)
        assert (busy.state, busy.retry_in, notice.last_error) == (
            NoticeState.sending,
            120.0,
            "smtp_451",
        )
        at += dt.timedelta(seconds=120)
        assert send_mail(session, notice_id, server, at, attempt=3).state is NoticeState.sent
        # A duplicate message of the task finds it sent and does nothing.
        assert send_mail(session, notice_id, server, at, attempt=3) == notices.MAIL_SKIPPED
    finally:
        server.stop()
    assert len(server.inbox.accepted) == 1
    first, second = server.inbox.offered
    assert first["Message-ID"] == second["Message-ID"]  # stable across attempts
    assert (notice.state, notice.sent_at, notice.last_error) == (NoticeState.sent, at, None)


def test_a_permanent_refusal_fails_the_notice(
    session: Session, contacts: dict[str, Partner], smtp: SmtpServer
) -> None:
    smtp.inbox.script = ["554 5.7.1 Rejected"]
    confirm(session, NOW)
    sweep(session, NOW)
    (notice_id,) = sweep(session, NOW + dt.timedelta(minutes=15)).sent
    verdict = send_mail(session, notice_id, smtp, NOW + dt.timedelta(minutes=15))
    assert (verdict.state, verdict.retry_in) == (NoticeState.failed, None)
    notice = session.get(Notice, notice_id)
    assert notice is not None
    assert notice.last_error == "smtp_554"
    forwarding = session.execute(
        select(Forwarding).where(col(Forwarding.kind) == ForwardingKind.notice)
    ).scalar_one()
    assert forwarding.state is ForwardingState.failed


# Webhook notices ---------------------------------------------------------------------------


@pytest.fixture
def fetcher(configure: Callable[..., None]) -> Iterator[Any]:
    configure(delivery_timeout_seconds=2)
    delivery.delivery_fetcher.cache_clear()
    yield delivery.delivery_fetcher()
    delivery.delivery_fetcher.cache_clear()


def test_a_webhook_notice_groups_the_urls_and_verifies_with_standardwebhooks(
    session: Session, receivers: Callable[..., Receiver], fetcher: Any
) -> None:
    receiver = receivers(secrets=[])
    added = registry.add_partner(
        session,
        registry.parse_spec(
            {"name": "Platform", "kind": "hosting_provider", "asns": [64500],
             "webhook_url": receiver.url, "email": "ignored@platform.test"}
        ),
        now=NOW,
        cipher=CIPHER,
    )  # fmt: skip
    receiver.secrets.append(added.secrets[SecretPurpose.outbound_signing])
    targets = [confirm(session, NOW + dt.timedelta(minutes=m)) for m in (0, 5)]
    sweep(session, NOW)
    at = NOW + dt.timedelta(minutes=15)
    (notice_id,) = sweep(session, at).sent
    (delivery_row,) = session.execute(
        select(Delivery).where(col(Delivery.notice_id) == notice_id)
    ).scalars()
    assert delivery_row.event == "notice"

    def attempt() -> Any:
        return delivery.attempt(
            delivery_row.id or 0,
            now=at,
            fetcher=fetcher,
            policy=delivery.RetryPolicy(),
            rng=random.Random(1),
            units=lambda: contextlib.nullcontext(session),
            cipher=CIPHER,
            sender={"name": "Hotline UA", "country": "UA"},
        )

    receiver.script = [503]
    assert attempt().retry_in is not None
    at += dt.timedelta(minutes=5)
    assert attempt().state is not None
    assert receiver.rejected == 0
    assert len({r.webhook_id for r in receiver.received}) == 1  # one id across attempts
    (document,) = receiver.processed.values()
    jsonschema.validate(document, NOTICE_SCHEMA)
    assert document["type"] == "notice"
    assert document["notice"]["reference"] == f"UA-N{notice_id}"
    assert [item["url"] for item in document["items"]] == [t.canonical_url for t in targets]
    assert {item["classification"] for item in document["items"]} == {"baseline"}
    assert "Dear Platform abuse team" in document["notice"]["body"]
    assert "media" not in json.dumps(document)  # no media, no hashes
    notice = session.get(Notice, notice_id)
    assert notice is not None
    assert (notice.state, notice.channel, notice.sent_at) == (
        NoticeState.sent,
        NoticeChannel.webhook,
        at,
    )


# The command line --------------------------------------------------------------------------


def test_template_set_and_show_on_the_command_line(committed: Engine, tmp_path: Any) -> None:
    with session_scope() as session:
        registry.add_partner(
            session,
            registry.parse_spec(
                {"name": "Host A", "kind": "hosting_provider", "asns": [64500], "email": "a@a.test"}
            ),
            now=utcnow(),
            cipher=registry.partner_cipher(),
        )
    runner = CliRunner()
    shipped = runner.invoke(partners_app, ["template", "show", "Host A", "--lang", "uk"])
    assert shipped.exit_code == 0, shipped.output
    assert shipped.stdout.startswith("Subject: ")
    assert "Шановна службо реагування на зловживання" in shipped.stdout

    path = tmp_path / "uk.txt"
    path.write_text("Subject: Видаліть {{ items|length }}\n\n{{ contact.name }}\n", "utf-8")
    done = runner.invoke(
        partners_app, ["template", "set", "Host A", "--lang", "uk", "--file", str(path)]
    )
    assert done.exit_code == 0, done.output
    shown = runner.invoke(partners_app, ["template", "show", "Host A", "--lang", "uk"])
    assert shown.stdout == "Subject: Видаліть {{ items|length }}\n\n{{ contact.name }}\n"
    # Other contacts keep the shipped text.
    default = runner.invoke(partners_app, ["template", "show", "--lang", "uk"])
    assert "Шановна службо реагування на зловживання" in default.stdout

    path.write_text("Subject: {{ missing }}\n\nbody\n", "utf-8")
    refused = runner.invoke(
        partners_app, ["template", "set", "Host A", "--lang", "uk", "--file", str(path)]
    )
    assert refused.exit_code == 1
    assert "does not render" in refused.output
    with session_scope() as session:
        events = session.execute(
            select(func.count())
            .select_from(AuditEvent)
            .where(col(AuditEvent.action) == "notice_template_set")
        ).scalar_one()
    assert events >= 1


# The partner API's body cap ----------------------------------------------------------------


def test_500_urls_fit_the_partner_api_and_40_kib_is_still_refused_elsewhere(
    client: Any,
) -> None:
    from tests.partners.test_api import Caller

    caller = Caller(client, "hotline-pl")
    reports = [
        {"url": f"https://bulk-{n}.example.com/some/longer/path/to/a/gallery/{n:04d}.html",
         "reference": f"pl-{n}"}
        for n in range(500)
    ]  # fmt: skip
    body = json.dumps({"reports": reports}).encode()
    assert len(body) > 40 * 1024
    response = caller.post("/reports", {"reports": reports})
    assert response.status_code == 200, response.text
    assert sum(r["accepted"] for r in response.json()["results"]) == 500

    public = client.post(
        "/api/v1/reports",
        content=b'{"url": "https://example.com/", "description": "' + b"x" * 40960 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert (public.status_code, public.json()["code"]) == (413, "payload_too_large")


# In a real worker --------------------------------------------------------------------------


@pytest.mark.worker
def test_a_worker_retries_an_smtp_failure_through_celery_and_sends_once(
    start_worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    server = SmtpServer(port=free_port(), inbox=Inbox())  # down until the first attempt failed
    with session_scope() as session:
        add(session, name="Host A", kind="hosting_provider", asns=[64500],
            email="abuse@host-a.test", languages=["en"])  # fmt: skip
        target = confirm(session, utcnow())
        target_url = target.canonical_url
    start_worker(
        concurrency=1,
        home_country="UA",
        notice_window_minutes="0",
        smtp_host="127.0.0.1",
        smtp_port=str(server.port),
        smtp_security="none",
        smtp_from="notices@hotline.test",
        delivery_retry_base_seconds="1",
    )
    with session_scope() as session:
        enqueue(session, "partners.sweep_notices")  # as beat does

    def notice() -> Notice | None:
        with session_scope() as session:
            return session.execute(select(Notice)).scalar_one_or_none()

    failed = wait_for(lambda: (n := notice()) and n.last_error == "smtp_unavailable" and n)
    assert failed.state is NoticeState.sending
    server.start()
    try:
        sent = wait_for(lambda: (n := notice()) and n.state is NoticeState.sent and n)
    finally:
        server.stop()
    ((recipients, message),) = server.inbox.accepted
    assert recipients == ["abuse@host-a.test"]
    assert target_url in text(message)
    assert sent.last_error is None
