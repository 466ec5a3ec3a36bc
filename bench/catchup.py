"""One run of the catch-up of missed matches (``triage.catchup``) on PostgreSQL, against
the near lookups the workers made of the same media.

    .venv/bin/python bench/catchup.py [--recent 5000] [--old 200000] [--entries 1000000]
        [--new-entries 10000] [--listed 50] [--runs 5] [--profile] [--database URL]

Fills a schema of its own (``hotline_bench_catchup``, dropped afterwards): ``--old``
media first seen a day ago, ``--recent`` media first seen within the last 50 seconds
(the default window is 60), each on a queued target of its own but for 1 % of them,
shown on a page with the one before (one record step); 2 % are near copies of an
earlier recent item recorded apart (the race the catch-up is for). A list of
``--entries`` entries with a pHash and a PDQ hash each (random, ``--listed`` of them
near copies of recent media) is imported with ``import_list``; ``--new-entries`` more
(as many near copies) go into a second list once the catch-up's index is loaded.
Hashes are random: no pictures. The runs' clock is the time of the fill, so the window
holds the same media however long the bench takes.

Times (median of ``--runs``; each run in a transaction rolled back afterwards, so each
finds the same):

- ``nothing new``: the steady state: the window's media read and compared with each
  other, nothing recorded, no list read, no target ranked again.
- ``race``: the same media with the missed matches not recorded yet: they are recorded
  and their targets ranked again.
- ``next run (ranks again)``: the run after: nothing recorded, but the targets of media
  matched late within the last half window are ranked again (in case a target was
  passed over, held by another transaction).
- ``list changed``: the index read ``--new-entries`` list rows within the window (an
  import committed): exact lookups of every recent item, and a search of them against
  those rows.
- ``cannot tell``: the index cannot tell which list rows are new (it loaded them whole
  within the window: a worker process just started; or a list was enabled): every recent
  item is searched in the whole list index.

Baseline: the near lookups the workers made of the same media when they recorded them
(``lookup_many`` ten at a time, the index loaded, hits checked in the database), so the
ratio says what a run adds to work already done. Beat runs the catch-up four times a
window.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.scratch import drop_schema, fresh_schema, use_settings  # noqa: E402

SCHEMA = "hotline_bench_catchup"
DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
WINDOW = dt.timedelta(seconds=60)


class Clock:
    """The catch-up index's clock, moved by hand: what it read 'lately' is then chosen."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def flip(value: str, bits: int, rng: random.Random) -> str:
    """``value`` with ``bits`` distinct random bits inverted."""
    width = len(value) * 4
    mask = sum(1 << b for b in rng.sample(range(width), bits))
    return f"{int(value, 16) ^ mask:0{len(value)}x}"


def hexdigits(rng: random.Random, length: int) -> str:
    return f"{rng.getrandbits(length * 4):0{length}x}"


