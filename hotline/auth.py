"""Staff accounts: argon2id passwords, TOTP second factor, lockout, short-lived API tokens.

Services only: no web framework here, and nothing commits (the caller's unit of
work does). ``authenticate`` changes the account even when it refuses a login (the
failure counter, the lock), so callers must commit before turning the refusal into
an error response: see ``hotline.auth_api``.

TOTP secrets are encrypted with Fernet (``staff_cipher``); API tokens are stored as
SHA-256 digests and shown once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import InvalidToken, MultiFernet
from sqlalchemy import delete, select
from sqlmodel import Session, col

from hotline import sessions
from hotline.errors import HotlineError
from hotline.keys import fernet
from hotline.models import Role, StaffToken, StaffUser

ISSUER = "Hotline"
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; this only bounds the work per request
MAX_FAILED_LOGINS = 5
LOCKOUT = dt.timedelta(minutes=15)
TOKEN_TTL = dt.timedelta(minutes=15)
TOTP_STEP_SECONDS = 30
TOTP_DIGITS = 6
TOTP_WINDOW = 1  # steps accepted either side of the current one (clock drift)

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")

_hasher = PasswordHasher()  # argon2id, the library's (RFC 9106 low-memory) parameters


# Errors ------------------------------------------------------------------------------


class StaffExists(HotlineError):
    code = "staff_exists"
    status_code = 409
    detail = "A staff account with this email address exists already."


class StaffNotFound(HotlineError):
    code = "staff_not_found"
    status_code = 404
    detail = "No staff account has this email address."


class WeakPassword(HotlineError):
    code = "weak_password"
    status_code = 422
    detail = f"Passwords need at least {MIN_PASSWORD_LENGTH} characters."


class InvalidEmail(HotlineError):
    code = "invalid_email"
    status_code = 422
    detail = "This is not an email address."


class InvalidRole(HotlineError):
    code = "invalid_role"
    status_code = 422
    detail = "Roles are: " + ", ".join(r.value for r in Role) + "."


class InvalidCredentials(HotlineError):
    """Wrong email, password or code, or a disabled account: deliberately one error."""

    code = "invalid_credentials"
    status_code = 401
    detail = "Email, password or one-time code is wrong."


class AccountLocked(HotlineError):
    code = "account_locked"
    status_code = 429
    detail = "Too many failed sign-ins. Try again later."

    def __init__(self, retry_after: int) -> None:
        self.retry_after = max(1, retry_after)
        self.headers = {"Retry-After": str(self.retry_after)}
        super().__init__()


# Passwords ---------------------------------------------------------------------------


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


@lru_cache
def _dummy_hash() -> str:
    # Verified in place of a real hash when the account does not exist, with the same
    # parameters, so an unknown email costs what a known one costs.
    return _hasher.hash(secrets.token_urlsafe(16))


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword()
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"Passwords may have at most {MAX_PASSWORD_LENGTH} characters.")


# TOTP secrets ------------------------------------------------------------------------


@lru_cache
def _cipher(keys: str, data_dir: Path | None) -> MultiFernet:
    if data_dir is None:
        from hotline.settings import get_settings

        data_dir = get_settings().resolved_data_dir
    return fernet(keys, data_dir / "staff.key")


def staff_cipher(keys: str = "", data_dir: Path | None = None) -> MultiFernet:
    """The cipher of TOTP secrets: comma-separated Fernet keys (the first encrypts, all
    decrypt), or with none a development key in ``<data dir>/staff.key``."""
    return _cipher(keys, data_dir)


def configured_staff_cipher() -> MultiFernet:
    """``staff_cipher`` with the ``HOTLINE_STAFF_KEYS`` setting."""
    from hotline.settings import get_settings

    settings = get_settings()
    return staff_cipher(settings.staff_keys.get_secret_value(), settings.resolved_data_dir)


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP_SECONDS)


def _secret(user: StaffUser, cipher: MultiFernet) -> str | None:
    if not user.totp_secret_encrypted:
        return None
    try:
        return cipher.decrypt(user.totp_secret_encrypted.encode("ascii")).decode("ascii")
    except InvalidToken:
        return None


def _new_secret(user: StaffUser, cipher: MultiFernet, issuer: str) -> str:
    secret = pyotp.random_base32()
    user.totp_secret_encrypted = cipher.encrypt(secret.encode("ascii")).decode("ascii")
    user.totp_enrolled_at = None
    user.totp_last_step = 0
    return _totp(secret).provisioning_uri(name=user.email, issuer_name=issuer)


def totp_step(now: dt.datetime) -> int:
    return int(now.timestamp()) // TOTP_STEP_SECONDS


def totp_code(secret: str, step: int) -> str:
    """The code of a time step (for tests and tooling)."""
    return _totp(secret).generate_otp(step)


def _accepted_step(secret: str, code: str, *, now: dt.datetime, after: int) -> int | None:
    """The time step a code belongs to, if it is within the window and newer than ``after``."""
    code = code.replace(" ", "")
    if len(code) != TOTP_DIGITS or not code.isascii() or not code.isdigit():
        return None
    current = totp_step(now)
    found = None
    for step in range(current - TOTP_WINDOW, current + TOTP_WINDOW + 1):
        # Every candidate is compared, so the time does not tell which one matched.
        if hmac.compare_digest(totp_code(secret, step), code) and step > after:
            found = step
    return found


# Accounts ----------------------------------------------------------------------------


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > 254 or not EMAIL_RE.fullmatch(email):
        raise InvalidEmail()
    return email


def parse_role(role: str | Role) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidRole() from None


def _id(user: StaffUser) -> int:
    if user.id is None:
        raise ValueError("the account has not been flushed yet")
    return user.id


def get_user(session: Session, email: str, *, for_update: bool = False) -> StaffUser | None:
    query = select(StaffUser).where(col(StaffUser.email) == email.strip().lower())
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).first()


def _require_user(session: Session, email: str) -> StaffUser:
    user = get_user(session, email, for_update=True)
    if user is None:
        raise StaffNotFound()
    return user


def create_user(
    session: Session,
    email: str,
    role: str | Role,
    password: str,
    *,
    now: dt.datetime,
    cipher: MultiFernet,
    issuer: str = ISSUER,
) -> tuple[StaffUser, str]:
    """A new account with a fresh TOTP secret; returns it and the otpauth:// URI."""
    email = normalise_email(email)
    parsed_role = parse_role(role)
    check_password_policy(password)
    if get_user(session, email) is not None:
        raise StaffExists()
    user = StaffUser(
        email=email, role=parsed_role, password_hash=hash_password(password), created_at=now
    )
    uri = _new_secret(user, cipher, issuer)
    session.add(user)
    session.flush()
    return user, uri


