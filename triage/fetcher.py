"""The one guarded HTTP client: every fetch of a reported URL, and of the media on it, and
every POST to a partner's endpoint (`Fetcher.post`, which never follows a redirect).

Anyone on the internet can make the workers fetch any URL, so this module is the
attack surface and owns the defences (docs/fetcher.md):

- Only http and https, only ports in ``FetchPolicy.ports``, on the first request and
  after every redirect; redirects are followed here, one hop at a time, and each hop is
  checked like a first request.
- Each hop's host is resolved exactly once. Every address it resolves to must pass
  `reporting.urls.is_public_address` (or lie in ``allow_networks``), else nothing is
  connected to. The connection then goes to one of exactly those vetted addresses:
  the httpcore network backend of the hop refuses any other origin and never resolves
  again, while TLS SNI, certificate verification and the Host header keep the name.
  A DNS answer that changes between check and use (rebinding) has nothing to change.
- Proxy environment variables are never read: httpcore is used directly, without the
  environment handling of httpx or urllib.
- Neither the bytes received nor the bytes decoded exceed ``max_bytes``; gzip, deflate
  and brotli are decoded here, incrementally, with bounded output per step. A body past
  it fails, or (when the caller's ``keep_head`` agrees, for pages) is cut there.
- Deadlines: ``connect_timeout`` per connection attempt (TCP and TLS), ``read_timeout``
  per read, and ``total_timeout`` over the whole fetch (DNS, connects, every read, all
  redirects); each wait is shortened to what is left of the total.

Bytes never leave this module except in the `FetchResult` handed to the caller; they
are never logged and never written to disk. `FetchError` carries a reason code only:
no URL, host or bytes in exception texts, and no underlying exception is chained to it
(not even as a suppressed context).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import logging
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Protocol

import ada_url
import brotli
import certifi
import httpcore

from hotline.errors import HotlineError
from hotline.settings import IPNetwork, Settings, get_settings
from reporting.errors import UnsupportedScheme, URLNotPublic
from reporting.urls import canonicalise, is_public_address
from triage.errors import FetchError

__all__ = [
    "FetchError",
    "FetchPolicy",
    "FetchResult",
    "Fetcher",
    "PostResult",
    "Resolver",
    "get_fetcher",
    "system_resolver",
]

log = logging.getLogger("hotline.triage.fetcher")

Resolver = Callable[[str, int], Sequence[str]]
"""``(host, port) -> IP address strings``; raises `OSError` (e.g. `socket.gaierror`)."""

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Refusals that become ``redirect_blocked`` when they happen on a redirect hop.
_REFUSALS = frozenset({"invalid_url", "unsupported_scheme", "blocked_address", "blocked_port"})
# Redirect targets are not typed by a reporter; allow them more room than intake does.
_MAX_URL_LENGTH = 8192
# Decoders hand on at most about this many bytes per step (brotli may overshoot to
# ~96 KiB), so a bomb is stopped within one step of ``max_bytes``.
_STEP = 64 * 1024
# Content codings applied in sequence, more are not decoded (see `_decoders`).
_MAX_CODINGS = 2
# brotli >= 1.2 can bound the output of one ``process`` call; older versions cannot,
# and one KiB of brotli input can expand to more than a gigabyte, so without the bound
# brotli is neither asked for nor decoded.
_BROTLI_BOUNDED = hasattr(brotli.Decompressor(), "can_accept_more_data")
_ACCEPT_ENCODING = b"gzip, deflate, br" if _BROTLI_BOUNDED else b"gzip, deflate"


@dataclass(frozen=True)
class FetchResult:
    url: str
    """Final URL after redirects (canonical form)."""
    status: int
    content: bytes
    """Decoded body, at most ``max_bytes``."""
    content_type: str | None
    """The Content-Type header, informational only: the type is decided from the bytes."""
    ip: str
    """The address actually connected to for the final response."""
    redirects: tuple[str, ...] = ()
    """The URLs of the hops after the first, in order (the last is ``url``)."""
    truncated: bool = False
    """The body ran past ``max_bytes`` and ``content`` is its first part (see ``fetch``)."""

    def __repr__(self) -> str:
        # Never print the URL or the bytes by accident (e.g. in a failed assertion log).
        return f"FetchResult(status={self.status}, bytes={len(self.content)})"


KeepHead = Callable[[bytes, "str | None"], bool]
"""Whether a body that runs past the cap may be kept in part: its first bytes (up to
``HEAD_BYTES``) and its Content-Type."""
HEAD_BYTES: Final = 65536


@dataclass(frozen=True)
class PostResult:
    """What a partner's endpoint answered to a POST: its status, nothing of its body."""

    status: int
    ip: str
    location: str | None = None
    """The Location header of a redirect, which is never followed."""

    def __repr__(self) -> str:
        return f"PostResult(status={self.status})"