def fill(
    engine: Any, args: argparse.Namespace, rng: random.Random, now: dt.datetime
) -> dict[str, int]:
    """Media, targets and sightings with COPY, first seen before ``now``; returns counts."""
    media: list[tuple[Any, ...]] = []
    recent: list[tuple[str, str]] = []  # (phash, pdq) of the recent media
    near_copies = same_step = 0
    for i in range(args.old + args.recent):
        old = i < args.old
        phash, pdq = hexdigits(rng, 16), hexdigits(rng, 64)
        if not old and recent and rng.random() < 0.02:
            base = rng.choice(recent)
            phash, pdq = flip(base[0], rng.randrange(1, 8), rng), flip(base[1], 20, rng)
            near_copies += 1
        if old:
            seen = now - dt.timedelta(days=1, seconds=args.old - i)
        else:
            step = (i - args.old) / args.recent
            seen = now - dt.timedelta(seconds=50 * (1 - step))
            recent.append((phash, pdq))
        sha256 = hexdigits(rng, 64)
        media.append((i + 1, sha256, sha256[:40], sha256[:32], phash, pdq, 90, seen))
    targets: list[tuple[Any, ...]] = []
    sightings: list[tuple[Any, ...]] = []
    target_id = 0
    for n, row in enumerate(media[args.old :]):
        media_id, seen = row[0], row[7]
        if n and rng.random() < 0.01:  # on the page of the one before, in one step
            prev = media[args.old + n - 1]
            media[args.old + n] = (*row[:7], prev[7])
            seen = prev[7]
            same_step += 1
        else:
            target_id += 1
            url = f"https://bench{target_id}.example/{target_id}.jpg"
            targets.append(
                (
                    target_id,
                    url,
                    hexdigits(rng, 64),
                    f"bench{target_id}.example",
                    f"bench{target_id}.example",
                    seen,
                )
            )
        sightings.append((target_id, media_id, f"https://img.example/{media_id}.jpg", seen))
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            with cursor.copy(
                "COPY media (id, sha256, sha1, md5, phash, pdq, pdq_quality, first_seen_at,"
                " mime, kind, size) FROM STDIN"
            ) as copy:
                for row in media:
                    copy.write_row((*row, "image/jpeg", "image", 1000))
            with cursor.copy(
                "COPY target (id, canonical_url, url_sha256, host, registered_domain,"
                " first_reported_at, last_reported_at, status_changed_at, processed_at,"
                " status, priority, priority_reasons, report_count, attempts) FROM STDIN"
            ) as copy:
                for row in targets:
                    seen = row[5]
                    copy.write_row((*row, seen, seen, seen, "queued", 101, '["new content"]', 1, 1))
            with cursor.copy(
                "COPY sighting (target_id, media_id, media_url, first_seen_at, last_seen_at,"
                " online) FROM STDIN"
            ) as copy:
                for target, media_id, url, seen in sightings:
                    copy.write_row((target, media_id, url, seen, seen, True))
            for table in ("media", "target"):
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"  # noqa: S608
                )
            cursor.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    return {
        "media": len(media),
        "targets": len(targets),
        "near_copies": near_copies,
        "same_step": same_step,
    }


def import_entries(
    path: Path, name: str, count: int, near: int, recent: list[Any], rng: random.Random
) -> int:
    """A list of ``count`` entries (pHash, PDQ), ``near`` of them near copies of recent
    media."""
    from hotline.db import session_scope
    from triage.hashlists import import_list

    with path.open("w", encoding="ascii") as out:
        out.write("phash,pdq,category\n")
        for n in range(count):
            if n < near:
                phash, pdq = rng.choice(recent)
                phash, pdq = flip(phash, 3, rng), flip(pdq, 12, rng)
            else:
                phash, pdq = hexdigits(rng, 16), hexdigits(rng, 64)
            out.write(f"{phash},{pdq},1\n")
    with session_scope() as session:
        return import_list(session, path, list_name=name).added


