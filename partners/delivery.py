"""Signed deliveries to partners' webhooks: the document, the signature, the attempts.

Each delivery is one HTTP POST of a versioned JSON document (docs/forwarding.md,
docs/forwarding.schema.json), signed under the Standard Webhooks scheme
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) with every valid signing
secret of the partner (two during a rotation, so a receiver holding either verifies).
A partner that issued us an API key (a peer hotline running this software, whose webhook
is its partner API) also gets ``Authorization: Bearer <key>``.

Invariants:

- The ``webhook-id`` is the delivery's and never changes, on retries or a redelivery:
  a receiver de-duplicates by it.
- Posts go through the guarded client (`triage.fetcher.Fetcher.post`): the address
  checks of every fetch, the connection pinned to a vetted address, no redirect
  followed. A 3xx is a failure; 410 disables the partner and alerts admins (an audit
  event and a log line naming the partner id, never the URL); other answers and
  timeouts are retried with exponential backoff and jitter (`RetryPolicy`), then the
  delivery is ``dead`` and listed for an admin to redeliver.
- An attempt is claimed in its own unit of work before the POST: the row lock and the
  due time make a duplicate message (a lost-and-swept one, a broker re-delivery) skip,
  and the claim moves the due time past a lease, so a worker dying mid-attempt leaves
  the delivery for the sweep. The HTTP request runs outside any transaction.
- Documents carry the target, hosting facts, media hashes and the classification;
  never anything of a reporter. URLs appear in the document only, never in a log line,
  an error code or an audit event.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import random
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlmodel import Session, col
from standardwebhooks import Webhook

from hotline import audit
from hotline.db import session_scope, utcnow
from hotline.queue import enqueue
from hotline.settings import Settings, get_settings
from partners import notices, peers, registry
from partners.errors import DeliveryNotFound, InvalidNoticeTemplate, NotRedeliverable
from partners.models import (
    Delivery,
    DeliveryState,
    Forwarding,
    ForwardingKind,
    ForwardingState,
    Partner,
    SecretPurpose,
)
from partners.routing import DELIVER_TASK, release_holds
from reporting.models import Target
from triage.fetcher import Fetcher, FetchError, FetchPolicy, PostResult
from triage.models import ILLEGAL, Assessment, Media, Sighting

SCHEMA_VERSION = 1
SCHEMA_ID = "https://hotline.example/schemas/forwarding/v1"
# Reasons of the guarded client that retrying cannot fix: the configuration must change.
PERMANENT = frozenset(
    {"blocked_address", "blocked_port", "invalid_url", "unsupported_scheme", "redirect_blocked"}
)
# A message arriving a little before its due time (clocks, rounding) still counts.
DUE_SLACK = dt.timedelta(seconds=2)
log = logging.getLogger("hotline.partners.delivery")

Units = Callable[[], AbstractContextManager[Session]]


# The schedule ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: the delay after the n-th failed attempt is
    ``base * 2**(n-1)`` capped at ``max_delay``, times a random factor in
    ``[1 - jitter, 1 + jitter]``; ``max_attempts`` attempts in all."""

    base: float = 60
    max_delay: float = 21600
    max_attempts: int = 16
    jitter: float = 0.25

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            base=settings.delivery_retry_base_seconds,
            max_delay=settings.delivery_retry_max_delay_seconds,
            max_attempts=settings.delivery_max_attempts,
        )

    def nominal(self, failed_attempts: int) -> float:
        return float(min(self.max_delay, self.base * 2 ** max(0, failed_attempts - 1)))

    def delay(self, failed_attempts: int, rng: random.Random) -> float:
        """Seconds to wait after ``failed_attempts`` attempts failed."""
        return self.nominal(failed_attempts) * rng.uniform(1 - self.jitter, 1 + self.jitter)

    def shortest_span(self) -> float:
        """The least time from the first attempt to the last, whatever the jitter."""
        return sum(self.nominal(n) for n in range(1, self.max_attempts)) * (1 - self.jitter)