def list_users(session: Session) -> Sequence[StaffUser]:
    return session.scalars(select(StaffUser).order_by(col(StaffUser.email))).all()


def disable_user(session: Session, email: str) -> StaffUser:
    user = _require_user(session, email)
    user.disabled = True
    revoke_tokens(session, _id(user))
    sessions.end_all(session, _id(user))
    return user


def reset_2fa(
    session: Session, email: str, *, cipher: MultiFernet, issuer: str = ISSUER
) -> tuple[StaffUser, str]:
    """A new TOTP secret (the old one stops working) and a new URI; tokens are revoked."""
    user = _require_user(session, email)
    uri = _new_secret(user, cipher, issuer)
    revoke_tokens(session, _id(user))
    sessions.end_all(session, _id(user))
    return user, uri


# Sign-in -----------------------------------------------------------------------------


def _count_failure(session: Session, user: StaffUser, now: dt.datetime) -> None:
    """One more failed sign-in (or first code); the fifth in a row locks the account."""
    user.failed_logins += 1
    if user.failed_logins >= MAX_FAILED_LOGINS:
        user.locked_until = now + LOCKOUT
    session.flush()


@dataclass(frozen=True)
class LoginResult:
    """What ``check_login`` decided. A refusal has already been recorded on the account."""

    user: StaffUser | None
    error: InvalidCredentials | AccountLocked | None = None
    # The password was right and the account has not enrolled its second factor yet:
    # the caller may open the enrolment step (never a full sign-in or a token).
    enrolling: bool = False


