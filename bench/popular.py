"""Recording one more copy of a picture the hotline has seen N times, on PostgreSQL: with
the limit on near matches to media seen before (``HOTLINE_NEAR_MATCH_LIMIT``) against
without it, in the same run.

    .venv/bin/python bench/popular.py [--copies 100,1000,10000,50000] [--limit 20]
        [--repeat 5] [--database URL]

Fills a schema of its own (``hotline_bench_popular``, dropped afterwards) with media
rows whose pHashes lie within 3 bits of one picture's (random bits: no pictures), up to
each ``--copies`` in turn. For each, one more copy is looked up as a worker looks up a
new item (``NearDuplicates.lookup_many``, its hits checked in the database) and its near
matches recorded (``add_matches``), in a transaction rolled back afterwards: once with
the limit, once without (the baseline: every copy seen before gets a row). Prints the
median of ``--repeat`` of each, the rows each records, and the ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, insert

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.scratch import drop_schema, fresh_schema, use_settings  # noqa: E402

SCHEMA = "hotline_bench_popular"
DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PICTURE = 0x8F373714ACFCF4D0  # an informative pHash: 35 of 64 bits set
UNLIMITED = 10**9


def near_copy(rng: random.Random) -> str:
    code = PICTURE
    for bit in rng.sample(range(64), 3):
        code ^= 1 << bit
    return f"{code:016x}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", default="100,1000,10000,50000")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--database", default=os.environ.get("HOTLINE_DATABASE_URL", DEFAULT_DATABASE)
    )
    args = parser.parse_args()
    if not args.database.startswith("postgresql"):
        sys.exit("bench/popular.py needs PostgreSQL: --database postgresql+psycopg://...")
    admin = create_engine(args.database)
    url = fresh_schema(admin, args.database, SCHEMA)
    use_settings({"HOTLINE_DATABASE_URL": url})
    try:
        run(args, [int(n) for n in args.copies.split(",")])
    finally:
        drop_schema(admin, SCHEMA)


def run(args: argparse.Namespace, sizes: list[int]) -> None:
    from hotline.db import session_scope, utcnow
    from hotline.migrate import upgrade
    from triage.matches import add_matches, nearest_near
    from triage.models import Media, MediaKind
    from triage.neardup import NearDuplicates, NearQuery
    from triage.service import near_rows

    upgrade()
    rng = random.Random(7)
    with session_scope() as session:
        # The copy being recorded: its matches are rolled back after each lookup.
        seed = b"the new copy"
        new = Media(
            sha256=hashlib.sha256(seed).hexdigest(),
            sha1=hashlib.sha1(seed).hexdigest(),  # noqa: S324 - a list key, not security
            md5=hashlib.md5(seed).hexdigest(),  # noqa: S324
            phash=near_copy(rng),
            mime="image/jpeg",
            kind=MediaKind.image,
            size=1,
        )
        session.add(new)
        session.flush()
        new_id, new_phash = int(new.id or 0), str(new.phash)

    def record(near: NearDuplicates) -> tuple[float, int]:
        with session_scope() as session:
            near.refresh(session)
            start = time.perf_counter()
            found = near.lookup_many(
                session, [NearQuery(new_phash, None, None, exclude_media_id=new_id)]
            )
            rows = near_rows([(new_id, None)], found, now=utcnow())
            kept = nearest_near(rows, near.near_limit)
            add_matches(session, kept)
            took = time.perf_counter() - start
            session.rollback()
        return took, len(kept)

    made = 0
    print(f"limit {args.limit}; median of {args.repeat}; ms per copy recorded")
    header = ("seen before", 12), ("limited", 10), ("rows", 6), ("unlimited", 10), ("rows", 6)
    print(" ".join(f"{name:>{width}}" for name, width in header), f"{'ratio':>7}")
    for size in sizes:
        with session_scope() as session:
            now = utcnow()
            rows = []
            for n in range(made, size):
                seed = f"copy {n}".encode()
                rows.append(
                    {
                        "sha256": hashlib.sha256(seed).hexdigest(),
                        "sha1": hashlib.sha1(seed).hexdigest(),  # noqa: S324
                        "md5": hashlib.md5(seed).hexdigest(),  # noqa: S324
                        "phash": near_copy(rng),
                        "mime": "image/jpeg",
                        "kind": MediaKind.image,
                        "size": 1,
                        "first_seen_at": now,
                        "last_seen_at": now,
                    }
                )
            session.execute(insert(Media), rows)
        made = size
        options = {"phash_radius": 8, "pdq_radius": 31, "pdq_min_quality": 50}
        limited = NearDuplicates(**options, refresh_seconds=3600, near_limit=args.limit)
        unlimited = NearDuplicates(**options, refresh_seconds=3600, near_limit=UNLIMITED)
        results = {}
        for name, near in (("limited", limited), ("unlimited", unlimited)):
            with session_scope() as session:
                near.refresh(session, force=True)
            runs = [record(near) for _ in range(args.repeat)]
            results[name] = (statistics.median(t for t, _ in runs), runs[-1][1])
        (fast, few), (slow, many) = results["limited"], results["unlimited"]
        assert few == min(size, args.limit), (few, size)
        assert many == size, (many, size)
        print(
            f"{size:>12,} {fast * 1000:>10.1f} {few:>6} {slow * 1000:>10.1f} {many:>6} "
            f"{slow / fast:>6.1f}x"
        )


if __name__ == "__main__":
    main()
