"""Canonical form of a reported URL, its registered domain, and which addresses are public.

Owns the one answer to "is this the same URL?" at intake: two reports of the same page
must land on the same `Target`, so every reported URL is parsed by the WHATWG URL
Standard (ada-url) and reduced to one canonical href.

Invariants:

- A `CanonicalURL` is always http or https, has a host, has no userinfo and no fragment,
  and is no longer than the `max_length` it was made with.
- Canonicalisation is idempotent: ``canonicalise(canonicalise(u).url) == canonicalise(u)``.
- Its host is never ``localhost``/``*.localhost`` nor an IP literal that `is_public_address`
  refuses, unless the caller allowed that network explicitly.
- No DNS and no network: host names are not resolved here and the public suffix list is
  the snapshot bundled with tldextract.
- Errors never carry the URL.

See docs/urls.md for the rules and the documented deviations from the WPT URL tests.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import ada_url
import tldextract

from hotline.errors import HotlineError
from reporting.errors import InvalidReportURL, UnsupportedScheme, URLNotPublic, URLTooLong

__all__ = [
    "CanonicalURL",
    "canonicalise",
    "is_public_address",
    "registered_domain",
    "site_of",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class CanonicalURL:
    url: str
    """The canonical href."""
    host: str
    """Canonical host: IDNA-encoded, lower case; an IPv6 literal in brackets."""
    registered_domain: str
    """e.g. ``example.co.uk`` or ``alice.github.io``; an IP host gives the IP."""


_ALLOWED_SCHEMES = frozenset({"http:", "https:"})

# WHATWG: a scheme is an ASCII letter followed by letters, digits, "+", "-", "." and ends
# with ":". Tab and newline are removed anywhere before parsing, so they are here too.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_TAB_OR_NEWLINE = str.maketrans("", "", "\t\n\r")
# WHATWG strips leading and trailing C0 controls and spaces; str.strip() adds the rest of
# Unicode whitespace, which a paste from a document can bring along.
_C0_OR_SPACE = "".join(chr(c) for c in range(0x21))

# Re-parsing the canonical href should be a fixed point at once; the bound only guards
# against a parser quirk turning into a loop.
_MAX_REPARSES = 3
MAX_HOST_LENGTH = 253


def canonicalise(
    raw: str,
    *,
    allow_networks: Sequence[IPNetwork] = (),
    max_length: int = 4096,
    public_only: bool = True,
) -> CanonicalURL:
    """Parse a reported URL and return its canonical form; raise a `HotlineError` if unfit.

    Input without a scheme ("example.com/x") is read as ``http://example.com/x``.
    Pure function: no DNS, no network, no side effects. ``public_only=False`` skips
    the refusal of non-public hosts (for comparing the parser with the URL Standard).
    """
    if len(raw) > max_length:
        raise URLTooLong
    text = _trim(_to_usv(raw))
    if not text:
        raise InvalidReportURL
    bare = text.translate(_TAB_OR_NEWLINE)
    if _SCHEME.match(bare) is None:
        if bare[:1] in ("/", "\\", "?", "#"):
            # A relative reference ("/path", "//host/x", "?q"): without a base there is
            # nothing to resolve it against.
            raise InvalidReportURL
        text = "http://" + text

    href = _canonical_href(_parse(text))
    for _ in range(_MAX_REPARSES):
        again = _canonical_href(_parse(href))
        if again == href:
            break
        href = again
    else:  # pragma: no cover - no known input reaches this
        raise InvalidReportURL
    if len(href) > max_length:
        raise URLTooLong

    parsed = _parse(href)
    host = str(parsed.hostname)
    if len(host) > MAX_HOST_LENGTH:  # DNS names end at 253 characters
        raise InvalidReportURL
    if public_only:
        _check_host_is_public(host, int(parsed.host_type), allow_networks)
    return CanonicalURL(url=href, host=host, registered_domain=registered_domain(host))


def registered_domain(host: str) -> str:
    """The domain a registrant controls: ``www.bbc.co.uk`` → ``bbc.co.uk``.

    Private suffixes count (``alice.github.io`` is its own registered domain). An IP
    literal gives the IP (IPv6 without brackets); a host with no public suffix, or one
    that is itself a public suffix, gives the host. A trailing dot is ignored. Uses the
    public suffix list bundled with tldextract; never the network.
    """
    name = host.strip().rstrip(".").lower()
    if not name.isascii():
        try:
            name = _to_ascii(name)
        except InvalidReportURL:
            return name
    ip = _ip_literal(name)
    if ip is not None:
        return str(ip)
    if not name:
        return name
    extracted = _extractor()(name)
    domain = getattr(extracted, "top_domain_under_public_suffix", None)
    if domain is None:  # tldextract < 5.3
        domain = extracted.registered_domain
    return str(domain) or name


def site_of(value: str) -> str | None:
    """The registered domain staff mean by a domain, a host under it, a URL on it or an
    IP address (IPv6 bare or in brackets), as the workers key sites; None when it names
    no site: no public suffix (``localhost``, ``exmaple.cmo``) or only one (``co.uk``)."""
    text = value.strip()
    ip = _ip_literal(text)
    if ip is not None:
        return str(ip)
    try:
        host = canonicalise(text, max_length=2048, public_only=False).host
    except HotlineError:
        return None
    ip = _ip_literal(host)
    if ip is not None:
        return str(ip)
    extracted = _extractor()(host)
    if not extracted.suffix or not extracted.domain:
        return None
    return registered_domain(host)


# One row per refused network; `_EMBEDDED_V6` below says which IPv6 prefixes carry an
# IPv4 address that is checked instead. Written out, not taken from ipaddress's
# is_global/is_private, which on Python 3.11 call e.g. 192.0.0.192, ::a9fe:a9fe,
# 64:ff9b::a9fe:a9fe, 2002:a9fe:a9fe::1 or 100.64.0.1 something they are not.
_REFUSED_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(net), why)
    for net, why in (
        ("0.0.0.0/8", "this network"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation (TEST-NET-1)"),
        ("192.88.99.0/24", "6to4 relay anycast (deprecated)"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation (TEST-NET-2)"),
        ("203.0.113.0/24", "documentation (TEST-NET-3)"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("255.255.255.255/32", "limited broadcast"),
    )
)

_REFUSED_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(net), why)
    for net, why in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignments (Teredo is unwrapped first)"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "segment routing SIDs"),
        ("fc00::/7", "unique local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    )
)

# Global unicast is allocated from 2000::/3 only; anything else that is neither embedded
# IPv4 nor listed above is unallocated and no web server lives there.
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")

_V4_MASK = 0xFFFF_FFFF


def _mapped(ip: int) -> tuple[int, ...]:
    return (ip & _V4_MASK,)


def _teredo(ip: int) -> tuple[int, ...]:
    # RFC 4380: 2001:0:SSSS:SSSS:flags:port:CCCC:CCCC, the Teredo server's IPv4 address
    # in bits 64..96 and the client's stored inverted in the low 32 bits. A Teredo host
    # sends to both (bubbles to the server), so both decide.
    return ((ip >> 64) & _V4_MASK, ~ip & _V4_MASK)


def _sixtofour(ip: int) -> tuple[int, ...]:
    # RFC 3056: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD in bits 16..48.
    return ((ip >> 80) & _V4_MASK,)


# Prefixes whose addresses reach IPv4 hosts; those hosts decide. Checked before the
# refused table, so ::/96 here does not hide ::/128 and ::1/128 (handled first below).
_EMBEDDED_V6: tuple[tuple[ipaddress.IPv6Network, Callable[[int], tuple[int, ...]]], ...] = (
    (ipaddress.IPv6Network("::ffff:0:0/96"), _mapped),  # IPv4-mapped
    (ipaddress.IPv6Network("::ffff:0:0:0/96"), _mapped),  # IPv4-translated (SIIT)
    (ipaddress.IPv6Network("::/96"), _mapped),  # IPv4-compatible (deprecated)
    (ipaddress.IPv6Network("64:ff9b::/96"), _mapped),  # NAT64 well-known prefix
    (ipaddress.IPv6Network("2001::/32"), _teredo),  # Teredo
    (ipaddress.IPv6Network("2002::/16"), _sixtofour),  # 6to4
)

_UNSPECIFIED_OR_LOOPBACK_V6 = (
    ipaddress.IPv6Address("::"),
    ipaddress.IPv6Address("::1"),
)


def is_public_address(address: IPAddress) -> bool:
    """Whether a host on the public internet may have this address.

    False for every network in the refused tables (private, loopback, link-local,
    CGNAT, documentation, benchmarking, multicast, reserved, ...). IPv6 forms that embed
    an IPv4 address (mapped, translated, compatible, NAT64, Teredo, 6to4) are judged by
    that IPv4 address (Teredo: its server's and its client's); other IPv6 addresses
    must be in global unicast 2000::/3.
    """
    if isinstance(address, ipaddress.IPv4Address):
        return not any(address in net for net, _ in _REFUSED_V4)
    if address in _UNSPECIFIED_OR_LOOPBACK_V6:
        return False
    for net, unwrap in _EMBEDDED_V6:
        if address in net:
            return all(is_public_address(ipaddress.IPv4Address(v4)) for v4 in unwrap(int(address)))
    if any(address in net for net, _ in _REFUSED_V6):
        return False
    return address in _GLOBAL_UNICAST_V6


# Special-use names (RFC 6761, RFC 8375) that the public suffix list does not exclude.
_LOCAL_NAMES = (".localhost", ".home.arpa")


def _check_host_is_public(host: str, host_type: int, allow_networks: Sequence[IPNetwork]) -> None:
    if host_type == int(ada_url.HostType.DEFAULT):
        name = host.rstrip(".")
        if name.endswith(_LOCAL_NAMES) or f".{name}".endswith(_LOCAL_NAMES):
            raise URLNotPublic
        # "intranet", "printer.lan": names outside every public suffix can only be
        # resolved by a local resolver, so they cannot be on the public internet.
        if not _extractor()(name).suffix:
            raise URLNotPublic
        return
    ip = ipaddress.ip_address(host.strip("[]"))
    if any(ip in net for net in allow_networks):
        return
    if not is_public_address(ip):
        raise URLNotPublic


def _parse(text: str) -> ada_url.URL:
    try:
        url = ada_url.URL(text)
    except ValueError:
        raise InvalidReportURL from None
    if url.protocol not in _ALLOWED_SCHEMES:
        raise UnsupportedScheme
    if not url.hostname:
        raise InvalidReportURL
    return url


def _canonical_href(url: ada_url.URL) -> str:
    # Through the setters rather than by joining the parts: the search getter says ""
    # for both "no query" and an empty query, and "/?" must stay "/?".
    url.username = ""
    url.password = ""
    url.hash = ""
    return str(url.href)


def _trim(text: str) -> str:
    while (trimmed := text.strip().strip(_C0_OR_SPACE)) != text:
        text = trimmed
    return text


def _to_usv(raw: str) -> str:
    # Browsers turn lone surrogates into U+FFFD before parsing (WebIDL USVString);
    # the UTF-8 encoder in the ada binding would otherwise raise.
    return raw.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _to_ascii(name: str) -> str:
    try:
        encoded = ada_url.idna_to_ascii(name)
    except (ValueError, UnicodeError):
        raise InvalidReportURL from None
    result = encoded.decode("ascii") if isinstance(encoded, bytes) else str(encoded)
    if not result:
        raise InvalidReportURL
    return result


def _ip_literal(name: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


@functools.cache
def _extractor() -> tldextract.TLDExtract:
    # suffix_list_urls=() and cache_dir=None: the bundled snapshot only, nothing fetched,
    # nothing written to disk.
    return tldextract.TLDExtract(
        suffix_list_urls=(),
        cache_dir=None,
        include_psl_private_domains=True,
    )
