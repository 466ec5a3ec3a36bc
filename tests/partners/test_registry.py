"""The partner registry: the example configuration loads, secrets rotate with an overlap,
bad configurations are refused with a reason, and ``hotline partners`` drives it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import pytest
from cryptography.fernet import Fernet, MultiFernet
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col
from typer.testing import CliRunner

from hotline.cli_partners import partners_app
from hotline.db import session_scope
from hotline.models import AuditEvent
from partners import registry
from partners.errors import InvalidPartner, PartnerExists
from partners.models import Partner, PartnerKind, PartnerSecret, SecretPurpose
from tests.conftest import REPO

EXAMPLE = REPO / "docs" / "partners-example.toml"
NOW = dt.datetime(2026, 5, 4, 12, 0, tzinfo=dt.UTC)
CIPHER = MultiFernet([Fernet(Fernet.generate_key())])


def spec(**fields: object) -> registry.PartnerSpec:
    data: dict[str, object] = {
        "name": "Hotline PL",
        "kind": "hotline",
        "countries": ["pl"],
        "webhook_url": "https://hotline-pl.example.org/in",
    }
    data.update(fields)
    return registry.parse_spec(data)


def test_the_example_configuration_loads_once(session: Session) -> None:
    specs = registry.read_partner_file(EXAMPLE)
    first = registry.load_partners(session, specs, now=NOW, cipher=CIPHER, production=True)
    assert all(r.created for r in first)
    assert {r.partner.kind for r in first} == set(PartnerKind)
    shown = {p.name: p for p in registry.list_partners(session)}
    police = next(p for p in shown.values() if p.kind is PartnerKind.law_enforcement)
    assert police.countries == ["UA"]
    hosting = next(p for p in shown.values() if p.kind is PartnerKind.hosting_provider)
    assert hosting.asns == [64500, 64501]
    assert hosting.domains == ["example-hosting.test"]
    assert {c for p in shown.values() if p.kind is PartnerKind.hotline for c in p.countries} >= {
        "PL",
        "DE",
        "NL",
        "US",
    }
    secrets_before = session.execute(select(func.count()).select_from(PartnerSecret)).scalar_one()
    assert secrets_before == 3 * len(specs)

    again = registry.load_partners(session, specs, now=NOW, cipher=CIPHER, production=True)
    assert not any(r.created for r in again)
    assert not any(r.secrets for r in again)
    assert session.execute(select(func.count()).select_from(PartnerSecret)).scalar_one() == (
        secrets_before
    )


def test_loading_changes_a_partner_in_place(session: Session) -> None:
    # The audit log is never emptied between tests: look at this test's events only.
    before = session.execute(select(func.coalesce(func.max(AuditEvent.id), 0))).scalar_one()
    added = registry.add_partner(session, spec(), now=NOW, cipher=CIPHER)
    registry.load_partners(
        session, [spec(countries=["PL", "CZ"], languages=["pl"])], now=NOW, cipher=CIPHER
    )
    (shown,) = registry.read_partners(session, [added.partner])
    assert shown.countries == ["CZ", "PL"]
    assert shown.languages == ["pl"]
    actions = session.execute(
        select(AuditEvent.action).where(col(AuditEvent.id) > before).order_by(col(AuditEvent.id))
    ).scalars()
    assert list(actions) == ["partner_added", "partner_updated"]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"countries": ["XX"]}, "ISO 3166-1"),
        ({"countries": ["UKR"]}, "ISO 3166-1"),
        ({"countries": []}, "at least one country"),
        ({"webhook_url": "ftp://example.org/x"}, "http or https"),
        ({"webhook_url": "https://user:pw@example.org/x"}, "credentials"),
        ({"webhook_url": None, "email": None}, "webhook URL or an e-mail"),
        ({"email": "not an address"}, "e-mail"),
        ({"kind": "hosting_provider", "countries": []}, "ASN or domain"),
        ({"kind": "hosting_provider", "domains": ["www.example.org"]}, "registered domain"),
        ({"languages": ["Ukrainian"]}, "language tag"),
        ({"kind": "spy"}, "kind"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_configurations_are_refused_with_the_reason(
    fields: dict[str, object], problem: str
) -> None:
    with pytest.raises(InvalidPartner, match=problem):
        spec(**fields)


def test_production_delivers_over_https_only(session: Session) -> None:
    plain = spec(webhook_url="http://hotline-pl.example.org/in")
    with pytest.raises(InvalidPartner, match="https in production"):
        registry.add_partner(session, plain, now=NOW, cipher=CIPHER, production=True)
    assert registry.add_partner(session, plain, now=NOW, cipher=CIPHER).created


def test_names_are_unique(session: Session) -> None:
    registry.add_partner(session, spec(), now=NOW, cipher=CIPHER)
    with pytest.raises(PartnerExists):
        registry.add_partner(session, spec(), now=NOW, cipher=CIPHER)


def test_a_rotation_keeps_two_secrets_valid_during_the_overlap(session: Session) -> None:
    added = registry.add_partner(session, spec(), now=NOW, cipher=CIPHER)
    pid = added.partner.id
    assert pid is not None
    first = added.secrets[SecretPurpose.outbound_signing]
    overlap = dt.timedelta(hours=24)

    def valid(at: dt.datetime) -> list[str]:
        return registry.valid_secrets(
            session, pid, SecretPurpose.outbound_signing, now=at, cipher=CIPHER
        )

    assert valid(NOW) == [first]
    later = NOW + dt.timedelta(minutes=1)
    second = registry.rotate_secret(
        session, added.partner, now=later, overlap=overlap, cipher=CIPHER
    )
    assert second.startswith("whsec_")
    assert valid(later) == [second, first]  # the newest signs, both verify
    assert valid(later + overlap + dt.timedelta(seconds=1)) == [second]

    # A third rotation within the overlap retires the oldest at once: never three valid.
    third = registry.rotate_secret(
        session, added.partner, now=later + dt.timedelta(hours=1), overlap=overlap, cipher=CIPHER
    )
    assert valid(later + dt.timedelta(hours=1)) == [third, second]


def test_secrets_are_stored_encrypted_or_digested(session: Session) -> None:
    added = registry.add_partner(session, spec(), now=NOW, cipher=CIPHER)
    rows = session.execute(select(PartnerSecret)).scalars().all()
    stored = " ".join(f"{r.value_encrypted} {r.digest}" for r in rows)
    for value in added.secrets.values():
        assert value not in stored
    key = added.secrets[SecretPurpose.inbound_api_key]
    assert registry.partner_for_api_key(session, key, now=NOW) is added.partner
    assert registry.partner_for_api_key(session, key + "x", now=NOW) is None


def test_a_disabled_partner_loses_its_api_access(session: Session) -> None:
    added = registry.add_partner(session, spec(), now=NOW, cipher=CIPHER)
    key = added.secrets[SecretPurpose.inbound_api_key]
    registry.disable_partner(session, added.partner, reason="admin", now=NOW)
    assert registry.partner_for_api_key(session, key, now=NOW) is None
    assert added.partner.disabled_reason == "admin"
    registry.enable_partner(session, added.partner, now=NOW)
    assert registry.partner_for_api_key(session, key, now=NOW) is added.partner


# The command line ------------------------------------------------------------------------


@pytest.fixture
def cli(committed: Engine) -> Callable[..., str]:
    runner = CliRunner()

    def run(*args: str, input: str | None = None, code: int = 0) -> str:
        result = runner.invoke(partners_app, list(args), input=input)
        assert result.exit_code == code, result.output
        return result.output

    return run


def test_cli_loads_lists_disables_and_rotates(cli: Callable[..., str]) -> None:
    out = cli("load", str(EXAMPLE))
    assert "7 added, 0 kept" in out
    assert out.count("signing secret (we sign deliveries") == 7
    assert "0 added, 7 kept" in cli("load", str(EXAMPLE))

    rows = [json.loads(line) for line in cli("list", "--json").splitlines() if line]
    assert len(rows) == 7
    assert not any("secret" in key for row in rows for key in row)

    name = "Partner hotline Poland (example)"
    assert f"disabled {name}" in cli("disable", name, "--reason", "contract ended")
    with session_scope() as session:
        partner = session.execute(select(Partner).where(col(Partner.name) == name)).scalar_one()
        assert not partner.active
        assert partner.disabled_reason == "contract ended"

    out = cli("rotate-secret", name, "--overlap-hours", "48")
    assert "previous one is valid 48 h more" in out
    assert "whsec_" in out
    given = registry.new_signing_secret()
    out = cli("rotate-secret", name, "--purpose", "inbound_signing", "--value-stdin", input=given)
    assert given not in out
    with session_scope() as session:
        partner = session.execute(select(Partner).where(col(Partner.name) == name)).scalar_one()
        assert partner.id is not None
        inbound = registry.valid_secrets(
            session,
            partner.id,
            SecretPurpose.inbound_signing,
            now=dt.datetime.now(dt.UTC),
            cipher=registry.partner_cipher(),
        )
        assert inbound[0] == given
        assert len(inbound) == 2


def test_cli_add_refuses_a_bad_partner(cli: Callable[..., str]) -> None:
    out = cli(
        "add", "Police", "--kind", "law_enforcement", "--webhook", "https://x.example", code=1
    )
    assert "at least one country" in out
    out = cli(
        "add",
        "Police",
        "--kind",
        "law_enforcement",
        "--country",
        "UA",
        "--webhook",
        "https://police.example.org/in",
    )
    assert "added partner" in out
    assert out.count("whsec_") == 2
    assert "hpk_" in out
