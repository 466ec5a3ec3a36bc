"""Canonical URLs, registered domains and public addresses (reporting/urls.py).

The WPT URL corpus (../shared/testdata/wpt-urltestdata.json) checks that our canonical
form is the WHATWG href minus userinfo and fragment; every disagreement is listed in
`KNOWN_WPT_DEVIATIONS` and in docs/urls.md.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.errors import HotlineError
from reporting.errors import InvalidReportURL, UnsupportedScheme, URLNotPublic, URLTooLong
from reporting.urls import CanonicalURL, canonicalise, is_public_address, registered_domain
from tests.fixtures.spellings import SAME_URL_CANONICAL, SAME_URL_SPELLINGS

WPT_DATA = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "wpt-urltestdata.json"

OUR_ERRORS = (InvalidReportURL, UnsupportedScheme, URLNotPublic, URLTooLong)
OUR_CODES = {"invalid_url", "unsupported_scheme", "url_not_public", "url_too_long"}

# To compare the parser with WPT, the refusal of non-public hosts is switched off
# (public_only=False); the refusals are tested on their own below.
EVERY_NETWORK = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))

_INVALID_PUNYCODE = (
    "ada-url accepts an xn-- label that is not valid Punycode; the URL Standard fails "
    "it. Kept: such a host cannot be registered, so the report ends up unreachable."
)

# input -> why our canonical form differs from WPT. Keep docs/urls.md in step.
KNOWN_WPT_DEVIATIONS: dict[str, str] = {
    "http://a.b.c.xn--pokxncvks": _INVALID_PUNYCODE,
    "http://10.0.0.xn--pokxncvks": _INVALID_PUNYCODE,
    "http://a.b.c.XN--pokxncvks": _INVALID_PUNYCODE,
    "http://a.b.c.Xn--pokxncvks": _INVALID_PUNYCODE,
    "http://10.0.0.XN--pokxncvks": _INVALID_PUNYCODE,
    "http://10.0.0.xN--pokxncvks": _INVALID_PUNYCODE,
    "https://xn--/": (
        "ada-url accepts the label 'xn--' with nothing after the prefix; the URL Standard "
        "fails it. Kept for the same reason."
    ),
}

# Expected numbers over the http/https cases without a base; a change in the corpus
# or in ada-url shows up here first.
WPT_HTTP_CASES = 270
WPT_MATCHED = 116
WPT_EXPECTED_FAILURES_REFUSED = 147
WPT_LOCALHOST_REFUSED = 0
# Valid URLs to a host that is not on the public internet, which intake refuses by
# default: localhost, 127.0.0.1, 192.168.0.1, 0.0.0.0, two IPv6 outside 2000::/3, and
# 21 names outside every public suffix ("http://foo/", "http://test/", ...).
WPT_NOT_PUBLIC_BY_DEFAULT = 27


@functools.cache
def _load_wpt() -> list[dict[str, Any]]:
    return [case for case in json.loads(WPT_DATA.read_text("utf-8")) if isinstance(case, dict)]


def wpt_cases() -> list[dict[str, Any]]:
    if not WPT_DATA.is_file():
        message = f"WPT URL test data missing: expected {WPT_DATA} (../shared beside the repo)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return _load_wpt()


def _is_http(text: str) -> bool:
    text = text.translate(str.maketrans("", "", "\t\n\r"))
    text = text.strip("".join(chr(c) for c in range(0x21))).lower()
    return text.startswith(("http:", "https:"))


def _expected(case: dict[str, Any]) -> str:
    # The WPT href with our documented transformations: no userinfo, no fragment. An
    # unescaped "#" first appears where the fragment starts; "@" in userinfo is escaped.
    href = str(case["href"]).partition("#")[0]
    scheme, _, rest = href.partition("//")
    if case["username"] or case["password"]:
        rest = rest.partition("@")[2]
    return f"{scheme}//{rest}"


def _outcome(raw: str, **kwargs: Any) -> CanonicalURL | HotlineError:
    try:
        return canonicalise(raw, **kwargs)
    except HotlineError as error:
        caught = error
    assert isinstance(caught, OUR_ERRORS), type(caught)
    assert caught.code in OUR_CODES
    return caught


def test_wpt_http_cases_match_the_url_standard() -> None:
    run = matched = failures_refused = localhost_refused = not_public_by_default = 0
    mismatches: dict[str, str] = {}
    for case in wpt_cases():
        raw = case["input"]
        href = case.get("href") or ""
        if case.get("base") is not None or not (_is_http(raw) or _is_http(href)):
            continue
        run += 1
        by_default = _outcome(raw)  # succeeds or raises one of our errors
        if not case.get("failure") and isinstance(by_default, URLNotPublic):
            not_public_by_default += 1
        got = _outcome(raw, public_only=False)
        if case.get("failure"):
            if isinstance(got, HotlineError):
                failures_refused += 1
            else:
                mismatches[raw] = f"WPT: failure; we: {got.url}"
        elif isinstance(got, URLNotPublic):
            localhost_refused += 1
        elif isinstance(got, HotlineError):
            mismatches[raw] = f"WPT: {_expected(case)}; we: {got.code}"
        elif got.url == _expected(case):
            matched += 1
        else:
            mismatches[raw] = f"WPT: {_expected(case)}; we: {got.url}"

    assert mismatches.keys() == KNOWN_WPT_DEVIATIONS.keys(), mismatches
    assert (run, matched, failures_refused, localhost_refused, not_public_by_default) == (
        WPT_HTTP_CASES,
        WPT_MATCHED,
        WPT_EXPECTED_FAILURES_REFUSED,
        WPT_LOCALHOST_REFUSED,
        WPT_NOT_PUBLIC_BY_DEFAULT,
    )
    assert run == matched + failures_refused + localhost_refused + len(mismatches)


def test_wpt_every_input_alone_succeeds_or_raises_our_error() -> None:
    # Cases with a base are fed without it: relative inputs must fail cleanly.
    for case in wpt_cases():
        _outcome(case["input"])


def test_wpt_canonical_form_is_idempotent() -> None:
    succeeded = 0
    for case in wpt_cases():
        for policy in ((), EVERY_NETWORK):
            got = _outcome(case["input"], allow_networks=policy)
            if isinstance(got, CanonicalURL):
                succeeded += 1
                assert canonicalise(got.url, allow_networks=policy) == got, case["input"]
    assert succeeded > 200


def _any_case(word: str) -> st.SearchStrategy[str]:
    return st.tuples(*(st.sampled_from([c.lower(), c.upper()]) for c in word)).map("".join)


_LABEL = st.text(alphabet="abcxyz09-éßüк", min_size=1, max_size=8)
_HOST = st.one_of(
    st.lists(_LABEL, min_size=1, max_size=3).map(".".join),
    st.sampled_from(["EXAMPLE.com", "example.com.", "8.8.8.8", "0x08.8.8.8", "[2606:4700::1]"]),
)
_SEGMENT = st.one_of(
    st.sampled_from([".", "..", "%2e", "%2E%2e", "a", "B", "%41", "%", "%zz", "é", "x y", ""]),
    st.text(alphabet="ab/.%;:@é", max_size=6),
)
_QUERY = st.text(alphabet="a=&%20é?/ .", max_size=10)
_FRAGMENT = st.text(alphabet="a#%é /", max_size=6)


@st.composite
def urls(draw: st.DrawFn) -> str:
    scheme = draw(st.one_of(_any_case("http"), _any_case("https")))
    userinfo = draw(
        st.one_of(st.just(""), st.text(alphabet="ab:%@1", max_size=6).map("{}@".format))
    )
    host = draw(_HOST)
    port = draw(st.one_of(st.just(""), st.integers(0, 70000).map(":{}".format)))
    path = "/".join(draw(st.lists(_SEGMENT, max_size=6)))
    query = draw(st.one_of(st.just(""), _QUERY.map("?{}".format)))
    fragment = draw(st.one_of(st.just(""), _FRAGMENT.map("#{}".format)))
    return f"{scheme}://{userinfo}{host}{port}/{path}{query}{fragment}"


@settings(max_examples=300, deadline=None)
@given(urls())
def test_canonical_form_is_a_fixed_point(raw: str) -> None:
    got = _outcome(raw)
    if isinstance(got, CanonicalURL):
        assert canonicalise(got.url) == got
        assert got.url.startswith(("http://", "https://"))
        assert "#" not in got.url
        assert "@" not in got.url.split("/")[2]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_text_succeeds_or_raises_our_error(raw: str) -> None:
    got = _outcome(raw)
    if isinstance(got, CanonicalURL):
        assert canonicalise(got.url) == got


@pytest.mark.parametrize("raw", SAME_URL_SPELLINGS)
def test_spellings_of_one_url_share_the_canonical_form(raw: str) -> None:
    got = canonicalise(raw)
    assert got == CanonicalURL(SAME_URL_CANONICAL, "example.com", "example.com")


@pytest.mark.parametrize(
    "raw",
    [
        "http:example.com/a/c?q=1",
        "\nhttp://example.com/a/c?q=1\n",
        "\u00a0http://example.com/a/c?q=1\u3000",
        "http://EXAMPLE.COM/a/c?q=1#",
        "http://example.com/./a/c?q=1",
        "http://example.com/a/c/../c?q=1",
        "ht\ttp://example.com/a/c?q=1",
    ],
)
def test_more_spellings_of_one_url(raw: str) -> None:
    assert canonicalise(raw).url == SAME_URL_CANONICAL


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("HtTpS://example.com:443/a", "https://example.com/a"),
        ("https://example.com:80/", "https://example.com:80/"),
        ("http://example.com", "http://example.com/"),
        ("http://example.com/?", "http://example.com/?"),
        ("http://example.com/a?b=1&a=2", "http://example.com/a?b=1&a=2"),
        ("http://example.com/a b/é?q=é", "http://example.com/a%20b/%C3%A9?q=%C3%A9"),
        ("http://example.com/%7e/%7E", "http://example.com/%7e/%7E"),
        ("http://example.com/\ud800", "http://example.com/%EF%BF%BD"),
        ("http://example.com./x", "http://example.com./x"),
        ("http://[2606:4700:4700:0:0:0:0:1111]:8080/", "http://[2606:4700:4700::1111]:8080/"),
        ("example.com", "http://example.com/"),
        ("example.com?q#f", "http://example.com/?q"),
    ],
)
def test_canonical_form(raw: str, expected: str) -> None:
    assert canonicalise(raw).url == expected


def test_trailing_dot_is_kept_in_host_but_not_in_registered_domain() -> None:
    got = canonicalise("http://www.Example.co.uk./")
    assert got == CanonicalURL("http://www.example.co.uk./", "www.example.co.uk.", "example.co.uk")


NOT_PUBLIC = [
    "http://127.0.0.1/",
    "http://0x7f.1/",
    "http://2130706433/",
    "http://127\u30020\u30020\u30021/",
    "http://017700000001/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:0:7f00:1]/",
    "http://10.1.2.3/",
    "http://192.168.0.1/",
    "http://172.16.5.4/",
    "http://169.254.169.254/",
    "http://100.64.0.1/",
    "http://192.0.0.192/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[::a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::1]/",
    # Teredo; the client IPv4 (low 32 bits inverted) is 192.0.2.45, documentation.
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
    "http://0.0.0.0/",
    "http://0/",
    "http://localhost/",
    "http://foo.localhost./",
    "http://LOCALHOST:8080/",
    "http://localhost./",
    "http://a.b.LocalHost/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://[ff02::1]/",
    "http://[::]/",
    "https://user:pw@127.0.0.1:443/#x",
    # Names outside every public suffix only resolve on a local network.
    "nonsense",
    "http://intranet/",
    "http://printer.lan/",
    "http://router.home.arpa./",
    "http://mylocalhost/",
]


@pytest.mark.parametrize("raw", NOT_PUBLIC)
def test_not_public_hosts_are_refused(raw: str) -> None:
    with pytest.raises(URLNotPublic):
        canonicalise(raw)


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        ("http://8.8.8.8/", "8.8.8.8"),
        ("http://[2606:4700:4700::1111]/", "[2606:4700:4700::1111]"),
        ("http://93.184.216.34/", "93.184.216.34"),
        ("http://[::ffff:8.8.8.8]/", "[::ffff:808:808]"),
        (
            "http://[2001:0:4136:e378:8000:63bf:f7f7:f7f7]/",
            "[2001:0:4136:e378:8000:63bf:f7f7:f7f7]",
        ),
        ("http://localhost.example.com/", "localhost.example.com"),
        ("http://mylocalhost.net/", "mylocalhost.net"),
        ("http://hidden2vfbkqzsyh.onion/", "hidden2vfbkqzsyh.onion"),
    ],
)
def test_public_hosts_are_accepted(raw: str, host: str) -> None:
    assert canonicalise(raw).host == host


def test_allowed_networks_come_before_refusal() -> None:
    allow = [ipaddress.ip_network("127.0.0.0/8")]
    got = canonicalise("http://127.0.0.1:8080/x", allow_networks=allow)
    assert got == CanonicalURL("http://127.0.0.1:8080/x", "127.0.0.1", "127.0.0.1")
    v6 = canonicalise("http://[::1]:8080/", allow_networks=[ipaddress.ip_network("::1/128")])
    assert v6.host == "[::1]"
    with pytest.raises(URLNotPublic):
        canonicalise("http://10.0.0.1/", allow_networks=allow)
    with pytest.raises(URLNotPublic):  # names are not addresses: localhost stays refused
        canonicalise("http://localhost:8080/", allow_networks=allow)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("ftp://example.com/", UnsupportedScheme),
        ("javascript:alert(1)", UnsupportedScheme),
        ("data:text/html,x", UnsupportedScheme),
        ("file:///etc/passwd", UnsupportedScheme),
        ("ws://example.com/", UnsupportedScheme),
        ("mailto:someone@example.com", UnsupportedScheme),
        ("blob:https://example.com/uuid", UnsupportedScheme),
        # "host:port" without a scheme reads as the scheme "example.com:"
        ("example.com:8080/x", UnsupportedScheme),
        ("http://", InvalidReportURL),
        ("https:", InvalidReportURL),
        ("http://exa mple.com/", InvalidReportURL),
        ("http://example.com:99999/", InvalidReportURL),
        ("http://[::1/", InvalidReportURL),
        ("http://1.2.3.4.5/", InvalidReportURL),
        ("", InvalidReportURL),
        ("   \t\n", InvalidReportURL),
        ("/relative/path", InvalidReportURL),
        ("//example.com/x", InvalidReportURL),
        ("?q=1", InvalidReportURL),
        ("#top", InvalidReportURL),
        ("exa mple.com", InvalidReportURL),
        ("http://example.com/" + "a" * 5000, URLTooLong),
    ],
)
def test_unfit_input_raises_a_clear_error_without_the_url(
    raw: str, error: type[HotlineError]
) -> None:
    with pytest.raises(error) as caught:
        canonicalise(raw)
    if raw.strip():
        assert raw.strip() not in str(caught.value)
        assert raw.strip() not in caught.value.detail
    assert "example.com" not in str(caught.value)


def test_length_is_checked_on_the_raw_input_and_on_the_result() -> None:
    exactly = "http://example.com/" + "a" * (4096 - len("http://example.com/"))
    assert canonicalise(exactly).url == exactly
    with pytest.raises(URLTooLong):
        canonicalise(exactly + "a")
    with pytest.raises(URLTooLong):
        canonicalise(" " * 4097 + "http://example.com/")
    # 22 characters in, 37 out: each "é" becomes "%C3%A9".
    with pytest.raises(URLTooLong):
        canonicalise("http://example.com/ééé", max_length=30)
    assert canonicalise("http://example.com/ééé", max_length=37).url.endswith("%C3%A9")


@pytest.mark.parametrize(
    ("raw", "host", "domain"),
    [
        ("https://alice.github.io/x", "alice.github.io", "alice.github.io"),
        ("https://bob.blogspot.com/", "bob.blogspot.com", "bob.blogspot.com"),
        ("https://www.bbc.co.uk/news", "www.bbc.co.uk", "bbc.co.uk"),
        ("http://sub.example.com/", "sub.example.com", "example.com"),
        ("http://a.b.sub.example.com/", "a.b.sub.example.com", "example.com"),
        ("http://пример.рф/", "xn--e1afmkfd.xn--p1ai", "xn--e1afmkfd.xn--p1ai"),
        ("http://www.xn--e1afmkfd.xn--p1ai/", "www.xn--e1afmkfd.xn--p1ai", "xn--e1afmkfd.xn--p1ai"),
        ("http://8.8.8.8/", "8.8.8.8", "8.8.8.8"),
        ("http://[2606:4700:4700::1111]/", "[2606:4700:4700::1111]", "2606:4700:4700::1111"),
        ("http://github.io/", "github.io", "github.io"),
    ],
)
def test_registered_domain(raw: str, host: str, domain: str) -> None:
    got = canonicalise(raw)
    assert (got.host, got.registered_domain) == (host, domain)


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("WWW.Example.COM", "example.com"),
        ("www.example.com.", "example.com"),
        ("пример.рф", "xn--e1afmkfd.xn--p1ai"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("co.uk", "co.uk"),
        ("intranet", "intranet"),
        ("example.invalidtld", "example.invalidtld"),
        ("", ""),
    ],
)
def test_registered_domain_of_a_host(host: str, domain: str) -> None:
    assert registered_domain(host) == domain


PUBLIC_ADDRESSES = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "100.63.255.255",
    "100.128.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "192.0.1.1",
    "192.88.98.255",
    "192.169.0.0",
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
    "::8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
    "2001:200::1",
    "3fff:1000::1",
]

# Python 3.11's is_global gets the first five of these wrong; the table must not.
NOT_PUBLIC_ADDRESSES = [
    "192.0.0.192",
    "::a9fe:a9fe",
    "64:ff9b::a9fe:a9fe",
    "2002:a9fe:a9fe::1",
    "100.64.0.1",
    "192.88.99.1",
    "224.0.0.1",
    "0.0.0.0",  # noqa: S104 - an address under test, nothing binds to it
    "0.1.2.3",
    "10.0.0.1",
    "100.127.255.255",
    "127.255.255.255",
    "169.254.169.254",
    "172.16.0.0",
    "172.31.255.255",
    "192.0.0.8",
    "192.0.2.1",
    "192.168.255.255",
    "198.18.0.1",
    "198.19.255.255",
    "198.51.100.7",
    "203.0.113.9",
    "239.255.255.255",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:0:a9fe:a9fe",
    "::127.0.0.1",
    "64:ff9b::7f00:1",
    "64:ff9b:1::808:808",
    "100::1",
    "2001::1",  # Teredo with client 255.255.255.254
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo, client 192.0.2.45
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "2001:2::1",
    "2001:10::1",
    "2001:20::1",
    "2001:1ff:ffff::1",
    "2001:db8::1",
    "2002:7f00:1::1",
    "2002:c0a8:101::1",
    "3fff::1",
    "3fff:fff::1",
    "5f00::1",
    "fc00::1",
    "fdff:ffff::1",
    "fe80::1",
    "febf::1",
    "fec0::1",
    "ff02::1",
    "ff0e::1",
    "1::1",  # outside global unicast 2000::/3
    "4000::1",
    "0:1:0:1:0:1:0:1",
]


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_public_addresses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", NOT_PUBLIC_ADDRESSES)
def test_not_public_addresses(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


# The IPv4 table written out again, independently of reporting/urls.py.
_REFUSED_V4 = [
    ipaddress.IPv4Network(net)
    for net in [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
    ]
]


def _v6(value: int) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(value)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))
def test_embedded_ipv4_decides_for_every_ipv6_form(v4: int, low: int) -> None:
    expected = not any(ipaddress.IPv4Address(v4) in net for net in _REFUSED_V4)
    assert is_public_address(ipaddress.IPv4Address(v4)) is expected
    forms = [
        _v6(0xFFFF << 32 | v4),  # ::ffff:a.b.c.d
        _v6(0x64FF9B << 96 | v4),  # 64:ff9b::a.b.c.d
        _v6(0x2002 << 112 | v4 << 80 | (low & (2**80 - 1))),  # 6to4
        # Teredo, with a public server (8.8.8.8; its own test below): the client decides
        _v6(0x20010000 << 96 | 0x08080808 << 64 | (low & 0xFFFFFFFF_00000000) | (~v4 & 0xFFFFFFFF)),
    ]
    if v4 > 1:  # ::0 and ::1 are unspecified and loopback, not IPv4-compatible
        forms.append(_v6(v4))
    for form in forms:
        assert is_public_address(form) is expected, form


def test_hosts_longer_than_dns_allows_are_invalid() -> None:
    long_host = ".".join(["a" * 60] * 5) + ".com"  # 309 characters
    with pytest.raises(InvalidReportURL):
        canonicalise(f"http://{long_host}/")
    assert canonicalise("http://" + ".".join(["a" * 60] * 4) + ".com/").host.endswith(".com")
