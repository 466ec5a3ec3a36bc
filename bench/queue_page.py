"""The analyst queue page over 100,000 targets on PostgreSQL, against the bare SQL behind it.

    .venv/bin/python bench/queue_page.py [--targets 100000] [--runs 30]

Fills a schema of its own (``hotline_bench_queue``, dropped afterwards) with COPY:
targets in realistic states (most queued, with varied priorities; a few thousand
sites with a skewed share each; hosting countries; some claimed, some with expired
claims; some with media, a few of them on known lists; one or more reports each with
a category), then runs VACUUM ANALYZE (as autovacuum would).

Baseline (SQL): every SELECT that one ``GET /staff/queue`` sends to the database (the
items, the counts, the sites and the analyst's own claims from ``triage.review``, and
the sign-in lookup), captured from the page itself and replayed with the same
parameters through the driver, rows fetched. Page: ``GET /staff/queue`` through uvicorn
on 127.0.0.1 with an analyst's bearer token, HTML read in full. Median and p95 of
``--runs`` runs after a warm-up, without a filter and with each kind of filter.
Target: page / SQL <= 3 and page < 300 ms (medians).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.scratch import drop_schema, fresh_schema, use_settings  # noqa: E402

SCHEMA = "hotline_bench_queue"
DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
COUNTRIES = ["US", "NL", "DE", "RU", "FR", "GB", "UA", "CA", "SG", "HK", "JP", "PL", "SE"]
CATEGORIES = ["csam"] * 85 + ["grooming"] * 7 + ["trafficking"] * 3 + ["other"] * 5
LISTS = ["national-list", "projectvic", "interpol-icse"]
STATUSES = (
    ["queued"] * 80
    + ["pending"] * 4
    + ["fetching"] * 1
    + ["confirmed"] * 6
    + ["not_illegal"] * 5
    + ["unreachable"] * 4
)
ANALYSTS = range(10_000, 10_030)  # claims by other analysts (no accounts needed)


def sites(count: int, rng: random.Random) -> tuple[list[str], list[float]]:
    """Registered domains with a Zipf-like share: a few big image hosts, a long tail."""
    names = [
        f"site{n}-{rng.randrange(16**6):06x}.{rng.choice(['com', 'net', 'ru', 'to', 'cc'])}"
        for n in range(count)
    ]
    weights = [1 / (rank + 1) ** 1.1 for rank in range(count)]
    return names, weights


def hexdigest(rng: random.Random, length: int) -> str:
    return f"{rng.getrandbits(length * 4):0{length}x}"


def fill(engine: Engine, targets: int, site_count: int, seed: int = 7) -> dict[str, Any]:
    """Rows for every queue table, written with COPY; returns facts the filters use."""
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    names, weights = sites(site_count, rng)
    domains = rng.choices(names, weights, k=targets)
    with engine.connect() as connection:  # the migrations create the hotline's own list
        lists = connection.execute(text("SELECT coalesce(max(id), 0) FROM hash_list")).scalar_one()
    rows: dict[str, list[dict[str, Any]]] = {
        "hash_list": [
            {"id": lists + n + 1, "name": name, "enabled": True, "own": False, "created_at": now}
            for n, name in enumerate(LISTS)
        ],
        "target": [],
        "report": [],
        "media": [],
        "sighting": [],
        "media_match": [],
    }
    for i in range(1, targets + 1):
        status = rng.choice(STATUSES)
        domain = domains[i - 1]
        host = f"{rng.choice(['img', 'cdn', 'www', 'files'])}{rng.randrange(4)}.{domain}"
        url = f"https://{host}/gallery/{i}/{hexdigest(rng, 8)}.html"
        first = now - dt.timedelta(seconds=rng.randrange(90 * 86400))
        reports = 1 if rng.random() < 0.85 else rng.randrange(2, 6)
        processed = status not in ("pending", "fetching")
        media_count = rng.choice([0, 0, 1, 2, 4]) if processed else 0
        listed = rng.choice(LISTS) if media_count and rng.random() < 0.06 else None
        reasons = ["new content"]
        priority = rng.randrange(50, 400) + 10 * reports
        if listed:
            priority += 1000
            reasons.insert(0, f"exact match to known list: {listed}")
        claimed_by = claim_expires = None
        if status == "queued" and rng.random() < 0.03:
            claimed_by = rng.choice(ANALYSTS)
            # A third of the claims have expired: those items are open again.
            claim_expires = now + dt.timedelta(seconds=rng.choice([600, 600, -600]))
        country = rng.choice(COUNTRIES) if rng.random() < 0.95 else None
        rows["target"].append(
            {
                "id": i,
                "canonical_url": url,
                "url_sha256": hashlib.sha256(url.encode()).hexdigest(),
                "host": host,
                "registered_domain": domain,
                "status": status,
                "priority": priority if processed else 0,
                "report_count": reports,
                "first_reported_at": first,
                "last_reported_at": first + dt.timedelta(seconds=rng.randrange(86400)),
                "status_changed_at": first,
                "attempts": 1 if processed else 0,
                "priority_reasons": json.dumps(reasons) if processed else None,
                "hosting_ip": f"203.0.113.{rng.randrange(1, 255)}" if processed else None,
                "hosting_country": country if processed else None,
                "hosting_asn": rng.randrange(1000, 65000) if processed else None,
                "processed_at": first + dt.timedelta(seconds=30) if processed else None,
                "claimed_by": claimed_by,
                "claim_expires_at": claim_expires,
            }
        )
        for _ in range(reports):
            rows["report"].append(
                {
                    "id": len(rows["report"]) + 1,
                    "receipt_hash": hexdigest(rng, 64),
                    "target_id": i,
                    "category": rng.choice(CATEGORIES),
                    "language": "en",
                    "source": "public",
                    "created_at": first,
                }
            )
        for n in range(media_count):
            media_id = len(rows["media"]) + 1
            rows["media"].append(
                {
                    "id": media_id,
                    "sha256": hexdigest(rng, 64),
                    "sha1": hexdigest(rng, 40),
                    "md5": hexdigest(rng, 32),
                    "phash": hexdigest(rng, 16),
                    "pdq": hexdigest(rng, 64),
                    "pdq_quality": 80,
                    "mime": "image/jpeg",
                    "kind": "image",
                    "size": rng.randrange(20_000, 2_000_000),
                    "width": 1024,
                    "height": 768,
                    "first_seen_at": first,
                }
            )
            rows["sighting"].append(
                {
                    "id": len(rows["sighting"]) + 1,
                    "target_id": i,
                    "media_id": media_id,
                    "media_url": f"https://{host}/i/{n}.jpg",
                    "online": True,
                    "first_seen_at": first,
                    "last_seen_at": first,
                }
            )
            if listed and n == 0:
                match_id = len(rows["media_match"]) + 1
                rows["media_match"].append(
                    {
                        "id": match_id,
                        "media_id": media_id,
                        "kind": "exact",
                        "hash_type": "sha256",
                        "distance": 0,
                        "list_id": lists + 1 + LISTS.index(listed),
                        "ref": f"k{match_id}",
                        "found_at": first,
                    }
                )
    copy_rows(engine, rows)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        # As autovacuum leaves a table in service: statistics and the visibility map.
        connection.execute(text("VACUUM ANALYZE"))
    queued = [t for t in rows["target"] if t["status"] == "queued"]
    by_site: dict[str, int] = {}
    for t in queued:
        by_site[t["registered_domain"]] = by_site.get(t["registered_domain"], 0) + 1
    return {
        "targets": targets,
        "queued": len(queued),
        "reports": len(rows["report"]),
        "media": len(rows["media"]),
        "matches": len(rows["media_match"]),
        "sites": len(set(domains)),
        "big_site": max(by_site, key=by_site.__getitem__),
    }


def copy_rows(engine: Engine, rows: dict[str, list[dict[str, Any]]]) -> None:
    """COPY each table's rows (columns of the model; missing keys are NULL), then move
    each id sequence past the ids written."""
    from sqlmodel import SQLModel

    import reporting.models  # noqa: F401 - registers the tables
    import triage.models  # noqa: F401

    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for table, table_rows in rows.items():
            columns = [c.name for c in SQLModel.metadata.tables[table].columns]
            sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
            with cursor.copy(sql) as copy:  # type: ignore[attr-defined]
                for row in table_rows:
                    copy.write_row([row.get(c) for c in columns])
            last = max((row["id"] for row in table_rows), default=1)
            cursor.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)", (table, last))
        raw.commit()
    finally:
        raw.close()


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


class Captured:
    """The statements the app sends while ``capturing`` is set."""

    def __init__(self, engine: Engine) -> None:
        self.capturing = False
        self.statements: list[tuple[str, Any]] = []
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if self.capturing:
            self.statements.append((statement, parameters))

    def during(self, fn: Callable[[], Any]) -> list[tuple[str, Any]]:
        self.statements = []
        self.capturing = True
        try:
            fn()
        finally:
            self.capturing = False
        return [(s, p) for s, p in self.statements if s.lstrip().upper().startswith("SELECT")]


def timings(fn: Callable[[], Any], runs: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def summary(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def replay(engine: Engine, statements: list[tuple[str, Any]]) -> Callable[[], None]:
    """The captured SELECTs, run one after another on one pooled connection."""

    def run() -> None:
        with engine.connect() as connection:
            for statement, parameters in statements:
                connection.exec_driver_sql(statement, parameters).fetchall()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", type=int, default=100_000)
    parser.add_argument("--sites", type=int, default=3_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--database", default=os.environ.get("HOTLINE_BENCH_DATABASE_URL", DEFAULT_DATABASE)
    )
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE each query")
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    args = parser.parse_args()

    admin = create_engine(args.database)
    database = fresh_schema(admin, args.database, SCHEMA)
    use_settings(
        {
            "HOTLINE_DATA_DIR": tempfile.mkdtemp(prefix="hotline-bench-"),
            "HOTLINE_DATABASE_URL": database,
            "HOTLINE_RATE_LIMIT": "off",
            "HOTLINE_LOG_LEVEL": "WARNING",
            "HOTLINE_SECURE_COOKIES": "false",
        }
    )
    from hotline.auth import configured_staff_cipher, create_user, issue_token
    from hotline.db import get_engine, session_scope, utcnow
    from hotline.migrate import upgrade
    from hotline.models import Role

    try:
        upgrade(database)
        engine = get_engine()
        start = time.perf_counter()
        facts = fill(engine, args.targets, args.sites)
        print(
            f"filled {facts['targets']} targets ({facts['queued']} queued, {facts['sites']} "
            f"sites), {facts['reports']} reports, {facts['media']} media, "
            f"{facts['matches']} list matches in {time.perf_counter() - start:.1f} s",
            flush=True,
        )
        with session_scope() as session:
            user, _ = create_user(
                session,
                "bench@hotline.example",
                Role.analyst,
                "correct horse battery",
                now=utcnow(),
                cipher=configured_staff_cipher(),
            )
            token = issue_token(session, user, now=utcnow(), ttl=dt.timedelta(hours=2))
        captured = Captured(engine)
        base, server = serve()
        variants = {
            "no filter": "",
            "domain": f"?domain={facts['big_site']}",
            "country": "?country=UA",
            "list": "?list=projectvic",
            "category": "?category=grooming",
        }
        results = []
        with httpx.Client(
            base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=60
        ) as http:

            def page(query: str) -> Callable[[], None]:
                def get() -> None:
                    response = http.get(f"/staff/queue{query}")
                    assert response.status_code == 200, response.status_code
                    assert 'id="queue-items"' in response.text

                return get

            for name, query in variants.items():
                page(query)()
                statements = captured.during(page(query))
                if args.explain:
                    explain(engine, statements)
                sql = summary(timings(replay(engine, statements), args.runs))
                shown = summary(timings(page(query), args.runs))
                results.append((name, len(statements), sql, shown))
        server.should_exit = True
    finally:
        if not args.keep:
            drop_schema(admin, SCHEMA)

    print(
        f"{'GET /staff/queue':<22}{'SQL median/p95 ms':>20}{'page median/p95 ms':>22}{'ratio':>8}"
    )
    passed = True
    for name, count, (sql_median, sql_p95), (page_median, page_p95) in results:
        ratio = page_median / sql_median
        ok = ratio <= 3 and page_median < 300
        passed &= ok
        print(
            f"{name + f' ({count} q)':<22}{sql_median:>11.1f} / {sql_p95:<7.1f}"
            f"{page_median:>13.1f} / {page_p95:<7.1f}{ratio:>7.2f}  {'PASS' if ok else 'FAIL'}"
        )
    print(
        f"{'PASS' if passed else 'FAIL'}: page / SQL <= 3 and page < 300 ms "
        f"({args.targets} targets, {args.runs} runs, PostgreSQL)"
    )
    if not passed:
        raise SystemExit(1)


def explain(engine: Engine, statements: list[tuple[str, Any]]) -> None:
    with engine.connect() as connection:
        for statement, parameters in statements:
            rows = connection.exec_driver_sql(
                f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters
            ).all()
            print(statement.split("\n")[0][:100])
            for line in _lines(rows):
                print("   ", line)


def _lines(rows: list[Any]) -> Iterator[str]:
    for row in rows:
        yield str(row[0])


if __name__ == "__main__":
    main()