# The document ----------------------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


CLASSIFICATION_FIELDS = (
    "classification",
    "age_group",
    "gender",
    "virtual",
    "child_modelling",
    "user_generated",
    "commerciality",
    "payment_method",
    "content_type",
    "site_type",
)


def _media(session: Session, target_id: int, *, withdrawn: bool = False) -> list[dict[str, Any]]:
    """The target's media assessed illegal, with hashes and the ICCAM classification; for
    a retraction (``withdrawn``), the media once assessed illegal with that withdrawn
    verdict (the newest illegal one), whose hashes the partner should take off its lists."""
    conditions = [
        col(Sighting.target_id) == target_id,
        col(Assessment.classification).in_([c.value for c in ILLEGAL]),
    ]
    if not withdrawn:
        conditions.append(col(Assessment.current).is_(True))
    rows = session.execute(
        select(Media, Assessment, Sighting)
        .join(Sighting, col(Sighting.media_id) == col(Media.id))
        .join(
            Assessment,
            (col(Assessment.media_id) == col(Media.id))
            & (col(Assessment.target_id) == col(Sighting.target_id)),
        )
        .where(*conditions)
        .order_by(col(Media.sha256), col(Assessment.id).desc())
    ).all()
    items = []
    seen: set[int | None] = set()
    for media, assessment, sighting in rows:
        if media.id in seen:
            continue
        seen.add(media.id)
        classification = {}
        for name in CLASSIFICATION_FIELDS:
            value = getattr(assessment, name)
            classification[name] = value.value if hasattr(value, "value") else value
        items.append(
            {
                "sha256": media.sha256,
                "sha1": media.sha1,
                "md5": media.md5,
                "phash": media.phash,
                "pdq": media.pdq,
                "pdq_quality": media.pdq_quality,
                "mime": media.mime,
                "kind": media.kind.value,
                "size": media.size,
                "width": media.width,
                "height": media.height,
                "url": sighting.media_url,
                "first_seen": _iso(sighting.first_seen_at),
                "classification": classification,
            }
        )
    return items


def build_document(
    session: Session, forwarding: Forwarding, *, sender: dict[str, str]
) -> dict[str, Any]:
    """The JSON document of a forwarding (docs/forwarding.schema.json)."""
    target = session.get(Target, forwarding.target_id)
    if target is None:  # pragma: no cover - a foreign key
        raise DeliveryNotFound()
    retraction = forwarding.kind is ForwardingKind.retraction
    document: dict[str, Any] = {
        "$schema": SCHEMA_ID,
        "version": SCHEMA_VERSION,
        "type": f"forwarding.{forwarding.kind.value}",
        "sender": sender,
        "forwarding": {
            "id": forwarding.id,
            "kind": forwarding.kind.value,
            "rule": forwarding.rule,
            "created_at": _iso(forwarding.created_at),
            "retracts": forwarding.retracts_id,
        },
        "target": {
            "id": target.id,
            "url": target.canonical_url,
            "host": target.host,
            "registered_domain": target.registered_domain,
            "first_seen": _iso(target.first_reported_at),
            "report_count": target.report_count,
            "hosting": {
                "ip": target.hosting_ip,
                "country": target.hosting_country,
                "asn": target.hosting_asn,
                "org": target.hosting_org,
            },
        },
        "media": _media(session, target.id, withdrawn=retraction) if target.id is not None else [],
    }
    if retraction:
        document["retraction"] = _retraction(session, forwarding)
    if forwarding.kind is ForwardingKind.status:
        document["status"] = _status(session, forwarding)
    return document


def _status(session: Session, forwarding: Forwarding) -> dict[str, Any]:
    """A status back to the peer hotline that sent us the target (partners.peers)."""
    now = peers.current_status(session, forwarding)
    if now is None:
        raise DeliveryNotFound("The peer's reference of this target is gone.")
    return {"status": now.status, "at": _iso(now.at), "note": None, "reference": now.reference}