@dataclass(frozen=True)
class FetchPolicy:
    allow_networks: tuple[IPNetwork, ...] = ()
    """Networks accepted although not public (tests and demonstrations only)."""
    ports: frozenset[int] = frozenset({80, 443, 8080, 8443})
    max_bytes: int = 25_000_000
    connect_timeout: float = 5
    read_timeout: float = 10
    total_timeout: float = 30
    max_redirects: int = 5
    user_agent: str = "Mozilla/5.0 (compatible; Hotline/0.1)"

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        return cls(
            allow_networks=tuple(settings.fetch_allow_networks),
            ports=frozenset(settings.fetch_ports),
            max_bytes=settings.fetch_max_bytes,
            connect_timeout=settings.fetch_connect_timeout_seconds,
            read_timeout=settings.fetch_read_timeout_seconds,
            total_timeout=settings.fetch_total_timeout_seconds,
            max_redirects=settings.fetch_max_redirects,
            user_agent=settings.fetch_user_agent,
        )


def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver: every TCP address of ``host``, in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Fetcher:
    """The guarded client. Thread-safe: a fetch keeps its state in its own objects."""

    def __init__(
        self,
        policy: FetchPolicy,
        *,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._policy = policy
        self._resolver = resolver or system_resolver
        self._ssl_context = ssl_context or _default_ssl_context()

    @property
    def policy(self) -> FetchPolicy:
        return self._policy

    def fetch(self, url: str, *, keep_head: KeepHead | None = None) -> FetchResult:
        """GET ``url`` through the guard, following redirects; raise `FetchError(reason)`.

        A body past ``max_bytes`` fails with ``too_large``, unless ``keep_head`` says its
        first part is worth keeping (a page padded to hide its links at the end): then
        the first ``max_bytes`` come back, marked ``truncated``."""
        try:
            return self._fetch(url, keep_head)
        except FetchError as exc:
            log.debug("fetch failed: %s", exc.reason)
            _drop_chain(exc)
            raise

    def post(self, url: str, body: bytes, headers: Sequence[tuple[str, str]] = ()) -> PostResult:
        """POST ``body`` to ``url`` through the same guard as a fetch: scheme, port and every
        resolved address checked, the connection pinned to a vetted address, the total
        deadline kept. Redirects are not followed (a 3xx is returned like any status);
        the response body is read up to ``max_bytes`` and dropped. Raise
        `FetchError(reason)` when no answer came (``timeout``, ``connect_error``, ...)."""
        try:
            deadline = _Deadline(self._policy.total_timeout)
            hop = _Hop.parse(url, self._policy)
            if hop.port not in self._policy.ports:
                raise FetchError("blocked_port")
            addresses = self._vetted_addresses(hop, deadline)
            return self._post(hop, addresses, deadline, body, headers)
        except FetchError as exc:
            log.debug("post failed: %s", exc.reason)
            _drop_chain(exc)
            raise

    def close(self) -> None:
        """Nothing is pooled between fetches; kept so callers can manage the lifetime."""

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _fetch(self, url: str, keep_head: KeepHead | None = None) -> FetchResult:
        deadline = _Deadline(self._policy.total_timeout)
        redirects: list[str] = []
        current = url
        first = True
        while True:
            try:
                hop = _Hop.parse(current, self._policy)
                if hop.port not in self._policy.ports:
                    raise FetchError("blocked_port")
                addresses = self._vetted_addresses(hop, deadline)
            except FetchError as exc:
                if not first and exc.reason in _REFUSALS:
                    raise FetchError("redirect_blocked") from None
                raise
            if not first:
                redirects.append(hop.url)
            first = False
            outcome = self._request(hop, addresses, deadline, keep_head)
            if isinstance(outcome, FetchResult):
                return dataclasses.replace(outcome, redirects=tuple(redirects))
            if len(redirects) >= self._policy.max_redirects:
                raise FetchError("too_many_redirects")
            try:
                current = str(ada_url.join_url(hop.url, outcome))
            except ValueError:
                raise FetchError("redirect_blocked") from None

    def _vetted_addresses(self, hop: _Hop, deadline: _Deadline) -> tuple[str, ...]:
        """Resolve once; every address must be public or allowed, else nothing is used."""
        if hop.is_ip_literal:
            answers: Sequence[str] = (hop.host,)
        else:
            answers = _resolve(self._resolver, hop.host, hop.port, deadline, self._policy)
        if not answers:
            raise FetchError("dns_error")
        addresses: list[str] = []
        for answer in answers:
            try:
                ip = ipaddress.ip_address(answer)
            except ValueError:
                raise FetchError("blocked_address") from None
            if not (is_public_address(ip) or any(ip in n for n in self._policy.allow_networks)):
                raise FetchError("blocked_address")
            addresses.append(str(ip))
        return tuple(dict.fromkeys(addresses))

    @contextlib.contextmanager
    def _exchange(
        self,
        method: bytes,
        hop: _Hop,
        addresses: tuple[str, ...],
        deadline: _Deadline,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes | None = None,
    ) -> Iterator[tuple[httpcore.Response, _PinnedBackend]]:
        """One request on a fresh connection to a vetted address, its failures mapped to
        reason codes; yields the streaming response and the backend that connected."""
        policy = self._policy
        backend = _PinnedBackend(hop.host, hop.port, addresses, deadline)
        timeouts = {
            "connect": policy.connect_timeout,
            "read": policy.read_timeout,
            "write": policy.read_timeout,
            "pool": policy.connect_timeout,
        }
        request_url = httpcore.URL(
            scheme=hop.scheme.encode("ascii"),
            host=hop.host.encode("ascii"),
            port=hop.port,
            target=hop.target.encode("ascii"),
        )
        base = [
            (b"Host", hop.host_header.encode("ascii")),
            (b"User-Agent", policy.user_agent.encode("latin-1", "replace")),
            (b"Accept", b"*/*"),
            (b"Connection", b"close"),
        ]
        try:
            with (
                httpcore.HTTPConnection(
                    httpcore.Origin(request_url.scheme, request_url.host, hop.port),
                    ssl_context=self._ssl_context,
                    network_backend=backend,
                    retries=0,
                ) as connection,
                connection.stream(
                    method,
                    request_url,
                    headers=[*base, *headers],
                    content=body,
                    extensions={"timeout": timeouts},
                ) as response,
            ):
                yield response, backend
        except httpcore.TimeoutException:
            raise FetchError("timeout") from None
        except httpcore.ConnectError as exc:
            tls = isinstance(exc.__cause__ or exc.__context__, ssl.SSLError)
            raise FetchError("tls_error" if tls else "connect_error") from None
        except (httpcore.NetworkError, httpcore.ProtocolError):
            raise FetchError("connect_error") from None

    def _request(
        self,
        hop: _Hop,
        addresses: tuple[str, ...],
        deadline: _Deadline,
        keep_head: KeepHead | None = None,
    ) -> FetchResult | str:
        """One GET on a fresh connection to a vetted address: a result, or a Location."""
        headers = [(b"Accept-Encoding", _ACCEPT_ENCODING)]
        with self._exchange(b"GET", hop, addresses, deadline, headers) as (response, backend):
            status = response.status
            location = _header(response.headers, b"location")
            if status in _REDIRECT_STATUSES and location is not None:
                return location
            if status >= 400:
                raise FetchError(f"http_error_{status}", ip=backend.connected_address)
            content_type = _header(response.headers, b"content-type")
            try:
                content, truncated = self._read_body(
                    response,
                    deadline,
                    (lambda head: keep_head(head, content_type)) if keep_head else None,
                )
            except FetchError as exc:
                # A server answered (too large, undecodable, too slow): where it is counts.
                raise FetchError(exc.reason, ip=backend.connected_address) from None
            return FetchResult(
                url=hop.url,
                status=status,
                content=content,
                content_type=content_type,
                ip=backend.connected_address or addresses[0],
                truncated=truncated,
            )

    def _post(
        self,
        hop: _Hop,
        addresses: tuple[str, ...],
        deadline: _Deadline,
        body: bytes,
        extra_headers: Sequence[tuple[str, str]],
    ) -> PostResult:
        headers = [
            (b"Content-Length", str(len(body)).encode("ascii")),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in extra_headers),
        ]
        with self._exchange(b"POST", hop, addresses, deadline, headers, body) as (
            response,
            backend,
        ):
            received = 0
            for chunk in response.iter_stream():
                received += len(chunk)
                if received > self._policy.max_bytes:
                    break
                deadline.check()
            return PostResult(
                status=response.status,
                ip=backend.connected_address or addresses[0],
                location=_header(response.headers, b"location"),
            )

    def _read_body(
        self,
        response: httpcore.Response,
        deadline: _Deadline,
        keep_head: Callable[[bytes], bool] | None = None,
    ) -> tuple[bytes, bool]:
        """The decoded body, and whether it is only its first ``max_bytes``."""
        limit = self._policy.max_bytes
        declared = _header(response.headers, b"content-length")
        oversized = declared is not None and declared.strip().isdigit() and int(declared) > limit
        if oversized and keep_head is None:
            raise FetchError("too_large")
        codings = [
            c.strip().lower()
            for c in (_header(response.headers, b"content-encoding") or "").split(",")
        ]
        stages = _decoders([c for c in codings if c and c != "identity"], limit)
        sink = _Sink(limit)
        received = 0
        keeps: bool | None = None  # keep_head's answer, once asked
        deadline.check()
        try:
            for chunk in response.iter_stream():
                received += len(chunk)
                if received > limit:
                    raise FetchError("too_large")
                _run(stages, chunk, sink)
                if oversized and keeps is None and len(sink.buffer) >= HEAD_BYTES:
                    # Said to be too large (so keep_head was given): read on only if its
                    # start is worth keeping.
                    keeps = keep_head is not None and keep_head(bytes(sink.buffer[:HEAD_BYTES]))
                    if not keeps:
                        raise FetchError("too_large")
                deadline.check()
        except FetchError as exc:
            if exc.reason != "too_large" or keep_head is None:
                raise
            if keeps is None:
                keeps = keep_head(bytes(sink.buffer[:HEAD_BYTES]))
            if not keeps:
                raise FetchError("too_large") from None
            return sink.value(), True
        return sink.value(), False


