"""Intake throughput, as ratios against baselines measured in the same run.

    .venv/bin/python bench/intake.py [--requests 2000] [--clients 8]

1. URL canonicalisation (WHATWG parse, refusal checks, registered domain) against
   ``urllib.parse.urlsplit`` of the same URLs.
2. ``POST /api/v1/reports`` through uvicorn on 127.0.0.1 (canonicalise, upsert,
   insert, commit, hand-over) against ``GET /healthz`` on the same server.
Backends: ``HOTLINE_DATABASE_URL`` / ``HOTLINE_BROKER_URL`` if set (migrated
first), else a throw-away SQLite file and filesystem broker.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def urls(n: int) -> list[str]:
    return [
        f"HTTPS://Example{i % 97}.co.uk:443/a/./b/../gallery/{i}?page={i % 5}#x" for i in range(n)
    ]


def rate(fn: object, items: list[str]) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)  # type: ignore[operator]
    return len(items) / (time.perf_counter() - start)


def serve() -> tuple[str, uvicorn.Server]:
    from hotline.web import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def load(base: str, requests: int, clients: int, make: object) -> float:
    def worker(indices: range) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            for i in indices:
                response = make(http, i)  # type: ignore[operator]
                assert response.status_code in (200, 202), response.status_code

    per = requests // clients
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, [range(c * per, (c + 1) * per) for c in range(clients)]))
    return per * clients / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    os.environ.setdefault("HOTLINE_DATA_DIR", tempfile.mkdtemp(prefix="hotline-bench-"))
    os.environ["HOTLINE_RATE_LIMIT"] = "off"
    os.environ["HOTLINE_LOG_LEVEL"] = "WARNING"
    from hotline.migrate import upgrade
    from reporting.urls import canonicalise

    upgrade()
    sample = urls(20000)
    base_rate = rate(urllib.parse.urlsplit, sample)
    canon_rate = rate(canonicalise, sample)
    print(
        f"canonicalise       {canon_rate:>10.0f} URLs/s   urlsplit {base_rate:>10.0f}/s   "
        f"ratio {canon_rate / base_rate:.2f}"
    )

    base, server = serve()
    health = load(base, args.requests, args.clients, lambda http, i: http.get("/healthz"))
    reports = load(
        base,
        args.requests,
        args.clients,
        lambda http, i: http.post(
            "/api/v1/reports",
            json={"url": f"https://example{i % 50}.org/p/{i % 400}", "category": "csam"},
        ),
    )
    server.should_exit = True
    print(
        f"POST /api/v1/reports {reports:>8.0f} req/s   GET /healthz {health:>8.0f} req/s   "
        f"ratio {reports / health:.2f}   ({args.clients} clients, {args.requests} requests, "
        f"{os.environ.get('HOTLINE_DATABASE_URL', 'sqlite').split(':')[0]})"
    )


if __name__ == "__main__":
    main()
