"""No reporter address survives anywhere: database, Redis, logs."""

from __future__ import annotations

import ipaddress
import logging
import subprocess
from typing import Any

import pytest
import redis
from sqlalchemy.engine import Engine

from tests.conftest import PG_SCHEMA, TEST_REDIS_URL

CLIENT = "203.0.113.77"


def address_forms(address: str) -> list[bytes]:
    ip = ipaddress.ip_address(address)
    return [address.encode(), ip.packed, ip.packed.hex().encode(), str(int(ip)).encode()]


def database_dump(engine: Engine) -> bytes:
    if engine.dialect.name == "postgresql":
        url = engine.url
        return subprocess.run(
            [
                "pg_dump",
                "--data-only",
                f"--schema={PG_SCHEMA}",
                "-h",
                url.host or "127.0.0.1",
                "-p",
                str(url.port or 5432),
                "-U",
                url.username or "postgres",
                url.database or "test",
            ],
            check=True,
            capture_output=True,
        ).stdout
    raw = engine.raw_connection()
    try:
        return "\n".join(raw.driver_connection.iterdump()).encode()  # type: ignore[union-attr]
    finally:
        raw.close()


def redis_dump() -> bytes:
    if not TEST_REDIS_URL:
        return b""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    parts: list[bytes] = []
    for key in client.scan_iter(count=1000):
        parts.append(key)
        kind = client.type(key)
        if kind == b"string":
            parts.append(client.get(key) or b"")
        elif kind == b"list":
            parts.extend(client.lrange(key, 0, -1))
        elif kind == b"hash":
            for field, value in client.hgetall(key).items():
                parts += [field, value]
        elif kind in (b"set",):
            parts.extend(client.smembers(key))
        elif kind == b"zset":
            parts.extend(member for member, _ in client.zrange(key, 0, -1, withscores=True))
    return b"\n".join(parts)


def test_no_reporter_address_anywhere_after_100_reports(
    client: Any,
    configure: Any,
    committed: Engine,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    configure(trusted_proxies="127.0.0.1/32", rate_limit="1000/minute;5000/day")
    caplog.set_level(logging.DEBUG)
    headers = {"x-forwarded-for": CLIENT, "user-agent": "Mozilla/5.0 (TestAgent-7f3a)"}
    for i in range(100):
        response = client.post(
            "/api/v1/reports",
            json={
                "url": f"http://example.org/page/{i % 7}",
                "category": "csam",
                "description": "seen it",
            },
            headers=headers,
        )
        assert response.status_code == 202
        assert "set-cookie" not in response.headers
    out, err = capfd.readouterr()
    places = {
        "database": database_dump(committed),
        "redis": redis_dump(),
        "logs": (caplog.text + out + err).encode(),
    }
    if TEST_REDIS_URL:
        assert places["redis"], "the rate limiter should have written counters to Redis"
    for where, content in places.items():
        for form in address_forms(CLIENT):
            assert form not in content, f"reporter address found in {where}"
        assert b"TestAgent-7f3a" not in content, f"user agent found in {where}"
    assert b"seen it" in places["database"]  # the dump is real: the description is in it


def test_limits_follow_the_client_behind_a_trusted_proxy(client: Any, configure: Any) -> None:
    configure(trusted_proxies="127.0.0.1/32", rate_limit="2/minute")

    def report(forwarded_for: str) -> int:
        return int(
            client.post(
                "/api/v1/reports",
                json={"url": "http://example.org/", "category": "csam"},
                headers={"x-forwarded-for": forwarded_for},
            ).status_code
        )

    assert [report("203.0.113.10") for _ in range(3)] == [202, 202, 429]
    assert report("203.0.113.11") == 202
    # A forged left-most hop does not buy a fresh allowance: the proxy's hop is used.
    assert report("198.51.100.1, 203.0.113.10") == 429
    # IPv6 clients are counted by their /64.
    assert [
        report("2001:db8:1:2::1"),
        report("2001:db8:1:2::ffff"),
        report("2001:db8:1:2:aaaa::9"),
    ] == [202, 202, 429]


def test_forwarded_header_is_ignored_from_untrusted_peers(client: Any, configure: Any) -> None:
    configure(rate_limit="2/minute")
    codes = [
        client.post(
            "/api/v1/reports",
            json={"url": "http://example.org/", "category": "csam"},
            headers={"x-forwarded-for": f"203.0.113.{i}"},
        ).status_code
        for i in range(3)
    ]
    assert codes == [202, 202, 429]
