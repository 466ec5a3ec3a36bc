"""Where content is hosted: country and network operator of the address the fetcher
actually connected to, from the offline geoip2fast database (no network at run time).

geoip2fast ships country and AS *names* (the operator, e.g. ``CLOUDFLARENET``) but
not AS numbers, in its bundled files and in any it builds. AS numbers come from a
MaxMind-format ASN database when ``HOTLINE_ASN_DATA_FILE`` names one (GeoLite2-ASN, or
DB-IP's free "IP to ASN Lite"), read offline with ``maxminddb``; its operator name is
then preferred too. Without one ``asn`` stays empty; routing (partners) keys on the
country and the operator name, and on an AS number where one is known.
Update the data by upgrading the geoip2fast package or setting
``HOTLINE_GEOIP_DATA_FILE`` to a newer file, and by replacing the ASN file.

``HOTLINE_HOSTING_OVERRIDES`` (never in production; settings refuse it) maps networks
to countries before the data is asked: tests and demonstrations serve "a site abroad"
from 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import geoip2fast
import maxminddb
from geoip2fast import GeoIP2Fast

from hotline.settings import get_settings

BUNDLED = Path(geoip2fast.__file__).parent / "geoip2fast-asn-ipv6.dat.gz"


@dataclass(frozen=True)
class Hosting:
    ip: str
    country: str | None
    asn: int | None
    org: str | None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class HostingLookup:
    def __init__(
        self,
        data_file: Path = BUNDLED,
        overrides: Sequence[tuple[Network, str]] = (),
        *,
        asn_file: Path | None = None,
    ) -> None:
        self._db = GeoIP2Fast(geoip2fast_data_file=str(data_file))
        self._lock = threading.Lock()  # geoip2fast keeps per-lookup state
        self._overrides = tuple(overrides)
        # Thread-safe, memory-mapped; a file that is not an MMDB database fails here.
        self._asn = maxminddb.open_database(str(asn_file)) if asn_file else None

    def lookup(self, ip: str) -> Hosting:
        parsed = ipaddress.ip_address(ip)
        address = str(parsed)
        asn, asn_org = self._asn_of(address)
        for network, overridden in self._overrides:
            if parsed.version == network.version and parsed in network:
                return Hosting(ip=address, country=overridden, asn=asn, org=asn_org)
        with self._lock:
            found = self._db.lookup(address)
        code = str(getattr(found, "country_code", "") or "")
        country = code.upper() if len(code) == 2 and code.isalpha() else None
        org = str(getattr(found, "asn_name", "") or "") or None
        if getattr(found, "is_private", False):
            country, org = None, None
        return Hosting(ip=address, country=country, asn=asn, org=asn_org or org)

    def _asn_of(self, address: str) -> tuple[int | None, str | None]:
        """AS number and operator from the ASN database, if one is set and knows the
        address (a private address is known only if the file says so)."""
        if self._asn is None:
            return None, None
        record = self._asn.get(address)
        if not isinstance(record, dict):
            return None, None
        number = record.get("autonomous_system_number")
        name = record.get("autonomous_system_organization")
        asn = number if isinstance(number, int) and 0 < number < 2**32 else None
        org = (name.strip()[:255] or None) if isinstance(name, str) else None
        return asn, org


@lru_cache
def get_hosting_lookup() -> HostingLookup:
    settings = get_settings()
    configured = settings.geoip_data_file
    data_file = Path(configured).expanduser() if configured else BUNDLED
    asn_file = Path(settings.asn_data_file).expanduser() if settings.asn_data_file else None
    return HostingLookup(data_file, overrides=settings.hosting_overrides, asn_file=asn_file)
