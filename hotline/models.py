"""Tables of the foundation: staff accounts, their API tokens, and the audit log.

Staff secrets are never stored in clear: passwords as argon2id hashes, TOTP
secrets encrypted, API tokens as SHA-256 digests. Audit events carry ids, never a
reported URL.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Integer, String, Text
from sqlmodel import Field, SQLModel

from hotline.db import BigIntId, UTCDateTime, str_enum, utcnow
from hotline.roles import Role as Role  # re-exported: the tables and their users name it here


class StaffUser(SQLModel, table=True):
    __tablename__ = "staff_user"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    email: str = Field(sa_column=Column(String(254), nullable=False, unique=True))
    role: Role = Field(sa_column=Column(str_enum(Role), nullable=False))
    password_hash: str = Field(sa_column=Column(String(255), nullable=False))
    totp_secret_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    totp_enrolled_at: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # The last TOTP time step accepted: a code of that step or earlier is refused.
    totp_last_step: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    failed_logins: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    locked_until: dt.datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    disabled: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class StaffToken(SQLModel, table=True):
    """A short-lived bearer token of the staff API, stored as its SHA-256 digest."""

    __tablename__ = "staff_token"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    user_id: int = Field(
        sa_column=Column(
            BigInteger, ForeignKey("staff_user.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    expires_at: dt.datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))


class AuditEvent(SQLModel, table=True):
    """One thing staff (or the system) did, hash-chained to the event before it."""

    __tablename__ = "audit_event"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    at: dt.datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    actor_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    actor: str = Field(sa_column=Column(String(254), nullable=False))
    action: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    object_type: str | None = Field(default=None, sa_column=Column(String(32)))
    object_id: str | None = Field(default=None, sa_column=Column(String(64)))
    details: str | None = Field(default=None, sa_column=Column(Text))
    prev_hash: str = Field(sa_column=Column(String(64), nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))


class StaffSession(SQLModel, table=True):
    """A signed-in browser: the cookie's value is shown once and stored as its SHA-256.

    A session ends after ``staff_session_idle_minutes`` without a request, at
    ``expires_at`` in any case, or at sign-out. ``pending_totp`` marks the step between
    a correct password and the first TOTP code of an account still enrolling.
    """

    __tablename__ = "staff_session"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True))
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    user_id: int = Field(
        sa_column=Column(
            BigInteger, ForeignKey("staff_user.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    pending_totp: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    created_at: dt.datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    last_seen_at: dt.datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    expires_at: dt.datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))
