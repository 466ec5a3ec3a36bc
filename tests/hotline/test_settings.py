from __future__ import annotations

import ipaddress
from pathlib import Path

import geoip2fast
import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from hotline.settings import Settings


@pytest.fixture(autouse=True)
def bare_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("HOTLINE_"):
            monkeypatch.delenv(name)


def test_development_defaults_need_nothing() -> None:
    settings = Settings()
    assert settings.sqlalchemy_url.startswith("sqlite:///")
    assert settings.celery_broker_url == "filesystem://"


def test_production_refuses_development_fallbacks() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(env="production")
    message = str(refused.value)
    for name in (
        "HOTLINE_DATABASE_URL",
        "HOTLINE_BROKER_URL",
        "HOTLINE_REDIS_URL",
        "HOTLINE_CONTACT_KEYS",
        "HOTLINE_STAFF_KEYS",
    ):
        assert name in message
    ok = Settings(
        env="production",
        database_url="postgresql+psycopg://h@db/h",
        broker_url="redis://r:6379/0",
        redis_url="redis://r:6379/1",
        contact_keys=Fernet.generate_key().decode(),  # type: ignore[arg-type]
        staff_keys=Fernet.generate_key().decode(),  # type: ignore[arg-type]
    )
    assert ok.env == "production"


def test_contact_keys_must_be_fernet_keys() -> None:
    with pytest.raises(ValidationError, match="HOTLINE_CONTACT_KEYS"):
        Settings(contact_keys="not-a-key")  # type: ignore[arg-type]
    two = f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}"
    assert Settings(contact_keys=two).contact_keys.get_secret_value() == two  # type: ignore[arg-type]


def test_networks_are_read_from_comma_separated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_TRUSTED_PROXIES", "10.0.0.1, 2001:db8::/64")
    assert Settings().trusted_proxies == [
        ipaddress.ip_network("10.0.0.1/32"),
        ipaddress.ip_network("2001:db8::/64"),
    ]
    monkeypatch.setenv("HOTLINE_TRUSTED_PROXIES", "not-a-network")
    with pytest.raises(ValidationError):
        Settings()


def test_fetch_ports_are_ports_and_ranges_from_low_to_high(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOTLINE_FETCH_PORTS", "80, 443,8000-8002")
    assert Settings().fetch_ports == [80, 443, 8000, 8001, 8002]
    # Each of these would have refused every fetch, or allowed what is not a port.
    for value, why in (
        ("", "names no port"),
        (" , ", "names no port"),
        ("8080-80", "low to high"),
        ("70000", "within 1-65535"),
        ("0", "within 1-65535"),
        ("http", "not a port"),
        ("80-", "not a port"),
    ):
        monkeypatch.setenv("HOTLINE_FETCH_PORTS", value)
        with pytest.raises(ValidationError, match="HOTLINE_FETCH_PORTS") as refused:
            Settings()
        assert why in str(refused.value), value


def test_production_refuses_fetching_from_private_networks() -> None:
    with pytest.raises(ValidationError, match="HOTLINE_FETCH_ALLOW_NETWORKS"):
        Settings(
            env="production",
            database_url="postgresql+psycopg://h@db/h",
            broker_url="redis://r:6379/0",
            redis_url="redis://r:6379/1",
            contact_keys=Fernet.generate_key().decode(),  # type: ignore[arg-type]
            staff_keys=Fernet.generate_key().decode(),  # type: ignore[arg-type]
            fetch_allow_networks="127.0.0.0/8",  # type: ignore[arg-type]
        )


def test_hosting_overrides_serve_tests_and_are_refused_in_production() -> None:
    parsed = Settings(hosting_overrides="127.0.0.0/8=pl, ::1/128=PL")  # type: ignore[arg-type]
    assert [(str(n), c) for n, c in parsed.hosting_overrides] == [
        ("127.0.0.0/8", "PL"),
        ("::1/128", "PL"),
    ]
    with pytest.raises(ValidationError, match="network=COUNTRY"):
        Settings(hosting_overrides="127.0.0.0/8=Poland")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="HOTLINE_HOSTING_OVERRIDES"):
        Settings(
            env="production",
            database_url="postgresql+psycopg://h@db/h",
            broker_url="redis://r:6379/0",
            redis_url="redis://r:6379/1",
            contact_keys=Fernet.generate_key().decode(),  # type: ignore[arg-type]
            staff_keys=Fernet.generate_key().decode(),  # type: ignore[arg-type]
            hosting_overrides="127.0.0.0/8=PL",  # type: ignore[arg-type]
        )


def test_a_hosting_data_file_that_is_not_there_stops_the_start(tmp_path: Path) -> None:
    # Else every worker would start and then fail each target on its hosting lookup.
    with pytest.raises(ValidationError, match="HOTLINE_GEOIP_DATA_FILE: no such file"):
        Settings(geoip_data_file=str(tmp_path / "geoip2fast-new.dat.gz"))
    with pytest.raises(ValidationError, match="no such file"):
        Settings(geoip_data_file=str(tmp_path))  # a directory
    shipped = Path(geoip2fast.__file__).parent / "geoip2fast-asn-ipv6.dat.gz"
    assert Settings(geoip_data_file=str(shipped)).geoip_data_file == str(shipped)
    with pytest.raises(ValidationError, match="HOTLINE_ASN_DATA_FILE: no such file"):
        Settings(asn_data_file=str(tmp_path / "GeoLite2-ASN.mmdb"))


def test_a_refused_setting_is_named_but_no_secret_is_echoed() -> None:
    secret = "not-a-fernet-key-but-a-secret-all-the-same"
    with pytest.raises(ValidationError) as bad_key:
        Settings(staff_keys=secret)  # type: ignore[arg-type]
    assert "HOTLINE_STAFF_KEYS" in str(bad_key.value)
    assert "secret" not in str(bad_key.value)
    with pytest.raises(ValidationError) as production:
        Settings(
            env="production",
            database_url="postgresql+psycopg://hotline:db-password-42@db/hotline",
            contact_keys=Fernet.generate_key().decode(),  # type: ignore[arg-type]
        )
    assert "HOTLINE_BROKER_URL" in str(production.value)
    assert "db-password-42" not in str(production.value)
