"""Hosting facts offline: country and operator from geoip2fast, AS number and operator
from a MaxMind-format ASN database when one is set (written here by the test)."""

from __future__ import annotations

from pathlib import Path

import maxminddb
import pytest

from tests.fixtures.asn import asn_database
from triage.hosting import HostingLookup


@pytest.fixture
def asn_file(tmp_path: Path) -> Path:
    return asn_database(
        tmp_path / "asn.mmdb",
        {
            "127.0.0.0/8": (64500, "Example Transit"),
            "192.0.2.0/24": (64501, "  Example Documentation Net  "),
            "2001:db8::/32": (64502, "Example Six"),
        },
    )


def test_without_an_asn_database_there_is_no_as_number() -> None:
    found = HostingLookup().lookup("127.0.0.1")
    assert (found.ip, found.country, found.asn, found.org) == ("127.0.0.1", None, None, None)


def test_the_asn_database_gives_the_number_and_the_operator(asn_file: Path) -> None:
    lookup = HostingLookup(asn_file=asn_file)
    found = lookup.lookup("127.0.0.2")
    assert (found.asn, found.org) == (64500, "Example Transit")
    assert found.country is None  # loopback has no country in geoip2fast's data
    assert (lookup.lookup("192.0.2.7").asn, lookup.lookup("192.0.2.7").org) == (
        64501,
        "Example Documentation Net",
    )
    six = lookup.lookup("2001:0db8:0000::1")
    assert (six.ip, six.asn, six.org) == ("2001:db8::1", 64502, "Example Six")
    # An address the file does not know: no number, geoip2fast's answer stands.
    assert lookup.lookup("10.1.2.3").asn is None


def test_an_override_gives_the_country_and_keeps_the_as_number(asn_file: Path) -> None:
    import ipaddress

    lookup = HostingLookup(
        overrides=[(ipaddress.ip_network("127.0.0.0/8"), "PL")], asn_file=asn_file
    )
    found = lookup.lookup("127.0.0.1")
    assert (found.country, found.asn, found.org) == ("PL", 64500, "Example Transit")


def test_a_file_that_is_no_asn_database_fails_at_start(tmp_path: Path) -> None:
    broken = tmp_path / "asn.mmdb"
    broken.write_bytes(b"not a database at all" * 10)
    with pytest.raises(maxminddb.InvalidDatabaseError):
        HostingLookup(asn_file=broken)
