"""Where content is hosted: country and network operator of the address the fetcher
actually connected to, from the offline geoip2fast database (no network at run time).

geoip2fast ships country and AS *names* (the operator, e.g. ``CLOUDFLARENET``) but
not AS numbers, in its bundled files and in any it builds, so ``asn`` stays empty
here; routing (partners) keys on the country and the operator name, and on an AS
number where one is known.
Update the data by upgrading the geoip2fast package or setting
``HOTLINE_GEOIP_DATA_FILE`` to a newer file.

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
        self, data_file: Path = BUNDLED, overrides: Sequence[tuple[Network, str]] = ()
    ) -> None:
        self._db = GeoIP2Fast(geoip2fast_data_file=str(data_file))
        self._lock = threading.Lock()  # geoip2fast keeps per-lookup state
        self._overrides = tuple(overrides)

    def lookup(self, ip: str) -> Hosting:
        parsed = ipaddress.ip_address(ip)
        address = str(parsed)
        for network, overridden in self._overrides:
            if parsed.version == network.version and parsed in network:
                return Hosting(ip=address, country=overridden, asn=None, org=None)
        with self._lock:
            found = self._db.lookup(address)
        code = str(getattr(found, "country_code", "") or "")
        country = code.upper() if len(code) == 2 and code.isalpha() else None
        org = str(getattr(found, "asn_name", "") or "") or None
        if getattr(found, "is_private", False):
            country, org = None, None
        return Hosting(ip=address, country=country, asn=None, org=org)


@lru_cache
def get_hosting_lookup() -> HostingLookup:
    settings = get_settings()
    configured = settings.geoip_data_file
    data_file = Path(configured).expanduser() if configured else BUNDLED
    return HostingLookup(data_file, overrides=settings.hosting_overrides)
