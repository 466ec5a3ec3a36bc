"""Notice and takedown: notices to hosting providers' abuse contacts, by e-mail or webhook.

The life of a notice (docs/notices.md):

1. Routing makes a ``notice`` forwarding per confirmed target hosted at home (rule
   ``home.hosting_provider``), held for the law-enforcement hold. Once it is ``pending``
   (hold ended, or none), `collect` puts it in the contact's open notice, or opens one
   that collects for the window (``send_after``).
2. When the window has closed, `send_due` looks the hosting of every URL up again (DNS
   now, then the hosting database): a site that moved to another provider or country is
   taken out, its forwarding ``superseded``, and the target routed anew. What is left
   goes out as one message: by webhook (a ``Delivery`` of the notice, signed and retried
   by ``partners.delivery``) or by e-mail (``partners.send_notice``, SMTP, retried by
   Celery; its Message-ID is the same on every attempt).
3. While a URL is online (``Target.removed_at`` empty), `repeat_due` opens a re-notice
   ``repeat_every`` after the last one, up to ``max_repeats`` times.

Invariants: a notice names the URLs, their ICCAM classification, when they were
confirmed and a reference; never anything of a reporter and never content (no media,
no hashes). Texts come from templates (editable per contact and language) rendered in
Jinja's sandbox. Logs, error codes and audit events carry ids only. Nothing here
commits; task messages are buffered until the commit.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import smtplib
import ssl
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import SecretStr
from sqlalchemy import exists, select
from sqlmodel import Session, col

from hotline import audit
from hotline.db import session_scope
from hotline.models import AuditEvent
from hotline.queue import enqueue
from hotline.settings import Settings
from partners import routing
from partners.errors import InvalidNoticeTemplate
from partners.models import (
    Delivery,
    DeliveryState,
    Forwarding,
    ForwardingKind,
    ForwardingState,
    Notice,
    NoticeChannel,
    NoticeItem,
    NoticeState,
    NoticeTemplate,
    Partner,
    PartnerAction,
    PartnerKind,
    PartnerLanguage,
)
from reporting.models import Target, TargetStatus
from triage.fetcher import Resolver, system_resolver
from triage.hosting import Hosting, HostingLookup, get_hosting_lookup
from triage.models import ILLEGAL, Assessment, Classification

SEND_NOTICE_TASK = "partners.send_notice"
EVENT = "notice"
SCHEMA_ID = "https://hotline.example/schemas/notice/v1"
TEMPLATE_DIR = Path(__file__).parent / "notice_templates"
SHIPPED_LANGUAGES = ("en", "uk")
LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
DUE_SLACK = dt.timedelta(seconds=2)
# Forwardings that are still to be noticed (again).
NOTICEABLE = frozenset(
    {ForwardingState.pending, ForwardingState.delivered, ForwardingState.acknowledged}
)
# What a contact answered that ends the re-notices.
SETTLED = frozenset(
    {
        PartnerAction.content_removed,
        PartnerAction.content_unavailable,
        PartnerAction.moved,
        PartnerAction.not_illegal,
    }
)
log = logging.getLogger("hotline.partners.notices")

Units = Callable[[], AbstractContextManager[Session]]
HostLookup = Callable[[str], Hosting | None]
"""Where a host name is hosted now; None when that cannot be told (DNS failed)."""


# Settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoticePolicy:
    window: dt.timedelta = dt.timedelta(minutes=15)
    repeat_every: dt.timedelta = dt.timedelta(hours=24)
    max_repeats: int = 6
    hotline_name: str = "Hotline"
    home_country: str = "UA"
    default_language: str = "en"
    # An e-mail attempt not recorded by then (its worker died) is re-sent by the sweep.
    lease: dt.timedelta = dt.timedelta(minutes=2)
    overdue: dt.timedelta = dt.timedelta(minutes=5)

    @classmethod
    def from_settings(cls, settings: Settings) -> NoticePolicy:
        return cls(
            window=dt.timedelta(minutes=settings.notice_window_minutes),
            repeat_every=dt.timedelta(hours=settings.notice_repeat_hours),
            max_repeats=settings.notice_max_repeats,
            hotline_name=settings.site_name,
            home_country=settings.home_country,
            default_language=settings.default_language,
            lease=dt.timedelta(seconds=settings.smtp_timeout_seconds + 60),
            overdue=dt.timedelta(seconds=settings.delivery_sweep_after_seconds),
        )


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 587
    security: str = "starttls"  # "starttls", "ssl" or "none"
    user: str = ""
    password: SecretStr = field(default=SecretStr(""), repr=False)
    sender: str = "hotline@localhost"
    timeout: float = 30

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            user=settings.smtp_user,
            password=settings.smtp_password,
            sender=settings.smtp_from,
            timeout=settings.smtp_timeout_seconds,
        )


def dns_lookup(
    resolver: Resolver = system_resolver, hosting: HostingLookup | None = None
) -> HostLookup:
    """Look a host up as the sweep does before sending: DNS now, then the hosting
    database for the first address."""

    def lookup(host: str) -> Hosting | None:
        try:
            addresses = list(resolver(host, 443))
        except (OSError, UnicodeError):
            return None
        if not addresses:
            return None
        try:
            return (hosting or get_hosting_lookup()).lookup(addresses[0])
        except ValueError:
            return None

    return lookup


# Templates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateText:
    language: str
    subject: str
    body: str
    source: str  # "partner" (the contact's own), "default" (the hotline's), "shipped"


def parse_template(text: str) -> tuple[str, str]:
    """A template file: ``Subject: ...`` on the first line, a blank line, the body."""
    first, _, rest = text.lstrip("\ufeff").partition("\n")
    if not first.lower().startswith("subject:"):
        raise InvalidNoticeTemplate("The first line of a notice template is 'Subject: ...'.")
    subject = first[len("subject:") :].strip()
    body = rest[1:] if rest.startswith("\n") else rest
    if not subject or not body.strip():
        raise InvalidNoticeTemplate("A notice template needs a subject and a body.")
    return subject, body


def format_template(template: TemplateText) -> str:
    return f"Subject: {template.subject}\n\n{template.body}"


def check_language(language: str) -> str:
    if not LANGUAGE.match(language):
        raise InvalidNoticeTemplate("The language is a BCP 47 tag such as 'uk' or 'en'.")
    return language


@functools.cache
def shipped(language: str, folder: str = "") -> TemplateText | None:
    """The text shipped with the hotline in ``language``, if there is one: a notice's,
    or from ``folder`` (``retraction``: a withdrawal's)."""
    if language not in SHIPPED_LANGUAGES:
        return None
    path = TEMPLATE_DIR / folder / f"{language}.txt"
    subject, body = parse_template(path.read_text("utf-8"))
    return TemplateText(language, subject, body, "shipped")


@functools.cache
def _environment() -> SandboxedEnvironment:
    # Plain text: no HTML escaping; a missing variable is an error, not an empty string.
    return SandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )


def _candidates(languages: Sequence[str], fallback: str) -> list[str]:
    wanted: list[str] = []
    for language in [*languages, fallback, "en"]:
        for tag in (language, language.split("-")[0]):
            if tag and tag not in wanted:
                wanted.append(tag)
    return wanted


def choose_template(
    session: Session, partner_id: int | None, languages: Sequence[str], *, fallback: str = "en"
) -> TemplateText:
    """The template for a contact reading ``languages`` (preferred first): for the first
    language that has one, the contact's own, else the hotline's default, else the shipped
    one; after the contact's languages, ``fallback`` and English."""
    rows = session.execute(
        select(NoticeTemplate).where(
            (col(NoticeTemplate.partner_id) == partner_id)
            | col(NoticeTemplate.partner_id).is_(None)
        )
    ).scalars()
    own: dict[str, NoticeTemplate] = {}
    default: dict[str, NoticeTemplate] = {}
    for row in rows:
        (default if row.partner_id is None else own)[row.language] = row
    for language in _candidates(languages, fallback):
        if partner_id is not None and language in own:
            row = own[language]
            return TemplateText(language, row.subject, row.body, "partner")
        if language in default:
            row = default[language]
            return TemplateText(language, row.subject, row.body, "default")
        found = shipped(language)
        if found is not None:
            return found
    raise InvalidNoticeTemplate("No notice template at all.")  # pragma: no cover - en ships


def render(template: TemplateText, context: dict[str, Any]) -> tuple[str, str]:
    """Subject (one line) and body of a template over a notice's context."""
    environment = _environment()
    try:
        subject = environment.from_string(template.subject).render(context)
        body = environment.from_string(template.body).render(context)
    except jinja2.TemplateError as exc:
        raise InvalidNoticeTemplate(
            f"The notice template does not render: {type(exc).__name__}: {exc.message}"
        ) from None
    return " ".join(subject.split()), body


def sample_context(policy: NoticePolicy) -> dict[str, Any]:
    """A context of made-up values, to check a template before it is stored."""
    item = {
        "url": "http://www.example.test/gallery/1.html",
        "host": "www.example.test",
        "registered_domain": "example.test",
        "reference": f"{policy.home_country}-F1",
        "forwarding_id": 1,
        "classification": "baseline",
        "confirmed_at": "2026-01-01 10:00 UTC",
        "hosting": {"ip": "192.0.2.10", "country": policy.home_country, "org": "Example"},
    }
    return {
        "hotline": {"name": policy.hotline_name, "country": policy.home_country},
        "contact": {"name": "Example Hosting"},
        "notice": {
            "id": 1,
            "reference": f"{policy.home_country}-N1",
            "repeat": 1,
            "first_sent": "2026-01-01 10:15 UTC",
            "created": "2026-01-02 10:15 UTC",
            "language": "en",
        },
        "items": [item, {**item, "reference": f"{policy.home_country}-F2", "forwarding_id": 2}],
    }


def set_template(
    session: Session,
    partner: Partner | None,
    language: str,
    text: str,
    *,
    now: dt.datetime,
    policy: NoticePolicy,
    actor: str = "system",
    actor_id: int | None = None,
) -> NoticeTemplate:
    """Store the template of a contact (or the hotline's default, ``partner`` None) in a
    language, after checking that it renders; audited."""
    check_language(language)
    subject, body = parse_template(text)
    render(TemplateText(language, subject, body, "new"), sample_context(policy))
    partner_id = partner.id if partner is not None else None
    row = session.execute(
        select(NoticeTemplate).where(
            col(NoticeTemplate.partner_id).is_(None)
            if partner_id is None
            else col(NoticeTemplate.partner_id) == partner_id,
            col(NoticeTemplate.language) == language,
        )
    ).scalar_one_or_none()
    if row is None:
        row = NoticeTemplate(partner_id=partner_id, language=language, subject="", body="")
    row.subject, row.body, row.updated_at = subject, body, now
    session.add(row)
    session.flush()
    audit.record(
        session,
        action="notice_template_set",
        actor=actor,
        actor_id=actor_id,
        object_type="partner" if partner_id is not None else "notice_template",
        object_id=partner_id if partner_id is not None else row.id,
        details={"language": language, "template_id": row.id},
        now=now,
    )
    return row


