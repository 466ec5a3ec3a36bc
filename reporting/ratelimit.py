"""Rate limits on report submission, keyed by a hash that cannot be turned back into an address.

The key is an HMAC of the client address (IPv6 by its /64) under a random secret
that lives only in Redis (or this process's memory) and expires after one
rotation period. Counters are kept by the ``limits`` library under that key, so
neither Redis nor any log ever holds an address.

``Counter`` is the counting itself, shared with other limits (the safe view's, per
staff account, in ``triage.api``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import logging
import math
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import redis
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from hotline.settings import IPNetwork, Settings, get_settings
from reporting.errors import RateLimited

log = logging.getLogger("hotline.ratelimit")
SECRET_KEY_PREFIX = "hotline:ratelimit:secret:"  # noqa: S105 (a Redis key name)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[IPNetwork]
) -> str | None:
    """The client's address: the peer, or behind trusted proxies the last untrusted hop."""
    chain = [peer] if peer else []
    if forwarded_for:
        chain = [part.strip() for part in forwarded_for.split(",") if part.strip()] + chain
    for hop in reversed(chain):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return hop  # not an address, but still something to count by
        if not any(address in network for network in trusted):
            return str(address)
    return chain[0] if chain else None


def _client_block(address: str) -> bytes:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address.encode()
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is None:
            return ipaddress.IPv6Network((ip, 64), strict=False).network_address.packed
        ip = mapped
    return ip.packed


class SecretSource:
    """The current keying secret, shared by every API process through Redis."""

    def __init__(self, rotation: int, client: redis.Redis | None) -> None:
        self.rotation = rotation
        self.client = client
        self._local: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def current(self, now: float) -> bytes:
        period = int(now // self.rotation)
        if self.client is None:
            with self._lock:
                self._local = {p: s for p, s in self._local.items() if p >= period - 1}
                return self._local.setdefault(period, secrets.token_bytes(32))
        key = f"{SECRET_KEY_PREFIX}{period}"
        self.client.set(key, secrets.token_hex(32), nx=True, ex=2 * self.rotation)
        value = self.client.get(key)
        if value is None:  # expired between the two calls: take the next round's
            return self.current(now + 1)
        return bytes.fromhex(value.decode() if isinstance(value, bytes) else str(value))


def parse_spec(spec: str) -> list[RateLimitItem] | None:
    """A rate limit setting: limits in ``limits`` notation separated by ``;``, or None
    for ``off``. Raises ValueError on anything else."""
    spec = spec.strip()
    if spec.lower() == "off":
        return None
    return list(parse_many(spec))


def check_spec(name: str, spec: str) -> None:
    """Raise ValueError naming the setting ``name`` if ``spec`` is not a rate limit
    setting (checked when the API starts: importing ``limits`` costs every other
    command 60 ms, so the settings themselves do not)."""
    try:
        parse_spec(spec)
    except ValueError:
        raise ValueError(
            f"{name}: expected limits such as 20/minute;200/day (separated by ;), or off"
        ) from None


def limit_storage(settings: Settings) -> Storage:
    """Where counters live: Redis, shared by every API process, or this process."""
    if settings.redis_url:
        return RedisStorage(settings.redis_url, socket_connect_timeout=1.0, socket_timeout=1.0)
    return memory_storage()


# Counters without Redis live in one store per process. limits' MemoryStorage makes a
# key's lock on its first hit, unlocked: threads hitting a new key at once each got a
# lock of their own and all went through. So the store is made once, under this lock,
# and its hits are taken under it one at a time (Redis counts atomically by itself).
_MEMORY_LOCK = threading.Lock()
_memory: list[MemoryStorage] = []


def memory_storage() -> MemoryStorage:
    """This process's one store of counters without Redis. One, not one per counter:
    the first requests after start, served at once by several threads, each built the
    counter anew, and each counted only its own hits (three views went through a limit
    of two)."""
    with _MEMORY_LOCK:
        if not _memory:
            _memory.append(MemoryStorage())
        return _memory[0]


@dataclass
class Counter:
    """Hits of keys in one namespace against limits, by a moving window."""

    items: list[RateLimitItem]
    limiter: MovingWindowRateLimiter | None
    namespace: str
    serial: threading.Lock | None = None  # for a store that does not count atomically

    def wait(self, key: str, now: float) -> int | None:
        """Count one hit of ``key``: None if allowed, else the seconds until it would
        be. Fails open (None) when the store is down: a limit must not stop the work."""
        if self.limiter is None:
            return None
        try:
            with self.serial or contextlib.nullcontext():
                for item in self.items:
                    if not self.limiter.hit(item, self.namespace, key):
                        reset_at, _ = self.limiter.get_window_stats(item, self.namespace, key)
                        return math.ceil(reset_at - now)
        except Exception as exc:
            log.warning("rate limit not checked: %s", type(exc).__name__)
        return None


def build_counter(settings: Settings, spec: str, namespace: str) -> Counter:
    items = parse_spec(spec)
    if items is None:
        return Counter([], None, namespace)
    storage = limit_storage(settings)
    serial = _MEMORY_LOCK if isinstance(storage, MemoryStorage) else None
    return Counter(items, MovingWindowRateLimiter(storage), namespace, serial)


@dataclass
class SubmissionLimiter:
    counter: Counter
    secrets: SecretSource

    def key(self, address: str, now: float) -> str:
        digest = hmac.new(self.secrets.current(now), _client_block(address), hashlib.sha256)
        return digest.hexdigest()[:32]

    def hit(self, address: str | None) -> None:
        """Count one submission; raise RateLimited when a limit is exhausted."""
        if self.counter.limiter is None or address is None:
            return
        now = time.time()
        try:
            key = self.key(address, now)
        except Exception as exc:
            # Redis down must not stop people reporting: the limit fails open.
            log.warning("rate limit not checked: %s", type(exc).__name__)
            return
        wait = self.counter.wait(key, now)
        if wait is not None:
            raise RateLimited(wait)


def build_limiter(settings: Settings) -> SubmissionLimiter:
    client = (
        redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1.0, socket_timeout=1.0)
        if settings.redis_url
        else None
    )
    source = SecretSource(settings.rate_limit_rotation_seconds, client)
    return SubmissionLimiter(build_counter(settings, settings.rate_limit, "report"), source)


@lru_cache
def get_limiter() -> SubmissionLimiter:
    return build_limiter(get_settings())
