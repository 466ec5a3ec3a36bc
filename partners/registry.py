"""The partner registry: who the hotline forwards to, how they are reached, what they share.

Invariants:

- Secrets are shown once, when made, and stored only as Fernet tokens (signing
  secrets, API keys we send) or SHA-256 digests (API keys partners send us).
- A rotation keeps the previous secret of the same purpose valid for the overlap
  period, and at most two valid at a time: the newest signs, every valid one verifies.
- Webhooks are https in production; country codes are ISO 3166-1 alpha-2.
- Every change is audited by partner id and name, never with an endpoint URL.
- Nothing here commits; the caller's unit of work does.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.fernet import InvalidToken, MultiFernet
from pydantic import ValidationError
from sqlalchemy import delete, or_, select
from sqlmodel import Session, col

from hotline import audit
from hotline.keys import fernet
from hotline.settings import get_settings
from partners.errors import InvalidPartner, PartnerExists, PartnerNotFound
from partners.models import (
    Partner,
    PartnerAsn,
    PartnerCountry,
    PartnerDomain,
    PartnerLanguage,
    PartnerSecret,
    SecretPurpose,
)
from partners.schemas import PartnerRead, PartnerSpec

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
API_KEY_PREFIX = "hpk_"
# Issued when a partner is added: what we sign with, what it signs with, its API key.
ISSUED_PURPOSES = (
    SecretPurpose.outbound_signing,
    SecretPurpose.inbound_signing,
    SecretPurpose.inbound_api_key,
)


# Secrets ---------------------------------------------------------------------------------


@lru_cache
def _cipher(keys: str, data_dir: Path) -> MultiFernet:
    return fernet(keys, data_dir / "staff.key")


def partner_cipher() -> MultiFernet:
    """The cipher of partner secrets: ``HOTLINE_PARTNER_KEYS``, else the staff keys (or
    their development key)."""
    settings = get_settings()
    keys = settings.partner_keys.get_secret_value() or settings.staff_keys.get_secret_value()
    return _cipher(keys, settings.resolved_data_dir)


def new_signing_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def api_key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _new_secret(purpose: SecretPurpose) -> str:
    if purpose in (SecretPurpose.inbound_api_key, SecretPurpose.outbound_api_key):
        return new_api_key()
    return new_signing_secret()


def _store_secret(
    session: Session,
    partner: Partner,
    purpose: SecretPurpose,
    value: str,
    *,
    now: dt.datetime,
    cipher: MultiFernet,
) -> PartnerSecret:
    row = PartnerSecret(partner_id=_id(partner), purpose=purpose, created_at=now)
    if purpose is SecretPurpose.inbound_api_key:
        row.digest = api_key_digest(value)
    else:
        row.value_encrypted = cipher.encrypt(value.encode("utf-8")).decode("ascii")
    session.add(row)
    return row


def _valid_rows(
    session: Session, partner_id: int, purpose: SecretPurpose, *, now: dt.datetime
) -> list[PartnerSecret]:
    query = (
        select(PartnerSecret)
        .where(
            col(PartnerSecret.partner_id) == partner_id,
            col(PartnerSecret.purpose) == purpose,
            or_(col(PartnerSecret.retires_at).is_(None), col(PartnerSecret.retires_at) > now),
        )
        .order_by(col(PartnerSecret.created_at).desc(), col(PartnerSecret.id).desc())
    )
    return list(session.execute(query).scalars())


def valid_secrets(
    session: Session,
    partner_id: int,
    purpose: SecretPurpose,
    *,
    now: dt.datetime,
    cipher: MultiFernet,
) -> list[str]:
    """The partner's valid secrets of ``purpose``, newest first (API keys have none to give).

    A secret the configured keys cannot decrypt is skipped: a lost key costs the secrets
    it encrypted, not the others.
    """
    values = []
    for row in _valid_rows(session, partner_id, purpose, now=now):
        if row.value_encrypted is None:
            continue
        try:
            values.append(cipher.decrypt(row.value_encrypted.encode("ascii")).decode("utf-8"))
        except InvalidToken:
            continue
    return values


def partner_for_api_key(session: Session, key: str, *, now: dt.datetime) -> Partner | None:
    """The active partner holding this inbound API key, while the key is valid."""
    query = (
        select(Partner)
        .join(PartnerSecret, col(PartnerSecret.partner_id) == col(Partner.id))
        .where(
            col(PartnerSecret.digest) == api_key_digest(key),
            col(PartnerSecret.purpose) == SecretPurpose.inbound_api_key,
            or_(col(PartnerSecret.retires_at).is_(None), col(PartnerSecret.retires_at) > now),
            col(Partner.active).is_(True),
        )
    )
    return session.execute(query).scalars().first()


def rotate_secret(
    session: Session,
    partner: Partner,
    *,
    purpose: SecretPurpose = SecretPurpose.outbound_signing,
    now: dt.datetime,
    overlap: dt.timedelta,
    cipher: MultiFernet,
    value: str | None = None,
    actor: str = "system",
    actor_id: int | None = None,
) -> str:
    """Make a new secret of ``purpose`` (or store ``value``, one the partner made) and
    return it. The newest previous one stays valid for ``overlap``; older ones retire now."""
    if value is not None:
        _check_secret_value(purpose, value)
    previous = _valid_rows(session, _id(partner), purpose, now=now)
    for position, row in enumerate(previous):
        retires = now + overlap if position == 0 else now
        if row.retires_at is None or row.retires_at > retires:
            row.retires_at = retires
    secret = value or _new_secret(purpose)
    _store_secret(session, partner, purpose, secret, now=now, cipher=cipher)
    session.flush()
    audit.record(
        session,
        action="partner_secret_rotated",
        actor=actor,
        actor_id=actor_id,
        object_type="partner",
        object_id=partner.id,
        details={"purpose": purpose.value, "overlap_hours": overlap.total_seconds() / 3600},
        now=now,
    )
    return secret


def _check_secret_value(purpose: SecretPurpose, value: str) -> None:
    if purpose in (SecretPurpose.outbound_signing, SecretPurpose.inbound_signing):
        raw = value.removeprefix(SECRET_PREFIX)
        try:
            decoded = base64.b64decode(raw, validate=True)
        except ValueError:
            raise InvalidPartner("A signing secret is whsec_ and base64.") from None
        if not 24 <= len(decoded) <= 64:
            raise InvalidPartner("A signing secret has 24 to 64 bytes.")
    elif len(value) < 24:
        raise InvalidPartner("An API key has at least 24 characters.")


# Partners --------------------------------------------------------------------------------


@dataclass
class Added:
    partner: Partner
    created: bool
    secrets: dict[SecretPurpose, str] = field(default_factory=dict)


def _id(partner: Partner) -> int:
    if partner.id is None:
        raise ValueError("partner not flushed")
    return partner.id


def check_spec(spec: PartnerSpec, *, production: bool) -> None:
    """The checks that depend on settings: production delivers over https only."""
    if production and spec.webhook_url and not spec.webhook_url.startswith("https://"):
        raise InvalidPartner(f"Partner {spec.name!r}: the webhook must be https in production.")


def parse_spec(data: dict[str, Any]) -> PartnerSpec:
    try:
        return PartnerSpec.model_validate(data)
    except ValidationError as exc:
        name = data.get("name", "?") if isinstance(data, dict) else "?"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'partner'}: {error['msg']}"
            for error in exc.errors()
        )
        raise InvalidPartner(f"Partner {name!r}: {problems}") from None


def find_partner(session: Session, name_or_id: str | int) -> Partner:
    """The partner of that id or name; `PartnerNotFound` otherwise."""
    partner = None
    if isinstance(name_or_id, int) or name_or_id.isdigit():
        partner = session.get(Partner, int(name_or_id))
    if partner is None and isinstance(name_or_id, str):
        partner = session.execute(
            select(Partner).where(col(Partner.name) == name_or_id)
        ).scalar_one_or_none()
    if partner is None:
        raise PartnerNotFound()
    return partner


def _apply(session: Session, partner: Partner, spec: PartnerSpec) -> None:
    partner.kind = spec.kind
    partner.webhook_url = spec.webhook_url
    partner.email = spec.email
    partner.may_export = spec.may_export
    partner.may_submit = spec.may_submit
    partner.note = spec.note
    session.add(partner)
    session.flush()
    pid = _id(partner)
    for table in (PartnerCountry, PartnerAsn, PartnerDomain, PartnerLanguage):
        session.execute(delete(table).where(col(table.partner_id) == pid))
    session.add_all(PartnerCountry(partner_id=pid, country=c) for c in spec.countries)
    session.add_all(PartnerAsn(partner_id=pid, asn=a) for a in spec.asns)
    session.add_all(PartnerDomain(partner_id=pid, registered_domain=d) for d in spec.domains)
    session.add_all(
        PartnerLanguage(partner_id=pid, position=i, language=lang)
        for i, lang in enumerate(spec.languages)
    )
    session.flush()


def add_partner(
    session: Session,
    spec: PartnerSpec,
    *,
    now: dt.datetime,
    cipher: MultiFernet,
    production: bool = False,
    actor: str = "system",
    actor_id: int | None = None,
) -> Added:
    """Register a partner and issue its secrets (returned once, in clear)."""
    check_spec(spec, production=production)
    exists = session.execute(select(col(Partner.id)).where(col(Partner.name) == spec.name)).first()
    if exists is not None:
        raise PartnerExists(f"A partner named {spec.name!r} exists.")
    partner = Partner(
        name=spec.name,
        kind=spec.kind,
        active=spec.active,
        created_at=now,
        disabled_at=None if spec.active else now,
        disabled_reason=None if spec.active else "configured inactive",
    )
    _apply(session, partner, spec)
    issued = {}
    for purpose in ISSUED_PURPOSES:
        issued[purpose] = _new_secret(purpose)
        _store_secret(session, partner, purpose, issued[purpose], now=now, cipher=cipher)
    session.flush()
    audit.record(
        session,
        action="partner_added",
        actor=actor,
        actor_id=actor_id,
        object_type="partner",
        object_id=partner.id,
        details={"name": partner.name, "kind": partner.kind.value},
        now=now,
    )
    return Added(partner, created=True, secrets=issued)


def update_partner(
    session: Session,
    partner: Partner,
    spec: PartnerSpec,
    *,
    now: dt.datetime,
    production: bool = False,
    actor: str = "system",
    actor_id: int | None = None,
) -> Partner:
    """Replace a partner's configuration by ``spec``; its secrets stay, and so does its
    active flag (a partner disabled by an admin or a gone endpoint is enabled on purpose,
    by `enable_partner`, not by loading a file again)."""
    check_spec(spec, production=production)
    _apply(session, partner, spec)
    audit.record(
        session,
        action="partner_updated",
        actor=actor,
        actor_id=actor_id,
        object_type="partner",
        object_id=partner.id,
        details={"name": partner.name, "kind": partner.kind.value},
        now=now,
    )
    return partner


def disable_partner(
    session: Session,
    partner: Partner,
    *,
    reason: str,
    now: dt.datetime,
    actor: str = "system",
    actor_id: int | None = None,
) -> Partner:
    """Stop forwarding to the partner and refuse its API credentials."""
    partner.active = False
    partner.disabled_reason = reason[:200]
    partner.disabled_at = now
    session.add(partner)
    audit.record(
        session,
        action="partner_disabled",
        actor=actor,
        actor_id=actor_id,
        object_type="partner",
        object_id=partner.id,
        details={"name": partner.name, "reason": partner.disabled_reason},
        now=now,
    )
    return partner


def enable_partner(
    session: Session,
    partner: Partner,
    *,
    now: dt.datetime,
    actor: str = "system",
    actor_id: int | None = None,
) -> Partner:
    partner.active = True
    partner.disabled_reason = None
    partner.disabled_at = None
    session.add(partner)
    audit.record(
        session,
        action="partner_enabled",
        actor=actor,
        actor_id=actor_id,
        object_type="partner",
        object_id=partner.id,
        details={"name": partner.name},
        now=now,
    )
    return partner


def _by_partner(session: Session, ids: list[int], value: Any, order: Any) -> dict[int, list[Any]]:
    """One column of a partner's detail table (countries, ASNs...), per partner, ordered."""
    found: dict[int, list[Any]] = {i: [] for i in ids}
    if ids:
        table = value.class_
        rows = session.execute(
            select(col(table.partner_id), col(value))
            .where(col(table.partner_id).in_(ids))
            .order_by(col(order))
        )
        for partner_id, item in rows:
            found[partner_id].append(item)
    return found