def _drop_chain(error: FetchError) -> None:
    """Detach what ``raise ... from None`` only hides: the library's exception, whose
    text may quote the bytes received (h11 quotes a malformed status or header line)."""
    error.__cause__ = error.__context__ = None


@functools.cache
def get_fetcher() -> Fetcher:
    """The fetcher of this process, configured from `get_settings()`."""
    return Fetcher(FetchPolicy.from_settings(get_settings()))


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    # Built as ssl.create_default_context builds it, without reading the environment:
    # SSLKEYLOGFILE would have every fetch write its TLS secrets to that file.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chain and name
    context.load_verify_locations(cafile=certifi.where())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(frozen=True)
class _Hop:
    """One request's target, taken from the canonical URL only (one parser: ada)."""

    url: str
    scheme: str
    host: str
    """What is connected to and verified: the name, or the IP without brackets."""
    is_ip_literal: bool
    port: int
    host_header: str
    target: str

    @classmethod
    def parse(cls, raw: str, policy: FetchPolicy) -> _Hop:
        try:
            canonical = canonicalise(
                raw, allow_networks=policy.allow_networks, max_length=_MAX_URL_LENGTH
            )
        except URLNotPublic:
            raise FetchError("blocked_address") from None
        except UnsupportedScheme:
            raise FetchError("unsupported_scheme") from None
        except HotlineError:
            raise FetchError("invalid_url") from None
        parsed = ada_url.URL(canonical.url)
        origin = f"{parsed.protocol}//{parsed.host}"
        target = canonical.url[len(origin) :]
        if not canonical.url.startswith(origin) or not target.startswith("/"):
            raise FetchError("invalid_url")  # pragma: no cover - canonical hrefs have this form
        scheme = str(parsed.protocol).removesuffix(":")
        host_type = int(parsed.host_type)
        port = int(parsed.port) if parsed.port else (443 if scheme == "https" else 80)
        if not canonical.url.isascii():
            raise FetchError("invalid_url")  # pragma: no cover - WHATWG hrefs are ASCII
        return cls(
            url=canonical.url,
            scheme=scheme,
            host=str(parsed.hostname).removeprefix("[").removesuffix("]"),
            is_ip_literal=host_type != int(ada_url.HostType.DEFAULT),
            port=port,
            host_header=str(parsed.host),
            target=target,
        )


