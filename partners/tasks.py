"""Celery tasks of partners (thin wrappers around ``partners.routing``,
``partners.delivery`` and ``partners.rechecks``)."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from celery import shared_task

from hotline.db import session_scope, utcnow
from hotline.settings import get_settings
from partners import delivery, inbound, notices, peers, rechecks, retractions, routing
from triage.fetcher import get_fetcher
from triage.service import Limits
from triage.tasks import contended_task

_rng = random.SystemRandom()
# (Routing again and retracting lock rows a delivery or the notice sweep may hold in
# another order.)


@shared_task(name="partners.route_target", acks_late=True, ignore_result=True)
def route_target(target_id: int) -> int:
    """Make the forwardings a confirmed target calls for, and tell the peer hotline that
    sent it what we did; their deliveries follow the commit."""
    policy = routing.RoutingPolicy.from_settings(get_settings())
    now = utcnow()
    with session_scope() as session:
        made = routing.route_target(session, target_id, now=now, policy=policy)
        peers.tell_confirmed(session, target_id, now=now)
        return len(made)


@contended_task(name="partners.reroute_target")
def reroute_target(target_id: int) -> int:
    """An analyst corrected the hosting of a confirmed target: route it again."""
    policy = routing.RoutingPolicy.from_settings(get_settings())
    with session_scope() as session:
        return len(routing.reroute_target(session, target_id, now=utcnow(), policy=policy).made)


@shared_task(
    bind=True, name="partners.deliver", acks_late=True, ignore_result=True, max_retries=None
)
def deliver(self: Any, delivery_id: int) -> str | None:
    """One signed POST of a delivery; retried by Celery with the policy's backoff."""
    policy = delivery.RetryPolicy.from_settings(get_settings())
    verdict = delivery.attempt(
        delivery_id, now=utcnow(), fetcher=delivery.delivery_fetcher(), policy=policy, rng=_rng
    )
    if verdict.retry_in is not None:
        # Celery re-sends this message at the due time; if it is lost, the sweep re-sends.
        raise self.retry(countdown=verdict.retry_in, max_retries=policy.max_attempts)
    return verdict.state.value if verdict.state else None


@shared_task(name="partners.sweep", acks_late=True, ignore_result=True)
def sweep() -> int:
    """Release ended holds; hand over again the deliveries whose message was lost; route
    the confirmed targets and retract for the reversed ones whose wake-up was lost."""
    settings = get_settings()
    overdue = dt.timedelta(seconds=settings.delivery_sweep_after_seconds)
    now = utcnow()
    policy = routing.RoutingPolicy.from_settings(settings)
    with session_scope() as session:
        for target_id in routing.sweep_unrouted(session, now=now, overdue=overdue, policy=policy):
            peers.tell_confirmed(session, target_id, now=now)
        routing.sweep_corrected(session, now=now, overdue=overdue, policy=policy)
        retractions.sweep_unretracted(
            session, now=now, overdue=overdue, language=settings.default_language
        )
        return delivery.sweep(session, now=now, overdue=overdue)


@shared_task(name="partners.purge_answers", acks_late=True, ignore_result=True)
def purge_answers() -> int:
    """Erase the answers to partners' API calls older than the replay period."""
    kept = dt.timedelta(days=get_settings().partner_replay_days)
    with session_scope() as session:
        return inbound.purge_answers(session, now=utcnow(), kept=kept)


# Re-checks (partners.rechecks) ------------------------------------------------------------


@shared_task(name="partners.sweep_rechecks", acks_late=True, ignore_result=True)
def sweep_rechecks() -> int:
    """Beat: open the first re-check of newly confirmed targets, hand the due ones over."""
    policy = rechecks.RecheckPolicy.from_settings(get_settings())
    with session_scope() as session:
        return len(rechecks.sweep(session, now=utcnow(), policy=policy))


@shared_task(name="partners.recheck", acks_late=True, ignore_result=True)
def recheck(recheck_id: int) -> str | None:
    """Re-fetch a confirmed target and record whether its media are still online."""
    settings = get_settings()
    recorded = rechecks.run_recheck(
        recheck_id,
        units=session_scope,
        fetcher=get_fetcher(),
        limits=Limits.from_settings(settings),
        policy=rechecks.RecheckPolicy.from_settings(settings),
        now=utcnow,
    )
    return recorded.result.value if recorded.result else None


@shared_task(name="partners.notify_reopened", acks_late=True, ignore_result=True)
def notify_reopened(target_id: int) -> int:
    """Tell the partners that received a target that it is back online."""
    with session_scope() as session:
        return len(rechecks.notify_reopened(session, target_id, now=utcnow()))


@shared_task(name="partners.tell_sources", acks_late=True, ignore_result=True)
def tell_sources(target_id: int) -> int:
    """A target closed without confirmation (not illegal, gone): tell the peer hotline
    that sent it, if one did."""
    with session_scope() as session:
        return len(peers.tell_sources(session, target_id, now=utcnow()))


@contended_task(name="partners.retract_target")
def retract_target(target_id: int) -> int:
    """A reversed verdict: retract the target's forwardings and tell who received them."""
    language = get_settings().default_language
    with session_scope() as session:
        made = retractions.retract_target(session, target_id, now=utcnow(), language=language)
        return len(made)


# Notice and takedown (partners.notices) ---------------------------------------------------


@shared_task(name="partners.sweep_notices", acks_late=True, ignore_result=True)
def sweep_notices() -> int:
    """Beat: group due notices per abuse contact, open re-notices, send those whose window
    closed (the hosting looked up again first)."""
    settings = get_settings()
    with session_scope() as session:
        swept = notices.sweep(
            session,
            now=utcnow(),
            policy=notices.NoticePolicy.from_settings(settings),
            lookup=notices.dns_lookup(),
            routing_policy=routing.RoutingPolicy.from_settings(settings),
        )
    return len(swept.sent)


@shared_task(
    bind=True, name="partners.send_notice", acks_late=True, ignore_result=True, max_retries=None
)
def send_notice(self: Any, notice_id: int) -> str | None:
    """One SMTP attempt of an e-mail notice; retried by Celery with the delivery backoff."""
    settings = get_settings()
    retry = delivery.RetryPolicy.from_settings(settings)
    verdict = notices.attempt_email(
        notice_id,
        now=utcnow(),
        policy=notices.NoticePolicy.from_settings(settings),
        smtp=notices.SmtpConfig.from_settings(settings),
        attempt=self.request.retries + 1,
        max_attempts=retry.max_attempts,
        delay=lambda n: retry.delay(n, _rng),
    )
    if verdict.retry_in is not None:
        raise self.retry(countdown=verdict.retry_in, max_retries=retry.max_attempts)
    return verdict.state.value if verdict.state else None
