"""Rate limits on report submission, keyed by a hash that cannot be turned back into an address.

The key is an HMAC of the client address (IPv6 by its /64) under a random secret
that lives only in Redis (or this process's memory) and expires after one
rotation period. Counters are kept by the ``limits`` library under that key, so
neither Redis nor any log ever holds an address.
"""

from __future__ import annotations

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


@dataclass
class SubmissionLimiter:
    items: list[RateLimitItem]
    limiter: MovingWindowRateLimiter | None
    secrets: SecretSource

    def key(self, address: str, now: float) -> str:
        digest = hmac.new(self.secrets.current(now), _client_block(address), hashlib.sha256)
        return digest.hexdigest()[:32]

    def hit(self, address: str | None) -> None:
        """Count one submission; raise RateLimited when a limit is exhausted."""
        if self.limiter is None or address is None:
            return
        now = time.time()
        try:
            key = self.key(address, now)
            for item in self.items:
                if not self.limiter.hit(item, "report", key):
                    reset_at, _remaining = self.limiter.get_window_stats(item, "report", key)
                    raise RateLimited(math.ceil(reset_at - now))
        except RateLimited:
            raise
        except Exception as exc:
            # Redis down must not stop people reporting: the limit fails open.
            log.warning("rate limit not checked: %s", type(exc).__name__)


def build_limiter(settings: Settings) -> SubmissionLimiter:
    client = (
        redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1.0, socket_timeout=1.0)
        if settings.redis_url
        else None
    )
    source = SecretSource(settings.rate_limit_rotation_seconds, client)
    spec = settings.rate_limit.strip()
    if spec.lower() == "off":
        return SubmissionLimiter([], None, source)
    storage: Storage = (
        RedisStorage(settings.redis_url, socket_connect_timeout=1.0, socket_timeout=1.0)
        if settings.redis_url
        else MemoryStorage()
    )
    return SubmissionLimiter(parse_many(spec), MovingWindowRateLimiter(storage), source)


@lru_cache
def get_limiter() -> SubmissionLimiter:
    return build_limiter(get_settings())