class _Deadline:
    """The total deadline of one fetch; clips every wait to what is left of it."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def check(self) -> None:
        if self.remaining() <= 0:
            raise FetchError("timeout")

    def clip(self, timeout: float | None, expired: type[Exception]) -> float:
        left = self.remaining()
        if left <= 0:
            raise expired("total deadline passed")
        return left if timeout is None else min(timeout, left)


def _resolve(
    resolver: Resolver, host: str, port: int, deadline: _Deadline, policy: FetchPolicy
) -> Sequence[str]:
    """Call the resolver with a deadline: getaddrinfo itself has none.

    A resolver still waiting at the deadline is left to finish in its daemon thread
    (bounded by the system resolver's own timeouts); its answer is never used.
    """
    answers: list[str] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            answers.extend(str(a) for a in resolver(host, port))
        except BaseException as exc:  # handed to the fetching thread below
            failed.append(exc)

    thread = threading.Thread(target=run, name="hotline-fetch-resolve", daemon=True)
    thread.start()
    thread.join(max(0.0, min(policy.connect_timeout, deadline.remaining())))
    if thread.is_alive():
        raise FetchError("timeout")
    if failed:
        if isinstance(failed[0], OSError | UnicodeError):
            raise FetchError("dns_error")
        raise failed[0]
    return answers


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects the one vetted origin of a hop to its vetted addresses, nothing else."""

    def __init__(
        self, host: str, port: int, addresses: tuple[str, ...], deadline: _Deadline
    ) -> None:
        self._host = host
        self._port = port
        self._addresses = addresses
        self._deadline = deadline
        self._backend = httpcore.SyncBackend()
        self.connected_address: str | None = None

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        if (host, port) != (self._host, self._port) or not self._addresses:
            raise httpcore.ConnectError("origin was not vetted")  # pragma: no cover
        failure: Exception = httpcore.ConnectError("no address")
        for address in self._addresses:
            # An IP literal: create_connection's getaddrinfo only parses it, no DNS.
            try:
                stream = self._backend.connect_tcp(
                    address,
                    port,
                    timeout=self._deadline.clip(timeout, httpcore.ConnectTimeout),
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                if self._deadline.remaining() <= 0:
                    break
                continue
            self.connected_address = address
            return _DeadlineStream(stream, self._deadline)
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:  # pragma: no cover - never configured
        raise httpcore.ConnectError("unix sockets are not fetched")

    def sleep(self, seconds: float) -> None:  # pragma: no cover - retries=0
        time.sleep(seconds)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by the total deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._deadline.clip(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._deadline.clip(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._stream.start_tls(
            ssl_context,
            server_hostname=server_hostname,
            timeout=self._deadline.clip(timeout, httpcore.ConnectTimeout),
        )
        return _DeadlineStream(stream, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                return value.decode("latin-1")
    return None


# Decoding: every stage yields pieces of about `_STEP` bytes and counts its output, so
# neither an intermediate nor the final output can run past ``max_bytes``.


class _Decoder(Protocol):
    def feed(self, data: bytes) -> Iterator[bytes]: ...


@dataclass
class _Sink:
    limit: int
    buffer: bytearray = field(default_factory=bytearray)

    def add(self, data: bytes) -> None:
        if len(self.buffer) + len(data) > self.limit:
            raise FetchError("too_large")
        self.buffer += data

    def value(self) -> bytes:
        return bytes(self.buffer)


def _run(stages: Sequence[_Decoder], data: bytes, sink: _Sink) -> None:
    if not stages:
        sink.add(data)
        return
    for piece in stages[0].feed(data):
        _run(stages[1:], piece, sink)


def _decoders(codings: list[str], limit: int) -> list[_Decoder]:
    """Decoders in the order they apply to received bytes (reverse of the header's).

    A coding we cannot decode, or more than `_MAX_CODINGS`, leaves the body as received:
    the caller decides the type from the bytes and will not take them for an image.
    """
    stages: list[_Decoder] = []
    if len(codings) > _MAX_CODINGS:
        return []
    for coding in reversed(codings):
        if coding in ("gzip", "x-gzip"):
            stages.append(_ZlibDecoder(limit, gzip=True))
        elif coding == "deflate":
            stages.append(_ZlibDecoder(limit, gzip=False))
        elif coding == "br" and _BROTLI_BOUNDED:
            stages.append(_BrotliDecoder(limit))
        else:
            return []
    return stages


class _Counted:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._total = 0

    def _count(self, piece: bytes) -> bytes:
        self._total += len(piece)
        if self._total > self._limit:
            raise FetchError("too_large")
        return piece


_GZIP_MAGIC = b"\x1f\x8b"


class _ZlibDecoder(_Counted):
    """gzip (members in sequence) or deflate (zlib-wrapped, or raw as some servers send)."""

    def __init__(self, limit: int, *, gzip: bool) -> None:
        super().__init__(limit)
        self._gzip = gzip
        self._decompressor: Any = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzip else None
        self._pending = b""
        self._between: bytes | None = None  # after a gzip member: what came of the next
        self._done = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._done:
            return
        if self._between is not None:
            # A gzip member ended at the end of the last read: another may start here.
            data, self._between = self._between + data, None
            if len(data) < 2 and _GZIP_MAGIC.startswith(data):
                self._between = data
                return
            if data[:2] != _GZIP_MAGIC:
                self._done = True  # trailing bytes after the stream are ignored
                return
            self._decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self._decompressor is None:
            # deflate: the first two bytes say whether a zlib header is there.
            self._pending += data
            if len(self._pending) < 2:
                return
            data, self._pending = self._pending, b""
            cmf, flg = data[0], data[1]
            wrapped = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
            self._decompressor = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        while True:
            try:
                piece = self._decompressor.decompress(data, _STEP)
            except zlib.error:
                raise FetchError("decode_error") from None
            if piece:
                yield self._count(piece)
            if self._decompressor.eof:
                rest = self._decompressor.unused_data
                if self._gzip and _GZIP_MAGIC.startswith(rest[:2]):
                    if len(rest) < 2:  # the next member, if any, is in the next read
                        self._between = rest
                        return
                    self._decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    data = rest
                    continue
                self._done = True  # trailing bytes after the stream are ignored
                return
            data = self._decompressor.unconsumed_tail
            # Output stopped short of the step: the input is used up, nothing pending.
            if not data and len(piece) < _STEP:
                return


class _BrotliDecoder(_Counted):
    """brotli with the output of each call bounded (brotli >= 1.2)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self._decompressor = brotli.Decompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        decompressor = self._decompressor
        if decompressor.is_finished():
            return
        try:
            # Drained until it gives nothing: it may hold output while it already
            # accepts more input (a body cut at 98,272 bytes when it stopped there).
            piece = decompressor.process(data, output_buffer_limit=_STEP)
            while piece:
                yield self._count(piece)
                piece = decompressor.process(b"", output_buffer_limit=_STEP)
        except brotli.error:
            raise FetchError("decode_error") from None
