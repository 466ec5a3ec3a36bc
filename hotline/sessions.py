"""Staff browser sessions: the cookie, idle and absolute expiry, and the CSRF token.

The cookie carries 256 random bits, shown to the browser only (HttpOnly, SameSite=Strict,
Secure unless ``HOTLINE_SECURE_COOKIES`` is off); the database keeps its SHA-256. A
session ends after ``staff_session_idle_minutes`` without a request, at
``staff_session_max_hours`` after sign-in, at sign-out, and when the account is
disabled or its second factor reset.

The CSRF token of a session is an HMAC of the session's secret, so nothing more is
stored and a page of one session cannot forge a form of another. Every unsafe request
authenticated by the cookie must carry it (form field ``csrf_token`` or header
``X-CSRF-Token``); see ``hotline.authz``.

Services only: nothing here commits.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlmodel import Session, col

from hotline.models import StaffSession, StaffUser

COOKIE = "hotline_staff"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
MAX_TOKEN_LENGTH = 128
# last_seen_at is written at most this often, so reading pages does not write each time.
TOUCH_EVERY = dt.timedelta(seconds=30)


@dataclass(frozen=True)
class Lifetimes:
    idle: dt.timedelta
    absolute: dt.timedelta


@dataclass(frozen=True)
class SignedIn:
    """The account behind a cookie, and whether it still has to enrol its second factor."""

    user: StaffUser
    session_id: int
    pending_totp: bool


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def start(
    session: Session,
    user: StaffUser,
    *,
    now: dt.datetime,
    lifetimes: Lifetimes,
    pending_totp: bool = False,
) -> str:
    """A new session for ``user``; returns the cookie value (shown once). The user's
    expired sessions are dropped."""
    if user.id is None:
        raise ValueError("the account has not been flushed yet")
    session.execute(
        delete(StaffSession).where(
            col(StaffSession.user_id) == user.id, col(StaffSession.expires_at) <= now
        )
    )
    token = secrets.token_urlsafe(32)
    session.add(
        StaffSession(
            token_hash=_digest(token),
            user_id=user.id,
            pending_totp=pending_totp,
            created_at=now,
            last_seen_at=now,
            expires_at=now + lifetimes.absolute,
        )
    )
    session.flush()
    return token


def resolve(
    session: Session, token: str | None, *, now: dt.datetime, lifetimes: Lifetimes
) -> SignedIn | None:
    """The signed-in account of a cookie value, if the session is alive; touches it."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    row = session.execute(
        select(StaffSession, StaffUser)
        .join(StaffUser, col(StaffUser.id) == col(StaffSession.user_id))
        .where(col(StaffSession.token_hash) == _digest(token))
    ).first()
    if row is None:
        return None
    staff_session, user = row
    if (
        user.disabled
        or staff_session.expires_at <= now
        or staff_session.last_seen_at + lifetimes.idle <= now
    ):
        session.delete(staff_session)
        session.flush()
        return None
    if now - staff_session.last_seen_at >= TOUCH_EVERY:
        staff_session.last_seen_at = now
        session.flush()
    return SignedIn(user, int(staff_session.id or 0), staff_session.pending_totp)


def end(session: Session, token: str | None) -> None:
    if token and len(token) <= MAX_TOKEN_LENGTH:
        session.execute(delete(StaffSession).where(col(StaffSession.token_hash) == _digest(token)))


def end_all(session: Session, user_id: int) -> int:
    """Sign an account out everywhere (disabled, second factor reset)."""
    result = session.execute(delete(StaffSession).where(col(StaffSession.user_id) == user_id))
    return int(getattr(result, "rowcount", 0) or 0)


def csrf_token(cookie: str) -> str:
    """The CSRF token of the session behind a cookie value."""
    return hmac.new(cookie.encode("utf-8"), b"hotline-csrf-v1", hashlib.sha256).hexdigest()


def csrf_ok(cookie: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(csrf_token(cookie), presented or "")