def read_partners(session: Session, partners: Sequence[Partner]) -> list[PartnerRead]:
    """Partners with their countries, ASNs, domains and languages, in the given order."""
    ids = [_id(p) for p in partners]
    countries = _by_partner(session, ids, PartnerCountry.country, PartnerCountry.country)
    asns = _by_partner(session, ids, PartnerAsn.asn, PartnerAsn.asn)
    domains = _by_partner(
        session, ids, PartnerDomain.registered_domain, PartnerDomain.registered_domain
    )
    languages = _by_partner(session, ids, PartnerLanguage.language, PartnerLanguage.position)
    return [
        PartnerRead(
            id=_id(p),
            name=p.name,
            kind=p.kind,
            countries=countries[_id(p)],
            asns=asns[_id(p)],
            domains=domains[_id(p)],
            webhook_url=p.webhook_url,
            email=p.email,
            languages=languages[_id(p)],
            active=p.active,
            disabled_reason=p.disabled_reason,
            may_export=p.may_export,
            may_submit=p.may_submit,
            note=p.note,
            created_at=p.created_at,
        )
        for p in partners
    ]


def list_partners(session: Session) -> list[PartnerRead]:
    rows = session.execute(select(Partner).order_by(col(Partner.kind), col(Partner.name)))
    return read_partners(session, list(rows.scalars()))


