"""The guard table of the fetcher, and its limits of size, time and redirects.

Guard tests run with ``allow_networks`` empty (or holding exactly the loopback address
a local server listens on) and a resolver the test controls, so no name is looked up
for real. An autouse tripwire wraps ``socket.socket.connect``: it records every
connection attempt of the test and refuses, without sending a packet, any destination
outside loopback, so a failing guard can never reach another address.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import ipaddress
import os
import resource
import socket
import ssl
import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import brotli
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hotline.settings import Settings, get_settings
from tests.fixtures import images, servers
from tests.fixtures.audit import exception_texts, has_marker
from tests.fixtures.servers import (
    CountingListener,
    LocalHTTPServer,
    Route,
    brotli_bomb,
    drip,
    drip_headers,
    endless,
    gzip_bomb,
    redirect,
    tls_server_context,
)
from triage import fetcher as fetcher_module
from triage.errors import FetchError
from triage.extract import media_links
from triage.fetcher import Fetcher, FetchPolicy, FetchResult, get_fetcher

# The shared fixtures, until tests/conftest.py imports them for every module.
http_server = servers.http_server
counting_listener = servers.counting_listener

Connections = list[tuple[str, int]]


@pytest.fixture(autouse=True)
def connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[Connections]:
    """Every ``connect`` of this test; anything beyond loopback is refused and fails it."""
    attempts: Connections = []
    escaped: Connections = []
    original_connect = socket.socket.connect

    def guarded_connect(sock: socket.socket, address: Any) -> None:
        host, port = str(address[0]), int(address[1])
        attempts.append((host, port))
        if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            escaped.append((host, port))
            raise ConnectionRefusedError("test tripwire: only loopback may be connected to")
        original_connect(sock, address)

    def guarded_connect_ex(sock: socket.socket, address: Any) -> int:  # pragma: no cover
        guarded_connect(sock, address)
        return 0

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    yield attempts
    assert escaped == [], "a connection to a non-loopback address was attempted"


class Resolver:
    """A resolver the test controls: answers by name, or by call number for rebinding."""

    def __init__(
        self,
        answers: dict[str, Sequence[str]] | None = None,
        *,
        sequence: Sequence[Sequence[str]] = (),
        error: BaseException | None = None,
        delay: float = 0,
    ) -> None:
        self.answers = answers or {}
        self.sequence = list(sequence)
        self.error = error
        self.delay = delay
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append((host, port))
        if self.delay:
            time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        if self.sequence:
            return self.sequence[min(len(self.calls), len(self.sequence)) - 1]
        if host in self.answers:
            return self.answers[host]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def policy(*ports: int, allow: Sequence[str] = (), **overrides: Any) -> FetchPolicy:
    values: dict[str, Any] = {
        "allow_networks": tuple(ipaddress.ip_network(n) for n in allow),
        "ports": frozenset(ports),
        "connect_timeout": 2,
        "read_timeout": 2,
        "total_timeout": 4,
        **overrides,
    }
    return FetchPolicy(**values)


def refused(fetcher: Fetcher, url: str, **options: Any) -> str:
    """The reason code of a fetch that must fail; checks the error tells nothing more."""
    with pytest.raises(FetchError) as caught:
        fetcher.fetch(url, **options)
    error = caught.value
    text = str(error)
    assert not url or url not in text
    assert "://" not in text
    assert error.__cause__ is None
    assert error.__suppress_context__ or error.__context__ is None
    return error.reason


@pytest.fixture
def second_server() -> Iterator[LocalHTTPServer]:
    """A server on 127.0.0.2: allowed by a test while 127.0.0.1 stays refused."""
    with LocalHTTPServer(host="127.0.0.2") as server:
        yield server


# -- The guard table: refused before any connection

# Non-public IP literals in every class and many spellings; {port} is the counting
# listener's, so a loopback case that slipped through would be counted there.
REFUSED_URLS: list[str] = [
    # IPv4, one or more per refused network
    "http://0.0.0.0:{port}/",
    "http://0.1.2.3:{port}/",
    "http://10.0.0.1:{port}/",
    "http://10.255.255.254:{port}/",
    "http://100.64.0.1:{port}/",
    "http://100.127.255.254:{port}/",
    "http://127.0.0.1:{port}/",
    "http://127.1.2.3:{port}/",
    "http://169.254.169.254:{port}/latest/meta-data/",
    "http://169.254.0.1:{port}/",
    "http://172.16.0.1:{port}/",
    "http://172.31.255.254:{port}/",
    "http://192.0.0.1:{port}/",
    "http://192.0.0.192:{port}/",
    "http://192.0.2.1:{port}/",
    "http://192.88.99.1:{port}/",
    "http://192.168.0.1:{port}/",
    "http://192.168.255.254:{port}/",
    "http://198.18.0.1:{port}/",
    "http://198.19.255.254:{port}/",
    "http://198.51.100.1:{port}/",
    "http://203.0.113.1:{port}/",
    "http://224.0.0.1:{port}/",
    "http://239.255.255.250:{port}/",
    "http://240.0.0.1:{port}/",
    "http://255.255.255.255:{port}/",
    # IPv4 spellings that browsers read as loopback or metadata
    "http://0x7f.1:{port}/",
    "http://2130706433:{port}/",
    "http://017700000001:{port}/",
    "http://0x7f000001:{port}/",
    "http://0177.0.0.1:{port}/",
    "http://127.1:{port}/",
    "http://127.0.0.1.:{port}/",
    "http://127\u30020\u30020\u30021:{port}/",
    "http://\uff10x7f.1:{port}/",
    "http://2852039166:{port}/",
    "http://0251.0376.0251.0376:{port}/",
    "http://0xa9fea9fe:{port}/",
    "HTTP://127.0.0.1:{port}/",
    "http://user:pw@127.0.0.1:{port}/",
    "https://127.0.0.1:{port}/",
    # IPv6
    "http://[::]:{port}/",
    "http://[::1]:{port}/",
    "http://[0:0:0:0:0:0:0:1]:{port}/",
    "http://[fe80::1]:{port}/",
    "http://[febf::1]:{port}/",
    "http://[fc00::1]:{port}/",
    "http://[fd12:3456::1]:{port}/",
    "http://[fec0::1]:{port}/",
    "http://[ff02::1]:{port}/",
    "http://[ff05::2]:{port}/",
    "http://[2001:db8::1]:{port}/",
    "http://[3fff::1]:{port}/",
    "http://[100::1]:{port}/",
    "http://[5f00::1]:{port}/",
    "http://[2001:2::1]:{port}/",
    "http://[2001:10::1]:{port}/",
    "http://[4000::1]:{port}/",
    "http://[::2]:{port}/",
    # IPv4 embedded in IPv6: mapped, translated, compatible, NAT64, 6to4, Teredo
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[::ffff:7f00:1]:{port}/",
    "http://[0:0:0:0:0:ffff:127.0.0.1]:{port}/",
    "http://[::ffff:169.254.169.254]:{port}/",
    "http://[::ffff:10.0.0.1]:{port}/",
    "http://[::ffff:0:7f00:1]:{port}/",
    "http://[::127.0.0.1]:{port}/",
    "http://[::a9fe:a9fe]:{port}/",
    "http://[64:ff9b::7f00:1]:{port}/",
    "http://[64:ff9b::a9fe:a9fe]:{port}/",
    "http://[64:ff9b::10.0.0.1]:{port}/",
    "http://[64:ff9b:1::1]:{port}/",
    "http://[2002:7f00:1::]:{port}/",
    "http://[2002:a9fe:a9fe::1]:{port}/",
    "http://[2002:c0a8:1::1]:{port}/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{port}/",  # Teredo, client 127.0.0.1
    "http://[2001:0:4136:e378:8000:63bf:5601:5601]:{port}/",  # Teredo, 169.254.169.254
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]:{port}/",  # Teredo, 192.0.2.45
    # Names that only a local resolver answers
    "http://localhost:{port}/",
    "http://LOCALHOST:{port}/",
    "http://localhost.:{port}/",
    "http://loc%61lhost:{port}/",
    "http://foo.localhost:{port}/",
    "http://a.b.localhost:{port}/",
    "http://printer.home.arpa:{port}/",
    "http://intranet:{port}/",
    "http://printer.lan:{port}/",
]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_refuses_non_public_literals_and_local_names(
    url: str, counting_listener: CountingListener, connections: Connections
) -> None:
    resolver = Resolver()
    fetcher = Fetcher(policy(counting_listener.port, 80, 443), resolver=resolver)
    assert refused(fetcher, url.format(port=counting_listener.port)) == "blocked_address"
    assert resolver.calls == []
    assert connections == []
    assert counting_listener.count == 0


# Addresses a public-looking name may resolve to; each must be refused.
REFUSED_ANSWERS: list[str] = [
    "127.0.0.1",
    "127.255.255.254",
    "0.0.0.0",  # noqa: S104 - an answer to refuse, nothing binds here
    "10.1.2.3",
    "172.20.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "192.0.0.192",
    "192.0.2.1",
    "198.51.100.1",
    "203.0.113.1",
    "198.18.0.1",
    "224.0.0.251",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "fe80::1",
    "fe80::1%1",
    "fc00::1",
    "fec0::1",
    "ff02::1",
    "2001:db8::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",
    "64:ff9b::7f00:1",
    "2002:7f00:1::",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",
    "not-an-address",
]


# A public address first does not vouch for the rest of the answer.
MIXED_ANSWERS = [
    ["1.1.1.1", "127.0.0.1"],
    ["1.1.1.1", "169.254.169.254"],
    ["2606:4700:4700::1111", "::1"],
    ["2606:4700:4700::1111", "10.0.0.1"],
    ["1.1.1.1", "::ffff:0:a00:1"],  # IPv4-translated (SIIT) 10.0.0.1
    ["1.1.1.1", "64:ff9b:1::a00:1"],  # local-use NAT64
    ["1.1.1.1", "100::1"],  # discard-only
    ["1.1.1.1", "2001:2::1"],  # benchmarking, inside 2001::/23
    ["1.1.1.1", "3fff::1"],  # documentation (RFC 9637)
    ["1.1.1.1", "5f00::1"],  # segment routing
    ["1.1.1.1", "2002:a9fe:a9fe::1"],  # 6to4 of 169.254.169.254
]


@pytest.mark.parametrize("answers", [[a] for a in REFUSED_ANSWERS] + MIXED_ANSWERS)
def test_refuses_names_resolving_to_non_public_addresses(
    answers: list[str], counting_listener: CountingListener, connections: Connections
) -> None:
    resolver = Resolver({"evil.example.com": answers})
    fetcher = Fetcher(policy(counting_listener.port), resolver=resolver)
    url = f"http://evil.example.com:{counting_listener.port}/a.jpg"
    assert refused(fetcher, url) == "blocked_address"
    assert resolver.calls == [("evil.example.com", counting_listener.port)]
    assert connections == []
    assert counting_listener.count == 0


def test_refuses_when_any_resolved_address_is_not_allowed(
    counting_listener: CountingListener, connections: Connections
) -> None:
    # The allowed answer comes first: a guard that checked only one address would connect.
    resolver = Resolver({"mixed.example.com": ["127.0.0.2", "127.0.0.1"]})
    fetcher = Fetcher(policy(counting_listener.port, allow=["127.0.0.2/32"]), resolver=resolver)
    url = f"http://mixed.example.com:{counting_listener.port}/"
    assert refused(fetcher, url) == "blocked_address"
    assert connections == []
    assert counting_listener.count == 0


REFUSED_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
]


def _embeddings(v4: ipaddress.IPv4Address) -> list[str]:
    value = int(v4)
    return [
        str(v4),
        f"::ffff:{v4}",
        str(ipaddress.IPv6Address((0x64FF9B << 96) | value)),
        str(ipaddress.IPv6Address((0x2002 << 112) | (value << 80) | 1)),
        str(ipaddress.IPv6Address((0x20010000 << 96) | (~value & 0xFFFFFFFF))),
    ]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    address=st.sampled_from(REFUSED_V4).flatmap(lambda net: st.ip_addresses(network=net).map(str)),
    form=st.integers(0, 4),
)
def test_any_refused_ipv4_address_in_any_embedding_is_refused(
    address: str, form: int, connections: Connections
) -> None:
    answer = _embeddings(ipaddress.IPv4Address(address))[form]
    fetcher = Fetcher(policy(80), resolver=Resolver({"any.example.com": [answer]}))
    assert refused(fetcher, "http://any.example.com/") == "blocked_address"
    assert connections == []


# -- DNS rebinding and pinning


@pytest.fixture
def rebinding() -> Iterator[tuple[LocalHTTPServer, CountingListener]]:
    """A server on 127.0.0.2:P and a counting listener on 127.0.0.1:P (the same port)."""
    for _ in range(20):
        server = LocalHTTPServer(host="127.0.0.2")
        try:
            listener = CountingListener(host="127.0.0.1", port=server.port)
        except OSError:
            server.stop()
            continue
        with server, listener:
            yield server, listener
        return
    pytest.fail("no port free on both 127.0.0.1 and 127.0.0.2")


def test_rebinding_resolves_once_and_connects_to_the_vetted_address(
    rebinding: tuple[LocalHTTPServer, CountingListener], connections: Connections
) -> None:
    server, listener = rebinding
    server.route("/img.jpg", body=b"\xff\xd8\xff pinned", headers={"Content-Type": "image/jpeg"})
    # First answer: an address the policy allows (standing in for a public one);
    # every later answer: loopback, where the counting listener waits.
    resolver = Resolver(sequence=[["127.0.0.2"], ["127.0.0.1"]])
    fetcher = Fetcher(policy(server.port, allow=["127.0.0.2/32"]), resolver=resolver)

    result = fetcher.fetch(f"http://rebind.example.com:{server.port}/img.jpg")

    assert result.content == b"\xff\xd8\xff pinned"
    assert result.ip == "127.0.0.2"
    assert resolver.calls == [("rebind.example.com", server.port)]
    assert connections == [("127.0.0.2", server.port)]
    assert listener.count == 0
    assert server.requests[0].headers["host"] == f"rebind.example.com:{server.port}"


def test_rebinding_on_a_redirect_hop_is_refused(
    rebinding: tuple[LocalHTTPServer, CountingListener], connections: Connections
) -> None:
    server, listener = rebinding
    server.add("/start", redirect(f"http://rebind.example.com:{server.port}/next"))
    resolver = Resolver(sequence=[["127.0.0.2"], ["127.0.0.1"]])
    fetcher = Fetcher(policy(server.port, allow=["127.0.0.2/32"]), resolver=resolver)

    url = f"http://rebind.example.com:{server.port}/start"
    assert refused(fetcher, url) == "redirect_blocked"
    assert len(resolver.calls) == 2
    assert connections == [("127.0.0.2", server.port)]
    assert listener.count == 0


def test_falls_back_to_the_next_vetted_address(
    http_server: LocalHTTPServer, counting_listener: CountingListener
) -> None:
    http_server.route("/a", body=b"second address")
    closed = _closed_port()
    resolver = Resolver({"two.example.com": ["127.0.0.3", "127.0.0.1"]})
    allow = ["127.0.0.3/32", "127.0.0.1/32"]
    fetcher = Fetcher(policy(http_server.port, closed, allow=allow), resolver=resolver)
    # 127.0.0.3 has nothing listening on the server's port: refused, then 127.0.0.1.
    result = fetcher.fetch(f"http://two.example.com:{http_server.port}/a")
    assert result.content == b"second address"
    assert result.ip == "127.0.0.1"


# -- Redirects


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1:{listener}/",
        "http://localhost:{listener}/",
        "http://[::1]:{listener}/",
        "http://[::ffff:127.0.0.1]:{listener}/",
        "http://0x7f.1:{listener}/",
        "http://internal.example.com:{listener}/",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://10.0.0.1/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:{listener}/_GET%20/",
        "ftp://127.0.0.1:{listener}/",
        "dict://127.0.0.1:{listener}/",
        "javascript:alert(1)",
        "data:text/plain,hello",
        "http://127.0.0.2:1/",
        "http://[::1",
        "http://",
    ],
)
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_to_refused_targets_are_blocked(
    location: str,
    status: int,
    second_server: LocalHTTPServer,
    counting_listener: CountingListener,
    connections: Connections,
) -> None:
    target = location.format(listener=counting_listener.port)
    start = second_server.add("/start", redirect(target, status))
    resolver = Resolver({"internal.example.com": ["127.0.0.1"]})
    fetcher = Fetcher(
        policy(second_server.port, counting_listener.port, 80, allow=["127.0.0.2/32"]),
        resolver=resolver,
    )
    assert refused(fetcher, start) == "redirect_blocked"
    assert connections == [("127.0.0.2", second_server.port)]
    assert counting_listener.count == 0


def test_redirect_to_a_port_outside_the_set_is_blocked(
    http_server: LocalHTTPServer, counting_listener: CountingListener, connections: Connections
) -> None:
    start = http_server.add("/start", redirect(f"http://127.0.0.1:{counting_listener.port}/"))
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"]))
    assert refused(fetcher, start) == "redirect_blocked"
    assert connections == [("127.0.0.1", http_server.port)]
    assert counting_listener.count == 0


def test_relative_redirects_are_followed_and_recorded(http_server: LocalHTTPServer) -> None:
    http_server.add("/a/b/start", redirect("../c?x=1#frag"))
    http_server.add("/a/c", redirect(f"//127.0.0.1:{http_server.port}/final", 301))
    http_server.route("/final", body=b"done", headers={"Content-Type": "text/plain"})
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"]))

    result = fetcher.fetch(http_server.url("/a/b/start"))

    assert result.url == http_server.url("/final")
    assert result.redirects == (http_server.url("/a/c?x=1"), http_server.url("/final"))
    assert result.content == b"done"
    assert [r.path for r in http_server.requests] == ["/a/b/start", "/a/c?x=1", "/final"]


def _chain(server: LocalHTTPServer, hops: int) -> str:
    for n in range(hops):
        server.add(f"/r{n}", redirect(f"/r{n + 1}"))
    server.route(f"/r{hops}", body=b"end")
    return server.url("/r0")


def test_five_redirects_are_followed(http_server: LocalHTTPServer) -> None:
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"]))
    result = fetcher.fetch(_chain(http_server, 5))
    assert result.content == b"end"
    assert len(result.redirects) == 5


def test_six_redirects_are_too_many(http_server: LocalHTTPServer) -> None:
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"]))
    assert refused(fetcher, _chain(http_server, 6)) == "too_many_redirects"
    assert len(http_server.requests) == 6


def test_no_redirect_is_followed_with_max_redirects_zero(http_server: LocalHTTPServer) -> None:
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"], max_redirects=0))
    assert refused(fetcher, _chain(http_server, 1)) == "too_many_redirects"


def test_a_redirect_status_without_location_is_the_result(http_server: LocalHTTPServer) -> None:
    url = http_server.route("/odd", status=302, body=b"no location")
    result = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"])).fetch(url)
    assert (result.status, result.content, result.redirects) == (302, b"no location", ())


# -- Scheme, port, URL


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "unsupported_scheme"),
        ("gopher://example.com/", "unsupported_scheme"),
        ("ftp://example.com/a.jpg", "unsupported_scheme"),
        ("javascript:alert(1)", "unsupported_scheme"),
        ("data:image/png;base64,AAAA", "unsupported_scheme"),
        ("ws://example.com/", "unsupported_scheme"),
        ("", "invalid_url"),
        ("http://", "invalid_url"),
        ("http://[::1", "invalid_url"),
        ("/relative/path", "invalid_url"),
        ("http://example.com/" + "a" * 9000, "invalid_url"),
        ("http://example.com:22/", "blocked_port"),
        ("http://example.com:6379/", "blocked_port"),
        ("https://example.com:80/", "blocked_port"),
    ],
)
def test_unfit_urls_are_refused_without_a_lookup(
    url: str, reason: str, connections: Connections
) -> None:
    resolver = Resolver({"example.com": ["127.0.0.1"]})
    fetcher = Fetcher(policy(443, 8080), resolver=resolver)
    assert refused(fetcher, url) == reason
    assert resolver.calls == []
    assert connections == []


def test_a_port_outside_the_set_is_refused_even_when_the_address_is_allowed(
    counting_listener: CountingListener, connections: Connections
) -> None:
    fetcher = Fetcher(policy(80, allow=["127.0.0.1/32"]))
    assert refused(fetcher, f"http://127.0.0.1:{counting_listener.port}/") == "blocked_port"
    assert connections == []
    assert counting_listener.count == 0


# -- Proxies from the environment


def test_proxy_variables_are_ignored(
    http_server: LocalHTTPServer,
    counting_listener: CountingListener,
    connections: Connections,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = f"http://127.0.0.1:{counting_listener.port}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, proxy)
    monkeypatch.setenv("all_proxy", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    url = http_server.route("/direct", body=b"direct")

    result = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"])).fetch(url)

    assert result.content == b"direct"
    assert connections == [("127.0.0.1", http_server.port)]
    assert counting_listener.count == 0


# -- Success and status


def test_a_fetch_returns_content_address_and_sends_only_our_headers(
    http_server: LocalHTTPServer,
) -> None:
    url = http_server.route("/pic", body=b"\x89PNG fake", headers={"Content-Type": "image/png"})
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"], user_agent="TestUA/1"))

    result = fetcher.fetch(url)

    assert isinstance(result, FetchResult)
    assert (result.url, result.status, result.content) == (url, 200, b"\x89PNG fake")
    assert (result.content_type, result.ip, result.redirects) == ("image/png", "127.0.0.1", ())
    assert url not in repr(result)
    headers = http_server.requests[0].headers
    assert headers["host"] == f"127.0.0.1:{http_server.port}"
    assert headers["user-agent"] == "TestUA/1"
    assert headers["accept-encoding"] == "gzip, deflate, br"
    assert "cookie" not in headers
    assert "referer" not in headers


def test_the_url_is_canonicalised_before_fetching(http_server: LocalHTTPServer) -> None:
    http_server.route("/a/c", body=b"canonical")
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"]))
    result = fetcher.fetch(f"HTTP://user:pw@127.0.0.1:{http_server.port}/a/./b/../c#top")
    assert result.url == http_server.url("/a/c")
    assert result.content == b"canonical"
    assert "authorization" not in http_server.requests[0].headers


def test_a_jpeg_served_as_html_is_returned_as_is(http_server: LocalHTTPServer) -> None:
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256))
    url = http_server.route("/page.html", body=jpeg, headers={"Content-Type": "text/html"})
    result = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"])).fetch(url)
    assert result.content == jpeg
    assert result.content_type == "text/html"


@pytest.mark.parametrize("status", [400, 403, 404, 410, 451, 500, 502, 503])
def test_error_statuses_are_reason_codes(http_server: LocalHTTPServer, status: int) -> None:
    url = http_server.route("/x", status=status, body=b"error page")
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"]))
    assert refused(fetcher, url) == f"http_error_{status}"


def test_a_missing_route_is_http_error_404(http_server: LocalHTTPServer) -> None:
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"]))
    assert refused(fetcher, http_server.url("/missing")) == "http_error_404"


def test_dns_failure_is_dns_error(connections: Connections) -> None:
    failing = Resolver(error=socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    assert refused(Fetcher(policy(80), resolver=failing), "http://nx.example.com/") == "dns_error"
    empty = Resolver({"empty.example.com": []})
    assert refused(Fetcher(policy(80), resolver=empty), "http://empty.example.com/") == "dns_error"
    assert connections == []


def test_a_slow_resolver_is_cut_at_the_deadline(connections: Connections) -> None:
    slow = Resolver({"slow.example.com": ["127.0.0.1"]}, delay=3)
    fetcher = Fetcher(policy(80, connect_timeout=0.3), resolver=slow)
    started = time.monotonic()
    assert refused(fetcher, "http://slow.example.com/") == "timeout"
    assert time.monotonic() - started < 1.5
    assert connections == []


def test_a_closed_port_is_connect_error() -> None:
    port = _closed_port()
    fetcher = Fetcher(policy(port, allow=["127.0.0.1/32"]))
    assert refused(fetcher, f"http://127.0.0.1:{port}/") == "connect_error"


def test_a_garbled_response_is_connect_error(http_server: LocalHTTPServer) -> None:
    url = http_server.add("/garbage", Route(raw=b"SSH-2.0-OpenSSH_9.6\r\n\r\n"))
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"]))
    assert refused(fetcher, url) == "connect_error"


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nX-%s\r\n\r\n",  # a header line without a colon
        b"HTTP/1.1 2%s OK\r\n\r\n",  # a status code that is not one
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%s\r\n",  # a bad chunk
        b"%s\r\n\r\n",  # no status line at all
    ],
    ids=["header", "status", "chunk", "garbage"],
)
def test_a_malformed_response_leaves_nothing_of_it_in_the_error(
    http_server: LocalHTTPServer, raw: bytes
) -> None:
    """h11 quotes the offending bytes in its error; no trace of it is chained to ours."""
    marker = images.new_marker()
    url = http_server.add("/malformed", Route(raw=raw % marker))
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"]))
    with pytest.raises(FetchError) as caught:
        fetcher.fetch(url)
    assert caught.value.reason == "connect_error"
    assert caught.value.__context__ is None
    assert not any(has_marker(shown) for shown in exception_texts(caught.value))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- Size


def test_a_declared_length_above_the_cap_is_refused_before_reading(
    http_server: LocalHTTPServer,
) -> None:
    url = http_server.add(
        "/big", Route(headers={"Content-Length": str(10**9)}, body=lambda: iter([b"x"] * 0))
    )
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"], max_bytes=1_000_000))
    started = time.monotonic()
    assert refused(fetcher, url) == "too_large"
    assert time.monotonic() - started < 1


def test_an_endless_body_is_cut_at_max_bytes(http_server: LocalHTTPServer) -> None:
    url = http_server.add("/endless", endless())
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"], max_bytes=200_000))
    assert refused(fetcher, url) == "too_large"


def test_a_body_of_exactly_max_bytes_is_accepted(http_server: LocalHTTPServer) -> None:
    url = http_server.route("/exact", body=b"x" * 5000)
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"], max_bytes=5000))
    assert len(fetcher.fetch(url).content) == 5000
    over = http_server.add("/over", Route(body=lambda: iter([b"x" * 5001])))
    assert refused(fetcher, over) == "too_large"


def _html_only(head: bytes, content_type: str | None) -> bool:
    return head.startswith(b"<html") or content_type == "text/html"


def test_a_page_past_the_cap_is_kept_in_part_when_the_caller_says_so(
    http_server: LocalHTTPServer,
) -> None:
    """A page padded after its links (gzip makes the padding nearly free) comes back
    cut at the cap; anything else past it is still too large."""
    page = b"<html><img src=/a.jpg>" + b" " * 3_000_000
    packed = gzip.compress(page)
    url = http_server.route("/padded", body=packed, headers={"Content-Encoding": "gzip"})
    plain = http_server.route("/plain", body=page)
    other = http_server.route("/other", body=b"\x00" * 3_000_000)
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"], max_bytes=1_000_000))

    assert refused(fetcher, url) == "too_large"  # the default
    for cut in (url, plain):
        result = fetcher.fetch(cut, keep_head=_html_only)
        assert result.truncated
        assert result.content.startswith(b"<html><img src=/a.jpg>")
        assert 900_000 <= len(result.content) <= 1_000_000
    assert refused(fetcher, other, keep_head=_html_only) == "too_large"
    small = fetcher.fetch(http_server.route("/small", body=b"<html>"), keep_head=_html_only)
    assert small.content.startswith(b"<html>")
    assert not small.truncated


def test_a_declared_length_above_the_cap_is_read_only_as_far_as_its_start(
    http_server: LocalHTTPServer,
) -> None:
    """Said to be too large and not a page: refused after the first 64 KiB, not after
    the cap."""
    sent: list[int] = []

    def video() -> Iterator[bytes]:
        for _ in range(1000):
            sent.append(65536)
            yield b"\x00" * 65536

    declared = {"Content-Length": str(1000 * 65536)}
    url = http_server.add("/video", Route(headers=declared, body=video))
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"], max_bytes=10_000_000))
    assert refused(fetcher, url, keep_head=_html_only) == "too_large"
    assert sum(sent) < 10_000_000


def _peak_rss_bytes() -> int:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    scale = 1 if sys.platform == "darwin" else 1024  # pragma: no cover
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale  # pragma: no cover


@pytest.mark.parametrize(
    ("encoding", "bomb"), [("gzip", gzip_bomb), ("br", brotli_bomb)], ids=["gzip", "brotli"]
)
@pytest.mark.parametrize("declared_length", [True, False], ids=["length", "no-length"])
def test_decompression_bombs_are_too_large_in_bounded_memory(
    http_server: LocalHTTPServer,
    encoding: str,
    bomb: Callable[[], bytes],
    declared_length: bool,
) -> None:
    payload = bomb()  # 1 GiB of zeros once decoded; built before measuring
    body: Any = payload if declared_length else (lambda: iter([payload]))
    url = http_server.add("/bomb", Route(headers={"Content-Encoding": encoding}, body=body))
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"], max_bytes=5_000_000))

    rss_before = _peak_rss_bytes()
    tracemalloc.start()
    try:
        reason = refused(fetcher, url)
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert reason == "too_large"
    assert traced_peak < 20_000_000
    assert _peak_rss_bytes() - rss_before < 100_000_000


def test_the_bombs_are_what_they_claim() -> None:
    assert zlib.decompress(gzip_bomb(8 << 20), 16 + zlib.MAX_WBITS) == bytes(8 << 20)
    assert brotli.decompress(brotli_bomb(8 << 20)) == bytes(8 << 20)
    assert len(gzip_bomb()) < 2 << 20
    assert len(brotli_bomb()) < 4096


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


PLAIN = b"synthetic content " * 5000


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(PLAIN)),
        ("x-gzip", gzip.compress(PLAIN)),
        ("gzip", gzip.compress(PLAIN[:40000]) + gzip.compress(PLAIN[40000:])),
        ("deflate", zlib.compress(PLAIN)),
        ("deflate", _raw_deflate(PLAIN)),
        ("br", brotli.compress(PLAIN)),
        ("identity", PLAIN),
        ("GZIP", gzip.compress(PLAIN)),
        ("deflate, gzip", gzip.compress(zlib.compress(PLAIN))),
        ("gzip, br", brotli.compress(gzip.compress(PLAIN))),
    ],
    ids=[
        "gzip",
        "x-gzip",
        "gzip-two-members",
        "deflate-zlib",
        "deflate-raw",
        "br",
        "identity",
        "gzip-upper",
        "deflate-then-gzip",
        "gzip-then-br",
    ],
)
def test_content_encodings_are_decoded(
    http_server: LocalHTTPServer, encoding: str, body: bytes
) -> None:
    url = http_server.add("/enc", Route(headers={"Content-Encoding": encoding}, body=body))
    result = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"])).fetch(url)
    assert result.content == PLAIN


def test_decoded_bytes_count_against_the_cap(http_server: LocalHTTPServer) -> None:
    body = gzip.compress(bytes(300_000))
    url = http_server.add("/z", Route(headers={"Content-Encoding": "gzip"}, body=body))
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"], max_bytes=100_000))
    assert refused(fetcher, url) == "too_large"


def test_an_unknown_encoding_is_returned_as_received(http_server: LocalHTTPServer) -> None:
    url = http_server.add("/zstd", Route(headers={"Content-Encoding": "zstd"}, body=b"\x28\xb5"))
    result = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"])).fetch(url)
    assert result.content == b"\x28\xb5"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_corrupt_compressed_data_is_decode_error(
    http_server: LocalHTTPServer, encoding: str
) -> None:
    url = http_server.add(
        "/bad", Route(headers={"Content-Encoding": encoding}, body=b"\x1f\x8b\x08garbage" * 10)
    )
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"]))
    assert refused(fetcher, url) == "decode_error"


# -- Time


def test_a_dripping_body_is_cut_at_the_total_deadline(http_server: LocalHTTPServer) -> None:
    url = http_server.add("/drip", drip(1))
    fetcher = Fetcher(
        policy(http_server.port, allow=["127.0.0.1/32"], read_timeout=10, total_timeout=2)
    )
    started = time.monotonic()
    assert refused(fetcher, url) == "timeout"
    assert 1.9 < time.monotonic() - started < 2.5


def test_dripping_headers_are_cut_at_the_total_deadline(http_server: LocalHTTPServer) -> None:
    url = http_server.add("/drip-headers", drip_headers(20))
    fetcher = Fetcher(
        policy(http_server.port, allow=["127.0.0.1/32"], read_timeout=10, total_timeout=1)
    )
    started = time.monotonic()
    assert refused(fetcher, url) == "timeout"
    assert time.monotonic() - started < 1.5


def test_a_silent_server_is_cut_at_the_read_timeout(http_server: LocalHTTPServer) -> None:
    def silence() -> Iterator[bytes]:
        time.sleep(5)
        yield b""

    url = http_server.add("/silent", Route(raw=silence))
    assert timed_out_within(1.5, http_server, url, read_timeout=0.5, total_timeout=10)


def timed_out_within(seconds: float, server: LocalHTTPServer, url: str, **timeouts: float) -> bool:
    """Whether fetching ``url`` from ``server`` ends in ``timeout`` within ``seconds``."""
    fetcher = Fetcher(policy(server.port, allow=["127.0.0.1/32"], **timeouts))
    started = time.monotonic()
    reason = refused(fetcher, url)
    return reason == "timeout" and time.monotonic() - started < seconds


def test_the_total_deadline_spans_redirects(http_server: LocalHTTPServer) -> None:
    def slow_redirect(to: str) -> Route:
        def chunks() -> Iterator[bytes]:
            time.sleep(0.4)
            yield f"HTTP/1.0 302 Found\r\nLocation: {to}\r\n\r\n".encode()

        return Route(raw=chunks)

    for n in range(5):
        http_server.add(f"/s{n}", slow_redirect(f"/s{n + 1}"))
    http_server.route("/s5", body=b"late")
    fetcher = Fetcher(
        policy(http_server.port, allow=["127.0.0.1/32"], read_timeout=1, total_timeout=1)
    )
    started = time.monotonic()
    assert refused(fetcher, http_server.url("/s0")) == "timeout"
    assert time.monotonic() - started < 1.5


# -- TLS: the name is verified while the pinned address is connected


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[LocalHTTPServer, bytes]]:
    context, pem = tls_server_context(tmp_path, ["media.example.com"])
    with LocalHTTPServer(tls=context) as server:
        yield server, pem


def _client_context(pem: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=pem.decode())
    return context


def test_https_verifies_the_name_on_the_pinned_address(
    tls_server: tuple[LocalHTTPServer, bytes], connections: Connections
) -> None:
    server, pem = tls_server
    server.route("/secure.jpg", body=b"over tls")
    resolver = Resolver({"media.example.com": ["127.0.0.1"]})
    fetcher = Fetcher(
        policy(server.port, allow=["127.0.0.1/32"]),
        resolver=resolver,
        ssl_context=_client_context(pem),
    )
    result = fetcher.fetch(f"https://media.example.com:{server.port}/secure.jpg")
    assert result.content == b"over tls"
    assert result.ip == "127.0.0.1"
    assert connections == [("127.0.0.1", server.port)]
    assert server.requests[0].headers["host"] == f"media.example.com:{server.port}"


def test_https_with_a_certificate_for_another_name_is_tls_error(
    tls_server: tuple[LocalHTTPServer, bytes],
) -> None:
    server, pem = tls_server
    resolver = Resolver({"other.example.com": ["127.0.0.1"]})
    fetcher = Fetcher(
        policy(server.port, allow=["127.0.0.1/32"]),
        resolver=resolver,
        ssl_context=_client_context(pem),
    )
    assert refused(fetcher, f"https://other.example.com:{server.port}/") == "tls_error"
    assert server.requests == []


def test_https_with_an_untrusted_certificate_is_tls_error(
    tls_server: tuple[LocalHTTPServer, bytes],
) -> None:
    server, _ = tls_server
    resolver = Resolver({"media.example.com": ["127.0.0.1"]})
    fetcher = Fetcher(policy(server.port, allow=["127.0.0.1/32"]), resolver=resolver)
    assert refused(fetcher, f"https://media.example.com:{server.port}/") == "tls_error"


# -- Configuration


def test_policy_from_settings() -> None:
    settings = Settings(
        fetch_allow_networks="127.0.0.0/8, ::1/128",
        fetch_ports="80,8080",
        fetch_max_bytes=2048,
        fetch_connect_timeout_seconds=1.5,
        fetch_read_timeout_seconds=2.5,
        fetch_total_timeout_seconds=7,
        fetch_max_redirects=2,
        fetch_user_agent="UA",
    )
    assert FetchPolicy.from_settings(settings) == FetchPolicy(
        allow_networks=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
        ports=frozenset({80, 8080}),
        max_bytes=2048,
        connect_timeout=1.5,
        read_timeout=2.5,
        total_timeout=7,
        max_redirects=2,
        user_agent="UA",
    )


def test_get_fetcher_is_configured_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in os.environ if n.startswith("HOTLINE_FETCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOTLINE_FETCH_ALLOW_NETWORKS", "127.0.0.0/8")
    get_settings.cache_clear()
    get_fetcher.cache_clear()
    try:
        fetcher = get_fetcher()
        assert fetcher is get_fetcher()
        assert fetcher.policy.allow_networks == (ipaddress.ip_network("127.0.0.0/8"),)
        assert fetcher.policy.ports == frozenset({80, 443, 8080, 8443})
    finally:
        get_settings.cache_clear()
        get_fetcher.cache_clear()


def test_the_fetcher_is_a_context_manager(http_server: LocalHTTPServer) -> None:
    url = http_server.route("/a", body=b"a")
    with Fetcher(policy(http_server.port, allow=["127.0.0.1/32"])) as fetcher:
        assert fetcher.fetch(url).content == b"a"


# -- A review's attacks: decoding, addresses, redirects, framing, TLS


def synthetic(size: int) -> bytes:
    """Generated, compressible, non-repeating bytes of exactly ``size``, with a marker
    for the content audit at their start."""
    lines = b"".join(b"synthetic line %08d\n" % n for n in range(size // 24 + 1))
    return (images.new_marker() + b"\n" + lines)[:size]


def digest(content: bytes) -> str:
    """What an assertion may show of fetched bytes (never the bytes: the audit)."""
    return hashlib.sha256(content).hexdigest()


# -- Decoding: what is returned is the whole body


@pytest.mark.parametrize("size", [98_273, 300_000, 2_000_000])
def test_a_brotli_body_is_decoded_in_full(http_server: LocalHTTPServer, size: int) -> None:
    """A brotli body is returned whole: the decoder may hold output while it already
    accepts more input (bodies above 98,272 bytes were once cut there)."""
    plain = synthetic(size)
    url = http_server.add(
        "/br", Route(headers={"Content-Encoding": "br"}, body=brotli.compress(plain))
    )
    result = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"])).fetch(url)
    assert (len(result.content), digest(result.content)) == (len(plain), digest(plain))


def test_media_links_at_the_end_of_a_brotli_page_are_found(http_server: LocalHTTPServer) -> None:
    """A page served with ``br`` (which the fetcher asks for) shows its links to the
    end, beyond its first ~96 KiB."""
    filler = b"".join(b"<p>paragraph %06d</p>\n" % n for n in range(8000))
    marker = b"<!-- " + images.new_marker() + b" -->"
    page = b"<!doctype html><html><body>" + marker + filler + b'<img src="/late.jpg"></body></html>'
    url = http_server.add(
        "/page.html",
        Route(
            headers={"Content-Type": "text/html", "Content-Encoding": "br"},
            body=brotli.compress(page),
        ),
    )
    result = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"])).fetch(url)
    assert media_links(result.content, result.url, limit=50) == [http_server.url("/late.jpg")]


def test_gzip_members_that_arrive_in_separate_reads_are_all_decoded(
    http_server: LocalHTTPServer,
) -> None:
    """A gzip member that starts at a read boundary (the server flushes, then pauses)
    is decoded like one within a read."""
    first, second = synthetic(5000), synthetic(7000)[::-1]

    def chunks() -> Iterator[bytes]:
        yield gzip.compress(first)
        time.sleep(0.3)  # the first member is read on its own
        yield gzip.compress(second)

    url = http_server.add("/members", Route(headers={"Content-Encoding": "gzip"}, body=chunks))
    result = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"])).fetch(url)
    whole = first + second
    assert (len(result.content), digest(result.content)) == (len(whole), digest(whole))


# -- Addresses


def _teredo(server: str, client: str) -> str:
    """RFC 4380: 2001:0000:<server>:<flags>:<~port>:<~client>."""
    value = (
        (0x20010000 << 96)
        | (int(ipaddress.IPv4Address(server)) << 64)
        | (0x8000 << 48)
        | (0x63BF << 32)
        | (~int(ipaddress.IPv4Address(client)) & 0xFFFFFFFF)
    )
    return str(ipaddress.IPv6Address(value))


@pytest.mark.parametrize("server", ["127.0.0.1", "10.0.0.1", "169.254.169.254"])
def test_a_teredo_address_with_a_non_public_server_is_refused(
    server: str, connections: Connections
) -> None:
    """A host with a Teredo tunnel also sends bubbles to the server address embedded in
    the destination (RFC 4380 5.2.4): a non-public server there is refused too."""
    answer = _teredo(server, "1.1.1.1")  # the client half is public
    fetcher = Fetcher(policy(80), resolver=Resolver({"teredo.example.com": [answer]}))
    assert refused(fetcher, "http://teredo.example.com/") == "blocked_address"
    assert connections == []


# -- Redirects: spellings of a Location that lead to loopback


@pytest.mark.parametrize(
    "location",
    [
        "\\\\127.0.0.1:{port}/",
        "/\\127.0.0.1:{port}/",
        "http:\\\\127.0.0.1:{port}\\",
        "https:127.0.0.1:{port}/",
        "http://public.example.com@127.0.0.1:{port}/",
        "http://127.0.0.1:{port}\\@public.example.com/",
        "http://127%2E0%2E0%2E1:{port}/",
        "http://%31%32%37.1:{port}/",
        "http://127.0.0.1\t:{port}/",
        "http://2130706433:{port}/",
        "http://[fe80::1%25lo]:{port}/",
        "http://[::ffff:0:7f00:1]:{port}/",
        "http://LOCALHOST.:{port}/",
        # "ⓛⓞⓒⓐⓛⓗⓞⓢⓣ" in UTF-8, percent-encoded as a header must carry it
        "http://%E2%93%9B%E2%93%9E%E2%93%92%E2%93%90%E2%93%9B%E2%93%97%E2%93%9E%E2%93%A2%E2%93%A3:{port}/",
        "http://127.0.0.1%00.public.example.com:{port}/",
        "http://0x7f.0.0.1%2e:{port}/",
    ],
)
def test_redirect_location_spellings_of_loopback_are_blocked(
    location: str,
    counting_listener: CountingListener,
    connections: Connections,
) -> None:
    """Every WHATWG spelling of a loopback redirect is refused before any connection,
    including the ones a second, laxer parser would read differently."""
    with LocalHTTPServer(host="127.0.0.2") as server:
        target = location.format(port=counting_listener.port)
        # A redirect with a page, as servers send: it carries a marker for the audit.
        moved = dataclasses.replace(redirect(target), body=b"<p>moved</p>")
        start = server.add("/start", moved)
        fetcher = Fetcher(
            policy(server.port, counting_listener.port, allow=["127.0.0.2/32"]),
            resolver=Resolver({"public.example.com": ["127.0.0.2"]}),
        )
        assert refused(fetcher, start) == "redirect_blocked"
        assert connections == [("127.0.0.2", server.port)]
        assert counting_listener.count == 0


# -- Framing: limits hold against chunked and interim responses


def test_a_chunk_size_far_above_the_cap_is_cut_at_max_bytes(http_server: LocalHTTPServer) -> None:
    """A chunked body announcing one 256 TiB chunk is counted as read."""

    def raw() -> Iterator[bytes]:
        yield b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffff\r\n"
        while True:
            yield bytes(64 * 1024)

    url = http_server.add("/chunked", Route(raw=raw))
    fetcher = Fetcher(policy(http_server.port, allow=["127.0.0.1/32"], max_bytes=200_000))
    assert refused(fetcher, url) == "too_large"


def test_endless_interim_responses_are_cut_at_the_total_deadline(
    http_server: LocalHTTPServer,
) -> None:
    """A flood of ``100 Continue`` never reaches a final response; the total deadline
    ends it although every read returns at once."""

    def raw() -> Iterator[bytes]:
        while True:
            yield b"HTTP/1.1 100 Continue\r\n\r\n" * 500
            time.sleep(0.005)

    url = http_server.add("/continue", Route(raw=raw))
    assert timed_out_within(1.5, http_server, url, read_timeout=5, total_timeout=1)


# -- TLS context


@pytest.fixture
def fresh_default_context() -> Iterator[None]:
    """The cached default TLS context is built anew inside the test and dropped after it."""
    fetcher_module._default_ssl_context.cache_clear()
    yield
    fetcher_module._default_ssl_context.cache_clear()


def test_tls_secrets_are_not_logged_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_default_context: None
) -> None:
    """``SSLKEYLOGFILE`` in the environment (which ``ssl.create_default_context``
    honours) does not make the fetcher write the session secrets of its fetches, which
    would decrypt captured traffic of the fetched material."""
    keylog = tmp_path / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    context, _ = tls_server_context(tmp_path, ["media.example.com"])
    with LocalHTTPServer(tls=context) as server:
        fetcher = Fetcher(
            policy(server.port, allow=["127.0.0.1/32"]),
            resolver=Resolver({"media.example.com": ["127.0.0.1"]}),
        )
        # The self-signed certificate is refused, after the key exchange.
        assert refused(fetcher, f"https://media.example.com:{server.port}/") == "tls_error"
    logged = keylog.read_text().splitlines() if keylog.exists() else []
    assert [line.split(" ", 1)[0] for line in logged if not line.startswith("#")] == []
    assert isinstance(fetcher_module._default_ssl_context(), ssl.SSLContext)