def check_login(
    session: Session,
    *,
    email: str,
    password: str,
    totp: str,
    now: dt.datetime,
    cipher: MultiFernet,
    allow_enrolment: bool = False,
) -> LoginResult:
    """Check a sign-in without raising, so the caller can commit the failure counter.

    With ``allow_enrolment``, an account that never entered a TOTP code signs in with
    its password and an empty code as ``enrolling``: the browser's first sign-in, where
    the account shows its QR code and proves it with a first code (``enrol``)."""
    user = None
    if len(email) <= 254 and len(password) <= MAX_PASSWORD_LENGTH:
        # Locked for update: concurrent attempts count one after the other, and the
        # same TOTP code cannot be accepted twice.
        user = get_user(session, email, for_update=True)
    if user is None or user.disabled:
        verify_password(_dummy_hash(), password)
        return LoginResult(None, InvalidCredentials())
    if user.locked_until is not None:
        if user.locked_until > now:
            verify_password(_dummy_hash(), password)
            seconds = (user.locked_until - now).total_seconds()
            return LoginResult(None, AccountLocked(int(seconds) + 1))
        user.locked_until = None
        user.failed_logins = 0
    password_ok = verify_password(user.password_hash, password)
    secret = _secret(user, cipher)
    if (
        password_ok
        and secret
        and allow_enrolment
        and user.totp_enrolled_at is None
        and not totp.strip()
    ):
        user.failed_logins = 0
        session.flush()
        return LoginResult(user, enrolling=True)
    step = (
        _accepted_step(secret, totp, now=now, after=user.totp_last_step)
        if password_ok and secret
        else None
    )
    if step is None:
        _count_failure(session, user, now)
        return LoginResult(None, InvalidCredentials())
    user.totp_last_step = step
    user.totp_enrolled_at = user.totp_enrolled_at or now
    user.failed_logins = 0
    if password_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    session.flush()
    return LoginResult(user)


def authenticate(
    session: Session,
    *,
    email: str,
    password: str,
    totp: str,
    now: dt.datetime,
    cipher: MultiFernet,
) -> StaffUser:
    """The account, or ``InvalidCredentials`` / ``AccountLocked``. A refusal changes the
    account too; a caller that rolls back on errors must use ``check_login``."""
    result = check_login(session, email=email, password=password, totp=totp, now=now, cipher=cipher)
    if result.user is None:
        raise result.error or InvalidCredentials()
    return result.user


def totp_uri(user: StaffUser, cipher: MultiFernet, issuer: str = ISSUER) -> str | None:
    """The otpauth:// URI of an account that is still enrolling (for its QR code)."""
    secret = _secret(user, cipher)
    if secret is None or user.totp_enrolled_at is not None:
        return None
    return _totp(secret).provisioning_uri(name=user.email, issuer_name=issuer)


def enrol(
    session: Session, user: StaffUser, code: str, *, now: dt.datetime, cipher: MultiFernet
) -> bool:
    """Finish enrolment with a first code of the new secret; a wrong code counts as a
    failed sign-in (and locks like one)."""
    secret = _secret(user, cipher)
    if user.locked_until is not None and user.locked_until > now:
        return False
    step = (
        _accepted_step(secret, code, now=now, after=user.totp_last_step)
        if secret and user.totp_enrolled_at is None
        else None
    )
    if step is None:
        _count_failure(session, user, now)
        return False
    user.totp_last_step = step
    user.totp_enrolled_at = now
    user.failed_logins = 0
    session.flush()
    return True


# API tokens --------------------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(
    session: Session, user: StaffUser, *, now: dt.datetime, ttl: dt.timedelta = TOKEN_TTL
) -> str:
    """A new bearer token, shown once; the user's expired tokens are dropped."""
    user_id = _id(user)
    session.execute(
        delete(StaffToken).where(
            col(StaffToken.user_id) == user_id, col(StaffToken.expires_at) <= now
        )
    )
    token = secrets.token_urlsafe(32)
    session.add(
        StaffToken(
            token_hash=_token_hash(token), user_id=user_id, created_at=now, expires_at=now + ttl
        )
    )
    session.flush()
    return token


def user_for_token(session: Session, token: str, *, now: dt.datetime) -> StaffUser | None:
    """The enabled account a token belongs to, if the token exists and has not expired."""
    if not token or len(token) > 256:
        return None
    row = session.execute(
        select(StaffUser)
        .join(StaffToken, col(StaffToken.user_id) == col(StaffUser.id))
        .where(
            col(StaffToken.token_hash) == _token_hash(token),
            col(StaffToken.expires_at) > now,
            col(StaffUser.disabled).is_(False),
        )
    ).first()
    return row[0] if row else None


def revoke_tokens(session: Session, user_id: int) -> int:
    result = session.execute(delete(StaffToken).where(col(StaffToken.user_id) == user_id))
    return int(getattr(result, "rowcount", 0) or 0)