def median_ms(run: Callable[[], Any], runs: int) -> tuple[float, Any]:
    timings, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = run()
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings), result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recent", type=int, default=5000)
    parser.add_argument("--old", type=int, default=200_000)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--new-entries", type=int, default=10_000)
    parser.add_argument(
        "--listed", type=int, default=50, help="entries of each list near recent media"
    )
    parser.add_argument("--profile", action="store_true", help="profile a 'nothing new' run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--database", default=os.environ.get("HOTLINE_BENCH_DATABASE_URL", DEFAULT_DATABASE)
    )
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    args = parser.parse_args()

    admin = create_engine(args.database)
    database = fresh_schema(admin, args.database, SCHEMA)
    workdir = Path(tempfile.mkdtemp(prefix="hotline-bench-"))
    use_settings(
        {
            "HOTLINE_DATA_DIR": str(workdir),
            "HOTLINE_DATABASE_URL": database,
            "HOTLINE_LOG_LEVEL": "WARNING",
        }
    )
    from sqlmodel import Session

    from hotline.db import get_engine, session_scope, utcnow
    from hotline.migrate import upgrade
    from triage.catchup import CaughtUp, catch_up
    from triage.neardup import NearDuplicates, NearQuery

    def index(clock: Clock | None = None) -> NearDuplicates:
        return NearDuplicates(
            phash_radius=8,
            pdq_radius=31,
            pdq_min_quality=50,
            refresh_seconds=3600,
            recent_seconds=WINDOW.total_seconds(),
            **({"clock": clock} if clock else {}),
        )

    rng = random.Random(11)
    try:
        upgrade(database)
        engine = get_engine()
        start = time.perf_counter()
        # The runs' time: the recent media were first seen within the 50 s before it.
        now = utcnow()
        counts = fill(engine, args, rng, now)
        with engine.connect() as connection:
            recent = connection.execute(
                text("SELECT id, phash, pdq, pdq_quality FROM media WHERE id > :old ORDER BY id"),
                {"old": args.old},
            ).all()
        pairs = [(row.phash, row.pdq) for row in recent]
        import_entries(workdir / "list.csv", "bench-list", args.entries, args.listed, pairs, rng)
        print(
            f"filled {counts['media']:,} media ({args.recent:,} recent, {counts['near_copies']} "
            f"near copies recorded apart, {counts['same_step']} on a page with the one before), "
            f"{counts['targets']:,} targets, a list of {args.entries:,} entries"
            f" in {time.perf_counter() - start:.1f} s",
            flush=True,
        )

        clock = Clock()
        steady = index(clock)
        with session_scope() as session:
            steady.refresh(session, force=True)
        clock.now = 1000.0  # the first load is long past

        def catch_up_once(near: NearDuplicates) -> CaughtUp:
            with Session(engine) as session:
                caught = catch_up(session, near=near, now=now, window=WINDOW)
                session.rollback()
            return caught

        results: list[tuple[str, float, CaughtUp]] = []
        race, caught = median_ms(lambda: catch_up_once(steady), args.runs)
        results.append(("race", race, caught))
        with session_scope() as session:  # the missed matches recorded: the steady state
            catch_up(session, near=steady, now=now, window=WINDOW)
        again, caught = median_ms(lambda: catch_up_once(steady), args.runs)
        results.append(("next run (ranks again)", again, caught))
        # Half a window on, the late matches' targets are not ranked again: the steady
        # state of a window without a race.
        with session_scope() as session:
            session.execute(
                text("UPDATE media_match SET found_at = found_at - :half WHERE found_at = :now"),
                {"half": WINDOW / 2 + dt.timedelta(seconds=1), "now": now},
            )
        nothing, caught = median_ms(lambda: catch_up_once(steady), args.runs)
        results.insert(0, ("nothing new", nothing, caught))
        if args.profile:
            import cProfile
            import pstats

            with cProfile.Profile() as profile:
                catch_up_once(steady)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(25)

        new = args.new_entries
        import_entries(workdir / "new.csv", "bench-new", new, args.listed, pairs, rng)
        changed, caught = median_ms(lambda: catch_up_once(steady), args.runs)
        if args.profile:
            import cProfile
            import pstats

            with cProfile.Profile() as profile:
                catch_up_once(steady)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
        results.append((f"list changed ({args.new_entries:,} rows)", changed, caught))

        whole = index()
        with session_scope() as session:
            whole.refresh(session, force=True)
        told, caught = median_ms(lambda: catch_up_once(whole), args.runs)
        results.append(("cannot tell", told, caught))

        queries = [
            NearQuery(row.phash, row.pdq, row.pdq_quality, exclude_media_id=row.id)
            for row in recent
        ]

        def lookups() -> None:
            with Session(engine) as session:
                for start in range(0, len(queries), 10):
                    whole.lookup_many(session, queries[start : start + 10])

        baseline, _ = median_ms(lookups, args.runs)
    finally:
        if not args.keep:
            drop_schema(admin, SCHEMA)

    print(f"workers' near lookups of the {args.recent:,} recent media: {baseline:,.0f} ms")
    print(f"{'catch-up run':<30}{'median ms':>10}{'x lookups':>11}{'matched':>9}{'raised':>8}")
    for name, ms, caught in results:
        print(
            f"{name:<30}{ms:>10,.0f}{ms / baseline:>11.2f}{caught.matched:>9}"
            f"{len(caught.raised):>8}"
        )


if __name__ == "__main__":
    main()