def _retraction(session: Session, forwarding: Forwarding) -> dict[str, Any]:
    """What a retraction takes back: every forwarding of the target this partner got."""
    retracted = session.execute(
        select(col(Forwarding.id))
        .where(
            col(Forwarding.target_id) == forwarding.target_id,
            col(Forwarding.partner_id) == forwarding.partner_id,
            col(Forwarding.kind) != ForwardingKind.retraction,
            col(Forwarding.state) == ForwardingState.retracted,
        )
        .order_by(col(Forwarding.id))
    ).scalars()
    return {
        "reason": "verdict_reversed",
        "reversed_at": _iso(forwarding.created_at),
        "forwardings": list(retracted),
    }


def encode(document: dict[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def signature_headers(
    webhook_id: str, body: str, secrets: Sequence[str], *, at: dt.datetime
) -> list[tuple[str, str]]:
    """The Standard Webhooks headers: one ``v1`` signature per secret, newest first."""
    signatures = " ".join(Webhook(s).sign(webhook_id, at, body) for s in secrets)
    return [
        ("Content-Type", "application/json"),
        ("webhook-id", webhook_id),
        ("webhook-timestamp", str(int(at.timestamp()))),
        ("webhook-signature", signatures),
    ]


# Attempts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """One claimed attempt: everything the POST needs, read in the claiming transaction."""

    delivery_id: int
    attempt: int
    webhook_id: str
    url: str
    body: str
    secrets: tuple[str, ...]
    # The API key the partner issued us (a peer hotline's partner API wants it too).
    api_key: str | None = None

    def __repr__(self) -> str:
        return f"Prepared(delivery={self.delivery_id}, attempt={self.attempt})"


@dataclass(frozen=True)
class Answer:
    status: int | None
    error: str | None  # a reason code when no HTTP answer came


@dataclass(frozen=True)
class Verdict:
    state: DeliveryState | None
    """The delivery's state after the attempt; None: the attempt was not made (not due,
    already done, or taken by another worker)."""
    retry_in: float | None = None
    """Seconds until the next attempt, when one is due."""


SKIPPED = Verdict(state=None)


def _sender(settings: Settings) -> dict[str, str]:
    return {"name": settings.site_name, "country": settings.home_country}


def _fail(
    session: Session, delivery: Delivery, code: str, *, now: dt.datetime, dead: bool = False
) -> Verdict:
    delivery.state = DeliveryState.dead if dead else DeliveryState.failed
    delivery.last_error = code
    delivery.next_attempt_at = now
    session.add(delivery)
    forwarding = session.get(Forwarding, delivery.forwarding_id) if delivery.forwarding_id else None
    if forwarding is not None and forwarding.state is ForwardingState.pending:
        forwarding.state = ForwardingState.failed
        session.add(forwarding)
    if delivery.notice_id is not None:
        notices.mark_failed(session, delivery.notice_id, code, now=now)
    log.warning(
        "delivery %s to partner %s %s after %d attempt(s): %s",
        delivery.id,
        delivery.partner_id,
        delivery.state.value,
        delivery.attempts,
        code,
    )
    return Verdict(state=delivery.state)


def claim(
    session: Session,
    delivery_id: int,
    *,
    now: dt.datetime,
    lease: dt.timedelta,
    cipher: Any,
    sender: dict[str, str],
) -> Prepared | Verdict:
    """Claim the next attempt of a due delivery (locks its row) and prepare the POST; or
    return why not: `SKIPPED`, or a failure that needs no attempt (partner disabled)."""
    delivery = session.get(Delivery, delivery_id, with_for_update=True)
    if delivery is None or delivery.state is not DeliveryState.pending:
        return SKIPPED
    if delivery.next_attempt_at > now + DUE_SLACK:
        return SKIPPED
    partner = session.get(Partner, delivery.partner_id)
    if partner is None or not partner.active:
        return _fail(session, delivery, "partner_disabled", now=now)
    if not partner.webhook_url:
        return _fail(session, delivery, "no_endpoint", now=now)
    secrets = registry.valid_secrets(
        session, delivery.partner_id, SecretPurpose.outbound_signing, now=now, cipher=cipher
    )
    if not secrets:
        return _fail(session, delivery, "no_signing_secret", now=now)
    forwarding = session.get(Forwarding, delivery.forwarding_id) if delivery.forwarding_id else None
    if delivery.notice_id is not None:
        # A notice to a hosting provider: its URLs grouped in one document.
        try:
            body = encode(notices.notice_document(session, delivery.notice_id, sender=sender))
        except InvalidNoticeTemplate:
            return _fail(session, delivery, "template_error", now=now)
        except notices.NothingToNotice:
            return _fail(session, delivery, "withdrawn", now=now)
    elif forwarding is None:
        return _fail(session, delivery, "nothing_to_send", now=now)
    else:
        try:
            body = encode(build_document(session, forwarding, sender=sender))
        except DeliveryNotFound:
            return _fail(session, delivery, "nothing_to_send", now=now)
    api_keys = registry.valid_secrets(
        session, delivery.partner_id, SecretPurpose.outbound_api_key, now=now, cipher=cipher
    )
    attempt = delivery.attempts + 1
    # Compare and set, not a plain write: SQLite has no row lock, so a second worker that
    # read the row before this claim committed waits here for it and then finds nothing.
    # The due time moves past a lease: a worker dying before recording leaves it to the
    # sweep.
    taken = session.execute(
        update(Delivery)
        .where(
            col(Delivery.id) == delivery_id,
            col(Delivery.state) == DeliveryState.pending,
            col(Delivery.attempts) == delivery.attempts,
        )
        .values(attempts=attempt, last_attempt_at=now, next_attempt_at=now + lease)
        .execution_options(synchronize_session="fetch")
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        return SKIPPED
    return Prepared(
        delivery_id=delivery_id,
        attempt=attempt,
        webhook_id=delivery.webhook_id,
        url=partner.webhook_url,
        body=body,
        secrets=tuple(secrets),
        api_key=api_keys[0] if api_keys else None,
    )


def send(
    prepared: Prepared, *, fetcher: Fetcher, clock: Callable[[], dt.datetime] = utcnow
) -> Answer:
    """POST the prepared document, signed at the moment of sending."""
    headers = signature_headers(prepared.webhook_id, prepared.body, prepared.secrets, at=clock())
    if prepared.api_key:
        headers.append(("Authorization", f"Bearer {prepared.api_key}"))
    try:
        result: PostResult = fetcher.post(prepared.url, prepared.body.encode("utf-8"), headers)
    except FetchError as exc:
        return Answer(status=None, error=exc.reason)
    return Answer(status=result.status, error=None)


def record(
    session: Session,
    prepared: Prepared,
    answer: Answer,
    *,
    now: dt.datetime,
    policy: RetryPolicy,
    rng: random.Random,
) -> Verdict:
    """Record what the endpoint answered and decide: delivered, failed, retry, or dead."""
    delivery = session.get(Delivery, prepared.delivery_id, with_for_update=True)
    if (
        delivery is None
        or delivery.state is not DeliveryState.pending
        or delivery.attempts != prepared.attempt
    ):
        return SKIPPED
    delivery.last_status = answer.status
    delivery.last_error = answer.error
    forwarding = session.get(Forwarding, delivery.forwarding_id) if delivery.forwarding_id else None
    status = answer.status
    if status is not None and 200 <= status < 300:
        delivery.state = DeliveryState.delivered
        delivery.delivered_at = now
        delivery.last_error = None
        session.add(delivery)
        if forwarding is not None and forwarding.state in (
            ForwardingState.pending,
            ForwardingState.failed,
        ):
            forwarding.state = ForwardingState.delivered
            forwarding.delivered_at = now
            session.add(forwarding)
        if delivery.notice_id is not None:
            notices.mark_sent(session, delivery.notice_id, now=now)
        return Verdict(state=DeliveryState.delivered)
    if status == 410:
        _endpoint_gone(session, delivery, now=now)
        return _fail(session, delivery, "gone", now=now)
    if status is not None and 300 <= status < 400:
        return _fail(session, delivery, "redirect", now=now)
    if answer.error in PERMANENT:
        return _fail(session, delivery, answer.error or "refused", now=now)
    code = answer.error or f"http_{status}"
    if delivery.attempts >= policy.max_attempts:
        return _fail(session, delivery, code, now=now, dead=True)
    wait = policy.delay(delivery.attempts, rng)
    delivery.last_error = code
    delivery.next_attempt_at = now + dt.timedelta(seconds=wait)
    session.add(delivery)
    return Verdict(state=DeliveryState.pending, retry_in=wait)


def _endpoint_gone(session: Session, delivery: Delivery, *, now: dt.datetime) -> None:
    """410: the partner says the endpoint is gone for good. Disable it and alert admins."""
    partner = session.get(Partner, delivery.partner_id)
    if partner is None or not partner.active:
        return
    registry.disable_partner(
        session, partner, reason="endpoint gone (HTTP 410)", now=now, actor="system"
    )
    audit.record(
        session,
        action="partner_endpoint_gone",
        actor="system",
        object_type="partner",
        object_id=partner.id,
        details={"delivery_id": delivery.id, "status": 410},
        now=now,
    )
    log.error(
        "ALERT partner %s (%s): its endpoint answered 410 Gone; partner disabled, an admin "
        "must check its configuration",
        partner.id,
        partner.name,
    )


@functools.cache
def delivery_fetcher() -> Fetcher:
    """The guarded client with the delivery deadline and no redirects."""
    settings = get_settings()
    timeout = settings.delivery_timeout_seconds
    policy = dataclasses.replace(
        FetchPolicy.from_settings(settings),
        connect_timeout=min(settings.fetch_connect_timeout_seconds, timeout),
        read_timeout=timeout,
        total_timeout=timeout,
        max_redirects=0,
        max_bytes=1_000_000,
    )
    return Fetcher(policy)


def attempt(
    delivery_id: int,
    *,
    now: dt.datetime,
    fetcher: Fetcher,
    policy: RetryPolicy,
    rng: random.Random,
    units: Units = session_scope,
    cipher: Any = None,
    sender: dict[str, str] | None = None,
    clock: Callable[[], dt.datetime] = utcnow,
) -> Verdict:
    """One attempt of a delivery, as the task runs it: claim (committed), POST outside any
    transaction, record (committed). ``now`` drives the schedule; ``clock`` the signature
    timestamp, which the receiver checks against its own clock."""
    settings = get_settings()
    lease = dt.timedelta(seconds=fetcher.policy.total_timeout + 60)
    with units() as session:
        prepared = claim(
            session,
            delivery_id,
            now=now,
            lease=lease,
            cipher=cipher or registry.partner_cipher(),
            sender=sender or _sender(settings),
        )
    if isinstance(prepared, Verdict):
        return prepared
    answer = send(prepared, fetcher=fetcher, clock=clock)
    with units() as session:
        return record(session, prepared, answer, now=now, policy=policy, rng=rng)


# The outbox sweep and the dead-letter list -----------------------------------------------


def sweep(session: Session, *, now: dt.datetime, overdue: dt.timedelta, limit: int = 1000) -> int:
    """Release ended law-enforcement holds, and hand over again the deliveries whose
    attempt is overdue (a lost message, a dead worker). Returns how many were sent."""
    release_holds(session, now=now)
    query = (
        select(Delivery)
        .where(
            col(Delivery.state) == DeliveryState.pending,
            col(Delivery.next_attempt_at) <= now - overdue,
        )
        .order_by(col(Delivery.next_attempt_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    count = 0
    for delivery in session.execute(query).scalars():
        delivery.next_attempt_at = now
        session.add(delivery)
        enqueue(session, DELIVER_TASK, delivery_id=delivery.id)
        count += 1
    session.flush()
    return count


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    webhook_id: str
    partner_id: int
    partner: str
    forwarding_id: int | None
    target_id: int | None
    event: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: dt.datetime
    last_attempt_at: dt.datetime | None


def list_deliveries(
    session: Session, *, states: Sequence[DeliveryState], limit: int = 100
) -> list[DeliveryRow]:
    """Deliveries in the given states, oldest first (the dead-letter list: failed, dead)."""
    rows = session.execute(
        select(Delivery, col(Partner.name), col(Forwarding.target_id))
        .join(Partner, col(Partner.id) == col(Delivery.partner_id))
        .outerjoin(Forwarding, col(Forwarding.id) == col(Delivery.forwarding_id))
        .where(col(Delivery.state).in_([s.value for s in states]))
        .order_by(col(Delivery.id))
        .limit(limit)
    ).all()
    return [
        DeliveryRow(
            id=d.id,
            webhook_id=d.webhook_id,
            partner_id=d.partner_id,
            partner=name,
            forwarding_id=d.forwarding_id,
            target_id=target_id,
            event=d.event,
            state=d.state.value,
            attempts=d.attempts,
            last_status=d.last_status,
            last_error=d.last_error,
            created_at=d.created_at,
            last_attempt_at=d.last_attempt_at,
        )
        for d, name, target_id in rows
    ]


def redeliver(
    session: Session,
    delivery_id: int,
    *,
    now: dt.datetime,
    actor: str,
    actor_id: int | None = None,
) -> Delivery:
    """Send a failed or dead delivery again, from its first attempt, with the same
    ``webhook-id`` (so a receiver that did process it knows it)."""
    delivery = session.get(Delivery, delivery_id, with_for_update=True)
    if delivery is None:
        raise DeliveryNotFound()
    if delivery.state not in (DeliveryState.failed, DeliveryState.dead):
        raise NotRedeliverable()
    partner = session.get(Partner, delivery.partner_id)
    if partner is None or not partner.active:
        raise NotRedeliverable("The partner is disabled: enable it first.")
    previous = delivery.state
    delivery.state = DeliveryState.pending
    delivery.attempts = 0
    delivery.next_attempt_at = now
    session.add(delivery)
    forwarding = session.get(Forwarding, delivery.forwarding_id) if delivery.forwarding_id else None
    if forwarding is not None and forwarding.state is ForwardingState.failed:
        forwarding.state = ForwardingState.pending
        session.add(forwarding)
    if delivery.notice_id is not None:
        notices.mark_sending(session, delivery.notice_id)
    audit.record(
        session,
        action="delivery_redelivered",
        actor=actor,
        actor_id=actor_id,
        object_type="delivery",
        object_id=delivery.id,
        details={"partner_id": delivery.partner_id, "was": previous.value},
        now=now,
    )
    session.flush()
    enqueue(session, DELIVER_TASK, delivery_id=delivery.id)
    return delivery


def forwardings_of(session: Session, target_id: int) -> list[tuple[Forwarding, Partner]]:
    """The forwardings of a target with their partners, oldest first (the item page)."""
    rows = session.execute(
        select(Forwarding, Partner)
        .join(Partner, col(Partner.id) == col(Forwarding.partner_id))
        .where(col(Forwarding.target_id) == target_id)
        .order_by(col(Forwarding.id))
    ).all()
    return [(forwarding, partner) for forwarding, partner in rows]