def show_template(
    session: Session, partner: Partner | None, language: str, *, fallback: str = "en"
) -> TemplateText:
    """The template a notice in ``language`` would use for the contact (or by default)."""
    check_language(language)
    return choose_template(
        session, partner.id if partner is not None else None, [language], fallback=fallback
    )


def partner_languages(session: Session, partner_id: int) -> list[str]:
    return list(
        session.execute(
            select(col(PartnerLanguage.language))
            .where(col(PartnerLanguage.partner_id) == partner_id)
            .order_by(col(PartnerLanguage.position))
        ).scalars()
    )


# What a notice says ----------------------------------------------------------------------


def _when(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _items(session: Session, notice_id: int) -> list[tuple[NoticeItem, Forwarding, Target]]:
    rows = session.execute(
        select(NoticeItem, Forwarding, Target)
        .join(Forwarding, col(Forwarding.id) == col(NoticeItem.forwarding_id))
        .join(Target, col(Target.id) == col(Forwarding.target_id))
        .where(col(NoticeItem.notice_id) == notice_id)
        .order_by(col(Forwarding.id))
    ).all()
    return [(item, forwarding, target) for item, forwarding, target in rows]


# Forwardings a notice no longer names when it goes out (again): the verdict was reversed,
# or the site moved and was routed anew.
WITHDRAWN = frozenset({ForwardingState.retracted, ForwardingState.superseded})


class NothingToNotice(Exception):
    """Every URL of the notice was withdrawn before it went out: nothing to send."""


def _named(session: Session, notice: Notice) -> list[tuple[NoticeItem, Forwarding, Target]]:
    """The items a notice names when it is sent: a withdrawal names its own; a notice,
    those not withdrawn meanwhile (an attempt retried after a reversal must not call
    the URL abuse material again)."""
    rows = _items(session, notice.id or 0)
    if _withdraws(rows):
        return rows
    return [row for row in rows if row[1].state not in WITHDRAWN]


def _withdraws(rows: Sequence[tuple[NoticeItem, Forwarding, Target]]) -> bool:
    """Whether a notice of these items withdraws earlier ones (retraction forwardings)."""
    return bool(rows) and all(f.kind is ForwardingKind.retraction for _, f, _ in rows)


def _verdicts(
    session: Session, target_ids: Sequence[int]
) -> dict[int, tuple[str, dt.datetime | None]]:
    """Per target: the ICCAM classification of its illegal media (``baseline`` when any
    is, else ``national``) and when it was confirmed (the latest such verdict)."""
    found: dict[int, tuple[str, dt.datetime | None]] = {}
    rows = session.execute(
        select(
            col(Assessment.target_id),
            col(Assessment.classification),
            col(Assessment.created_at),
        ).where(
            col(Assessment.target_id).in_(target_ids),
            col(Assessment.current).is_(True),
            col(Assessment.classification).in_([c.value for c in ILLEGAL]),
        )
    ).all()
    for target_id, classification, created_at in rows:
        before, at = found.get(target_id, (Classification.national.value, None))
        strongest = (
            Classification.baseline.value
            if Classification.baseline.value in (before, Classification(classification).value)
            else Classification.national.value
        )
        found[target_id] = (strongest, max(filter(None, (at, created_at)), default=None))
    return found


def _chain(session: Session, notice: Notice) -> tuple[int, dt.datetime | None]:
    """How many notices this one repeats, and when the first of them was sent."""
    repeat, first = 0, notice
    while first.repeats_id is not None and repeat < 1000:
        earlier = session.get(Notice, first.repeats_id)
        if earlier is None:
            break
        repeat, first = repeat + 1, earlier
    return repeat, first.sent_at if repeat else None


def notice_context(
    session: Session, notice: Notice, partner: Partner, *, name: str, country: str
) -> dict[str, Any]:
    """The variables of a notice's templates (docs/notices.md)."""
    rows = _named(session, notice)
    verdicts = _verdicts(session, [target.id for _, _, target in rows if target.id is not None])
    repeat, first_sent = _chain(session, notice)
    items = []
    for _, forwarding, target in rows:
        classification, confirmed = verdicts.get(target.id or 0, ("national", None))
        items.append(
            {
                "url": target.canonical_url,
                "host": target.host,
                "registered_domain": target.registered_domain,
                "reference": f"{country}-F{forwarding.id}",
                "forwarding_id": forwarding.id,
                "classification": classification,
                "confirmed_at": _when(confirmed or forwarding.created_at),
                "hosting": {
                    "ip": target.hosting_ip,
                    "country": target.hosting_country,
                    "org": target.hosting_org,
                },
            }
        )
    return _context(
        notice, partner, name, country, items, repeat=repeat, first_sent=_when(first_sent)
    )


def _context(
    notice: Notice,
    partner: Partner,
    name: str,
    country: str,
    items: list[dict[str, Any]],
    **about_notice: Any,
) -> dict[str, Any]:
    """What every notice text knows: the sender, the contact, the notice and its items."""
    return {
        "hotline": {"name": name, "country": country},
        "contact": {"name": partner.name},
        "notice": {
            "id": notice.id,
            "reference": f"{country}-N{notice.id}",
            **about_notice,
            "created": _when(notice.created_at),
            "language": notice.language,
        },
        "items": items,
    }


def is_retraction(session: Session, notice: Notice) -> bool:
    """Whether the notice withdraws earlier ones (its items are retraction forwardings)."""
    return _withdraws(_items(session, notice.id or 0))


def retraction_language(languages: Sequence[str], fallback: str) -> str:
    """The first of the contact's languages (then ``fallback``, then English) with a
    shipped retraction text."""
    for language in _candidates(languages, fallback):
        if shipped(language, "retraction") is not None:
            return language
    return "en"


def retraction_context(
    session: Session, notice: Notice, partner: Partner, *, name: str, country: str
) -> dict[str, Any]:
    """The variables of a retraction's text: each URL with the reference it had in the
    notice that named it (and that notice's reference and date)."""
    items = []
    for _, retraction, target in _items(session, notice.id or 0):
        original = retraction.retracts_id
        carried = session.execute(
            select(Notice)
            .join(NoticeItem, col(NoticeItem.notice_id) == col(Notice.id))
            .where(
                col(NoticeItem.forwarding_id) == original,
                col(Notice.state).in_([NoticeState.sending, NoticeState.sent]),
            )
            .order_by(col(Notice.id))
        ).scalars()
        first = next(iter(carried), None)
        items.append(
            {
                "url": target.canonical_url,
                "host": target.host,
                "reference": f"{country}-F{original}",
                "forwarding_id": original,
                "notice_reference": f"{country}-N{first.id}" if first is not None else None,
                "notice_sent": _when(first.sent_at) if first is not None else "",
            }
        )
    return _context(notice, partner, name, country, items) | {
        # The notices withdrawn, as the contact knows them.
        "withdrawn": list(
            dict.fromkeys(i["notice_reference"] for i in items if i["notice_reference"])
        ),
    }


def render_notice(
    session: Session, notice: Notice, partner: Partner, *, name: str, country: str
) -> tuple[str, str]:
    if is_retraction(session, notice):
        text = shipped(notice.language or "en", "retraction") or shipped("en", "retraction")
        if text is None:  # pragma: no cover - shipped with the package
            raise InvalidNoticeTemplate("The retraction text is missing.")
        context = retraction_context(session, notice, partner, name=name, country=country)
        return render(text, context)
    template = choose_template(
        session,
        partner.id,
        [notice.language] if notice.language else partner_languages(session, partner.id or 0),
    )
    context = notice_context(session, notice, partner, name=name, country=country)
    return render(template, context)


def notice_document(session: Session, notice_id: int, *, sender: dict[str, str]) -> dict[str, Any]:
    """The JSON document of a webhook notice (docs/notices.md): the rendered text and
    each URL with its reference, classification and hosting; no media, no hashes."""
    notice = session.get(Notice, notice_id)
    partner = session.get(Partner, notice.partner_id) if notice is not None else None
    if notice is None or partner is None:
        raise InvalidNoticeTemplate("No such notice.")  # pragma: no cover - a foreign key
    name, country = sender["name"], sender["country"]
    rows = _named(session, notice)
    if not rows:
        raise NothingToNotice()
    context = notice_context(session, notice, partner, name=name, country=country)
    subject, body = render_notice(session, notice, partner, name=name, country=country)
    verdicts = _verdicts(session, [target.id for _, _, target in rows if target.id is not None])
    return {
        "$schema": SCHEMA_ID,
        "version": 1,
        "type": EVENT,
        "sender": sender,
        "notice": {
            "id": notice.id,
            "reference": context["notice"]["reference"],
            "repeat": context["notice"]["repeat"],
            "repeats": notice.repeats_id,
            "language": notice.language,
            "created_at": _iso(notice.created_at),
            "subject": subject,
            "body": body,
        },
        "items": [
            {
                "forwarding_id": forwarding.id,
                "reference": f"{country}-F{forwarding.id}",
                "url": target.canonical_url,
                "host": target.host,
                "registered_domain": target.registered_domain,
                "classification": verdicts.get(target.id or 0, ("national", None))[0],
                "confirmed_at": _iso(
                    verdicts.get(target.id or 0, ("", None))[1] or forwarding.created_at
                ),
                "hosting": {
                    "ip": target.hosting_ip,
                    "country": target.hosting_country,
                    "asn": target.hosting_asn,
                    "org": target.hosting_org,
                },
            }
            for _, forwarding, target in rows
        ],
    }


# Collecting, repeating, sending ----------------------------------------------------------


def _channel(partner: Partner) -> NoticeChannel | None:
    if partner.webhook_url:
        return NoticeChannel.webhook
    if partner.email:
        return NoticeChannel.email
    return None


def _online() -> Any:
    return col(Target.removed_at).is_(None) & (col(Target.status) != TargetStatus.removed)


def _open_notice(
    session: Session,
    partner: Partner,
    channel: NoticeChannel,
    *,
    now: dt.datetime,
    send_after: dt.datetime,
    repeats_id: int | None = None,
    state: NoticeState = NoticeState.collecting,
    language: str | None = None,
) -> Notice:
    notice = Notice(
        partner_id=partner.id or 0,
        channel=channel,
        state=state,
        language=language,
        repeats_id=repeats_id,
        created_at=now,
        send_after=send_after,
    )
    session.add(notice)
    session.flush()
    return notice


def collect(session: Session, *, now: dt.datetime, policy: NoticePolicy) -> list[int]:
    """Put every notice forwarding that is due (pending, not in a notice yet) in its
    contact's open notice, or open one collecting for the window. Returns the notice ids."""
    carried = exists().where(col(NoticeItem.forwarding_id) == col(Forwarding.id))
    rows = session.execute(
        select(Forwarding, Partner)
        .join(Partner, col(Partner.id) == col(Forwarding.partner_id))
        .join(Target, col(Target.id) == col(Forwarding.target_id))
        .where(
            col(Forwarding.kind) == ForwardingKind.notice,
            col(Forwarding.state) == ForwardingState.pending,
            col(Partner.active).is_(True),
            _online(),
            ~carried,
        )
        .order_by(col(Forwarding.id))
        .with_for_update(skip_locked=True, of=Forwarding)
    ).all()
    opened: dict[int, Notice] = {}
    for forwarding, partner in rows:
        channel = _channel(partner)
        if channel is None or partner.id is None:
            continue
        notice = opened.get(partner.id)
        if notice is None:
            notice = session.execute(
                select(Notice)
                .where(
                    col(Notice.partner_id) == partner.id,
                    col(Notice.state) == NoticeState.collecting,
                    col(Notice.repeats_id).is_(None),
                    col(Notice.send_after) > now,  # its window is still open
                )
                .order_by(col(Notice.id).desc())
            ).scalar_one_or_none() or _open_notice(
                session, partner, channel, now=now, send_after=now + policy.window
            )
            opened[partner.id] = notice
        session.add(NoticeItem(notice_id=notice.id or 0, forwarding_id=forwarding.id or 0))
    session.flush()
    return sorted(n.id for n in opened.values() if n.id is not None)


def repeat_due(session: Session, *, now: dt.datetime, policy: NoticePolicy) -> list[int]:
    """Open a re-notice per contact for the URLs still online ``repeat_every`` after the
    last notice that named them, while they were noticed at most ``max_repeats`` times
    again. Returns the new notice ids."""
    if policy.max_repeats <= 0:
        return []
    rows = session.execute(
        select(Forwarding, Partner, Notice)
        .join(Partner, col(Partner.id) == col(Forwarding.partner_id))
        .join(Target, col(Target.id) == col(Forwarding.target_id))
        .join(NoticeItem, col(NoticeItem.forwarding_id) == col(Forwarding.id))
        .join(Notice, col(Notice.id) == col(NoticeItem.notice_id))
        .where(
            col(Forwarding.kind) == ForwardingKind.notice,
            col(Forwarding.state).in_([ForwardingState.delivered, ForwardingState.acknowledged]),
            col(Forwarding.partner_status).is_(None)
            | col(Forwarding.partner_status).not_in([s.value for s in SETTLED]),
            col(Partner.active).is_(True),
            _online(),
        )
        .order_by(col(Forwarding.id), col(Notice.id))
    ).all()
    notices: dict[int, list[Notice]] = defaultdict(list)
    forwardings: dict[int, tuple[Forwarding, Partner]] = {}
    for forwarding, partner, notice in rows:
        notices[forwarding.id].append(notice)
        forwardings[forwarding.id] = (forwarding, partner)
    due: dict[int, list[tuple[Forwarding, Notice]]] = defaultdict(list)
    for forwarding_id, carried in notices.items():
        if any(n.state in (NoticeState.collecting, NoticeState.sending) for n in carried):
            continue
        sent = [n for n in carried if n.state is NoticeState.sent and n.sent_at is not None]
        if not sent or len(sent) > policy.max_repeats:
            continue
        last = max(sent, key=lambda n: (n.sent_at, n.id or 0))
        if last.sent_at is not None and last.sent_at <= now - policy.repeat_every:
            forwarding, partner = forwardings[forwarding_id]
            due[partner.id or 0].append((forwarding, last))
    made = []
    for partner_id, entries in due.items():
        partner = forwardings[entries[0][0].id or 0][1]
        channel = _channel(partner)
        if channel is None:
            continue
        latest = max((n for _, n in entries), key=lambda n: n.id or 0)
        notice = _open_notice(
            session, partner, channel, now=now, send_after=now, repeats_id=latest.id
        )
        for forwarding, _ in entries:
            session.add(NoticeItem(notice_id=notice.id or 0, forwarding_id=forwarding.id or 0))
        log.info(
            "notice %s: re-notice to partner %s (%d URLs)", notice.id, partner_id, len(entries)
        )
        made.append(notice.id or 0)
    session.flush()
    return made


def _corrected(session: Session, target: Target) -> bool:
    """Whether staff corrected the target's hosting country (audited ``hosting_corrected``)."""
    return bool(
        session.execute(
            select(
                exists().where(
                    col(AuditEvent.action) == audit.Action.hosting_corrected,
                    col(AuditEvent.object_type) == "target",
                    col(AuditEvent.object_id) == str(target.id),
                )
            )
        ).scalar()
    )


def _moved(
    session: Session,
    forwarding: Forwarding,
    target: Target,
    *,
    lookup: HostLookup,
    routing_policy: routing.RoutingPolicy,
    now: dt.datetime,
) -> bool:
    """Look the target's hosting up again; if it moved to another country or provider,
    record where, supersede the forwarding, route the target anew and say so."""
    where = lookup(target.host)
    if where is None:
        return False
    if (where.ip is None or where.ip == target.hosting_ip) and _corrected(session, target):
        # Staff corrected the hosting of this very address: the database's answer for it
        # is what they overruled, not a move.
        return False
    changed = (
        (where.country is not None and where.country != target.hosting_country)
        or (where.asn is not None and where.asn != target.hosting_asn)
        or (
            where.asn is None
            and where.org is not None
            and target.hosting_org is not None
            and where.org != target.hosting_org
        )
    )
    if not changed:
        return False
    before = target.hosting_country
    target.hosting_ip = where.ip
    target.hosting_country = where.country or target.hosting_country
    target.hosting_asn = where.asn
    target.hosting_org = where.org
    session.add(target)
    if target.hosting_country == routing_policy.home_country:
        contact = routing.hosting_contact(session, target)
        if contact is not None and contact.id == forwarding.partner_id:
            return False  # another address of the same provider: notice it all the same
    routing.supersede(
        session, forwarding, target, reason="hosting_moved", now=now, country_before=before
    )
    session.flush()
    routing.route_target(session, target.id or 0, now=now, policy=routing_policy)
    log.info(
        "forwarding %s (target %s): hosting moved before the notice; routed anew",
        forwarding.id,
        target.id,
    )
    return True


def send_due(
    session: Session,
    *,
    now: dt.datetime,
    policy: NoticePolicy,
    lookup: HostLookup,
    routing_policy: routing.RoutingPolicy,
) -> list[int]:
    """Send the notices whose window has closed: each URL's hosting looked up again
    (moved ones routed anew), offline or withdrawn ones dropped, the rest in one message
    by webhook or e-mail (sent after the commit). Returns the ids of notices sent."""
    due = session.execute(
        select(Notice)
        .where(col(Notice.state) == NoticeState.collecting, col(Notice.send_after) <= now)
        .order_by(col(Notice.id))
        .with_for_update(skip_locked=True)
    ).scalars()
    sent = []
    for notice in list(due):
        kept = 0
        for item, forwarding, target in _items(session, notice.id or 0):
            gone = (
                target.removed_at is not None
                or target.status is TargetStatus.removed
                or forwarding.state not in NOTICEABLE
            )
            if gone or _moved(
                session,
                forwarding,
                target,
                lookup=lookup,
                routing_policy=routing_policy,
                now=now,
            ):
                session.delete(item)
            else:
                kept += 1
        session.flush()
        if not kept:
            # Nothing left to say: the notice never existed for anyone outside.
            session.delete(notice)
            continue
        partner = session.get(Partner, notice.partner_id)
        channel = _channel(partner) if partner is not None else None
        if partner is None or not partner.active or channel is None:
            _fail(session, notice, "partner_disabled" if channel else "no_endpoint", now=now)
            continue
        notice.channel = channel
        notice.language = choose_template(
            session,
            partner.id,
            partner_languages(session, partner.id or 0),
            fallback=policy.default_language,
        ).language
        notice.state = NoticeState.sending
        notice.send_after = now
        session.add(notice)
        session.flush()
        if channel is NoticeChannel.webhook:
            delivery = Delivery(
                notice_id=notice.id,
                partner_id=partner.id or 0,
                webhook_id=routing.new_webhook_id(),
                event=EVENT,
                state=DeliveryState.pending,
                next_attempt_at=now,
                created_at=now,
            )
            session.add(delivery)
            session.flush()
            enqueue(session, routing.DELIVER_TASK, delivery_id=delivery.id)
        else:
            enqueue(session, SEND_NOTICE_TASK, notice_id=notice.id)
        sent.append(notice.id or 0)
    return sent


def send_retraction(
    session: Session,
    retraction: Forwarding,
    partner: Partner,
    *,
    now: dt.datetime,
    default_language: str = "en",
) -> Notice | None:
    """Withdraw by e-mail what an e-mail-only contact was sent: a notice of its own for
    the retraction forwarding, sent at once (no window, no hosting look-up, never
    repeated) by ``partners.send_notice``, with its retries and lease. None for a
    contact with a webhook (the retraction is delivered there), without an address, or
    not a hosting provider's abuse contact (only those are sent e-mail)."""
    if (
        partner.kind is not PartnerKind.hosting_provider
        or partner.webhook_url
        or not partner.email
        or partner.id is None
        or retraction.id is None
    ):
        return None
    language = retraction_language(
        partner_languages(session, partner.id), fallback=default_language
    )
    notice = _open_notice(
        session,
        partner,
        NoticeChannel.email,
        now=now,
        send_after=now,
        state=NoticeState.sending,
        language=language,
    )
    session.add(NoticeItem(notice_id=notice.id or 0, forwarding_id=retraction.id))
    session.flush()
    enqueue(session, SEND_NOTICE_TASK, notice_id=notice.id)
    log.info("notice %s: retraction to partner %s", notice.id, partner.id)
    return notice


def resend_lost(session: Session, *, now: dt.datetime, policy: NoticePolicy) -> int:
    """Hand over again the e-mail notices whose attempt is overdue (a lost message, a
    dead worker); webhook notices are the delivery sweep's."""
    rows = session.execute(
        select(Notice)
        .where(
            col(Notice.state) == NoticeState.sending,
            col(Notice.channel) == NoticeChannel.email,
            col(Notice.send_after) <= now - policy.overdue,
        )
        .with_for_update(skip_locked=True)
    ).scalars()
    count = 0
    for notice in rows:
        notice.send_after = now
        session.add(notice)
        enqueue(session, SEND_NOTICE_TASK, notice_id=notice.id)
        count += 1
    session.flush()
    return count


@dataclass(frozen=True)
class Swept:
    collected: list[int]
    repeated: list[int]
    sent: list[int]
    resent: int


def sweep(
    session: Session,
    *,
    now: dt.datetime,
    policy: NoticePolicy,
    lookup: HostLookup,
    routing_policy: routing.RoutingPolicy,
) -> Swept:
    """Beat: release ended holds, collect due notice forwardings, open re-notices, send
    the notices whose window closed, hand lost e-mail attempts over again."""
    routing.release_holds(session, now=now)
    collected = collect(session, now=now, policy=policy)
    repeated = repeat_due(session, now=now, policy=policy)
    sent = send_due(session, now=now, policy=policy, lookup=lookup, routing_policy=routing_policy)
    return Swept(collected, repeated, sent, resend_lost(session, now=now, policy=policy))


# The outcome -----------------------------------------------------------------------------


def mark_sent(session: Session, notice_id: int, *, now: dt.datetime) -> None:
    """The notice reached its contact: recorded, and its forwardings delivered."""
    notice = session.get(Notice, notice_id)
    if notice is None:
        return
    notice.state = NoticeState.sent
    notice.sent_at = now
    notice.last_error = None
    session.add(notice)
    items = _items(session, notice_id)
    for _, forwarding, _ in items:
        if forwarding.state in (ForwardingState.pending, ForwardingState.failed):
            forwarding.state = ForwardingState.delivered
            forwarding.delivered_at = now
            session.add(forwarding)
    log.info(
        "notice %s sent to partner %s by %s (%d URLs)",
        notice.id,
        notice.partner_id,
        notice.channel.value,
        len(items),
    )


def _fail(session: Session, notice: Notice, code: str, *, now: dt.datetime) -> None:
    notice.state = NoticeState.failed
    notice.last_error = code
    session.add(notice)
    for _, forwarding, _ in _items(session, notice.id or 0):
        if forwarding.state is ForwardingState.pending:
            forwarding.state = ForwardingState.failed
            session.add(forwarding)
    log.warning("notice %s to partner %s failed: %s", notice.id, notice.partner_id, code)


def mark_failed(session: Session, notice_id: int, code: str, *, now: dt.datetime) -> None:
    """The notice could not be sent (for good, or out of attempts)."""
    notice = session.get(Notice, notice_id)
    if notice is not None and notice.state is not NoticeState.sent:
        _fail(session, notice, code, now=now)


def mark_sending(session: Session, notice_id: int) -> None:
    """An admin redelivers the notice's delivery: it is under way again."""
    notice = session.get(Notice, notice_id)
    if notice is not None and notice.state is NoticeState.failed:
        notice.state = NoticeState.sending
        notice.last_error = None
        session.add(notice)


# E-mail ----------------------------------------------------------------------------------


def message_id(notice: Notice, sender: str) -> str:
    """The notice's Message-ID: the same on every attempt, so a mail system that got it
    twice can tell."""
    domain = sender.rpartition("@")[2] or "localhost"
    return f"<notice-{notice.id}.{int(notice.created_at.timestamp())}@{domain}>"


@dataclass(frozen=True)
class Mail:
    notice_id: int
    message: EmailMessage = field(repr=False)
    recipients: tuple[str, ...] = field(repr=False)


@dataclass(frozen=True)
class MailAnswer:
    error: str | None = None  # None: accepted by the server
    permanent: bool = False


@dataclass(frozen=True)
class MailVerdict:
    state: NoticeState | None  # None: no attempt made (not due, not this worker's)
    retry_in: float | None = None


MAIL_SKIPPED = MailVerdict(state=None)


def claim_email(
    session: Session,
    notice_id: int,
    *,
    now: dt.datetime,
    policy: NoticePolicy,
    smtp: SmtpConfig,
) -> Mail | MailVerdict:
    """Claim the next attempt of a due e-mail notice (locks its row) and build the
    message; or say why not."""
    notice = session.get(Notice, notice_id, with_for_update=True)
    if (
        notice is None
        or notice.state is not NoticeState.sending
        or notice.channel is not NoticeChannel.email
        or notice.send_after > now + DUE_SLACK
    ):
        return MAIL_SKIPPED
    partner = session.get(Partner, notice.partner_id)
    code = None
    if partner is None or not partner.active:
        code = "partner_disabled"
    elif not partner.email:
        code = "no_endpoint"
    if code is not None or partner is None or partner.email is None:
        _fail(session, notice, code or "no_endpoint", now=now)
        return MailVerdict(state=NoticeState.failed)
    if not _named(session, notice):
        _fail(session, notice, "withdrawn", now=now)
        return MailVerdict(state=NoticeState.failed)
    try:
        subject, body = render_notice(
            session, notice, partner, name=policy.hotline_name, country=policy.home_country
        )
    except InvalidNoticeTemplate:
        _fail(session, notice, "template_error", now=now)
        return MailVerdict(state=NoticeState.failed)
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = smtp.sender
    message["To"] = partner.email
    message["Message-ID"] = message_id(notice, smtp.sender)
    message["Date"] = format_datetime(notice.created_at.astimezone(dt.UTC))
    message["Auto-Submitted"] = "auto-generated"
    if notice.language:
        message["Content-Language"] = notice.language
    message.set_content(body)
    notice.send_after = now + policy.lease  # until recorded; then the sweep re-sends
    session.add(notice)
    session.flush()
    return Mail(notice_id=notice_id, message=message, recipients=(partner.email,))


def send_email(mail: Mail, smtp: SmtpConfig) -> MailAnswer:
    """One SMTP conversation. A 5xx answer is permanent; anything else is retried."""
    if not smtp.host:
        return MailAnswer("smtp_not_configured")
    context = ssl.create_default_context()
    try:
        client: smtplib.SMTP
        if smtp.security == "ssl":
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
        with client:
            if smtp.security == "starttls":
                client.starttls(context=context)
            if smtp.user:
                client.login(smtp.user, smtp.password.get_secret_value())
            client.send_message(mail.message, from_addr=smtp.sender, to_addrs=mail.recipients)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        return MailAnswer("recipient_refused", permanent=all(c >= 500 for c in codes))
    except smtplib.SMTPResponseException as exc:
        return MailAnswer(f"smtp_{exc.smtp_code}", permanent=exc.smtp_code >= 500)
    except smtplib.SMTPNotSupportedError:
        return MailAnswer("starttls_unsupported")
    except TimeoutError:
        return MailAnswer("timeout")
    except ssl.SSLError:
        return MailAnswer("tls_error")
    except (OSError, smtplib.SMTPException):
        return MailAnswer("smtp_unavailable")
    return MailAnswer()


def record_email(
    session: Session,
    notice_id: int,
    answer: MailAnswer,
    *,
    now: dt.datetime,
    attempt: int,
    max_attempts: int,
    delay: Callable[[int], float],
) -> MailVerdict:
    """Record an attempt: sent, failed for good, or to be retried after ``delay(attempt)``."""
    notice = session.get(Notice, notice_id, with_for_update=True)
    if notice is None or notice.state is not NoticeState.sending:
        return MAIL_SKIPPED
    if answer.error is None:
        mark_sent(session, notice_id, now=now)
        return MailVerdict(state=NoticeState.sent)
    if answer.permanent or attempt >= max_attempts:
        _fail(session, notice, answer.error, now=now)
        return MailVerdict(state=NoticeState.failed)
    wait = delay(attempt)
    notice.last_error = answer.error
    notice.send_after = now + dt.timedelta(seconds=wait)
    session.add(notice)
    log.info(
        "notice %s: attempt %d failed (%s), retry in %.0f s", notice_id, attempt, answer.error, wait
    )
    return MailVerdict(state=NoticeState.sending, retry_in=wait)


def attempt_email(
    notice_id: int,
    *,
    now: dt.datetime,
    policy: NoticePolicy,
    smtp: SmtpConfig,
    attempt: int,
    max_attempts: int,
    delay: Callable[[int], float],
    units: Units = session_scope,
) -> MailVerdict:
    """One attempt of an e-mail notice, as the task runs it: claim (committed), SMTP
    outside any transaction, record (committed)."""
    with units() as session:
        mail = claim_email(session, notice_id, now=now, policy=policy, smtp=smtp)
    if isinstance(mail, MailVerdict):
        return mail
    answer = send_email(mail, smtp)
    with units() as session:
        return record_email(
            session,
            notice_id,
            answer,
            now=now,
            attempt=attempt,
            max_attempts=max_attempts,
            delay=delay,
        )


# Listing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoticeRow:
    id: int
    partner_id: int
    channel: str
    state: str
    language: str | None
    repeats_id: int | None
    created_at: dt.datetime
    sent_at: dt.datetime | None
    last_error: str | None
    forwarding_ids: list[int]
    retraction: bool = False  # it withdraws earlier notices (``send_retraction``)


def notices_of(session: Session, *, target_id: int | None = None) -> list[NoticeRow]:
    """Notices (of one target, or all), oldest first, with the forwardings they carry."""
    query = (
        select(Notice, col(NoticeItem.forwarding_id), col(Forwarding.kind))
        .join(NoticeItem, col(NoticeItem.notice_id) == col(Notice.id))
        .join(Forwarding, col(Forwarding.id) == col(NoticeItem.forwarding_id))
    )
    if target_id is not None:
        query = query.where(col(Forwarding.target_id) == target_id)
    carried: dict[int, list[int]] = defaultdict(list)
    found: dict[int, Notice] = {}
    withdrawing: set[int] = set()
    for notice, forwarding_id, kind in session.execute(query.order_by(col(Notice.id))).all():
        found[notice.id] = notice
        carried[notice.id].append(forwarding_id)
        if kind is ForwardingKind.retraction:
            withdrawing.add(notice.id)
    return [
        NoticeRow(
            id=n.id or 0,
            partner_id=n.partner_id,
            channel=n.channel.value,
            state=n.state.value,
            language=n.language,
            repeats_id=n.repeats_id,
            created_at=n.created_at,
            sent_at=n.sent_at,
            last_error=n.last_error,
            forwarding_ids=sorted(carried[n.id or 0]),
            retraction=(n.id or 0) in withdrawing,
        )
        for n in found.values()
    ]