# Files -----------------------------------------------------------------------------------


def read_partner_file(path: Path) -> list[PartnerSpec]:
    """Partners from a TOML file (``[[partner]]`` tables) or a YAML file (a ``partners``
    list), checked for form; `InvalidPartner` names the first partner that is not."""
    text = path.read_text(encoding="utf-8")
    data: Any
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise InvalidPartner(f"Not valid YAML: {type(exc).__name__}") from None
        entries = data.get("partners") if isinstance(data, dict) else None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidPartner(f"Not valid TOML: {exc}") from None
        entries = data.get("partner")
    if not isinstance(entries, list):
        raise InvalidPartner("The file lists no partners ([[partner]] in TOML, partners: in YAML).")
    specs = [parse_spec(entry if isinstance(entry, dict) else {}) for entry in entries]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidPartner(f"Partners named twice: {', '.join(duplicates)}")
    return specs


def load_partners(
    session: Session,
    specs: Sequence[PartnerSpec],
    *,
    now: dt.datetime,
    cipher: MultiFernet,
    production: bool = False,
    actor: str = "system",
    actor_id: int | None = None,
) -> list[Added]:
    """Add the partners not registered yet, update those that are (by name). Loading the
    same file twice changes nothing and issues no new secrets."""
    for spec in specs:
        check_spec(spec, production=production)
    results = []
    for spec in specs:
        existing = session.execute(
            select(Partner).where(col(Partner.name) == spec.name)
        ).scalar_one_or_none()
        if existing is None:
            results.append(
                add_partner(
                    session,
                    spec,
                    now=now,
                    cipher=cipher,
                    production=production,
                    actor=actor,
                    actor_id=actor_id,
                )
            )
        else:
            if _differs(session, existing, spec):
                update_partner(
                    session,
                    existing,
                    spec,
                    now=now,
                    production=production,
                    actor=actor,
                    actor_id=actor_id,
                )
            results.append(Added(existing, created=False))
    return results


def _differs(session: Session, partner: Partner, spec: PartnerSpec) -> bool:
    (current,) = read_partners(session, [partner])
    fields = set(PartnerSpec.model_fields) - {"active"}
    shown = current.model_dump(include=fields)
    wanted = spec.model_dump(include=fields)
    for key in ("countries", "asns", "domains"):
        shown[key], wanted[key] = sorted(shown[key]), sorted(wanted[key])
    return bool(shown != wanted)
